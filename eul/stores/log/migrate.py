"""The one-time move of evidence an older version kept in the clear to keyed digests.

Older logs kept subject ids (for dialogue data, people's names) and unsalted SHA-256 row
hashes in entries that are kept forever. `eul requests migrate-evidence` rewrites them in
place: `subject_id` becomes `subject_hmac`, a `row_sha256` list becomes `row_hmac` (exact: a
keyed row digest is the HMAC of the row's SHA-256, so no row is needed), and a rejection
reason naming a subject no longer names it. The chain is then rehashed from the first
changed entry, so it verifies again. The same rewrite applies to the purge ledger's lines.
Values already keyed stay as they are, so a second run changes nothing.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, bindparam, select, update

from eul.runtime.evidence import is_keyed, keyed
from eul.stores.log.chain import canonical_json, entry_hash
from eul.stores.log.rules import NO_SUBJECT_RECORDS
from eul.stores.log.schema import (
    GENESIS_HASH,
    LedgerError,
    entries_table,
    head_table,
    requests_table,
)
from eul.stores.log.verify import verify_chain

# The rejection reason older versions wrote: it named the subject.
_OLD_REASON = re.compile(r"^no records for subject .*$", re.DOTALL)


@dataclass(frozen=True)
class EvidenceMigration:
    """What one migration changed: counts and the head hash, never values."""

    entries_rewritten: int
    entries_rehashed: int
    first_changed_seq: int | None
    states_rewritten: int
    head_hash_before: str
    head_hash_after: str

    @property
    def changed(self) -> bool:
        return bool(self.entries_rewritten or self.entries_rehashed or self.states_rewritten)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def keyed_reason(reason: str) -> str:
    """A rejection reason that no longer names a subject."""
    return NO_SUBJECT_RECORDS if _OLD_REASON.match(reason) else reason


def keyed_evidence(value: Any, key: bytes) -> Any:
    """`value` with, at any depth, `subject_id` keyed as `subject_hmac`, a `row_sha256` list
    keyed as `row_hmac`, and a `reason` naming a subject replaced."""
    if isinstance(value, list):
        return [keyed_evidence(item, key) for item in value]
    if not isinstance(value, dict):
        return value
    out: dict[str, Any] = {}
    for name, item in value.items():
        if name == "subject_id" and (item is None or isinstance(item, str)):
            out["subject_hmac"] = None if item is None else keyed(key, item)
        elif name == "row_sha256" and isinstance(item, list):
            out["row_hmac"] = [keyed(key, str(h)) for h in item]
        elif name == "reason" and isinstance(item, str):
            out[name] = keyed_reason(item)
        else:
            out[name] = keyed_evidence(item, key)
    return out


def _rewrite_entries(conn: Connection, key: bytes) -> tuple[int, int, int | None, str]:
    """Key every entry's details and rehash from the first changed one; (rewritten,
    rehashed, first changed seq, new head hash)."""
    rows = conn.execute(select(entries_table).order_by(entries_table.c.seq)).all()
    prev, rewritten, first = GENESIS_HASH, 0, None
    updates = []
    for row in rows:
        details = json.loads(row.details)
        new = keyed_evidence(details, key)
        if new != details:
            rewritten += 1
            first = row.seq if first is None else first
        if new == details and row.prev_hash == prev:
            prev = row.hash
            continue
        digest = entry_hash(row.seq, row.request_id, row.status, row.at, new, prev)
        updates.append(
            {
                "at_seq": row.seq,
                "new_details": canonical_json(new),
                "new_prev": prev,
                "new_hash": digest,
            }
        )
        prev = digest
    if updates:
        conn.execute(
            update(entries_table)
            .where(entries_table.c.seq == bindparam("at_seq"))
            .values(
                details=bindparam("new_details"),
                prev_hash=bindparam("new_prev"),
                hash=bindparam("new_hash"),
            ),
            updates,
        )
        conn.execute(update(head_table).where(head_table.c.id == 1).values(hash=prev))
    return rewritten, len(updates), first, prev


def _rewrite_states(conn: Connection, key: bytes, raw_statuses: Sequence[str]) -> int:
    """Key the subject of every request past the statuses that need it raw, and rejection
    notes naming a subject; the number of rows changed."""
    rows = conn.execute(
        select(
            requests_table.c.request_id, requests_table.c.subject_id, requests_table.c.note
        ).where(requests_table.c.status.not_in(list(raw_statuses)))
    ).all()
    updates = []
    for row in rows:
        subject = row.subject_id
        if subject is not None and not is_keyed(subject):
            subject = keyed(key, subject)
        note = keyed_reason(row.note) if row.note is not None else None
        if (subject, note) != (row.subject_id, row.note):
            updates.append({"rid": row.request_id, "new_subject": subject, "new_note": note})
    if updates:
        conn.execute(
            update(requests_table)
            .where(requests_table.c.request_id == bindparam("rid"))
            .values(subject_id=bindparam("new_subject"), note=bindparam("new_note")),
            updates,
        )
    return len(updates)


def migrate_log(conn: Connection, key: bytes, raw_statuses: Sequence[str]) -> EvidenceMigration:
    """Key the log's evidence inside the caller's write transaction (see the module's
    docstring); `raw_statuses`: those whose state rows keep the raw subject id."""
    report = verify_chain(conn, key)
    if not report.ok:
        raise LedgerError(
            f"the chain is broken at entry {report.broken_seq} ({report.reason}); "
            "migrating would rehash over it: find out why first (`eul requests verify`)"
        )
    rewritten, rehashed, first, head = _rewrite_entries(conn, key)
    states = _rewrite_states(conn, key, raw_statuses)
    after = verify_chain(conn, key)
    if not after.ok:  # a bug here must never leave a rewritten chain behind
        raise LedgerError(f"migration left the chain broken at entry {after.broken_seq}")
    return EvidenceMigration(rewritten, rehashed, first, states, report.head_hash, head)


def migrate_purge_ledger(path: str | Path, key: bytes) -> int:
    """Key the purge ledger's lines in place (atomically); the number of lines changed."""
    path = Path(path)
    if not path.is_file():
        return 0
    lines = path.read_text(encoding="utf-8").splitlines()
    out, changed = [], 0
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            out.append(line)
            continue
        try:
            value = json.loads(line)
        except ValueError:
            raise LedgerError(f"{path} line {number} is not valid JSON; fix it first") from None
        new = keyed_evidence(value, key)
        if new != value:
            changed += 1
            line = json.dumps(new, sort_keys=True)
        out.append(line)
    if changed:
        tmp = path.with_name(path.name + ".migrate-tmp")
        tmp.write_text("".join(line + "\n" for line in out), encoding="utf-8")
        os.replace(tmp, path)
    return changed
