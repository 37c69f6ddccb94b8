"""The fault tests' shared asserts, and the rows they leave for the reliability table
(`$EUL_RELIABILITY_ROWS`, which `make reliability` sets so that `benchmarks.reliability
--rows` reuses them). Their fixtures, `fault_setup` and `fault_prefect`, are in tests/conftest.py
(a conftest.py here would shadow that one for `from conftest import ...`)."""

from __future__ import annotations

import json
import os

from benchmarks.fault_scenarios import Row

ROWS_ENV = "EUL_RELIABILITY_ROWS"


def record(name: str, row: Row) -> Row:
    """Append the scenario's row to $EUL_RELIABILITY_ROWS (when set) for the table."""
    path = os.environ.get(ROWS_ENV)
    if path:
        with open(path, "a", encoding="utf-8") as out:
            out.write(json.dumps({**row.to_json(), "scenario": name}) + "\n")
    return row


def survived(row: Row) -> None:
    """Every injected fault survived, no request lost or duplicated."""
    assert row.injected >= 1, row.note
    assert row.problems == [], row.problems
    assert (row.survived, row.lost, row.duplicated) == (row.injected, 0, 0), row.to_json()
    assert row.processed == row.submitted
