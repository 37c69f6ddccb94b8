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
    # both sets of requests end honoured, one batch after the other through the eul-model
    # slot (or one refused by the production compare-and-set and rerun); none dropped, no
    # batch registered twice
    assert row.lost == 0 and row.processed == row.submitted == 4, row.problems
    survived(row)


def test_two_hundred_requests_in_one_batch(fault_setup):
    survived(record("many-requests", scenarios.many_requests(fault_setup)))
