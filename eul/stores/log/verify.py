"""Verifying the log: one walk down the hash chain, then every current-state row recomputed
from the entries and compared field by field.

The entries are the source of truth; the ``ledger_requests`` table is a copy kept for fast
listing, and the pipeline acts on it (the purge reads its matched ids, the overdue check its
deadline). So a row edited by hand must fail verification as surely as an edited entry.
The walk keeps one small expected state per request and reads each table once, so 100,000
entries verify in seconds.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from sqlalchemy import Connection, select

from eul.runtime.evidence import EvidenceKeyError, is_keyed, keyed
from eul.stores.log.chain import entry_hash
from eul.stores.log.schema import (
    GENESIS_HASH,
    RAW_SUBJECT_STATUSES,
    TRANSITIONS,
    VerifyReport,
    entries_table,
    head_table,
    requests_table,
)

# Where a chain breaks: the seq of the first bad link, and why.
Problem = tuple[int, str]
# The evidence key, or how to read it (called at most once, only when a subject needs it).
KeySource = bytes | Callable[[], bytes] | None


class _Expected:
    """A request's current state as its entries say it must be."""

    __slots__ = (
        "first_seq",
        "submitted_at",
        "deadline",
        "subject",
        "old_form",
        "record_ids",
        "matched_ids",
        "status",
        "last_seq",
        "updated_at",
    )

    def __init__(self, seq: int, at: str, details: dict[str, Any]) -> None:
        self.first_seq = self.last_seq = seq
        self.submitted_at = self.updated_at = at
        self.deadline = details.get("deadline")
        # A log not yet migrated (eul requests migrate-evidence) holds the raw subject id.
        self.old_form = "subject_hmac" not in details and "subject_id" in details
        self.subject = details.get("subject_id" if self.old_form else "subject_hmac")
        self.record_ids = details.get("record_ids")
        self.matched_ids: Any = None
        self.status = "received"

    def step(self, seq: int, status: str, at: str, details: dict[str, Any]) -> None:
        if status == "validated":
            self.matched_ids = details.get("record_ids")
        self.status, self.last_seq, self.updated_at = status, seq, at


class _Walk:
    """How far the walk down the chain has got: the last good entry, how many entries were
    good, and each request's expected state."""

    def __init__(self) -> None:
        self.seq, self.prev_hash, self.n = 0, GENESIS_HASH, 0
        self.expected: dict[str, _Expected] = {}

    def broken(self, problem: Problem) -> VerifyReport:
        return VerifyReport(False, self.n, self.seq, self.prev_hash, *problem)

    def problem(self, row: Any) -> tuple[Problem | None, dict[str, Any]]:
        """(why the entry `row` cannot follow those walked so far or None, its details)."""
        if row.seq != self.seq + 1:
            return (self.seq + 1, f"entry {self.seq + 1} is missing (next is {row.seq})"), {}
        if row.prev_hash != self.prev_hash:
            return (row.seq, "prev_hash differs from the previous entry's hash"), {}
        try:
            details = json.loads(row.details)
        except ValueError:
            return (row.seq, "details are not valid JSON"), {}
        digest = entry_hash(row.seq, row.request_id, row.status, row.at, details, row.prev_hash)
        if digest != row.hash:
            return (row.seq, "hash does not match the content (entry changed)"), {}
        if not isinstance(details, dict):
            return (row.seq, "details are not a JSON object"), {}
        before = self.expected.get(row.request_id)
        if before is None and row.status != "received":
            return (row.seq, f"{row.request_id} starts with {row.status}"), details
        if before is not None and row.status not in TRANSITIONS[before.status]:
            return (row.seq, f"{row.request_id} goes from {before.status} to {row.status}"), details
        return None, details

    def step(self, row: Any, details: dict[str, Any]) -> None:
        if row.status == "received":
            self.expected[row.request_id] = _Expected(row.seq, row.at, details)
        else:
            self.expected[row.request_id].step(row.seq, row.status, row.at, details)
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


class _Key:
    """The evidence key, read on first need; None (with why) when it cannot be read."""

    def __init__(self, source: KeySource) -> None:
        self.source, self.value, self.error = source, None, ""
        self.read = False

    def get(self) -> bytes | None:
        if not self.read:
            self.read = True
            if self.source is None:
                self.error = "no evidence key was given"
            elif isinstance(self.source, bytes):
                self.value = self.source
            else:
                try:
                    self.value = self.source()
                except EvidenceKeyError as err:
                    self.error = str(err)
        return self.value


def _subject_matches(row_subject: Any, want: _Expected, key: _Key) -> bool | None:
    """Whether the row's subject is the one the received entry names (None: that needs the
    evidence key, which cannot be read). While the status needs the raw subject the row keeps
    it and the entry its keyed digest; after that the row holds the digest too."""
    raw_status = want.status in RAW_SUBJECT_STATUSES
    if want.old_form:  # the entry holds the raw id; a later status may have keyed the row
        if row_subject == want.subject:
            return True
        if raw_status or want.subject is None or not is_keyed(row_subject):
            return False
        secret = key.get()
        return None if secret is None else keyed(secret, want.subject) == row_subject
    if want.subject is None or not raw_status:
        return row_subject == want.subject
    if not isinstance(row_subject, str) or is_keyed(row_subject):
        return False
    secret = key.get()
    return None if secret is None else keyed(secret, row_subject) == want.subject


# What a state row's JSON field that does not parse reads as: equal to no value of an entry.
_UNREADABLE = object()


def _json_field(text: Any) -> Any:
    try:
        return json.loads(text) if text is not None else None
    except (TypeError, ValueError):
        return _UNREADABLE


def _differences(row: Any, want: _Expected, key: _Key) -> tuple[list[str], bool]:
    """(the row's fields that differ from the entries', whether the subject went unchecked
    for want of the key). The note is not compared: it is display text whose wording differs
    between versions, derived from the details the entries hold."""
    fields = [
        name
        for name, value, expected in (
            ("status", row.status, want.status),
            ("record_ids", _json_field(row.record_ids), want.record_ids),
            ("matched_ids", _json_field(row.matched_ids), want.matched_ids),
            ("submitted_at", row.submitted_at, want.submitted_at),
            ("deadline", row.deadline, want.deadline),
            ("updated_at", row.updated_at, want.updated_at),
            ("first_seq", row.first_seq, want.first_seq),
            ("last_seq", row.last_seq, want.last_seq),
        )
        if value != expected
    ]
    subject = _subject_matches(row.subject_id, want, key)
    if subject is False:
        fields.insert(1, "subject_id")
    return fields, subject is None


def _state_problem(conn: Connection, expected: dict[str, _Expected], key: _Key) -> Problem | None:
    """The first current-state row that differs from its entries, a row no entry names, or a
    request with entries and no row; else whether a subject could not be checked."""
    unchecked: list[_Expected] = []
    remaining = dict(expected)
    for row in conn.execute(
        select(requests_table).order_by(requests_table.c.first_seq, requests_table.c.request_id)
    ):
        want = remaining.pop(row.request_id, None)
        if want is None:
            return (
                int(row.last_seq),
                f"the current-state table has a row for {row.request_id} that no entry names",
            )
        fields, needs_key = _differences(row, want, key)
        if fields:
            why = " (or the evidence key is not the log's)" if fields == ["subject_id"] else ""
            return (
                want.last_seq,
                f"the current-state table disagrees with the entries for {row.request_id}: "
                f"{', '.join(fields)}{why}",
            )
        if needs_key:
            unchecked.append(want)
    if remaining:
        request_id, want = min(remaining.items(), key=lambda item: item[1].first_seq)
        return (
            want.last_seq,
            f"the current-state table has no row for {request_id}, which has entries",
        )
    if unchecked:
        return (
            unchecked[0].last_seq,
            f"cannot check the subject of {len(unchecked)} request(s) against the entries' "
            f"keyed subjects: {key.error}",
        )
    return None


def verify_chain(conn: Connection, key: KeySource = None) -> VerifyReport:
    """Walk the chain from the first entry; report the first broken link or OK.

    Checks, per entry: consecutive seq, prev_hash equal to the previous hash, the stored
    hash equal to a recomputed one, and a legal lifecycle step; then that the head row names
    the last entry (entries cut from the end); then that every request has exactly one
    current-state row and that each row's fields are those its entries give: status, subject
    (the raw id whose keyed digest the `received` entry holds, or that digest once purged or
    rejected; `key` is the evidence key, or how to read it), record_ids, matched_ids (the
    `validated` entry's record_ids), submitted_at, deadline, updated_at, first_seq and
    last_seq. Someone able to rewrite the whole chain can forge it: compare the head hash
    with one recorded elsewhere (e.g. a model version's tags).
    """
    walk = _Walk()
    for row in conn.execute(select(entries_table).order_by(entries_table.c.seq)):
        problem, details = walk.problem(row)
        if problem is not None:
            return walk.broken(problem)
        walk.step(row, details)
    head = conn.execute(select(head_table.c.seq, head_table.c.hash)).one()
    problem = _head_problem(head, walk.seq, walk.prev_hash)
    if problem is None:
        problem = _state_problem(conn, walk.expected, _Key(key))
    if problem is not None:
        return walk.broken(problem)
    return VerifyReport(True, walk.n, walk.seq, walk.prev_hash)
