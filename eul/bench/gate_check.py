"""The nightly gates on the benchmark's models: do they pass the oracle, and fail a model
that still knows the forget rows (the original) and one that over-forgot them?

Each model is gated as a candidate against the original as production, with the pipeline's
own code (`eul.pipeline.gates`, bands from `eul.evaluate.bands`) and default limits except
the utility drop, which the benchmark's targets hold on their own. The over-forgotten model
is made on purpose: the original taught the opposite answer of every forget row, which is
what a push without a floor ends at (sure that each row is wrong).
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence

from eul.bench.forget_sets import flip_labels
from eul.data.records import LABEL_WORDS, Record
from eul.evaluate.bands import BandConfig, reference_bands, reference_probe
from eul.evaluate.metrics import EvalSets, evaluate_with_scores
from eul.model.text_model import TextModel
from eul.model.training import TrainConfig, train_full
from eul.params import GateParams
from eul.pipeline.gates import check_gates, failure_reasons, passed

# What each model should get from the gates.
EXPECTED = {"original": False, "oracle": True, "over_forgotten": False}
OVER_FORGOTTEN_REPEATS = 4
OVER_FORGOTTEN_RETAINED = 400


def over_forgotten(
    original: TextModel, forget: Sequence[Record], retained: Sequence[Record], seed: int
) -> TextModel:
    """A copy of `original` fine-tuned to give every forget row the other answer (with a
    sample of retained rows, so that it keeps its task)."""
    flipped = flip_labels([r for r in forget if r.label is not None], 1.0, random.Random(seed))
    sample = random.Random(seed).sample(list(retained), min(OVER_FORGOTTEN_RETAINED, len(retained)))
    model = original.copy()
    rows = flipped * OVER_FORGOTTEN_REPEATS + sample
    train_full(model, rows, TrainConfig(epochs=3, lr=1e-3, seed=seed), "over-forget", False)
    return model


def gate_models(
    models: Mapping[str, TextModel],
    sets: EvalSets,
    retained: Sequence[Record],
    config: BandConfig | None = None,
) -> dict[str, dict]:
    """Each model gated as a candidate against `models["original"]` as production: whether it
    passed, why not, and the bands it was held to."""
    params = GateParams(max_test_acc_drop=1.0)
    measured = {name: evaluate_with_scores(tm, sets) for name, tm in models.items()}
    production = measured["original"][0]
    # one probe for every candidate: it reads the retained and held-out rows, not the model
    probe = reference_probe(models["original"].tokenizer, retained, sets.unseen, len(LABEL_WORDS))
    found: dict[str, dict] = {}
    for name, tm in models.items():
        metrics, _, scores = measured[name]
        bands = reference_bands(
            tm, sets.forget, sets.unseen, retained, scores["unseen"]["loss"], LABEL_WORDS,
            config, probe,
        )  # fmt: skip
        gates = check_gates(metrics, production, len(sets.forget), params, bands)
        found[name] = {
            "passed": passed(gates),
            "expected": EXPECTED.get(name),
            "reasons": failure_reasons(gates),
            "forget_acc": metrics["forget_acc"],
            "mia_auc": metrics["mia_auc"],
            "bands": bands.to_json() if bands else None,
        }
    return found


def format_gate_check(found: Mapping[str, Mapping]) -> str:
    """The gate verdicts as a Markdown table (value and band of each two-sided gate)."""
    lines = [
        "| model | forget acc (band) | MIA AUC (band) | gates | expected |",
        "|---|---|---|---|---|",
    ]
    for name, row in found.items():
        bands = row["bands"] or {}
        cells = [name]
        for key in ("forget_acc", "mia_auc"):
            band = bands.get(key)
            shown = f"{row[key]:.3f}"
            if band:
                shown += f" ({band['low']:.3f}-{band['high']:.3f})"
            cells.append(shown)
        cells.append("pass" if row["passed"] else "fail")
        expected = row.get("expected")
        cells.append("-" if expected is None else ("pass" if expected else "fail"))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
