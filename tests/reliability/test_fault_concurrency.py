"""Concurrency and load: two batches racing for production, 200 requests in one batch
(`benchmarks.fault_scenarios`). Several processes submitting at once is
tests/stores/test_ledger.py's, and a row of the quick table."""

from __future__ import annotations

import pytest
from fault_checks import record, survived

from benchmarks import fault_scenarios as scenarios

pytestmark = [pytest.mark.reliability, pytest.mark.slow]


def test_two_batches_racing_for_production_drop_no_request(fault_setup):
    row = record("race", scenarios.racing_batches(fault_setup))
    # both sets of requests end honoured: both batches finished, or one was refused by the
    # production compare-and-set and the rerun finished it; none dropped
    assert row.lost == 0 and row.processed == row.submitted == 4, row.problems
    if row.duplicated:
        pytest.xfail(
            "both batches build the same batch (same key) at once: it is registered twice "
            "and a layer trained and logged twice; only the production compare-and-set "
            "refuses the loser (the eul-model concurrency limit prevents the race)"
        )
    survived(row)


def test_two_hundred_requests_in_one_batch(fault_setup):
    survived(record("many-requests", scenarios.many_requests(fault_setup)))
