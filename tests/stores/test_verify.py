"""verify() recomputes every current-state row from the entries: a row edited, added or
removed by hand fails it, naming the request and the field but never a subject."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from log_evidence import deploy, purge

from eul.runtime.evidence import keyed
from eul.stores.log.store import Ledger

SUBJECTS = ("Alice.Smith", "Bob.Jones")


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "log.sqlite"


@pytest.fixture
def ledger(db: Path, monkeypatch):
    """A log with a subject request matched to a, b, c (validated), one by record ids
    (deployed), a purged subject request and a rejected one."""
    monkeypatch.delenv("EUL_EVIDENCE_KEY", raising=False)
    with Ledger(f"sqlite:///{db}", params_path=db.parent / "absent.yaml") as log:
        log.submit(subject_id="Alice.Smith", request_id="req-alice")
        log.submit(record_ids=["d", "zz"], request_id="req-ids")
        log.submit(subject_id="Bob.Jones", request_id="req-bob")
        log.submit(subject_id="Nobody", request_id="req-nobody")
        log.validate({"Alice.Smith": ["a", "b", "c"], "Bob.Jones": ["e"], "x": ["d"]})
        deploy(log, "req-ids")
        deploy(log, "req-bob")
        purge(log, "req-bob")
        assert log.verify().ok
        yield log


def _sql(db: Path, statement: str, *args: object) -> None:
    with sqlite3.connect(db) as conn:
        assert conn.execute(statement, args).rowcount == 1


def _fails(ledger: Ledger, request_id: str, *fields: str) -> str:
    report = ledger.verify()
    assert not report.ok
    assert request_id in report.reason
    for field in fields:
        assert field in report.reason
    for subject in (*SUBJECTS, "Mallory"):
        assert subject not in report.reason  # the log's report never names a subject
    return report.reason


def test_a_narrowed_match_and_a_moved_deadline_fail_naming_both_fields(ledger, db) -> None:
    # given a request matched to a, b and c: its state row edited to forget b and c, and
    # its deadline moved out of reach
    _sql(
        db,
        "UPDATE ledger_requests SET matched_ids = ?, deadline = ? WHERE request_id = ?",
        '["a"]',
        "2999-01-01T00:00:00.000000+00:00",
        "req-alice",
    )
    reason = _fails(ledger, "req-alice", "matched_ids", "deadline")
    assert reason.startswith("the current-state table disagrees with the entries for req-alice")
    # and the request's last entry is the link named
    assert ledger.verify().broken_seq == ledger.get("req-alice").history[-1].seq


@pytest.mark.parametrize(
    "request_id, column, value",
    [
        ("req-alice", "matched_ids", '["a", "b"]'),
        ("req-alice", "matched_ids", None),
        ("req-alice", "matched_ids", "not json"),
        ("req-alice", "deadline", "2999-01-01T00:00:00.000000+00:00"),
        ("req-alice", "submitted_at", "2020-01-01T00:00:00.000000+00:00"),
        ("req-alice", "updated_at", "2020-01-01T00:00:00.000000+00:00"),
        ("req-alice", "status", "purged"),
        ("req-alice", "record_ids", '["a"]'),
        ("req-alice", "first_seq", 3),
        ("req-alice", "last_seq", 1),
        ("req-ids", "status", "validated"),
        ("req-ids", "record_ids", '["d"]'),
        ("req-bob", "matched_ids", '["f"]'),
        ("req-bob", "status", "deployed"),
    ],
)
def test_each_edited_field_of_a_state_row_fails_verify(ledger, db, request_id, column, value):
    _sql(db, f"UPDATE ledger_requests SET {column} = ? WHERE request_id = ?", value, request_id)
    _fails(ledger, request_id, column)


@pytest.mark.parametrize(
    "request_id, subject",
    [
        ("req-alice", "Mallory"),  # another person's raw id while in progress
        ("req-alice", None),  # no subject at all: the purge would match nothing
        ("req-alice", "keyed"),  # the keyed value while the raw one is still needed
        ("req-ids", "Mallory"),  # a subject for a request by record ids
        ("req-bob", "Bob.Jones"),  # the raw id again after the purge
        ("req-bob", "keyed-other"),  # another keyed value after the purge
        ("req-nobody", "Mallory"),
    ],
)
def test_an_edited_subject_fails_verify_without_naming_it(ledger, db, request_id, subject):
    key = ledger._read_evidence_key()
    value = {"keyed": keyed(key, "Alice.Smith"), "keyed-other": keyed(key, "Mallory")}.get(
        subject, subject
    )
    _sql(db, "UPDATE ledger_requests SET subject_id = ? WHERE request_id = ?", value, request_id)
    _fails(ledger, request_id, "subject_id")


def test_a_removed_state_row_fails_verify(ledger, db) -> None:
    _sql(db, "DELETE FROM ledger_requests WHERE request_id = 'req-ids'")
    reason = _fails(ledger, "req-ids")
    assert "has no row for req-ids" in reason


def test_an_added_state_row_fails_verify(ledger, db) -> None:
    _sql(
        db,
        "INSERT INTO ledger_requests SELECT 'req-ghost', subject_id, record_ids, matched_ids, "
        "status, submitted_at, deadline, updated_at, note, first_seq, last_seq "
        "FROM ledger_requests WHERE request_id = 'req-ids'",
    )
    reason = _fails(ledger, "req-ghost")
    assert "row for req-ghost that no entry names" in reason


def test_a_renamed_state_row_fails_verify(ledger, db) -> None:
    _sql(db, "UPDATE ledger_requests SET request_id = 'req-other' WHERE request_id = 'req-ids'")
    _fails(ledger, "req-other")


def test_the_note_is_display_text_and_not_compared(ledger, db) -> None:
    _sql(db, "UPDATE ledger_requests SET note = 'edited' WHERE request_id = 'req-ids'")
    assert ledger.verify().ok


def test_without_the_evidence_key_verify_says_so_instead_of_crashing(ledger, db) -> None:
    # given the log's key file gone (and none in the environment)
    (db.parent / "state" / "evidence.key").unlink()
    with Ledger(f"sqlite:///{db}", params_path=db.parent / "absent.yaml") as fresh:
        report = fresh.verify()
    # then verify fails, saying what it could not check and why
    assert not report.ok
    assert "cannot check the subject of 1 request(s)" in report.reason
    assert "no evidence key" in report.reason and "EUL_EVIDENCE_KEY" in report.reason
    # and reading the log created no key
    assert not (db.parent / "state" / "evidence.key").exists()
    # while a definite problem still comes first
    _sql(db, "UPDATE ledger_requests SET deadline = '2999' WHERE request_id = 'req-ids'")
    with Ledger(f"sqlite:///{db}", params_path=db.parent / "absent.yaml") as fresh:
        assert "req-ids: deadline" in fresh.verify().reason


def test_a_log_without_subjects_needs_no_key(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("EUL_EVIDENCE_KEY", raising=False)
    with Ledger(f"sqlite:///{tmp_path / 'log.sqlite'}", params_path=tmp_path / "x.yaml") as log:
        log.submit(record_ids=["r1"])
        log.validate({"s": ["r1"]})
        assert log.verify().ok
    assert not (tmp_path / "state").exists()


def test_another_key_than_the_logs_fails_on_the_subject(ledger, db) -> None:
    with Ledger(f"sqlite:///{db}", params_path=db / "x.yaml", evidence_key=b"o" * 32) as other:
        reason = other.verify().reason
    assert "req-alice: subject_id (or the evidence key is not the log's)" in reason
