"""The reliability table's script (`benchmarks.reliability`): its quick version (the log's
faults and every bad input, seconds) runs here; the batch scenarios run under
`make reliability`."""

from __future__ import annotations

import json

import pytest

from benchmarks.fault_scenarios import Row
from benchmarks.reliability import format_table, main, passed, totals


def test_the_quick_table_counts_faults_requests_and_bad_inputs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "reliability-quick.json"
    assert main(["--quick", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["benchmark"] == "reliability" and result["settings"]["quick"] is True
    figures = result["figures"]
    assert [r["scenario"] for r in figures["rows"]] == ["submitters", "killed-writer"]
    t = figures["totals"]
    assert t["injected"] == t["survived"] == 2 and t["lost"] == t["duplicated"] == 0
    assert t["bad_inputs"] == t["bad_inputs_handled"] >= 50
    table = out.with_suffix(".md").read_text().strip()
    assert table == format_table(figures)
    assert table.startswith("Faults injected 2, survived 2. Requests submitted")
    assert "| request file |" in table and "NOT HANDLED" not in table
    assert not (tmp_path / "state").exists()  # the bad input ran in folders of its own


def test_help_names_the_outputs():
    with pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0


def _result(rows: list[Row]) -> dict:
    return {"rows": [r.to_json() for r in rows], "inputs": [], "totals": totals(rows, [])}


def test_a_lost_or_duplicated_request_or_an_unsurvived_fault_fails_the_table():
    fine = Row("f", "m", injected=1, survived=1, submitted=2, processed=2, scenario="nan")
    twice = Row("race", "m", injected=1, survived=0, submitted=4, processed=4, duplicated=1,
                problems=["batch abc registered 2 versions [2, 1]"], scenario="race")  # fmt: skip
    lost = Row("f", "m", injected=1, survived=0, submitted=2, processed=1, lost=1,
               scenario="drill-kills")  # fmt: skip
    unsurvived = Row("f", "m", injected=2, survived=1, submitted=2, processed=2,
                     scenario="mlflow-outage")  # fmt: skip
    assert passed(_result([fine]))
    for bad in (twice, lost, unsurvived):
        assert not passed(_result([fine, bad])), bad
    assert "| race | m | 1 | 0 | 4 | 4 | 0 | 1 |" in format_table(_result([twice]))
