"""Attacks that try to bring forgotten rows back out of a served model.

A deletion is only as good as what survives someone working on the deployed weights:

- layer removal: whoever holds the base weights serves the base alone, without the
  unlearning layers; that is the model trained on the deleted rows, which is why the base
  must itself be erased by the erasure deadline.
- int8 / int4: the served model compressed (weight-only quantisation), the way models are
  shrunk for serving; a layer whose small deltas round away stops forgetting.
- relearning: a short fine-tune by whoever holds the weights, on retained rows or on unseen
  rows like the forgotten ones, which can undo an unlearning that only hides the answer.

Each attack takes a `TextModel` and returns a new, attacked one (the input is left as it
is). `run_attacks` measures every attack on the original, the oracle and EUL, and holds each
model to the oracle under the same attack: a model that never saw the rows is the target
whatever is done to it.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn

from eul.data.records import Record
from eul.evaluate.metrics import EvalSets, evaluate_with_scores, priv_leak
from eul.layers import UnlearningModel
from eul.model.text_model import TextModel
from eul.model.training import seed_everything

ATTACKS = ("none", "layer_removal", "int8", "int4", "relearn_retained", "relearn_similar")
# The attacks EUL is held to the oracle under (layer removal is reported as it is: it
# serves the base, which is the original model).
TARGETED = ("int8", "int4", "relearn_retained", "relearn_similar")
# The benchmark's tolerance on forget metrics: 5 points from the oracle's.
MEMORISED_GAP = 0.05


@dataclass(frozen=True)
class AttackConfig:
    """The attacks' knobs.

    Relearning runs AdamW at a constant 5e-4 on every weight: 2.5 times the fine-tune
    baseline's 2e-4, since an attacker has 20 steps (not two epochs) to move the model, and
    half the 1e-3 that trained the base, so that it stays a fine-tune and not a retraining.
    `relearn_rows` rows are drawn for each relearning set and cycled through; of the
    held-out rows at most half, so that membership is still measured against the others.
    """

    group_size: int = 64
    relearn_steps: int = 20
    relearn_batch: int = 16
    relearn_lr: float = 5e-4
    relearn_weight_decay: float = 0.01
    relearn_rows: int = 128
    seed: int = 0

    def __post_init__(self) -> None:
        if self.group_size < 1 or self.relearn_steps < 1 or self.relearn_batch < 1:
            raise ValueError("group_size, relearn_steps and relearn_batch must be at least 1")
        if self.relearn_rows < 1:
            raise ValueError(f"relearn_rows must be at least 1, got {self.relearn_rows}")


# -- the served model ----------------------------------------------------------------------


def hosted_layers(tm: TextModel) -> UnlearningModel | None:
    """The unlearning layers a model hosts, or None; unlike `tm.unlearning_layers()` this
    never attaches them (which would freeze the base of a model that has none)."""
    return tm._layers


def copy_served(tm: TextModel) -> TextModel:
    """An independent copy of what `tm` serves: its base and its unlearning layers, with the
    same ones active (`TextModel.copy` copies the base alone)."""
    clone = tm.copy()
    layers = hosted_layers(tm)
    if layers is None:
        return clone
    target = clone.unlearning_layers()
    for name, layer in layers.layers.items():
        target.add_layer(name, layers.configs[name])
        target.layers[name].load_state_dict(layer.state_dict())
    target.set_active(list(layers.active))
    return clone


def served_modules(tm: TextModel) -> list[nn.Module]:
    """The base model and, if any, its unlearning layers: every weight the model serves."""
    layers = hosted_layers(tm)
    return [tm.model] if layers is None else [tm.model, layers.layers]


def served_parameters(tm: TextModel) -> list[nn.Parameter]:
    """Every parameter of the served model once (tied embeddings counted once)."""
    seen: dict[int, nn.Parameter] = {}
    for module in served_modules(tm):
        for p in module.parameters():
            seen.setdefault(id(p), p)
    return list(seen.values())


# -- layer removal -------------------------------------------------------------------------


def layer_removal(tm: TextModel) -> TextModel:
    """The base alone: `tm` with every unlearning layer removed. For a model without layers
    (the original, the oracle) this is a copy of the model itself."""
    attacked = copy_served(tm)
    layers = hosted_layers(attacked)
    for name in list(layers.layers) if layers is not None else []:
        layers.remove_layer(name)
    return attacked


def layer_count(tm: TextModel) -> int:
    layers = hosted_layers(tm)
    return 0 if layers is None else len(layers.layers)


# -- quantisation --------------------------------------------------------------------------


def quantise_tensor(weight: torch.Tensor, bits: int, group_size: int = 64) -> torch.Tensor:
    """Round-to-nearest symmetric quantisation to `bits`, dequantised back to floats.

    The last dimension (a linear layer's input, an embedding's features) is cut into groups
    of `group_size` consecutive weights (the last group may be shorter); each group has the
    step max|w| / (2^(bits-1) - 1) and its weights become whole multiples of it in
    [-(2^(bits-1) - 1), 2^(bits-1) - 1] steps, so none moves by more than half a step.
    """
    if bits < 2:
        raise ValueError(f"bits must be at least 2, got {bits}")
    qmax = 2 ** (bits - 1) - 1
    rows = weight.detach().float().reshape(-1, weight.shape[-1])
    width = rows.shape[1]
    padded = nn.functional.pad(rows, (0, (-width) % group_size))  # zeros leave max|w| as is
    groups = padded.reshape(rows.shape[0], -1, group_size)
    step = groups.abs().amax(dim=-1, keepdim=True) / qmax
    step = torch.where(step > 0, step, torch.ones_like(step))  # an all-zero group stays zero
    quantised = torch.clamp(torch.round(groups / step), -qmax, qmax) * step
    return quantised.reshape(rows.shape[0], -1)[:, :width].reshape(weight.shape).to(weight.dtype)


def quantised_weights(tm: TextModel) -> list[nn.Parameter]:
    """The weights quantisation rounds: every `nn.Linear` weight and every `nn.Embedding`
    table of the base and the layers (T5's tied lm_head is its shared embedding, rounded
    once; the relative position tables are embeddings too). Biases and norm scales stay
    float, as in weight-only int8 and 4-bit serving."""
    seen: dict[int, nn.Parameter] = {}
    for module in served_modules(tm):
        for sub in module.modules():
            if isinstance(sub, (nn.Linear, nn.Embedding)):
                seen.setdefault(id(sub.weight), sub.weight)
    return list(seen.values())


def quantise(tm: TextModel, bits: int, group_size: int = 64) -> TextModel:
    """The served model (base and layers) with every weight of `quantised_weights` rounded to
    `bits` per group of `group_size` and dequantised (simulated quantisation: the rounding
    is what changes the outputs)."""
    attacked = copy_served(tm)
    with torch.no_grad():
        for weight in quantised_weights(attacked):
            weight.copy_(quantise_tensor(weight, bits, group_size))
    return attacked


# -- relearning ----------------------------------------------------------------------------


def relearn(tm: TextModel, rows: Sequence[Record], config: AttackConfig) -> TextModel:
    """`config.relearn_steps` AdamW steps of the task loss on `rows` (cycled, reshuffled each
    pass, seeded), training every parameter of the served model: base, layers and the
    layers' fixed basis alike, as anyone holding the weights can."""
    if not rows:
        raise ValueError("relearning needs at least one row")
    attacked = copy_served(tm)
    params = served_parameters(attacked)
    for p in params:
        p.requires_grad_(True)
    seed_everything(config.seed)
    optimizer = torch.optim.AdamW(
        params, lr=config.relearn_lr, weight_decay=config.relearn_weight_decay
    )
    for module in served_modules(attacked):
        module.train()
    batches = _cycled_batches(attacked, rows, config.relearn_batch, config.seed)
    for _ in range(config.relearn_steps):
        loss = attacked.task_loss(next(batches))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
    for module in served_modules(attacked):
        module.eval()
    return attacked


def _cycled_batches(
    tm: TextModel, rows: Sequence[Record], batch_size: int, seed: int
) -> Iterator[dict[str, torch.Tensor]]:
    epoch = 0
    while True:
        yield from tm.record_batches(rows, batch_size, shuffle=True, seed=seed + epoch)
        epoch += 1


def retained_sample(
    retained: Sequence[Record], forget: Sequence[Record], n: int, seed: int
) -> list[Record]:
    """n retained rows drawn at random (seeded), never a forget row."""
    forget_ids = {r.record_id for r in forget}
    pool = [r for r in retained if r.record_id not in forget_ids]
    return random.Random(seed).sample(pool, min(n, len(pool)))


def similar_rows(
    tm: TextModel, heldout: Sequence[Record], forget: Sequence[Record], n: int
) -> list[Record]:
    """The n held-out rows most like the forget rows: the highest Jaccard overlap of their
    token set (the model's tokenizer, special tokens left out) with any forget row's. Rows
    sharing a forget row's id or text are never chosen."""
    special = set(tm.tokenizer.all_special_ids)

    def tokens(text: str) -> frozenset[int]:
        return frozenset(tm.tokenizer(text, add_special_tokens=False)["input_ids"]) - special

    forget_ids = {r.record_id for r in forget}
    forget_texts = {r.text for r in forget}
    forget_sets = [tokens(r.text) for r in forget]

    def similarity(record: Record) -> float:
        mine = tokens(record.text)
        return max((len(mine & f) / len(mine | f) for f in forget_sets if mine | f), default=0.0)

    candidates = [
        r for r in heldout if r.record_id not in forget_ids and r.text not in forget_texts
    ]
    return sorted(candidates, key=similarity, reverse=True)[:n]


# -- measuring -----------------------------------------------------------------------------


def attack_functions(
    sets: EvalSets, tokenizer_model: TextModel, config: AttackConfig
) -> dict[str, tuple[Callable[[TextModel], TextModel], EvalSets]]:
    """Each attack by name, with the sets it is measured on: relearning on similar held-out
    rows measures membership against the held-out rows it did not train on (at least half)."""
    retained_rows = retained_sample(sets.retained, sets.forget, config.relearn_rows, config.seed)
    n_similar = min(config.relearn_rows, len(sets.unseen) // 2)
    similar = similar_rows(tokenizer_model, sets.unseen, sets.forget, n_similar)
    used = {r.record_id for r in similar}
    unseen_left = replace(sets, unseen=[r for r in sets.unseen if r.record_id not in used])
    return {
        "none": (copy_served, sets),
        "layer_removal": (layer_removal, sets),
        "int8": (lambda tm: quantise(tm, 8, config.group_size), sets),
        "int4": (lambda tm: quantise(tm, 4, config.group_size), sets),
        "relearn_retained": (lambda tm: relearn(tm, retained_rows, config), sets),
        "relearn_similar": (lambda tm: relearn(tm, similar, config), unseen_left),
    }


def run_attacks(
    models: Mapping[str, TextModel],
    sets: EvalSets,
    config: AttackConfig | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, dict[str, dict[str, Any]]]:
    """Every attack on every model: {attack: {model: metrics}}, with `evaluate_with_scores`'
    metrics (KS p against the attacked oracle's forget losses), PrivLeak against the oracle
    under the same attack, and `applies`: False where the attack had nothing to act on
    (layer removal of a model without layers: the figures are the model's own).

    `models` must hold an "oracle"; the input models are left as they are.
    """
    if "oracle" not in models:
        raise ValueError("run_attacks needs the oracle: every model is held to it")
    config = config or AttackConfig()
    attacks = attack_functions(sets, models["oracle"], config)
    report: dict[str, dict[str, dict[str, Any]]] = {}
    for attack, (apply, eval_sets) in attacks.items():
        oracle_row, oracle_losses = _measure(apply(models["oracle"]), eval_sets, None)
        rows: dict[str, dict[str, Any]] = {}
        for name, model in models.items():
            if name == "oracle":
                row = oracle_row
            else:
                row, _ = _measure(apply(model), eval_sets, oracle_losses)
            row["privleak"] = priv_leak(row["mia_auc"], oracle_row["mia_auc"])
            row["applies"] = attack != "layer_removal" or layer_count(model) > 0
            rows[name] = row
        report[attack] = rows
        log(f"attack {attack} measured")
    return report


def _measure(
    attacked: TextModel, sets: EvalSets, oracle_losses: list[float] | None
) -> tuple[dict[str, Any], list[float]]:
    metrics, losses, _ = evaluate_with_scores(attacked, sets, oracle_forget_losses=oracle_losses)
    if oracle_losses is None:
        metrics["ks_p"] = 1.0
    return dict(metrics), losses


def attack_targets(attacks: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> list[dict]:
    """After each of int8, 4-bit and relearning, EUL's flipped-label (memorised) accuracy
    within 5 points of the oracle's under the same attack; layer removal has no target."""
    rows = []
    for attack in TARGETED:
        if attack not in attacks:
            continue
        eul, oracle = attacks[attack]["eul"], attacks[attack]["oracle"]
        gap = eul["forget_memorised_acc"] - oracle["forget_memorised_acc"]
        rows.append(
            {
                "target": f"after {attack}: memorised acc within 5 pts of oracle's",
                "value": round(gap, 4),
                "met": bool(abs(gap) <= MEMORISED_GAP),
            }
        )
    return rows


ATTACK_COLUMNS = (
    ("test_acc", "test", "{:.3f}"),
    ("forget_acc", "forget", "{:.3f}"),
    ("forget_memorised_acc", "memorised", "{:.3f}"),
    ("mia_auc", "MIA AUC", "{:.3f}"),
    ("privleak", "PrivLeak", "{:+.3f}"),
)


def format_attacks(report: Mapping[str, Any]) -> str:
    """The attacks as a Markdown table (PrivLeak against the oracle under the same attack),
    what each attack left as it was, and the attack targets."""
    header = ["attack", "model"] + [title for _, title, _ in ATTACK_COLUMNS]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    untouched = []
    for attack, rows in report["attacks"].items():
        for name, row in rows.items():
            cells = [attack, name]
            for key, _, fmt in ATTACK_COLUMNS:
                value = row.get(key)
                missing = value is None or (isinstance(value, float) and math.isnan(value))
                cells.append("-" if missing else fmt.format(value))
            lines.append("| " + " | ".join(cells) + " |")
            if not row.get("applies", True):
                untouched.append(f"{attack}: {name}")
    lines.append("")
    for item in untouched:
        lines.append(f"- {item} hosts no unlearning layer: the model itself, not attacked")
    for target in report.get("attack_targets", []):
        mark = "met" if target["met"] else "MISSED"
        lines.append(f"- {target['target']}: {target['value']} ({mark})")
    return "\n".join(lines)
