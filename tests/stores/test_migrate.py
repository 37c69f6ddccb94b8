"""The one-time migration of a log (and purge ledger) written the old way, with raw subject ids
and unkeyed row hashes, to keyed evidence: exact, chain verified, nothing left in the file's
bytes, idempotent, refused on a broken chain."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from eul.runtime.evidence import evidence_key, is_keyed, keyed, keyed_row, row_sha256
from eul.stores.log.chain import Chain
from eul.stores.log.migrate import migrate_purge_ledger
from eul.stores.log.schema import LedgerError, iso, requests_table, utcnow
from eul.stores.log.store import Ledger

ROWS = {
    "r1": json.dumps({"record_id": "r1", "subject_id": "Alice.Smith", "text": "Alice's row."}),
    "r2": json.dumps({"record_id": "r2", "subject_id": "Alice.Smith", "text": "Another one."}),
}
OLD_SHAS = [row_sha256(line) for line in ROWS.values()]


def write_old_log(ledger: Ledger) -> None:
    """Entries and state rows exactly as the previous format wrote them, through the chain."""
    at = iso(utcnow())
    with ledger.db.write() as conn:
        chain = Chain(conn)

        def request(rid, subject, record_ids, steps, matched=None, note=None):
            received = {"subject_id": subject, "record_ids": record_ids, "deadline": at}
            first = last = chain.append(rid, "received", at, received)
            status = "received"
            for status, details in steps:
                last = chain.append(rid, status, at, details)
            chain.flush()
            conn.execute(
                requests_table.insert().values(
                    request_id=rid, subject_id=subject, record_ids=json.dumps(record_ids),
                    matched_ids=json.dumps(matched) if matched else None, status=status,
                    submitted_at=at, deadline=at, updated_at=at, note=note,
                    first_seq=first.seq, last_seq=last.seq,
                )
            )  # fmt: skip

        evidence = {"rows_removed": 2, "row_sha256": OLD_SHAS, "purged_at": at}
        request("req-alice", "Alice.Smith", [], [
            ("validated", {"record_ids": ["r1", "r2"]}), ("unlearned", {}), ("fused", {}),
            ("deployed", {"model_version": "1"}), ("purged", {"evidence": evidence}),
        ], matched=["r1", "r2"], note="evidence for 3 item(s)")  # fmt: skip
        reason = "no records for subject Bob.Jones"
        request("req-bob", "Bob.Jones", [], [("rejected", {"reason": reason})], note=reason)
        request("req-carol", "Carol.White", [], [("validated", {"record_ids": ["r7"]})], ["r7"])
        request("req-ids", None, ["r9"], [("validated", {"record_ids": ["r9"]})], ["r9"])
        chain.close()


def _file_bytes(db: Path) -> bytes:
    wal = Path(f"{db}-wal")
    return db.read_bytes() + (wal.read_bytes() if wal.exists() else b"")


@pytest.fixture
def old_log(tmp_path):
    db = tmp_path / "log.sqlite"
    with Ledger(f"sqlite:///{db}", params_path=tmp_path / "params.yaml") as ledger:
        write_old_log(ledger)
        ledger.submit(subject_id="Dan.Brown", request_id="req-new")  # written the new way
        assert ledger.verify().ok
        yield ledger, db


def test_the_migration_keys_an_old_log_exactly_and_the_chain_verifies(old_log, tmp_path):
    ledger, db = old_log
    key = evidence_key(tmp_path)
    before = _file_bytes(db)
    assert b"Alice.Smith" in before and OLD_SHAS[0].encode() in before  # the test can fail
    # When the log is migrated
    report = ledger.migrate_evidence()
    # Then every old-form entry was rewritten and the chain rehashed from the first one
    assert report.entries_rewritten == 6  # 4 received (one not: req-new), purged, rejected
    assert report.first_changed_seq == 1
    assert report.entries_rehashed == ledger.verify().entries == 13
    assert report.states_rewritten == 2  # the purged and the rejected request
    assert ledger.verify().ok
    assert ledger.head()[1] == report.head_hash_after != report.head_hash_before
    # And the values are the keyed ones: row digests exactly those of the rows themselves
    alice = ledger.get("req-alice")
    assert alice.history[0].details["subject_hmac"] == keyed(key, "Alice.Smith")
    evidence = alice.history[-1].details["evidence"]
    assert evidence["row_hmac"] == [keyed_row(key, line) for line in ROWS.values()]
    assert "row_sha256" not in evidence
    assert alice.state.subject_id == keyed(key, "Alice.Smith")
    bob = ledger.get("req-bob")
    assert bob.history[-1].details["reason"] == bob.state.note == "no records for the subject"
    assert is_keyed(bob.state.subject_id)
    # a request still in progress keeps its raw subject in the state row (to match rows)
    assert ledger.get("req-carol").state.subject_id == "Carol.White"
    assert ledger.get("req-ids").history[0].details["subject_hmac"] is None
    # And no byte of the database file holds a purged or rejected subject id or an old hash
    after = _file_bytes(db)
    for secret in (b"Alice.Smith", b"Bob.Jones", *(sha.encode() for sha in OLD_SHAS)):
        assert secret not in after, secret
    with sqlite3.connect(db) as conn:
        details = " ".join(d for (d,) in conn.execute("SELECT details FROM ledger_entries"))
    assert "Carol.White" not in details and "subject_id" not in details
    # And a second run changes nothing
    head = ledger.head()
    again = ledger.migrate_evidence()
    assert not again.changed and again.entries_rehashed == 0
    assert ledger.head() == head and ledger.verify().ok


def test_a_broken_chain_is_not_migrated(old_log):
    ledger, db = old_log
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE ledger_entries SET at = '2000-01-01' WHERE seq = 3")
    head = ledger.head()
    with pytest.raises(LedgerError, match="broken at entry 3"):
        ledger.migrate_evidence()
    assert ledger.head() == head
    assert b"Alice.Smith" in _file_bytes(db)


def test_the_purge_ledger_is_keyed_in_place_once(tmp_path):
    key = b"k" * 32
    path = tmp_path / "purge-log.jsonl"
    old = {"purged_at": "2026-01-01T00:00:00+00:00", "rows_removed": 2, "requests": [
        {"request_id": "req-alice", "subject_id": "Alice.Smith", "record_ids": ["r1", "r2"],
         "row_sha256": OLD_SHAS, "missing_record_ids": []},
        {"request_id": "req-ids", "subject_id": None, "record_ids": [], "row_sha256": []},
    ]}  # fmt: skip
    path.write_text(json.dumps(old) + "\n" + json.dumps({"requests": []}) + "\n")
    assert migrate_purge_ledger(path, key) == 1
    (alice, ids) = json.loads(path.read_text().splitlines()[0])["requests"]
    assert alice["subject_hmac"] == keyed(key, "Alice.Smith")
    assert alice["row_hmac"] == [keyed_row(key, line) for line in ROWS.values()]
    assert alice["record_ids"] == ["r1", "r2"]  # ids stay: `eul data init` uses them
    assert ids["subject_hmac"] is None and ids["row_hmac"] == []
    text = path.read_text()
    assert "Alice.Smith" not in text and not any(sha in text for sha in OLD_SHAS)
    assert migrate_purge_ledger(path, key) == 0
    assert path.read_text() == text
    assert migrate_purge_ledger(tmp_path / "absent.jsonl", key) == 0
