"""The nightly gates on real trained models: the oracle passes, the original (still knows the
rows) and an over-forgotten model fail, on the embedded data and on SST-2."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import TINY_SPEC

from eul.bench.classification import BenchConfig, prepare
from eul.bench.gate_check import format_gate_check, gate_models, over_forgotten
from eul.data.records import LABEL_WORDS
from eul.evaluate.metrics import EvalSets
from eul.methods import ForgetTask, get_method
from eul.model.text_model import TextModel
from eul.model.training import TrainConfig, train_full

SST2 = Path(__file__).resolve().parents[3] / "shared" / "data" / "sst2"


def _gated(config: BenchConfig) -> dict[str, dict]:
    data = prepare(config)
    # the tiny model's recipe (tests/conftest.py): long enough to memorise the flipped labels
    train = TrainConfig(epochs=config.train_epochs, batch_size=32, lr=3e-3, seed=config.seed)
    original = TextModel.create([r.text for r in data.train] + list(LABEL_WORDS), config.spec)
    train_full(original, data.train, train, "original", progress=False)
    task = ForgetTask(forget=data.forget, retained=data.retained, heldout=data.heldout)
    oracle = get_method("retrain", train=train).run(original, task, progress=False)
    sets = EvalSets(data.test, data.retained, data.forget, data.heldout)
    models = {
        "original": original,
        "oracle": oracle.model,
        "over_forgotten": over_forgotten(original, data.forget, data.retained, config.seed),
    }
    return gate_models(models, sets, data.retained)


def _assert_verdicts(found: dict[str, dict]) -> None:
    table = format_gate_check(found)
    assert found["oracle"]["passed"], table
    assert not found["original"]["passed"], table
    assert any("not forgotten" in reason for reason in found["original"]["reasons"]), table
    assert not found["over_forgotten"]["passed"], table
    assert any("over-forgotten" in reason for reason in found["over_forgotten"]["reasons"]), table


def test_gates_pass_the_oracle_and_fail_both_sides_on_the_embedded_data() -> None:
    config = BenchConfig(n_subjects=150, train_epochs=10, forget_share=0.05, spec=TINY_SPEC)
    _assert_verdicts(_gated(config))


@pytest.mark.skipif(not SST2.is_dir(), reason="SST-2 is not in ../shared/data")
def test_gates_pass_the_oracle_and_fail_both_sides_on_sst2() -> None:
    config = BenchConfig(
        data=str(SST2), sst2_rows=1500, train_epochs=15, forget_share=0.02, spec=TINY_SPEC
    )
    _assert_verdicts(_gated(config))
