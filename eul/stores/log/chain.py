"""The hash chain: canonical entry hashing, appending under the write lock, and verifying.

Every change to a request is a new *entry* (an event); nothing is updated or deleted in the
entries table. Each entry carries the sha256 of a canonical JSON of its own content and of the
previous entry's hash, so editing, removing or reordering any entry breaks the chain and
:func:`verify_chain` names the first broken link. It also checks that the current-state table
agrees with the entries, which are the source of truth.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from sqlalchemy import Connection, select, update

from eul.stores.log.schema import (
    GENESIS_HASH,
    TRANSITIONS,
    Entry,
    LedgerError,
    VerifyReport,
    entries_table,
    head_table,
    requests_table,
)


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


# -- verifying ----------------------------------------------------------------------------

# Where a chain breaks: the seq of the first bad link, and why.
Problem = tuple[int, str]


class _Walk:
    """How far the walk down the chain has got: the last good entry, how many entries were
    good, and each request's latest (status, seq)."""

    def __init__(self) -> None:
        self.seq, self.prev_hash, self.n = 0, GENESIS_HASH, 0
        self.latest: dict[str, tuple[str, int]] = {}

    def broken(self, problem: Problem) -> VerifyReport:
        return VerifyReport(False, self.n, self.seq, self.prev_hash, *problem)

    def problem(self, row: Any) -> Problem | None:
        """Why the entry `row` cannot follow those walked so far, or None."""
        if row.seq != self.seq + 1:
            return self.seq + 1, f"entry {self.seq + 1} is missing (next is {row.seq})"
        if row.prev_hash != self.prev_hash:
            return row.seq, "prev_hash differs from the previous entry's hash"
        try:
            details = json.loads(row.details)
        except ValueError:
            return row.seq, "details are not valid JSON"
        digest = entry_hash(row.seq, row.request_id, row.status, row.at, details, row.prev_hash)
        if digest != row.hash:
            return row.seq, "hash does not match the content (entry changed)"
        before = self.latest.get(row.request_id)
        if before is None and row.status != "received":
            return row.seq, f"{row.request_id} starts with {row.status}"
        if before is not None and row.status not in TRANSITIONS[before[0]]:
            return row.seq, f"{row.request_id} goes from {before[0]} to {row.status}"
        return None

    def step(self, row: Any) -> None:
        self.latest[row.request_id] = (row.status, row.seq)
        self.seq, self.prev_hash, self.n = row.seq, row.hash, self.n + 1


def _head_problem(head: Any, seq: int, last_hash: str) -> Problem | None:
    """Whether the head row names the chain's last entry (entries cut from the end, or added
    without moving the head, show here)."""
    if (head.seq, head.hash) == (seq, last_hash):
        return None
    why = (
        "entries removed from the end?"
        if head.seq > seq
        else "entries added without moving the head?"
    )
    return (
        min(head.seq, seq) + 1,
        f"the head records entry {head.seq} but the chain ends at {seq} ({why})",
    )


def _state_problem(
    current: dict[str, tuple[str, int]], latest: dict[str, tuple[str, int]]
) -> Problem | None:
    """Whether every request's current state matches its latest entry."""
    if current == latest:
        return None
    request_id = min(set(current) ^ set(latest) or {r for r in latest if current[r] != latest[r]})
    where = latest.get(request_id, current.get(request_id, ("", 0)))[1]
    return where, f"the current-state table disagrees with the entries for {request_id}"


def verify_chain(conn: Connection) -> VerifyReport:
    """Walk the chain from the first entry; report the first broken link or OK.

    Checks, per entry: consecutive seq, prev_hash equal to the previous hash, the stored
    hash equal to a recomputed one, and a legal lifecycle step; then that the head row
    names the last entry (entries cut from the end) and that every request's current
    state matches its latest entry. Someone able to rewrite the whole chain can forge it:
    compare the head hash with one recorded elsewhere (e.g. a model version's tags).
    """
    walk = _Walk()
    for row in conn.execute(select(entries_table).order_by(entries_table.c.seq)):
        problem = walk.problem(row)
        if problem is not None:
            return walk.broken(problem)
        walk.step(row)
    head = conn.execute(select(head_table.c.seq, head_table.c.hash)).one()
    problem = _head_problem(head, walk.seq, walk.prev_hash)
    if problem is not None:
        return walk.broken(problem)
    current = {
        row.request_id: (row.status, row.last_seq)
        for row in conn.execute(
            select(
                requests_table.c.request_id,
                requests_table.c.status,
                requests_table.c.last_seq,
            )
        )
    }
    problem = _state_problem(current, walk.latest)
    if problem is not None:
        return walk.broken(problem)
    return VerifyReport(True, walk.n, walk.seq, walk.prev_hash)
