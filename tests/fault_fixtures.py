"""What the fault scenarios (tests/reliability/) share: the built flow project to copy
(tests/conftest.py's `flow_template`), a Prefect server of their own for the batches they
run as subprocesses, and the rows they write for the reliability table
(`$EUL_RELIABILITY_ROWS`, which `make reliability` sets so that `benchmarks.reliability
--rows` reuses them)."""

from __future__ import annotations

import os

import pytest

from benchmarks import fault_harness
from benchmarks.fault_scenarios import Setup


@pytest.fixture(scope="session")
def fault_prefect(tmp_path_factory):
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    with fault_harness.prefect_server(tmp_path_factory.mktemp("fault-prefect")) as api:
        yield api


@pytest.fixture
def fault_setup(tmp_path, flow_template, fault_prefect) -> Setup:
    return Setup(flow_template, tmp_path, fault_prefect)
