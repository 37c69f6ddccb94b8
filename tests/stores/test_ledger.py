"""The deletion log: URL and deadline resolution, idempotent submission, validation, the
lifecycle, queries, snapshots, tamper detection, and behaviour under concurrent writers and a
killed writer."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from log_evidence import anchor, deploy, purge, purge_evidence
from sqlalchemy import event, text

import eul
from benchmarks.fault_scenarios import CRASHING_WRITER, SUBMITTER
from eul.data.records import Record
from eul.runtime.evidence import evidence_key, is_keyed, keyed
from eul.stores.log.config import DEFAULT_URL, resolve_deadline_days, resolve_url
from eul.stores.log.schema import GENESIS_HASH, LedgerError
from eul.stores.log.store import Ledger

REPO_ROOT = Path(eul.__file__).resolve().parent.parent


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "log.sqlite"


@pytest.fixture
def log_url(db: Path) -> str:
    """The log's URL (tests/stores/test_ledger_postgres.py runs tests on PostgreSQL's)."""
    return f"sqlite:///{db}"


@pytest.fixture
def ledger(log_url: str, tmp_path: Path):
    with Ledger(log_url, params_path=tmp_path / "absent.yaml") as opened:
        yield opened


RECORDS = [
    Record("r1", "s1", "Alice wrote this private review.", "positive", 1),
    Record("r2", "s1", "Alice also wrote this one.", "negative", 0),
    Record("r3", "s2", "Bob's only review.", "positive", 1),
]


def _rows(db: Path, sql: str) -> list[tuple]:
    with sqlite3.connect(db) as conn:
        return conn.execute(sql).fetchall()


def _tamper(ledger: Ledger, sql: str, **params: object) -> list[tuple]:
    """Run `sql` on the log's database behind the ledger's back, as someone editing it would."""
    with ledger.engine.begin() as conn:
        result = conn.execute(text(sql), params)
        return [tuple(row) for row in result] if result.returns_rows else []


def _python_env() -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": f"{REPO_ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
    }


# -- configuration ------------------------------------------------------------------------


def test_url_resolution_prefers_argument_then_env_then_params_then_default(
    tmp_path, monkeypatch
) -> None:
    # Given a params file naming one URL and the environment naming another
    params = tmp_path / "params.yaml"
    params.write_text("log:\n  url: sqlite:///from-params.sqlite\n  deadline_days: 7\n")
    monkeypatch.setenv("EUL_LOG_URL", "sqlite:///from-env.sqlite")
    # Then the argument wins, then the environment, then params.yaml, then the default
    assert resolve_url("sqlite:///arg.sqlite", params) == "sqlite:///arg.sqlite"
    assert resolve_url(None, params) == "sqlite:///from-env.sqlite"
    monkeypatch.delenv("EUL_LOG_URL")
    assert resolve_url(None, params) == "sqlite:///from-params.sqlite"
    assert resolve_url(None, tmp_path / "absent.yaml") == DEFAULT_URL


def test_default_log_is_created_under_state(tmp_path, monkeypatch) -> None:
    # Given an empty working directory with no params.yaml and no environment URL
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("EUL_LOG_URL", raising=False)
    # When the log is opened with no URL
    with Ledger() as ledger:
        ledger.submit(subject_id="s1")
    # Then its SQLite file exists at the default place, in WAL mode
    assert (tmp_path / "state" / "deletion-log.sqlite").is_file()
    assert _rows(tmp_path / "state" / "deletion-log.sqlite", "PRAGMA journal_mode") == [("wal",)]


def test_deadline_days_come_from_argument_then_params_then_30(tmp_path, db) -> None:
    params = tmp_path / "params.yaml"
    params.write_text("log:\n  deadline_days: 7\n")
    assert resolve_deadline_days(None, tmp_path / "absent.yaml") == 30
    assert resolve_deadline_days(None, params) == 7
    assert resolve_deadline_days(3, params) == 3
    with pytest.raises(LedgerError, match="deadline_days"):
        resolve_deadline_days(0, params)
    # And the deadline written is submission time plus those days
    with Ledger(f"sqlite:///{db}", params_path=params) as ledger:
        entry = ledger.submit(subject_id="s1")
        custom = ledger.submit(subject_id="s2", deadline_days=45)
    submitted = datetime.fromisoformat(entry.at)
    assert datetime.fromisoformat(entry.details["deadline"]) - submitted == timedelta(days=7)
    assert datetime.fromisoformat(custom.details["deadline"]) - datetime.fromisoformat(
        custom.at
    ) == timedelta(days=45)


def test_bad_params_and_urls_give_one_line_errors(tmp_path) -> None:
    params = tmp_path / "params.yaml"
    params.write_text("log: [not, a, mapping]\n")
    with pytest.raises(LedgerError, match="must be a mapping"):
        resolve_url(None, params)
    with pytest.raises(LedgerError, match="bad log URL"):
        Ledger("not a url", params_path=tmp_path / "absent.yaml")


# -- submission ---------------------------------------------------------------------------


def test_submit_generates_an_id_and_records_the_request(ledger) -> None:
    entry = ledger.submit(record_ids=["r2", "r1", "r1"])
    assert re.fullmatch(r"req-[0-9a-f]{12}", entry.request_id)
    assert (entry.seq, entry.status, entry.prev_hash) == (1, "received", GENESIS_HASH)
    assert entry.details["record_ids"] == ["r1", "r2"]
    assert ledger.head() == (1, entry.hash)
    assert ledger.get(entry.request_id).state.status == "received"


def test_submitting_a_known_request_id_changes_nothing(ledger) -> None:
    # Given a request submitted with a client key
    first = ledger.submit(subject_id="s1", request_id="client-key-1")
    ledger.submit(subject_id="s2")
    head = ledger.head()
    # When the same key is submitted again, even with a different subject
    again = ledger.submit(subject_id="s9", request_id="client-key-1")
    # Then the first entry comes back and the log did not grow
    assert again == first
    assert ledger.head() == head
    assert len(ledger.list()) == 2


def test_submit_many_is_idempotent_within_and_across_batches(ledger) -> None:
    results = ledger.submit_many(
        [{"subject_id": "s1", "request_id": "a"}, {"subject_id": "s1", "request_id": "a"}]
    )
    assert [r.created for r in results] == [True, False]
    assert results[0].entry == results[1].entry
    again = ledger.submit_many([{"subject_id": "s1", "request_id": "a"}])
    assert again[0].created is False
    assert len(ledger.list()) == 1


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({}, "exactly one"),
        ({"subject_id": "s1", "record_ids": ["r1"]}, "exactly one"),
        ({"subject_id": "has space"}, "bad subject id"),
        ({"record_ids": ["ok", ""]}, "bad record id"),
        ({"subject_id": "s1", "request_id": "x" * 200}, "bad request id"),
        ({"subject_id": "s1", "request_id": "req-1\n"}, "bad request id"),
        ({"subject_id": "s1\n"}, "bad subject id"),
        ({"subject_id": "s1", "deadline_days": -1}, "deadline_days"),
    ],
)
def test_malformed_requests_are_refused_before_writing(ledger, kwargs, message) -> None:
    with pytest.raises(LedgerError, match=message):
        ledger.submit(**kwargs)
    assert ledger.head() == (0, GENESIS_HASH)


def test_a_failing_batch_writes_nothing(ledger) -> None:
    ledger.submit(subject_id="s0")
    head = ledger.head()
    with pytest.raises(LedgerError, match="bad subject id"):
        ledger.submit_many([{"subject_id": "s1"}, {"subject_id": "bad id"}])
    assert ledger.head() == head
    assert len(ledger.list()) == 1


# -- validation ---------------------------------------------------------------------------


def test_validate_keeps_rejected_requests_with_the_reason(ledger) -> None:
    # Given requests for a known subject, an unknown subject, unknown ids and mixed ids
    subject = ledger.submit(subject_id="s1").request_id
    nobody = ledger.submit(subject_id="s9999").request_id
    unknown = ledger.submit(record_ids=["r8", "r9"]).request_id
    mixed = ledger.submit(record_ids=["r3", "r7"]).request_id
    # When they are validated against the records
    report = ledger.validate(RECORDS, data_version="sha256:abc")
    # Then matching requests are validated with the matched ids, the rest rejected with why
    assert report.validated == [subject, mixed]
    assert report.rejected == {
        nobody: "no records for the subject",
        unknown: "unknown record ids: r8, r9",
    }
    assert ledger.get(subject).state.matched_ids == ["r1", "r2"]
    mixed_entry = ledger.get(mixed).history[-1]
    assert mixed_entry.details == {
        "record_ids": ["r3"],
        "unknown_record_ids": ["r7"],
        "data_version": "sha256:abc",
    }
    rejected = ledger.get(nobody)
    assert [e.status for e in rejected.history] == ["received", "rejected"]
    assert rejected.history[-1].details["reason"] == "no records for the subject"
    assert "s9999" not in json.dumps(rejected.to_dict())  # final: nothing names the subject
    assert {s.request_id for s in ledger.list(status="rejected")} == {nobody, unknown}
    # And a second validation finds nothing left to do
    assert ledger.validate(RECORDS).validated == []


def test_validate_accepts_a_subject_mapping(ledger) -> None:
    rid = ledger.submit(subject_id="s2").request_id
    other = ledger.submit(record_ids=["x1"]).request_id
    report = ledger.validate({"s2": ["x2", "x1"]})
    assert report.validated == [rid, other]
    assert ledger.get(rid).state.matched_ids == ["x1", "x2"]


def test_the_log_never_holds_record_text(ledger, db) -> None:
    ledger.submit(subject_id="s1")
    ledger.submit(record_ids=["r3"])
    ledger.validate(RECORDS)
    ledger.write_snapshot(db.parent / "snap.json")
    stored = db.read_bytes() + Path(f"{db}-wal").read_bytes()
    snapshot = (db.parent / "snap.json").read_text()
    for record in RECORDS:
        assert record.text.encode() not in stored
        assert record.text not in snapshot
    assert b"r1" in stored  # the ids are there


def test_entries_key_the_subject_and_the_state_keeps_it_raw_only_until_the_purge(
    ledger, db
) -> None:
    # Given a subject request for a named person, taken through to the purge
    rid = ledger.submit(subject_id="Alice.Smith", request_id="req-alice").request_id
    ledger.validate({"Alice.Smith": ["r1"]})
    key = evidence_key(db.parent)  # the project's key: the folder of params_path
    # Then the received entry holds the keyed subject, the state row (needed to match) the raw
    received = ledger.get(rid).history[0]
    assert received.details["subject_hmac"] == keyed(key, "Alice.Smith")
    assert "subject_id" not in received.details
    assert ledger.get(rid).state.subject_id == "Alice.Smith"
    assert ledger.snapshot()["requests"][0]["subject_id"] == "Alice.Smith"
    for status, extra in [
        ("unlearned", {}),
        ("fused", {}),
        ("deployed", {"model_version": "1", **anchor(ledger)}),
    ]:
        ledger.mark(rid, status, **extra)
        assert ledger.get(rid).state.subject_id == "Alice.Smith"
    # When it is purged, the state row's subject becomes the keyed value too
    ledger.mark(rid, "purged", evidence=purge_evidence(1))
    assert ledger.get(rid).state.subject_id == keyed(key, "Alice.Smith")
    assert ledger.verify().ok
    # And no byte of the database file names the person any more
    ledger.db.rewrite_file()
    assert b"Alice.Smith" not in db.read_bytes()


def test_an_explicit_key_wins_and_a_read_creates_none(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'log.sqlite'}"
    with Ledger(url, params_path=tmp_path / "absent.yaml") as ledger:
        ledger.list()
        ledger.submit(record_ids=["r1"])  # no subject: no key needed
    assert not (tmp_path / "state").exists()
    with Ledger(url, params_path=tmp_path / "absent.yaml", evidence_key=b"x" * 16) as ledger:
        entry = ledger.submit(subject_id="s1")
    assert entry.details["subject_hmac"] == keyed(b"x" * 16, "s1")
    assert not (tmp_path / "state").exists()


def test_a_rejected_subject_request_keeps_only_the_keyed_subject(ledger) -> None:
    rid = ledger.submit(subject_id="Bob.Jones").request_id
    ledger.validate(RECORDS)
    state = ledger.get(rid).state
    assert state.status == "rejected" and is_keyed(state.subject_id)


# -- lifecycle ----------------------------------------------------------------------------


def _validated(ledger: Ledger, subject: str = "s1") -> str:
    rid = ledger.submit(subject_id=subject).request_id
    ledger.validate(RECORDS)
    return rid


def test_the_full_lifecycle_is_recorded_in_order(ledger) -> None:
    rid = _validated(ledger)
    ledger.mark(rid, "unlearned", layer="layers/req-1")
    ledger.mark(rid, "fused", layer="layers/fused-3")
    ledger.mark(rid, "deployed", model_version="7", **anchor(ledger))
    ledger.mark(rid, "purged", evidence=purge_evidence(2))
    found = ledger.get(rid)
    assert [e.status for e in found.history] == [
        "received",
        "validated",
        "unlearned",
        "fused",
        "deployed",
        "purged",
    ]
    assert found.history[4].details == {
        "model_version": "7",
        "log_seq": 4,
        "log_hash": found.history[3].hash,
    }
    assert found.state.status == "purged"
    assert found.state.matched_ids == ["r1", "r2"]
    assert ledger.verify().ok


@pytest.mark.parametrize(
    "steps, status, message",
    [
        ([], "purged", "it is validated"),
        ([("unlearned", {})], "deployed", "unlearned may only become fused"),
        ([("unlearned", {}), ("fused", {})], "unlearned", "it is fused"),
        ([], "received", "cannot mark"),
    ],
)
def test_illegal_transitions_are_refused(ledger, steps, status, message) -> None:
    rid = _validated(ledger)
    for step, details in steps:
        ledger.mark(rid, step, **details)
    head = ledger.head()
    with pytest.raises(LedgerError, match=message):
        ledger.mark(rid, status, model_version="1", evidence=purge_evidence(2), **anchor(ledger))
    assert ledger.head() == head


def test_rejected_is_final_and_marks_need_their_details(ledger) -> None:
    rejected = ledger.submit(subject_id="nobody").request_id
    rid = _validated(ledger)
    with pytest.raises(LedgerError, match="rejected may only become nothing"):
        ledger.mark(rejected, "validated", record_ids=["r1"])
    ledger.mark(rid, "unlearned")
    ledger.mark(rid, "fused")
    with pytest.raises(LedgerError, match="model_version"):
        ledger.mark(rid, "deployed")
    with pytest.raises(LedgerError, match="deployed needs log_seq and log_hash"):
        ledger.mark(rid, "deployed", model_version="3")
    ledger.mark(rid, "deployed", model_version="3", **anchor(ledger))
    with pytest.raises(LedgerError, match="evidence"):
        ledger.mark(rid, "purged", evidence={})
    with pytest.raises(LedgerError, match="no request 'missing'"):
        ledger.mark("missing", "unlearned")


def _purged(ledger: Ledger, subject: str = "s1") -> str:
    rid = _validated(ledger, subject)
    deploy(ledger, rid)
    purge(ledger, rid)
    return rid


def test_erased_follows_purged_only_and_needs_the_compaction_version(ledger) -> None:
    # given a request deployed but not yet purged
    early = _validated(ledger, "s2")
    deploy(ledger, early)
    evidence = {"compaction_version": 4, "versions_erased": [1, 2], "dvc_objects_deleted": 3}
    # then it cannot be erased before its purge
    with pytest.raises(LedgerError, match="deployed may only become purged"):
        ledger.mark(early, "erased", evidence=evidence)
    # and a purged request needs the compaction version as evidence
    rid = _purged(ledger)
    with pytest.raises(LedgerError, match="compaction_version"):
        ledger.mark(rid, "erased", evidence={"versions_erased": [1]})
    ledger.mark(rid, "erased", model_version=4, evidence=evidence)
    state = ledger.get(rid).state
    assert state.status == "erased" and state.level == "erased"
    assert ledger.get(early).state.level == "suppressed"
    # and erased is final, and verified as a legal step of the chain
    with pytest.raises(LedgerError, match="erased may only become nothing"):
        ledger.mark(rid, "purged", evidence=purge_evidence(2))
    assert ledger.verify().ok
    assert ledger.counts() == {"erased": 1, "deployed": 1}


def test_erasure_deadline_counts_from_submission_and_ends_at_erased(tmp_path, db) -> None:
    # given erasure_days 10 in params.yaml
    params = tmp_path / "params.yaml"
    params.write_text("log:\n  deadline_days: 5\n  erasure_days: 10\n")
    with Ledger(f"sqlite:///{db}", params_path=params) as ledger:
        assert ledger.erasure_days == 10
        suppressed = _purged(ledger, "s1")
        pending = _validated(ledger, "s2")
        rejected = ledger.submit(subject_id="nobody").request_id
        ledger.validate(RECORDS)
        state = ledger.get(suppressed).state
        submitted = datetime.fromisoformat(state.submitted_at)
        assert datetime.fromisoformat(state.erasure_deadline(10)) == submitted + timedelta(days=10)
        # then nothing is overdue for erasure before the deadline, both after it
        soon = datetime.now(timezone.utc) + timedelta(days=7)
        later = datetime.now(timezone.utc) + timedelta(days=11)
        assert ledger.erasure_overdue(now=soon) == []
        assert [s.request_id for s in ledger.erasure_overdue(now=later)] == [suppressed, pending]
        # while the suppressed one is within its suppression deadline's terms
        assert not ledger.get(suppressed).state.is_overdue(later)
        assert not ledger.get(rejected).state.is_erasure_overdue(10, later)
        # and once erased it is overdue no more
        ledger.mark(suppressed, "erased", evidence={"compaction_version": 2})
        assert [s.request_id for s in ledger.erasure_overdue(now=later)] == [pending]
    with pytest.raises(LedgerError, match="erasure_days must be"):
        Ledger(f"sqlite:///{db}", params_path=params, erasure_days=0)


def test_mark_many_is_all_or_nothing(ledger) -> None:
    a = ledger.submit(subject_id="s1").request_id
    b = ledger.submit(subject_id="s2").request_id
    ledger.validate(RECORDS)
    ledger.mark(b, "unlearned")
    head = ledger.head()
    with pytest.raises(LedgerError, match=f"cannot mark {b} unlearned"):
        ledger.mark_many([a, b], "unlearned")
    assert ledger.head() == head
    assert ledger.get(a).state.status == "validated"


# -- queries ------------------------------------------------------------------------------


def test_overdue_lists_only_unfinished_requests_past_their_deadline(ledger) -> None:
    done = _validated(ledger, "s1")
    deploy(ledger, done)
    pending = ledger.submit(subject_id="s2").request_id
    rejected = ledger.submit(subject_id="nobody").request_id
    ledger.validate(RECORDS)
    assert ledger.overdue() == []
    later = datetime.now(timezone.utc) + timedelta(days=31)
    assert [s.request_id for s in ledger.overdue(now=later)] == [pending]
    assert [s.request_id for s in ledger.list(overdue=True, now=later)] == [pending]
    assert ledger.get(pending).state.is_overdue(later)
    assert not ledger.get(rejected).state.is_overdue(later)
    assert ledger.counts() == {"deployed": 1, "validated": 1, "rejected": 1}


def test_list_filters_by_status_and_rejects_unknown_ones(ledger) -> None:
    a = _validated(ledger, "s1")
    b = ledger.submit(subject_id="s2").request_id
    assert [s.request_id for s in ledger.list()] == [a, b]
    assert [s.request_id for s in ledger.list(status="received")] == [b]
    assert [s.request_id for s in ledger.list(status=["received", "validated"])] == [a, b]
    with pytest.raises(LedgerError, match="unknown status 'done'"):
        ledger.list(status="done")
    with pytest.raises(LedgerError, match="no request"):
        ledger.get("req-000000000000")


def test_snapshot_has_exactly_the_partition_interface(ledger, tmp_path) -> None:
    # Given one validated, one rejected and one unlearned request
    a = ledger.submit(subject_id="s1").request_id
    ledger.submit(subject_id="nobody")
    b = ledger.submit(record_ids=["r3"]).request_id
    ledger.validate(RECORDS)
    ledger.mark(b, "unlearned")
    # When a snapshot of the validated ones is taken
    snap = ledger.snapshot()
    # Then it has exactly the agreed keys, the matched ids, and the head it was read at
    assert set(snap) == {"log_seq", "log_hash", "taken_at", "requests"}
    assert (snap["log_seq"], snap["log_hash"]) == ledger.head()
    assert snap["requests"] == [
        {
            "request_id": a,
            "subject_id": "s1",
            "record_ids": ["r1", "r2"],
            "status": "validated",
            "submitted_at": ledger.get(a).state.submitted_at,
            "deadline": ledger.get(a).state.deadline,
        }
    ]
    both = ledger.snapshot(statuses=("validated", "unlearned"))
    assert [(r["request_id"], r["subject_id"], r["record_ids"]) for r in both["requests"]] == [
        (a, "s1", ["r1", "r2"]),
        (b, None, ["r3"]),
    ]


def test_a_snapshot_is_one_read_of_the_log_while_another_writer_commits(
    ledger, log_url, tmp_path
) -> None:
    # Given a validated request, a received one, and another writer that validates the
    # received one just after the snapshot read the head, before it reads the requests
    first = _validated(ledger, "s1")
    other = Ledger(log_url, params_path=tmp_path / "absent.yaml")
    other.submit(subject_id="s2")
    head = ledger.head()
    wrote = []

    def write_in_between(_conn, _cursor, statement, *_args) -> None:
        if "FROM ledger_requests" in statement and not wrote:
            wrote.append(other.validate(RECORDS).validated)

    event.listen(ledger.engine, "before_cursor_execute", write_in_between)
    try:
        snap = ledger.snapshot()
    finally:
        event.remove(ledger.engine, "before_cursor_execute", write_in_between)
        other.close()
    # Then the snapshot holds the requests as they stood at the head it names, not the
    # request validated after it
    assert len(wrote) == 1 and len(wrote[0]) == 1
    assert (snap["log_seq"], snap["log_hash"]) == head
    assert [r["request_id"] for r in snap["requests"]] == [first]
    assert ledger.head()[0] == head[0] + 1


def test_write_snapshot_rewrites_only_when_the_log_changed(ledger, tmp_path) -> None:
    path = tmp_path / "out" / "snapshot.json"
    _validated(ledger)
    first = ledger.write_snapshot(path)
    assert json.loads(path.read_text()) == first
    # An unchanged log leaves the file as it was (same taken_at), so a stage need not rerun
    text = path.read_text()
    ledger.write_snapshot(path)
    assert path.read_text() == text
    # A changed log rewrites it
    ledger.submit(subject_id="s2")
    ledger.validate(RECORDS)
    second = ledger.write_snapshot(path)
    assert second["log_seq"] > first["log_seq"]
    assert json.loads(path.read_text())["log_seq"] == second["log_seq"]
    assert len(second["requests"]) == 2


# -- tamper detection ---------------------------------------------------------------------


def _three_requests(ledger: Ledger) -> None:
    for subject in ("s1", "s2", "s3"):
        ledger.submit(subject_id=subject)
    ledger.validate(RECORDS)
    assert ledger.verify().ok


def test_verify_detects_edited_details(ledger) -> None:
    _three_requests(ledger)
    forged = {"subject_id": "s9", "record_ids": [], "deadline": "2099-01-01"}
    _tamper(ledger, "UPDATE ledger_entries SET details = :d WHERE seq = 2", d=json.dumps(forged))
    report = ledger.verify()
    assert not report.ok
    assert report.broken_seq == 2
    assert "hash does not match" in report.reason
    assert report.entries == 1


def test_verify_detects_a_rewritten_entry_with_a_recomputed_hash(ledger) -> None:
    from eul.stores.log.chain import entry_hash

    _three_requests(ledger)
    (seq, rid, status, at, prev) = _tamper(
        ledger, "SELECT seq, request_id, status, at, prev_hash FROM ledger_entries WHERE seq = 4"
    )[0]
    forged = {"record_ids": ["r1"]}
    digest = entry_hash(seq, rid, status, at, forged, prev)
    _tamper(
        ledger,
        "UPDATE ledger_entries SET details = :d, hash = :h WHERE seq = 4",
        d=json.dumps(forged),
        h=digest,
    )
    report = ledger.verify()
    assert (report.ok, report.broken_seq) == (False, 5)
    assert "prev_hash" in report.reason


def test_verify_detects_removed_entries(ledger) -> None:
    _three_requests(ledger)
    _tamper(ledger, "DELETE FROM ledger_entries WHERE seq = 3")
    assert (ledger.verify().ok, ledger.verify().broken_seq) == (False, 3)
    assert "missing" in ledger.verify().reason


def test_verify_detects_entries_cut_from_the_end(ledger) -> None:
    _three_requests(ledger)
    _tamper(ledger, "DELETE FROM ledger_entries WHERE seq = 6")
    report = ledger.verify()
    assert (report.ok, report.broken_seq) == (False, 6)
    assert "removed from the end" in report.reason


def test_verify_detects_a_current_state_that_disagrees(ledger) -> None:
    _three_requests(ledger)
    _tamper(ledger, "UPDATE ledger_requests SET status = 'purged' WHERE subject_id = 's1'")
    report = ledger.verify()
    assert not report.ok
    assert "current-state table disagrees" in report.reason


# -- concurrency and crashes --------------------------------------------------------------


def test_processes_submitting_at_once_lose_and_duplicate_nothing(tmp_path, log_url) -> None:
    # Given four writer processes with overlapping request ids (each id in two of them)
    url = log_url
    go = tmp_path / "go"
    ranges = [(0, 200), (100, 300), (200, 300), (0, 100)]
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", SUBMITTER, url, str(a), str(b), str(go)], env=_python_env()
        )
        for a, b in ranges
    ]
    # When all have opened the log (racing to create it) and are released together
    deadline = time.monotonic() + 60
    while not all(Path(f"{go}.ready-{a}").exists() for a, _ in ranges):
        assert all(w.poll() is None for w in workers), "a writer failed to open the log"
        assert time.monotonic() < deadline
        time.sleep(0.01)
    go.touch()
    assert [w.wait(timeout=60) for w in workers] == [0] * len(ranges)
    # Then every request is there exactly once, each with exactly one received entry, under
    # consecutive seqs whose chain verifies
    with Ledger(url, params_path=tmp_path / "absent.yaml", evidence_key=b"k" * 32) as ledger:
        report = ledger.verify()
        states = ledger.list()
        counts = _tamper(ledger, "SELECT COUNT(DISTINCT request_id), COUNT(*) FROM ledger_entries")
        seqs = [seq for (seq,) in _tamper(ledger, "SELECT seq FROM ledger_entries ORDER BY seq")]
    assert report.ok, report.reason
    assert report.entries == 300
    assert sorted(s.request_id for s in states) == [f"req-{i:04d}" for i in range(300)]
    assert counts == [(300, 300)]
    assert seqs == list(range(1, 301))


def test_threads_sharing_one_ledger_lose_and_duplicate_nothing(ledger) -> None:
    from concurrent.futures import ThreadPoolExecutor

    def submit_range(start: int) -> None:
        for i in range(start, start + 60):
            ledger.submit(subject_id="s1", request_id=f"t-{i:03d}")

    with ThreadPoolExecutor(max_workers=3) as pool:
        list(pool.map(submit_range, [0, 30, 60]))
    assert sorted(s.request_id for s in ledger.list()) == [f"t-{i:03d}" for i in range(120)]
    assert ledger.verify().entries == 120


def test_a_writer_killed_mid_transaction_leaves_the_log_consistent(tmp_path, db) -> None:
    # Given a log with two committed requests
    url = f"sqlite:///{db}"
    with Ledger(url, params_path=tmp_path / "absent.yaml") as ledger:
        ledger.submit(subject_id="s1", request_id="kept-1")
        ledger.submit(subject_id="s2", request_id="kept-2")
        head = ledger.head()
    # And a writer that has inserted 20,000 more in one open transaction
    marker = tmp_path / "marker"
    writer = subprocess.Popen(
        [sys.executable, "-c", CRASHING_WRITER, url, str(marker), "20000"], env=_python_env()
    )
    try:
        deadline = time.monotonic() + 60
        while not marker.exists():
            assert writer.poll() is None, "the writer ended before it was killed"
            assert time.monotonic() < deadline, "the writer never reached its batch's end"
            time.sleep(0.05)
        # (the batch is larger than SQLite's page cache, so part of it reached the WAL file)
        assert Path(f"{db}-wal").stat().st_size > 1_000_000
    finally:
        # When it is killed before committing
        os.kill(writer.pid, signal.SIGKILL)
        writer.wait(timeout=10)
    assert writer.returncode == -signal.SIGKILL
    # Then the log opens, verifies, shows none of the batch and takes new writes
    with Ledger(url, params_path=tmp_path / "absent.yaml") as ledger:
        assert ledger.verify().ok
        assert ledger.head() == head
        assert [s.request_id for s in ledger.list()] == ["kept-1", "kept-2"]
        ledger.submit(subject_id="s3", request_id="after-crash")
        assert ledger.verify().entries == 3
    assert _rows(db, "SELECT COUNT(*) FROM ledger_entries WHERE request_id LIKE 'crash-%'") == [
        (0,)
    ]


# -- scale --------------------------------------------------------------------------------


def test_ten_thousand_requests_are_validated_listed_shown_and_verified_whole(ledger) -> None:
    # (how fast: benchmarks/ledger.py)
    # Given 10,000 received requests and an index of 50,000 records
    index = {f"s{i:05d}": [f"r{i:05d}-{j}" for j in range(5)] for i in range(10_000)}
    ledger.submit_many({"subject_id": f"s{i:05d}"} for i in range(9_500))
    ledger.submit_many({"subject_id": f"gone{i}"} for i in range(500))
    # When they are validated, listed and shown
    report = ledger.validate(index)
    listed = ledger.list()
    shown = ledger.get(listed[5000].request_id)
    # Then every request is decided, listed in submission order and shown with its history
    assert (len(report.validated), len(report.rejected)) == (9_500, 500)
    assert len(listed) == 10_000
    assert [s.status for s in listed[:9_500]] == ["validated"] * 9_500
    assert {s.status for s in listed[9_500:]} == {"rejected"}
    assert listed[5000].matched_ids == [f"r05000-{j}" for j in range(5)]
    assert [e.status for e in shown.history] == ["received", "validated"]
    assert shown.state == listed[5000]
    assert ledger.verify().ok


def test_the_ledger_benchmark_runs_and_reports_every_operation(tmp_path) -> None:
    from benchmarks.ledger import format_ledger_bench, main

    out = tmp_path / "bench.json"
    assert main(["--requests", "60", "--records", "600", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["benchmark"] == "ledger" and result["settings"]["requests"] == 60
    report = result["figures"]
    operations = [r["operation"] for r in report["results"]]
    assert operations[0] == "submit, one call per request" and "validate" in operations
    assert "show (get one request)" in operations and "list (all)" in operations
    validate = next(r for r in report["results"] if r["operation"] == "validate")
    assert validate["n"] == 60 and "rejected" in validate["note"]
    assert out.with_suffix(".md").read_text().strip() == format_ledger_bench(report)
