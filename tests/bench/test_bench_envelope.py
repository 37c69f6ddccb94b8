"""The result envelope every benchmark writes: what ran, from which commit, on which machine."""

from __future__ import annotations

import json
import math

from eul.bench.envelope import KEYS, envelope, machine, run_record, write_result
from eul.runtime.source import git_commit


def test_a_result_is_enveloped_with_commit_machine_and_settings(tmp_path) -> None:
    figures = {"runs": [{"seconds": 0.5, "spread": math.nan}], "target": "fast"}
    written = write_result(
        tmp_path / "out" / "thing-bench.json",
        "thing",
        figures,
        "| a | b |\n|---|---|\n| 1 | 2 |",
        {"seed": 3, "sizes": (1, 2)},
    )
    assert [p.name for p in written] == ["thing-bench.json", "thing-bench.md"]
    saved = json.loads(written[0].read_text())
    assert tuple(saved) == KEYS
    assert saved["benchmark"] == "thing"
    # this checkout is a git work tree: its commit is a full hash
    assert len(saved["commit"]) == 40 and int(saved["commit"], 16) >= 0
    assert saved["settings"] == {"seed": 3, "sizes": [1, 2]}
    # the figures as given, NaN written as null
    assert saved["figures"] == {"runs": [{"seconds": 0.5, "spread": None}], "target": "fast"}
    assert written[1].read_text() == "| a | b |\n|---|---|\n| 1 | 2 |\n"


def test_the_machine_says_cores_threads_versions_and_device() -> None:
    found = machine("cuda")
    assert set(found) == {"cores", "threads", "platform", "python", "torch", "device"}
    assert found["device"] == "cuda"
    assert found["cores"] >= 1 and found["threads"] >= 1
    assert all(found[key] for key in ("platform", "python", "torch"))
    assert envelope("x", {})["machine"]["device"] == "cpu"


def test_the_commit_is_unknown_outside_a_checkout(tmp_path) -> None:
    assert git_commit(tmp_path) == "unknown"
    assert git_commit(tmp_path / "absent") == "unknown"


def test_a_run_record_carries_what_ran_until_the_result_is_written() -> None:
    record = run_record("sequential", {"requests": 3}, "cpu")
    assert record == {"benchmark": "sequential", "settings": {"requests": 3}, "device": "cpu"}
    json.dumps(record)
