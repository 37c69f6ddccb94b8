"""Bad work inside a batch: training that goes to NaN is refused (nothing fused, registered
or deployed), a corrupted layer file is refused by name; the batches after them finish
(`benchmarks.fault_scenarios`)."""

from __future__ import annotations

import pytest
from fault_checks import record, survived

from benchmarks import fault_scenarios as scenarios

pytestmark = [pytest.mark.reliability, pytest.mark.slow]


def test_a_diverging_training_is_refused_and_the_next_batch_finishes(fault_setup):
    survived(record("nan", scenarios.diverging_training(fault_setup)))


def test_a_corrupted_layer_is_refused_and_rebuilt(fault_setup):
    row = record("corrupt-layer", scenarios.corrupted_layer(fault_setup))
    # the corrupted layer was refused, nothing registered from it, and every request ends
    # purged once the folder is deleted as the error says
    assert row.injected == 1 and row.lost == 0 and row.processed == row.submitted, row.problems
    assert "does not match its sha256" in row.note
    survived(row)
