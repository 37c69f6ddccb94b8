"""Fusion: the closed form on synthetic sums, statistics from a model, hosting, persistence."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from eul.data.records import LABEL_WORDS, Record
from eul.data.synthetic import SyntheticConfig, generate
from eul.fusion.fuse import (
    FUSED_FILE,
    FusionState,
    LinearFusedLayer,
    add_fused_layer,
    add_shared_fused_layer,
    fit_error,
    fuse,
    fuse_shared,
    load_fused,
    save_fused,
    up_matrix,
)
from eul.fusion.statistics import STATS_FILE, FusionStats, anchor_statistics, capture_statistics
from eul.layers import LayerConfig
from eul.model.text_model import IGNORE, ModelSpec, TextModel

SPEC = ModelSpec(vocab_size=300, d_model=32, num_layers=2, num_heads=2, d_ff=64)


@pytest.fixture(scope="module")
def records() -> list[Record]:
    _, generated = generate(SyntheticConfig(n_subjects=8, memorised_share=0.1, seed=3))
    return generated


def _model(records: list[Record], family: str = "t5") -> TextModel:
    spec = ModelSpec(**{**SPEC.__dict__, "family": family})
    return TextModel.create([r.text for r in records] + list(LABEL_WORDS), spec)


def _nudged_layer(tm: TextModel, name: str, seed: int = 0, std: float = 0.05) -> None:
    """A layer whose delta is clearly non-zero, as after training."""
    layers = tm.unlearning_layers()
    layers.add_layer(name, LayerConfig(width=8))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in layers.layers[name].values():
            layer.down.weight.copy_(torch.randn(layer.down.weight.shape, generator=generator))
            layer.down.weight.mul_(3 * std)
            layer.up.weight.copy_(torch.randn(layer.up.weight.shape, generator=generator))
            layer.up.weight.mul_(std)


def _synthetic(x: torch.Tensor, y: torch.Tensor, position: str = "p") -> FusionStats:
    """Statistics of hidden states `x` (without the ones column) and targets `y`."""
    x1 = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], dim=1)
    return FusionStats(
        positions=[position],
        gram={position: x1.T @ x1},
        cross={position: x1.T @ y},
        count={position: len(x)},
        target_sq={position: float((y * y).sum())},
    )


def _with_ones(x: torch.Tensor) -> torch.Tensor:
    return torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], dim=1)


def _logits(tm: TextModel, records: list[Record], active: list[str]) -> torch.Tensor:
    layers = tm.unlearning_layers()
    layers.set_active(active)
    batch = tm.batch([r.text for r in records], [r.target for r in records])
    with torch.no_grad():
        return tm.logits(batch)


# -- the closed form --------------------------------------------------------------------------


def test_fusing_linear_maps_of_one_shared_weight_recovers_it() -> None:
    # given two requests whose layers are the same linear map W (bias included)
    torch.manual_seed(0)
    d = 6
    w = torch.randn(d + 1, d, dtype=torch.float64)
    x1, x2 = torch.randn(40, d, dtype=torch.float64), torch.randn(30, d, dtype=torch.float64)
    stats = _synthetic(x1, _with_ones(x1) @ w) + _synthetic(x2, _with_ones(x2) @ w)
    # when their statistics are fused with a tiny ridge
    fused = fuse(stats, ridge=1e-12)
    # then the fused map is W and fits exactly
    assert torch.allclose(fused["p"].double(), w, atol=1e-6)
    assert fit_error(stats, fused)["p"] < 1e-6


def test_fusing_maps_on_disjoint_inputs_reproduces_each_on_its_own_inputs() -> None:
    # given two requests whose inputs live in disjoint subspaces, with different maps
    torch.manual_seed(1)
    d = 6
    x1 = torch.zeros(40, d, dtype=torch.float64)
    x1[:, :3] = torch.randn(40, 3, dtype=torch.float64)
    x2 = torch.zeros(30, d, dtype=torch.float64)
    x2[:, 3:] = torch.randn(30, 3, dtype=torch.float64)
    w1, w2 = torch.randn(d + 1, d, dtype=torch.float64), torch.randn(d + 1, d, dtype=torch.float64)
    w1[-1] = w2[-1] = 0.0
    s1, s2 = _synthetic(x1, _with_ones(x1) @ w1), _synthetic(x2, _with_ones(x2) @ w2)
    # when both are fused into one map
    fused = fuse(s1 + s2, ridge=1e-12)["p"].double()
    # then each request's layer is reproduced on its own inputs
    assert torch.allclose(_with_ones(x1) @ fused, _with_ones(x1) @ w1, atol=1e-6)
    assert torch.allclose(_with_ones(x2) @ fused, _with_ones(x2) @ w2, atol=1e-6)
    assert max(fit_error(s1, {"p": fused}).values()) < 1e-10


def test_statistics_of_other_positions_do_not_add() -> None:
    x = torch.randn(5, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match="positions"):
        _synthetic(x, x) + _synthetic(x, x, position="q")


# -- statistics from a model ------------------------------------------------------------------


def test_fusing_one_layer_returns_that_layers_behaviour(records: list[Record]) -> None:
    # given a model with one trained-looking (non-zero) layer
    tm = _model(records)
    _nudged_layer(tm, "r1")
    layers = tm.unlearning_layers()
    forget = records[:24]
    # when its statistics are captured on its forget records and fused into a linear map
    stats = capture_statistics(tm, "r1", forget, batch_size=8)
    fused = fuse(stats)
    add_fused_layer(layers, "fused", fused)
    # then the linear fit is close, and the fused model is much nearer the layer than the base
    assert max(fit_error(stats, fused).values()) < 0.2
    base = _logits(tm, forget, [])
    original = _logits(tm, forget, ["r1"])
    merged = _logits(tm, forget, ["fused"])
    assert (merged - original).norm() < 0.5 * (base - original).norm()
    assert layers.capture is None


def test_capture_keeps_only_real_tokens_and_restores_the_model(records: list[Record]) -> None:
    # given a T5 with a layer, switched off, in training mode
    tm = _model(records)
    _nudged_layer(tm, "r1")
    layers = tm.unlearning_layers()
    layers.set_active([])
    tm.model.train()
    chunk = records[:10]
    batch = tm.batch([r.text for r in chunk], [r.target for r in chunk])
    # when statistics are captured
    stats = capture_statistics(tm, "r1", chunk, batch_size=4)
    # then encoder positions count input tokens, decoder positions count labelled ones
    n_inputs = int(batch["attention_mask"].sum())
    n_labels = int((batch["labels"] != IGNORE).sum())
    assert stats.count == {
        "encoder_0": n_inputs,
        "encoder_1": n_inputs,
        "decoder_0": n_labels,
        "decoder_1": n_labels,
    }
    assert stats.gram["encoder_0"][-1, -1] == n_inputs
    # and the model is back as it was
    assert layers.capture is None
    assert layers.active == []
    assert tm.model.training


def test_decoder_only_models_count_every_real_token(records: list[Record]) -> None:
    tm = _model(records, family="gpt2")
    _nudged_layer(tm, "r1")
    chunk = records[:6]
    stats = capture_statistics(tm, "r1", chunk, batch_size=6)
    batch = tm.batch([r.text for r in chunk], [r.target for r in chunk])
    n_tokens = int(batch["attention_mask"].sum())
    assert stats.count == {"decoder_0": n_tokens, "decoder_1": n_tokens}
    assert all(stats.target_sq[p] > 0 for p in stats.positions)


def test_statistics_of_two_requests_add_up(records: list[Record]) -> None:
    # given one layer and two disjoint sets of records
    tm = _model(records)
    _nudged_layer(tm, "r1")
    a, b = records[:8], records[8:16]
    # when statistics are captured on each, and on their union
    separate = capture_statistics(tm, "r1", a, batch_size=4) + capture_statistics(
        tm, "r1", b, batch_size=4
    )
    together = capture_statistics(tm, "r1", a + b, batch_size=4)
    # then the sums agree
    assert separate.count == together.count
    for p in together.positions:
        for kind in ("gram", "cross"):
            got, want = getattr(separate, kind)[p], getattr(together, kind)[p]
            assert (got - want).abs().max() <= 1e-8 * want.abs().max()
        assert separate.target_sq[p] == pytest.approx(together.target_sq[p], rel=1e-8)


def test_anchor_statistics_see_the_model_with_its_layers_off(records: list[Record]) -> None:
    tm = _model(records)
    _nudged_layer(tm, "r1")
    layers = tm.unlearning_layers()
    layers.set_active(["r1"])
    retained = records[:10]
    anchor = anchor_statistics(tm, retained, batch_size=5)
    with layers.disabled():
        reference = anchor_statistics(tm, retained, batch_size=5)
    with_layer = capture_statistics(tm, "r1", retained, batch_size=5)
    assert layers.active == ["r1"]
    assert all(torch.equal(anchor.gram[p], reference.gram[p]) for p in anchor.positions)
    assert all(not anchor.cross[p].any() for p in anchor.positions)
    assert torch.allclose(anchor.gram["encoder_0"], with_layer.gram["encoder_0"])
    assert not torch.allclose(anchor.gram["encoder_1"], with_layer.gram["encoder_1"])


def test_the_anchor_pulls_the_fused_map_toward_zero_on_retained_inputs(
    records: list[Record],
) -> None:
    # given forget statistics of a layer and anchor statistics of retained records
    tm = _model(records)
    _nudged_layer(tm, "r1")
    forget, retained = records[:12], records[12:40]
    stats = capture_statistics(tm, "r1", forget, batch_size=6)
    anchor = anchor_statistics(tm, retained, batch_size=7)
    # when fused with and without the anchor
    free = fuse(stats)
    anchored = fuse(stats, anchor=anchor, anchor_weight=3.0)

    def retained_change(matrices: dict[str, torch.Tensor]) -> float:
        return sum(
            float(((anchor.gram[p] @ matrices[p].double()) * matrices[p].double()).sum())
            for p in anchor.positions
        )

    # then the anchored map changes retained hidden states less, at some cost on the forget fit
    assert retained_change(anchored) < 0.5 * retained_change(free)
    assert sum(fit_error(stats, anchored).values()) > sum(fit_error(stats, free).values())


# -- hosting and persistence ------------------------------------------------------------------


def test_a_hosted_fused_layer_switches_on_and_off_and_can_be_removed(
    records: list[Record],
) -> None:
    tm = _model(records)
    layers = tm.unlearning_layers()
    chunk = records[:4]
    base = _logits(tm, chunk, [])
    d = layers.d_model
    zeros = {p: torch.zeros(d + 1, d) for p in layers.position_names}
    add_fused_layer(layers, "zero", zeros)
    assert torch.allclose(_logits(tm, chunk, ["zero"]), base)
    shift = {p: torch.cat([torch.zeros(d, d), torch.ones(1, d)]) for p in layers.position_names}
    add_fused_layer(layers, "shift", shift)
    assert not torch.allclose(_logits(tm, chunk, ["shift"]), base)
    layers.remove_layer("shift")
    assert "shift" not in layers.layers
    with pytest.raises(ValueError, match="positions"):
        add_fused_layer(layers, "bad", {"encoder_0": zeros["encoder_0"]})


def test_a_fused_layer_computes_in_the_dtype_of_its_input() -> None:
    layer = LinearFusedLayer(torch.randn(5, 4))
    hidden = torch.randn(2, 3, 4, dtype=torch.float64)
    assert layer.delta(hidden).dtype == torch.float64
    expected = hidden @ layer.matrix[:-1].double() + layer.matrix[-1].double()
    assert torch.allclose(layer.delta(hidden), expected)


def test_statistics_and_fused_maps_round_trip_without_any_text(
    records: list[Record], tmp_path
) -> None:
    # given statistics of a layer on some records, and their fused maps
    tm = _model(records)
    _nudged_layer(tm, "r1")
    forget = records[:8]
    stats = capture_statistics(tm, "r1", forget, batch_size=8)
    fused = fuse(stats)
    # when both are saved and loaded
    stats_folder = stats.save(tmp_path / "stats")
    fused_folder = save_fused(fused, tmp_path / "fused")
    loaded = FusionStats.load(stats_folder)
    loaded_fused = load_fused(fused_folder)
    # then nothing is lost
    assert loaded.positions == stats.positions
    assert loaded.count == stats.count
    assert loaded.target_sq == stats.target_sq
    assert all(torch.equal(loaded.gram[p], stats.gram[p]) for p in stats.positions)
    assert all(torch.equal(loaded.cross[p], stats.cross[p]) for p in stats.positions)
    assert all(torch.equal(loaded_fused[p], fused[p]) for p in fused)
    # and only sums and maps were written, no text or token ids
    kinds = {key.split(".")[0] for key in load_file(str(stats_folder / STATS_FILE))}
    assert kinds == {"gram", "cross", "target_sq"}
    assert set(load_file(str(fused_folder / FUSED_FILE))) == set(stats.positions)
    meta = json.loads((stats_folder / "fusion_stats.json").read_text())
    assert set(meta) == {"positions", "count", "d_model", "d_in"}
    for folder in (stats_folder, fused_folder):
        for path in folder.iterdir():
            content = path.read_bytes()
            for record in forget:
                assert record.text.encode() not in content
                assert record.subject_id.encode() not in content
    # and the loaded maps behave like the saved ones when hosted
    layers = tm.unlearning_layers()
    add_fused_layer(layers, "saved", fused)
    add_fused_layer(layers, "loaded", loaded_fused)
    assert torch.equal(_logits(tm, forget, ["saved"]), _logits(tm, forget, ["loaded"]))


# -- shared-basis layers: exact fusion ---------------------------------------------------------


def _shared_layer(tm: TextModel, name: str, seed: int, width: int = 8) -> None:
    """A shared-basis layer with a random (trained-looking) up projection."""
    layers = tm.unlearning_layers()
    layers.add_layer(name, LayerConfig(width=width, basis="shared"))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in layers.layers[name].values():
            layer.up.weight.copy_(0.2 * torch.randn(layer.up.weight.shape, generator=generator))
            layer.up.bias.copy_(0.05 * torch.randn(layer.up.bias.shape, generator=generator))


def _state_of(tm: TextModel, named_records: dict[str, list[Record]]) -> FusionState:
    layers = tm.unlearning_layers()
    state = FusionState.empty(layers, layers.configs[next(iter(named_records))])
    for name, chunk in named_records.items():
        state.add(layers, name, capture_statistics(tm, name, chunk, batch_size=8, space="features"))
    return state


def test_shared_basis_layers_compute_the_same_features_and_train_only_up(
    records: list[Record],
) -> None:
    tm = _model(records)
    layers = tm.unlearning_layers()
    layers.add_layer("r1", LayerConfig(width=8, basis="shared"))
    layers.add_layer("r2", LayerConfig(width=8, basis="shared"))
    layers.add_layer("t1", LayerConfig(width=8, basis="trained"))
    down = {n: layers.layers[n]["encoder_0"].down.weight for n in ("r1", "r2", "t1")}
    assert torch.equal(down["r1"], down["r2"])
    assert not torch.equal(layers.layers["r1"]["encoder_1"].down.weight, down["r1"])
    assert not torch.equal(down["t1"], down["r1"])
    trainable = {id(p) for p in layers.layer_parameters("r1")}
    assert id(down["r1"]) not in trainable
    assert len(layers.layer_parameters("r1")) == 2 * len(layers.position_names)
    assert len(layers.layer_parameters("t1")) == 4 * len(layers.position_names)


def test_sum_fusion_reproduces_the_stack_of_shared_basis_layers_exactly(
    records: list[Record],
) -> None:
    # given three shared-basis layers, each with statistics on its own records
    tm = _model(records)
    for i in range(3):
        _shared_layer(tm, f"r{i}", seed=i)
    state = _state_of(tm, {f"r{i}": records[8 * i : 8 * i + 8] for i in range(3)})
    # when they are fused into one layer by their sum
    layers = tm.unlearning_layers()
    add_shared_fused_layer(layers, "fused", state.config, fuse_shared(state, "sum"))
    # then on any input the fused model is the stacked model, and it is one layer of width 8
    probe = records[30:40]
    stacked = _logits(tm, probe, ["r0", "r1", "r2"])
    fused = _logits(tm, probe, ["fused"])
    base = _logits(tm, probe, [])
    assert (fused - stacked).abs().max() < 1e-4 * (stacked - base).abs().max()
    assert layers.configs["fused"].width == 8


def test_fit_fusion_of_one_layer_returns_that_layer(records: list[Record]) -> None:
    # given one shared-basis layer and statistics on enough tokens to determine it
    tm = _model(records)
    _shared_layer(tm, "r1", seed=4)
    state = _state_of(tm, {"r1": records[:24]})
    # when it is fused alone with the paper's closed form
    fused = fuse_shared(state, "fit", ridge=1e-10)
    # then the fused up projection is the layer's own (the inputs span the feature space)
    layers = tm.unlearning_layers()
    for p in layers.position_names:
        own = up_matrix(layers.layers["r1"][p]).float()
        assert torch.allclose(fused[p], own, atol=1e-3 * own.abs().max())


def test_fusion_state_is_incremental_and_round_trips(records: list[Record], tmp_path) -> None:
    # given two layers fused one after the other, and the same two fused together
    tm = _model(records)
    _shared_layer(tm, "r1", seed=1)
    _shared_layer(tm, "r2", seed=2)
    a, b = records[:8], records[8:16]
    together = _state_of(tm, {"r1": a, "r2": b})
    state = _state_of(tm, {"r1": a})
    state.save(tmp_path / "state")
    resumed = FusionState.load(tmp_path / "state")
    layers = tm.unlearning_layers()
    resumed.add(layers, "r2", capture_statistics(tm, "r2", b, batch_size=8, space="features"))
    # then adding the second request to the saved state gives the same sums
    assert resumed.requests == ["r1", "r2"]
    for p in together.stats.positions:
        assert torch.allclose(resumed.up_sum[p], together.up_sum[p])
        assert torch.allclose(resumed.stats.gram[p], together.stats.gram[p])
        assert torch.allclose(resumed.stats.cross[p], together.stats.cross[p])
    # and the state holds no text
    for path in (tmp_path / "state").iterdir():
        for record in a:
            assert record.text.encode() not in path.read_bytes()
    # and a request is not fused twice, nor a layer of another basis
    with pytest.raises(ValueError, match="already fused"):
        resumed.add(layers, "r2", capture_statistics(tm, "r2", b, batch_size=8, space="features"))
    layers.add_layer("other", LayerConfig(width=8, basis="shared", basis_seed=5))
    other = capture_statistics(tm, "other", b, batch_size=8, space="features")
    with pytest.raises(ValueError, match="basis"):
        resumed.add(layers, "other", other)


def test_an_anchor_shrinks_the_fused_layer_on_retained_tokens(records: list[Record]) -> None:
    tm = _model(records)
    _shared_layer(tm, "r1", seed=3)
    state = _state_of(tm, {"r1": records[:8]})
    anchor = anchor_statistics(tm, records[8:40], batch_size=8, basis_of="r1")
    assert anchor.d_in == 8
    free = fuse_shared(state, "sum")
    anchored = fuse_shared(state, "sum", anchor=anchor, anchor_weight=3.0)

    def retained_change(matrices: dict[str, torch.Tensor]) -> float:
        return sum(
            float(((anchor.gram[p] @ matrices[p].double()) * matrices[p].double()).sum())
            for p in anchor.positions
        )

    assert retained_change(anchored) < 0.5 * retained_change(free)


def test_trained_basis_layers_have_no_feature_statistics(records: list[Record]) -> None:
    tm = _model(records)
    _nudged_layer(tm, "t1")  # a trained basis
    tm.unlearning_layers().configs["t1"] = LayerConfig(width=8, basis="trained")
    with pytest.raises(ValueError, match="trained basis"):
        capture_statistics(tm, "t1", records[:4], space="features")
    with pytest.raises(ValueError, match="shared basis"):
        FusionState.empty(tm.unlearning_layers(), LayerConfig(basis="trained"))


# -- devices ------------------------------------------------------------------------------------


def test_statistics_are_float64_cpu_sums_and_the_same_with_the_cpu_named(
    records: list[Record],
) -> None:
    # given one shared-basis layer, on a model left where it was and on a copy placed by name
    tm = _model(records)
    _shared_layer(tm, "a", seed=1)
    placed = tm.copy().to("cpu")
    _shared_layer(placed, "a", seed=1)
    chunk = records[:12]
    for space in ("hidden", "features"):
        # when the statistics are captured
        plain = capture_statistics(tm, "a", chunk, batch_size=8, space=space)
        moved = capture_statistics(placed, "a", chunk, batch_size=8, space=space)
        # then they are float64 CPU sums, equal to the last bit
        for p in plain.positions:
            for tensor in (moved.gram[p], moved.cross[p]):
                assert tensor.dtype == torch.float64 and tensor.device.type == "cpu"
            assert torch.equal(moved.gram[p], plain.gram[p])
            assert torch.equal(moved.cross[p], plain.cross[p])
            assert moved.target_sq[p] == plain.target_sq[p]


def test_fused_layers_are_hosted_on_the_models_device(records: list[Record]) -> None:
    # given fused maps solved on the CPU, and a model on another device (meta: no data)
    tm = _model(records)
    _shared_layer(tm, "a", seed=1)
    state = _state_of(tm, {"a": records[:8]})
    tm.to(torch.device("meta"))
    layers = tm.unlearning_layers()
    d = layers.d_model
    # when both kinds of fused layer are added
    add_shared_fused_layer(layers, "shared", state.config, fuse_shared(state, "sum"))
    add_fused_layer(layers, "linear", {p: torch.zeros(d + 1, d) for p in layers.position_names})
    # then their weights sit where the model is
    for name in ("a", "shared", "linear"):
        tensors = [*layers.layers[name].parameters(), *layers.layers[name].buffers()]
        assert {t.device.type for t in tensors} == {"meta"}
