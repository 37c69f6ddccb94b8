"""The attacks on a served model: what each one changes, and what it leaves alone."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
from torch import nn

from eul.bench.attacks import (
    AttackConfig,
    attack_targets,
    copy_served,
    format_attacks,
    layer_count,
    layer_removal,
    quantise,
    quantise_tensor,
    quantised_weights,
    relearn,
    retained_sample,
    served_parameters,
    similar_rows,
)
from eul.bench.seeds import format_seeds, run_seeds
from eul.methods import EULConfig, ForgetTask, get_method
from eul.model.text_model import TextModel


@pytest.fixture(scope="module")
def task(tiny_records) -> ForgetTask:
    """Forget the subjects that own memorised rows (some of their labels flipped)."""
    train, heldout, _ = tiny_records
    subjects = sorted({r.subject_id for r in train if r.memorised})[:6]
    forget = [r for r in train if r.subject_id in subjects]
    retained = [r for r in train if r.subject_id not in subjects]
    return ForgetTask(forget=forget, retained=retained, heldout=heldout, name="req")


@pytest.fixture(scope="module")
def eul_model(tiny_trained, task) -> TextModel:
    """The trained tiny model with one EUL layer (a short run, on a copy)."""
    method = get_method("eul", config=EULConfig(epochs=2, retained_per_epoch=64))
    return method.run(tiny_trained.copy(), task, progress=False).model


def _state(tm: TextModel) -> dict[str, torch.Tensor]:
    """Every served weight, by name, copied (the layers' under `layer.`)."""
    state = {k: v.clone() for k, v in tm.model.state_dict().items()}
    if layer_count(tm):
        state |= {f"layer.{k}": v.clone() for k, v in tm._layers.layers.state_dict().items()}
    return state


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _logits(tm: TextModel, records) -> torch.Tensor:
    with torch.no_grad():
        tm.model.eval()
        return tm.logits(tm.batch([r.text for r in records], [r.target for r in records]))


def test_quantising_moves_each_weight_at_most_half_a_step_of_its_group() -> None:
    # given weights whose rows are not a whole number of groups, one group all zeros
    weight = torch.randn(5, 150, generator=torch.Generator().manual_seed(0))
    weight[0, :64] = 0.0
    errors = {}
    for bits in (8, 4):
        # when they are quantised per group of 64 along the input dimension
        quantised = quantise_tensor(weight, bits, group_size=64)
        qmax = 2 ** (bits - 1) - 1
        for start in range(0, 150, 64):
            group, rounded = weight[:, start : start + 64], quantised[:, start : start + 64]
            step = group.abs().amax(dim=1, keepdim=True) / qmax
            # then every weight moved by at most half its group's step, onto the group's grid
            assert ((rounded - group).abs() <= step / 2 + 1e-6).all()
            levels = rounded / torch.where(step > 0, step, 1.0)
            assert torch.allclose(levels, levels.round(), atol=1e-4)
            assert levels.abs().max() <= qmax + 1e-4
        assert torch.equal(quantised[0, :64], torch.zeros(64))
        errors[bits] = (quantised - weight).abs().mean().item()
    # and 4 bits are coarser than 8
    assert errors[4] > 4 * errors[8] > 0


def test_quantising_a_served_model_rounds_base_and_layer_and_leaves_it_untouched(
    eul_model,
) -> None:
    before = _state(eul_model)
    int8, int4 = quantise(eul_model, 8), quantise(eul_model, 4)
    # the input model is as it was, layer and all
    assert _same(_state(eul_model), before) and layer_count(eul_model) == 1
    # the tied lm_head is the shared embedding: still one tensor, rounded once
    for attacked in (int8, int4):
        assert attacked.model.lm_head.weight is attacked.model.shared.weight
        assert layer_count(attacked) == 1 and attacked._layers.active == ["req"]
    # every linear weight of the base and of the layer moved, 4-bit further than int8
    names = [
        name
        for name in before
        if name.endswith(".weight") and "layer_norm" not in name and "final_layer_norm" not in name
    ]
    assert any(n.startswith("layer.") and n.endswith("up.weight") for n in names)
    state8, state4 = _state(int8), _state(int4)
    for name in names:
        if before[name].abs().max() == 0:
            continue
        err8 = (state8[name] - before[name]).abs().mean()
        err4 = (state4[name] - before[name]).abs().mean()
        assert 0 < err8 < err4, name
    # norm scales and biases stay float
    for name in ("encoder.final_layer_norm.weight", "layer.req.encoder_0.up.bias"):
        assert before[name].abs().max() > 0 and torch.equal(state4[name], before[name])
    # what is rounded: every linear and embedding weight, the tied one once
    rounded = quantised_weights(int4)
    assert len({id(w) for w in rounded}) == len(rounded)
    modules = [m for m in int4.model.modules() if isinstance(m, (nn.Linear, nn.Embedding))]
    assert {id(m.weight) for m in modules} <= {id(w) for w in rounded}


def test_layer_removal_of_an_eul_model_serves_the_original_base(
    tiny_trained, eul_model, tiny_records
) -> None:
    rows = tiny_records[0][:16]
    # given an EUL model whose layer changes its outputs
    served = _logits(eul_model, rows)
    assert not torch.allclose(served, _logits(tiny_trained, rows))
    # when its layers are removed, then it serves exactly the original base
    removed = layer_removal(eul_model)
    assert layer_count(removed) == 0
    assert torch.equal(_logits(removed, rows), _logits(tiny_trained, rows))
    # and the EUL model still serves its layer
    assert layer_count(eul_model) == 1 and torch.equal(_logits(eul_model, rows), served)
    # a model without layers is left as it is: the attack is the model itself
    plain = layer_removal(tiny_trained)
    assert layer_count(plain) == 0
    assert torch.equal(_logits(plain, rows), _logits(tiny_trained, rows))


def test_a_served_copy_serves_what_the_model_does(eul_model, tiny_records) -> None:
    rows = tiny_records[0][:8]
    clone = copy_served(eul_model)
    assert torch.equal(_logits(clone, rows), _logits(eul_model, rows))
    # and is independent of it
    with torch.no_grad():
        clone._layers.layers["req"]["encoder_0"].up.weight.add_(1.0)
    assert not torch.equal(_logits(clone, rows), _logits(eul_model, rows))


def test_relearning_trains_every_weight_on_the_given_rows_only(
    eul_model, task, monkeypatch
) -> None:
    before = _state(eul_model)
    rows = retained_sample(task.retained, task.forget, 48, seed=0)
    seen: list[str] = []
    batch = TextModel.batch

    def spy(self, inputs, targets):
        seen.extend(inputs)
        return batch(self, inputs, targets)

    monkeypatch.setattr(TextModel, "batch", spy)
    config = AttackConfig(relearn_steps=5, relearn_batch=16)
    attacked = relearn(eul_model, rows, config)
    monkeypatch.undo()
    # it trained on the rows given (cycled past their end), never on a forget row
    assert len(seen) == 5 * 16
    assert set(seen) <= {r.text for r in rows}
    assert not set(seen) & {r.text for r in task.forget}
    # base, layer and the layer's fixed basis all moved; the input model did not
    after = _state(attacked)
    assert _same(_state(eul_model), before)
    layer = "layer.req.encoder_0"
    for name in ("shared.weight", f"{layer}.up.weight", f"{layer}.down.weight"):
        assert not torch.equal(after[name], before[name]), name
    assert all(p.requires_grad for p in served_parameters(attacked))
    # and it is seeded: the same run gives the same weights
    assert _same(_state(relearn(eul_model, rows, config)), after)


def test_relearning_rows_are_never_forget_rows(tiny_trained, task) -> None:
    forget = list(task.forget)
    # retained rows drawn from a list that wrongly holds forget rows leave them out
    drawn = retained_sample(list(task.retained) + forget, forget, 10_000, seed=1)
    assert not {r.record_id for r in drawn} & {r.record_id for r in forget}
    # held-out rows: a forget row's copy (same id, or same text) is never chosen, a near
    # copy is chosen first, then rows by overlap
    target = forget[0]
    near = replace(target, record_id="near", text=target.text + " Truly.")
    same_text = replace(target, record_id="same-text")
    heldout = [*task.heldout, same_text, target, near]
    chosen = similar_rows(tiny_trained, heldout, forget, 5)
    assert chosen[0].record_id == "near" and len(chosen) == 5
    assert not {r.record_id for r in chosen} & {target.record_id, "same-text"}
    assert not {r.text for r in chosen} & {r.text for r in forget}


def _row(memorised: float, mia: float) -> dict[str, float]:
    return {"test_acc": 0.9, "forget_acc": 0.5, "forget_memorised_acc": memorised,
            "mia_auc": mia, "privleak": 0.0, "applies": True}  # fmt: skip


def test_attack_targets_hold_eul_to_the_oracle_under_each_attack_but_layer_removal() -> None:
    attacks = {
        "none": {"oracle": _row(0.2, 0.5), "eul": _row(0.2, 0.5)},
        "layer_removal": {"oracle": _row(0.2, 0.5), "eul": _row(1.0, 0.8)},
        "int8": {"oracle": _row(0.2, 0.5), "eul": _row(0.24, 0.5)},
        "int4": {"oracle": _row(0.2, 0.5), "eul": _row(0.3, 0.5)},
        "relearn_retained": {"oracle": _row(0.2, 0.5), "eul": _row(0.1, 0.5)},
        "relearn_similar": {"oracle": _row(float("nan"), 0.5), "eul": _row(0.2, 0.5)},
    }
    targets = {t["target"].split(":")[0]: t for t in attack_targets(attacks)}
    assert list(targets) == [
        "after int8", "after int4", "after relearn_retained", "after relearn_similar"
    ]  # fmt: skip
    assert [t["met"] for t in targets.values()] == [True, False, False, False]
    assert targets["after int4"]["value"] == pytest.approx(0.1)
    attacks["layer_removal"]["oracle"]["applies"] = False
    table = format_attacks({"attacks": attacks, "attack_targets": attack_targets(attacks)})
    assert "| layer_removal | eul | 0.900 | 0.500 | 1.000 | 0.800 | +0.000 |" in table
    assert "| relearn_similar | oracle | 0.900 | 0.500 | - |" in table
    assert "- layer_removal: oracle hosts no unlearning layer" in table
    assert "after int4: memorised acc within 5 pts of oracle's: 0.1 (MISSED)" in table


def test_seeds_sum_up_each_attack_per_model() -> None:
    reports = {
        0: {"methods": {"eul": {"forget_acc": 0.5}},
            "attacks": {"int4": {"oracle": _row(0.2, 0.5), "eul": _row(0.3, 0.6)}}},
        1: {"methods": {"eul": {"forget_acc": 0.7}},
            "attacks": {"int4": {"oracle": _row(0.4, 0.5), "eul": _row(0.5, 0.8)}}},
    }  # fmt: skip
    result = run_seeds(lambda seed: reports[seed], [0, 1])
    eul = result["attacks"]["int4"]["eul"]
    assert eul["forget_memorised_acc"]["mean"] == pytest.approx(0.4)
    assert eul["mia_auc"]["std"] == pytest.approx(math.sqrt(0.02))
    assert result["per_seed"][1]["attacks"]["int4"]["eul"]["mia_auc"] == 0.8
    assert "| int4 | eul | 0.900 ± 0.000 | 0.500 ± 0.000 | 0.400 ± 0.141 |" in format_seeds(result)


def test_no_attacks_option_reaches_the_benchmark(monkeypatch) -> None:
    import eul.bench.classification as classification
    from eul.cli.main import build_parser

    configs = []
    monkeypatch.setattr(
        classification, "run_bench", lambda config, **_: configs.append(config) or {}
    )
    monkeypatch.setattr(classification, "format_table", lambda report: "")
    for argv, attacks in ((["bench", "--quick"], True), (["bench", "--no-attacks"], False)):
        args = build_parser().parse_args(argv)
        args.func(args)
        assert configs[-1].attacks is attacks
