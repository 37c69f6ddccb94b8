"""Malformed files for `eul requests submit --file` (benchmarks.hostile_inputs): each is
refused in one line (exit 2) that does not repeat it, writing nothing, or accepted as the
requests it holds. The file of 10^5 requests (seconds) is left to `make reliability`."""

from __future__ import annotations

import pytest

from benchmarks.hostile_inputs import MALFORMED_FILES, try_file

CASES = [
    pytest.param(name, marks=pytest.mark.reliability) if spec.slow else name
    for name, spec in MALFORMED_FILES.items()
]


@pytest.mark.parametrize("name", CASES)
def test_a_malformed_request_file_is_refused_or_taken_as_it_is(tmp_path, monkeypatch, name):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("EUL_LOG_URL", raising=False)
    outcome = try_file(name, MALFORMED_FILES[name], tmp_path / "case")
    assert outcome.handled, outcome.note
