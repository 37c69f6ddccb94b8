"""SIGKILL, from inside at each drill point and from outside mid training, as fusion starts
and at random times: after each kill the stores hold a consistent state, and a rerun
finishes the batch with every request purged once (`benchmarks.fault_scenarios`)."""

from __future__ import annotations

import pytest
from fault_checks import record, survived

from benchmarks import fault_scenarios as scenarios

pytestmark = [pytest.mark.reliability, pytest.mark.slow]


def test_a_batch_killed_at_each_drill_point_in_turn_finishes_on_the_rerun(fault_setup):
    survived(record("drill-kills", scenarios.kills_at_drill_points(fault_setup)))


def test_a_batch_killed_mid_work_or_at_random_times_finishes_on_the_rerun(fault_setup):
    survived(record("work-kills", scenarios.kills_during_work(fault_setup)))
