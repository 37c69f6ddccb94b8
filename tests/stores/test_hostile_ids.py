"""Hostile ids (benchmarks.hostile_inputs): refused in one line that does not repeat them,
the log left empty; odd but well-formed ones stored as given, with safe file names."""

from __future__ import annotations

import pytest

from benchmarks.hostile_inputs import CASE_PAIR, HOSTILE_IDS, try_id, try_valid_ids
from eul.stores.log.schema import LedgerError, check_id, shown_id


@pytest.mark.parametrize("name", sorted(HOSTILE_IDS))
def test_a_hostile_id_is_refused_without_being_echoed(tmp_path, name) -> None:
    outcome = try_id(name, HOSTILE_IDS[name], tmp_path)
    assert outcome.handled, outcome.note


def test_odd_valid_ids_keep_their_names_and_one_differing_only_in_case_is_refused(tmp_path) -> None:
    outcomes = try_valid_ids(tmp_path)
    assert [o.note for o in outcomes if not o.handled] == []
    assert outcomes[-1].name == "ids differing in case only" and len(CASE_PAIR) == 2


def test_a_bad_id_is_shown_as_its_start_and_length() -> None:
    secret = "jane.doe@example.org is not an id\n"
    with pytest.raises(LedgerError) as raised:
        check_id(secret, "subject id")
    assert "'jane'... (34 characters)" in str(raised.value)
    assert "example.org" not in str(raised.value)
    assert shown_id(7) == "(a int, not text)"
