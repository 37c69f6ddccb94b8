"""Stores that fail mid batch: the MLflow server and the S3 endpoint killed and started
again, MLflow's artifact folder full. The batch absorbs the fault or fails without marking
what it did not store; the rerun finishes it (`benchmarks.fault_scenarios`)."""

from __future__ import annotations

import pytest
from fault_checks import record, survived

from benchmarks import fault_scenarios as scenarios

pytestmark = [pytest.mark.reliability, pytest.mark.slow]


def test_the_mlflow_server_stopped_mid_batch_and_restarted(fault_setup):
    survived(record("mlflow-outage", scenarios.mlflow_server_outage(fault_setup)))


def test_the_s3_endpoint_stopped_mid_batch_and_restarted(fault_setup):
    row = record("s3-outage", scenarios.s3_outage(fault_setup))
    if row.note.startswith("skipped"):
        pytest.skip(row.note)
    survived(row)


def test_a_full_artifact_disk_fails_the_batch_and_the_rerun_finishes_it(fault_setup):
    row = record("full-disk", scenarios.full_disk(fault_setup))
    # (a tmpfs where it can be mounted, else RLIMIT_FSIZE: the row names which)
    assert row.mechanism
    survived(row)
