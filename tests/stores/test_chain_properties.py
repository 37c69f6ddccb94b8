"""Properties of the hash chain and the current-state table, over random logs: any sequence
of legal marks verifies; any one-character edit of an entry's details or hash, and any edit
of a field of a current-state row, is found by verify()."""

from __future__ import annotations

import json
import os
from typing import Any

import pytest
from log_evidence import anchor, purge_evidence

from eul.stores.log.schema import STATUSES
from eul.stores.log.store import Ledger

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import assume, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

KEY = b"k" * 32
RECORDS = {"s0": ["r0a", "r0b"], "s1": ["r1a"], "s2": ["r2a", "r2b", "r2c"]}
NEXT = {
    "validated": "unlearned",
    "unlearned": "fused",
    "fused": "deployed",
    "deployed": "purged",
    "purged": "erased",
}
# The state-row fields verify() recomputes (the note is display text, not compared).
FIELDS = (
    "request_id",
    "subject_id",
    "record_ids",
    "matched_ids",
    "status",
    "submitted_at",
    "deadline",
    "updated_at",
    "first_seq",
    "last_seq",
)
FAST = settings(max_examples=50, deadline=None)

specs = st.one_of(
    st.sampled_from([*RECORDS, "nobody"]).map(lambda s: {"subject_id": s}),
    st.lists(st.sampled_from(["r0a", "r1a", "r2b", "zz"]), min_size=1, max_size=3).map(
        lambda ids: {"record_ids": ids}
    ),
)


@st.composite
def histories(draw: Any) -> tuple[list[dict[str, Any]], list[int]]:
    """Requests, and the order of their moves: request i's first move submits it, each
    later one takes it a step further (validating the log when it is received), as far as
    a status drawn for it."""
    requests = draw(st.lists(specs, min_size=1, max_size=4))
    steps = draw(st.lists(st.integers(0, len(NEXT) + 1), min_size=len(requests),
                          max_size=len(requests)))  # fmt: skip
    moves = [i for i, n in enumerate(steps) for _ in range(n + 1)]
    return requests, draw(st.permutations(moves))


def _details(ledger: Ledger, request_id: str, status: str) -> dict[str, Any]:
    matched = ledger.get(request_id).state.matched_ids or []
    if status == "unlearned":
        return {"layer": f"layers/{request_id}", "rows": len(matched)}
    if status == "fused":
        return {"model_version": 2, "batch_id": "nightly-1"}
    if status == "deployed":
        return {"model_version": 2, **anchor(ledger)}
    if status == "purged":
        return {"evidence": purge_evidence(len(matched))}
    return {"evidence": {"compaction_version": 3}}


def build(history: tuple[list[dict[str, Any]], list[int]]) -> tuple[Ledger, dict[str, str]]:
    """An in-memory log that went through the history; and each request's status."""
    requests, moves = history
    ledger = Ledger("sqlite://", params_path=os.devnull + ".absent", evidence_key=KEY)
    statuses: dict[str, str] = {}
    for move in moves:
        request_id = f"q{move}"
        if request_id not in statuses:
            ledger.submit(request_id=request_id, **requests[move])
            statuses[request_id] = "received"
        elif statuses[request_id] == "received":
            report = ledger.validate(RECORDS)
            statuses.update({r: "validated" for r in report.validated})
            statuses.update({r: "rejected" for r in report.rejected})
        elif statuses[request_id] in NEXT:
            status = NEXT[statuses[request_id]]
            ledger.mark(request_id, status, **_details(ledger, request_id, status))
            statuses[request_id] = status
    return ledger, statuses


def _execute(ledger: Ledger, sql: str, *args: Any) -> None:
    with ledger.engine.begin() as conn:
        assert conn.exec_driver_sql(sql, args).rowcount == 1


def _one_char_edit(text: str, data: Any) -> str:
    position = data.draw(st.integers(0, len(text) - 1))
    char = data.draw(st.characters(min_codepoint=32, max_codepoint=126))
    assume(char != text[position])
    return text[:position] + char + text[position + 1 :]


@FAST
@given(histories())
def test_any_sequence_of_legal_marks_verifies(history) -> None:
    ledger, statuses = build(history)
    with ledger:
        report = ledger.verify()
        assert report.ok, report.reason
        assert (report.head_seq, report.head_hash) == ledger.head()
        assert {s.request_id: s.status for s in ledger.list()} == statuses


@FAST
@given(histories(), st.sampled_from(["details", "hash"]), st.data())
def test_any_one_character_edit_of_an_entry_is_found(history, column, data) -> None:
    ledger, _ = build(history)
    with ledger:
        seq = data.draw(st.integers(1, ledger.head()[0]))
        with ledger.engine.connect() as conn:
            text = conn.exec_driver_sql(
                f"SELECT {column} FROM ledger_entries WHERE seq = ?", (seq,)
            ).scalar_one()
        edited = _one_char_edit(text, data)
        _execute(ledger, f"UPDATE ledger_entries SET {column} = ? WHERE seq = ?", edited, seq)
        report = ledger.verify()
        assert not report.ok
        assert report.broken_seq == seq


def _edited(value: Any, field: str, data: Any) -> Any:
    if field in ("first_seq", "last_seq"):
        return value + data.draw(st.integers(1, 5) | st.integers(-5, -1))
    if field == "status":
        return data.draw(st.sampled_from([s for s in STATUSES if s != value]))
    if value is None:
        return data.draw(st.sampled_from(["s0", "[]", '["r0a"]', "hmac-sha256:" + "0" * 64]))
    edited = _one_char_edit(value, data)
    if field in ("record_ids", "matched_ids"):
        try:  # spacing inside the JSON text changes nothing the log holds
            assume(json.loads(edited) != json.loads(value))
        except ValueError:
            pass
    return edited


@FAST
@given(histories(), st.sampled_from(FIELDS), st.data())
def test_any_edit_of_a_current_state_field_is_found(history, field, data) -> None:
    ledger, statuses = build(history)
    with ledger:
        request_id = data.draw(st.sampled_from(sorted(statuses)))
        with ledger.engine.connect() as conn:
            value = conn.exec_driver_sql(
                f"SELECT {field} FROM ledger_requests WHERE request_id = ?", (request_id,)
            ).scalar_one()
        new = _edited(value, field, data)
        if field == "request_id":
            assume(new not in statuses)
        _execute(
            ledger,
            f"UPDATE ledger_requests SET {field} = ? WHERE request_id = ?",
            new,
            request_id,
        )
        report = ledger.verify()
        assert not report.ok
        assert request_id in report.reason or new in report.reason
