"""The deletion log's data: its tables, the request lifecycle, identifier rules, and the
values (entries, request states, reports) read from and written to it.

Lifecycle: received -> validated | rejected -> unlearned -> fused -> deployed -> purged
-> erased.

Two levels of compliance, each with a deadline counted from submission: a request is
*suppressed* once a production model whose layer forgets it is deployed (`deployed`, then
`purged` once its rows leave the data; deadline `log.deadline_days`), and *erased* once the
deployed weights were trained without its rows and every stored artifact trained on them is
deleted (`erased`; deadline `log.erasure_days`, computed, not stored).

Only ids and content hashes are stored: never the text of the data being forgotten; entries
hold subjects and rows only as keyed digests (eul.runtime.evidence).
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import Column, Integer, MetaData, String, Table, Text

GENESIS_HASH = "0" * 64

STATUSES = (
    "received",
    "validated",
    "rejected",
    "unlearned",
    "fused",
    "deployed",
    "purged",
    "erased",
)
# Which status may follow which: the lifecycle as data, so verify() can check it too.
TRANSITIONS: dict[str, tuple[str, ...]] = {
    "received": ("validated", "rejected"),
    "validated": ("unlearned",),
    "rejected": (),
    "unlearned": ("fused",),
    "fused": ("deployed",),
    "deployed": ("purged",),
    "purged": ("erased",),
    "erased": (),
}
# A request in one of these states no longer counts towards its (suppression) deadline.
DONE_STATUSES = ("rejected", "deployed", "purged", "erased")
# A deployed model forgets the request: the first level of compliance.
SUPPRESSED_STATUSES = ("deployed", "purged", "erased")
# The compliance levels a request reaches, in order (`RequestState.level`).
LEVELS = ("pending", "suppressed", "erased")
# A request's state row keeps its raw subject id only in these (it is needed to match rows);
# in any later or final status it holds the keyed digest instead.
RAW_SUBJECT_STATUSES = ("received", "validated", "unlearned", "fused", "deployed")

_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@/+-]{0,127}")


class LedgerError(ValueError):
    """A misuse of the log (bad id, illegal transition, unreadable config); one line."""


class LedgerUnavailable(LedgerError):
    """The log's database cannot be used right now (a server that does not answer, a missing
    driver, a file that is not a database, a lock held too long): a failure of the store,
    not of the request, so the command line exits 1 rather than 2."""


# -- schema -------------------------------------------------------------------------------

metadata = MetaData()

entries_table = Table(
    "ledger_entries",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=False),
    Column("request_id", String(128), nullable=False, index=True),
    Column("status", String(16), nullable=False),
    Column("at", String(32), nullable=False),
    Column("details", Text, nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False, unique=True),
)

# Current state per request; the primary key also makes a second "received" impossible.
requests_table = Table(
    "ledger_requests",
    metadata,
    Column("request_id", String(128), primary_key=True),
    Column("subject_id", String(128), nullable=True),
    Column("record_ids", Text, nullable=False),
    Column("matched_ids", Text, nullable=True),
    Column("status", String(16), nullable=False, index=True),
    Column("submitted_at", String(32), nullable=False),
    Column("deadline", String(32), nullable=False, index=True),
    Column("updated_at", String(32), nullable=False),
    Column("note", Text, nullable=True),
    Column("first_seq", Integer, nullable=False, index=True),
    Column("last_seq", Integer, nullable=False),
)

# One row (id 1): the last entry's seq and hash; the row writers lock.
head_table = Table(
    "ledger_head",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("seq", Integer, nullable=False),
    Column("hash", String(64), nullable=False),
)


# -- values -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    """One event in the log."""

    seq: int
    request_id: str
    status: str
    at: str
    details: dict[str, Any]
    prev_hash: str
    hash: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class RequestSpec:
    """What a client asks to delete: a subject (all their records) or explicit record ids."""

    subject_id: str | None = None
    record_ids: tuple[str, ...] = ()
    request_id: str | None = None
    deadline_days: int | None = None


@dataclass(frozen=True)
class SubmitResult:
    """The request's first entry, and whether this call created it."""

    entry: Entry
    created: bool


@dataclass(frozen=True)
class RequestState:
    """A request as it stands now (its latest entry), from the current-state table."""

    request_id: str
    subject_id: str | None
    record_ids: list[str]
    matched_ids: list[str] | None
    status: str
    submitted_at: str
    deadline: str
    updated_at: str
    note: str | None
    first_seq: int
    last_seq: int

    def is_overdue(self, now: datetime | None = None) -> bool:
        """Not yet suppressed (nor rejected) past its deadline."""
        return self.status not in DONE_STATUSES and self.deadline < iso(now or utcnow())

    @property
    def level(self) -> str:
        """The compliance level reached: pending, suppressed or erased (rejected for a
        request that matched nothing)."""
        if self.status == "rejected":
            return "rejected"
        if self.status == "erased":
            return "erased"
        return "suppressed" if self.status in SUPPRESSED_STATUSES else "pending"

    def erasure_deadline(self, erasure_days: int) -> str:
        """When the request must be erased: `erasure_days` after submission (log.erasure_days;
        computed from submitted_at, so a change of the setting applies to every request)."""
        submitted = datetime.fromisoformat(self.submitted_at)
        return iso(submitted + timedelta(days=erasure_days))

    def is_erasure_overdue(self, erasure_days: int, now: datetime | None = None) -> bool:
        """Not yet erased (nor rejected) past its erasure deadline."""
        if self.status in ("erased", "rejected"):
            return False
        return self.erasure_deadline(erasure_days) < iso(now or utcnow())

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class RequestHistory:
    """A request's current state and every entry that led to it, oldest first."""

    state: RequestState
    history: list[Entry]

    def to_dict(self) -> dict[str, Any]:
        return {"state": self.state.to_dict(), "history": [e.to_dict() for e in self.history]}

    def compliance(self, erasure_days: int, now: datetime | None = None) -> dict[str, Any]:
        """Both levels with their dates: the level reached, when the request was suppressed
        (its `deployed` entry) against its deadline, and erased against its erasure deadline."""
        state = self.state
        at = {e.status: e.at for e in self.history}
        return {
            "level": state.level,
            "suppressed_at": at.get("deployed"),
            "deadline": state.deadline,
            "overdue": state.is_overdue(now),
            "erased_at": at.get("erased"),
            "erasure_deadline": state.erasure_deadline(erasure_days),
            "erasure_overdue": state.is_erasure_overdue(erasure_days, now),
        }


@dataclass(frozen=True)
class ValidationReport:
    """What one :meth:`eul.stores.log.store.Ledger.validate` call decided."""

    validated: list[str] = field(default_factory=list)
    rejected: dict[str, str] = field(default_factory=dict)
    log_seq: int = 0
    log_hash: str = GENESIS_HASH

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class VerifyReport:
    """The result of walking the chain: OK, or the first broken link and why."""

    ok: bool
    entries: int
    head_seq: int
    head_hash: str
    broken_seq: int | None = None
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# -- rows to values -----------------------------------------------------------------------


def state_from_row(row: Any) -> RequestState:
    """A ``ledger_requests`` row as a :class:`RequestState`."""
    return RequestState(
        request_id=row.request_id,
        subject_id=row.subject_id,
        record_ids=json.loads(row.record_ids),
        matched_ids=json.loads(row.matched_ids) if row.matched_ids is not None else None,
        status=row.status,
        submitted_at=row.submitted_at,
        deadline=row.deadline,
        updated_at=row.updated_at,
        note=row.note,
        first_seq=row.first_seq,
        last_seq=row.last_seq,
    )


def entry_from_row(row: Any) -> Entry:
    """A ``ledger_entries`` row as an :class:`Entry`."""
    return Entry(
        seq=row.seq,
        request_id=row.request_id,
        status=row.status,
        at=row.at,
        details=json.loads(row.details),
        prev_hash=row.prev_hash,
        hash=row.hash,
    )


# -- times and ids ------------------------------------------------------------------------


def utcnow() -> datetime:
    """Now, in UTC (every time in the log is UTC)."""
    return datetime.now(timezone.utc)


def iso(moment: datetime) -> str:
    """Fixed-width UTC ISO text, so that text order is time order (SQL compares it)."""
    if moment.tzinfo is None:
        raise LedgerError("times must be timezone-aware; pass datetime.now(timezone.utc)")
    return moment.astimezone(timezone.utc).isoformat(timespec="microseconds")


def shown_id(value: Any) -> str:
    """A bad id as an error shows it: its first 4 characters and its length, never all of it
    (an id may be personal data, and a hostile one may be 10 kB or hold control characters)."""
    if not isinstance(value, str):
        return f"(a {type(value).__name__}, not text)"
    return f"{value[:4]!r}... ({len(value)} characters)"


def is_valid_id(value: Any) -> bool:
    return isinstance(value, str) and _ID_PATTERN.fullmatch(value) is not None


def check_id(value: Any, what: str) -> str:
    """`value` if it is a well-formed id (subject, record or request), else LedgerError."""
    if not is_valid_id(value):
        raise LedgerError(
            f"bad {what} {shown_id(value)}: use 1-128 letters, digits or ._:@/+- "
            "(starting with a letter or digit)"
        )
    return value


def new_request_id() -> str:
    return f"req-{uuid.uuid4().hex[:12]}"
