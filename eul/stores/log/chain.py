"""The hash chain: canonical entry hashing and appending under the write lock.

Every change to a request is a new *entry* (an event); nothing is updated or deleted in the
entries table. Each entry carries the sha256 of a canonical JSON of its own content and of the
previous entry's hash, so editing, removing or reordering any entry breaks the chain, and
:func:`eul.stores.log.verify.verify_chain` names the first broken link.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from sqlalchemy import Connection, select, update

from eul.stores.log.schema import Entry, LedgerError, entries_table, head_table


def canonical_json(value: Any) -> str:
    """The one JSON text of a value that hashes are computed over."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def entry_hash(
    seq: int, request_id: str, status: str, at: str, details: Mapping[str, Any], prev_hash: str
) -> str:
    """sha256 over the canonical JSON of an entry's content and the previous entry's hash."""
    payload = {
        "seq": seq,
        "request_id": request_id,
        "status": status,
        "at": at,
        "details": details,
        "prev_hash": prev_hash,
    }
    return hashlib.sha256(canonical_json(payload).encode("utf-8")).hexdigest()


def normal_details(details: Mapping[str, Any]) -> dict[str, Any]:
    """Round-trip through JSON so that what is hashed is exactly what is read back."""
    try:
        return json.loads(canonical_json(dict(details)))
    except (TypeError, ValueError) as err:
        raise LedgerError(
            f"entry details must be JSON values (str, number, list, dict): {err}"
        ) from err


# -- the chain inside one write transaction -----------------------------------------------


class Chain:
    """Appends entries after the head read under the write lock; flushes them in batches."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        row = conn.execute(
            select(head_table.c.seq, head_table.c.hash)
            .where(head_table.c.id == 1)
            .with_for_update()
        ).one()
        self.seq, self.hash = int(row.seq), str(row.hash)
        self.pending: list[dict[str, Any]] = []

    def append(self, request_id: str, status: str, at: str, details: dict[str, Any]) -> Entry:
        seq = self.seq + 1
        digest = entry_hash(seq, request_id, status, at, details, self.hash)
        entry = Entry(seq, request_id, status, at, details, self.hash, digest)
        self.pending.append(
            {
                "seq": seq,
                "request_id": request_id,
                "status": status,
                "at": at,
                "details": canonical_json(details),
                "prev_hash": self.hash,
                "hash": digest,
            }
        )
        self.seq, self.hash = seq, digest
        return entry

    def flush(self) -> None:
        if self.pending:
            self.conn.execute(entries_table.insert(), self.pending)
            self.pending = []

    def close(self) -> None:
        """Write what is pending and move the head; the caller's transaction commits both."""
        self.flush()
        self.conn.execute(
            update(head_table).where(head_table.c.id == 1).values(seq=self.seq, hash=self.hash)
        )
