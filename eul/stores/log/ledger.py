"""The deletion log: an append-only, hash-chained ledger of data-deletion requests.

Every change to a request is a new *entry* (an event); nothing is updated or deleted in the
entries table. Each entry carries the sha256 of a canonical JSON of its own content and of the
previous entry's hash, so editing, removing or reordering any entry breaks the chain and
:meth:`Ledger.verify` names the first broken link. A small ``ledger_requests`` table holds
each request's current state, written in the same transaction as the entry, so that listing
stays fast; the entries are the source of truth and :meth:`Ledger.verify` checks the two agree.

Lifecycle: received -> validated | rejected -> unlearned -> fused -> deployed -> purged.

Only ids and content hashes are stored: never the text of the data being forgotten.

SQLite (the default) runs in WAL mode with a busy timeout, and every write transaction starts
with ``BEGIN IMMEDIATE``, so concurrent writers queue for the lock and the chain head is read
and extended atomically. Other SQLAlchemy databases serialise writers with ``SELECT ... FOR
UPDATE`` on the one-row head table.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sqlite3
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Column,
    Connection,
    Engine,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    bindparam,
    create_engine,
    event,
    func,
    select,
    update,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DatabaseError, IntegrityError
from sqlalchemy.pool import StaticPool

DEFAULT_URL = "sqlite:///state/deletion-log.sqlite"
DEFAULT_DEADLINE_DAYS = 30
URL_ENV = "EUL_LOG_URL"
GENESIS_HASH = "0" * 64
BUSY_TIMEOUT_S = 60.0
_FLUSH_EVERY = 500

STATUSES = ("received", "validated", "rejected", "unlearned", "fused", "deployed", "purged")
# Which status may follow which: the lifecycle as data, so verify() can check it too.
TRANSITIONS: dict[str, tuple[str, ...]] = {
    "received": ("validated", "rejected"),
    "validated": ("unlearned",),
    "rejected": (),
    "unlearned": ("fused",),
    "fused": ("deployed",),
    "deployed": ("purged",),
    "purged": (),
}
# A request in one of these states no longer counts towards its deadline.
DONE_STATUSES = ("rejected", "deployed", "purged")

_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@/+-]{0,127}$")


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
        return self.status not in DONE_STATUSES and self.deadline < _iso(now or utcnow())

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class RequestHistory:
    """A request's current state and every entry that led to it, oldest first."""

    state: RequestState
    history: list[Entry]

    def to_dict(self) -> dict[str, Any]:
        return {"state": self.state.to_dict(), "history": [e.to_dict() for e in self.history]}


@dataclass(frozen=True)
class ValidationReport:
    """What one :meth:`Ledger.validate` call decided."""

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


# -- helpers ------------------------------------------------------------------------------


def utcnow() -> datetime:
    """Now, in UTC (every time in the log is UTC)."""
    return datetime.now(timezone.utc)


def _iso(moment: datetime) -> str:
    """Fixed-width UTC ISO text, so that text order is time order (SQL compares it)."""
    if moment.tzinfo is None:
        raise LedgerError("times must be timezone-aware; pass datetime.now(timezone.utc)")
    return moment.astimezone(timezone.utc).isoformat(timespec="microseconds")


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


def _normal_details(details: Mapping[str, Any]) -> dict[str, Any]:
    """Round-trip through JSON so that what is hashed is exactly what is read back."""
    try:
        return json.loads(canonical_json(dict(details)))
    except (TypeError, ValueError) as err:
        raise LedgerError(
            f"entry details must be JSON values (str, number, list, dict): {err}"
        ) from err


def _check_id(value: Any, what: str) -> str:
    if not isinstance(value, str) or not _ID_PATTERN.match(value):
        raise LedgerError(
            f"bad {what} {value!r}: use 1-128 letters, digits or ._:@/+- "
            "(starting with a letter or digit)"
        )
    return value


def _unknown_request(request_id: str) -> str:
    return f"no request {request_id!r} in the log; check the id (`eul requests list`)"


def _shown_ids(ids: Sequence[str], limit: int = 10) -> str:
    shown = ", ".join(ids[:limit])
    return shown + (f", ... ({len(ids)} in all)" if len(ids) > limit else "")


def _records_note(n: int) -> str:
    return f"{n} record" + ("" if n == 1 else "s")


def _chunks(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    chunk: list[Any] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _read_params_log(params_path: str | Path) -> dict[str, Any]:
    """The ``log`` section of params.yaml, or {} when the file is absent."""
    path = Path(params_path)
    if not path.is_file():
        return {}
    import yaml

    try:
        params = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        first = str(err).splitlines()[0]
        raise LedgerError(f"cannot read {path}: {first}; fix the YAML") from err
    if not isinstance(params, dict):
        raise LedgerError(f"{path} must hold a mapping at the top level")
    section = params.get("log") or {}
    if not isinstance(section, dict):
        raise LedgerError(f"`log` in {path} must be a mapping with `url` and `deadline_days`")
    return section


def resolve_url(url: str | None = None, params_path: str | Path = "params.yaml") -> str:
    """The log's database URL: argument, else $EUL_LOG_URL, else log.url in params.yaml,
    else the embedded SQLite file ``state/deletion-log.sqlite``."""
    if url:
        return url
    if os.environ.get(URL_ENV):
        return os.environ[URL_ENV]
    configured = _read_params_log(params_path).get("url")
    if configured:
        return str(configured)
    return DEFAULT_URL


def resolve_deadline_days(days: int | None = None, params_path: str | Path = "params.yaml") -> int:
    """Days a request may take: argument, else log.deadline_days in params.yaml, else 30."""
    value: Any = days
    if value is None:
        value = _read_params_log(params_path).get("deadline_days", DEFAULT_DEADLINE_DAYS)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise LedgerError(f"deadline_days must be a whole number of days >= 1, not {value!r}")
    return value


def new_request_id() -> str:
    return f"req-{uuid.uuid4().hex[:12]}"


def _record_index(
    records: Iterable[Any] | Mapping[str, Iterable[str]],
) -> tuple[dict[str, list[str]], set[str]]:
    """(subject id -> sorted record ids, all record ids) from Records or a subject mapping."""
    by_subject: dict[str, set[str]] = {}
    if isinstance(records, Mapping):
        for subject_id, ids in records.items():
            by_subject.setdefault(str(subject_id), set()).update(str(i) for i in ids)
    else:
        for record in records:
            by_subject.setdefault(record.subject_id, set()).add(record.record_id)
    known = set().union(*by_subject.values()) if by_subject else set()
    return {s: sorted(ids) for s, ids in by_subject.items()}, known


# -- the chain inside one write transaction -----------------------------------------------


class _Chain:
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


def _state(row: Any) -> RequestState:
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


def _entry(row: Any) -> Entry:
    return Entry(
        seq=row.seq,
        request_id=row.request_id,
        status=row.status,
        at=row.at,
        details=json.loads(row.details),
        prev_hash=row.prev_hash,
        hash=row.hash,
    )


# -- the ledger ---------------------------------------------------------------------------


def _enable_wal(cursor: Any, timeout_s: float) -> None:
    """Put the SQLite file in WAL mode (stored in the file: once is enough).

    Switching needs the file to itself, and SQLite answers "locked" at once, without its
    busy wait, while another process is opening a new log too: retry until the timeout.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if str(cursor.execute("PRAGMA journal_mode").fetchone()[0]).lower() == "wal":
                return
            cursor.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as err:
            message = str(err)
            if ("locked" not in message and "busy" not in message) or (time.monotonic() > deadline):
                raise
            time.sleep(0.01)


class Ledger:
    """The deletion log at one database URL (see :func:`resolve_url` for the default)."""

    def __init__(
        self,
        url: str | None = None,
        *,
        params_path: str | Path = "params.yaml",
        deadline_days: int | None = None,
        busy_timeout_s: float = BUSY_TIMEOUT_S,
    ) -> None:
        resolved = resolve_url(url, params_path)
        self.deadline_days = resolve_deadline_days(deadline_days, params_path)
        try:
            parsed = make_url(resolved)
        except ArgumentError as err:
            shown = resolved if "@" not in resolved else "***@" + resolved.rsplit("@", 1)[1]
            raise LedgerError(
                f"bad log URL {shown!r}: use an SQLAlchemy URL such as "
                f"sqlite:///state/deletion-log.sqlite (--log-url, ${URL_ENV} or log.url)"
            ) from err
        self.url = parsed.render_as_string(hide_password=True)
        self.is_sqlite = parsed.get_backend_name() == "sqlite"
        self.engine = self._create_engine(parsed, busy_timeout_s)
        self._create_schema()

    # -- connection handling --

    def _create_engine(self, parsed: Any, busy_timeout_s: float) -> Engine:
        if not self.is_sqlite:
            try:
                return create_engine(parsed, pool_pre_ping=True)
            except ModuleNotFoundError as err:
                raise LedgerUnavailable(
                    f"cannot open the log at {self.url}: its driver {err.name!r} is not "
                    f"installed; install it (pip install {err.name})"
                ) from err
            except Exception as err:  # a bad option
                raise LedgerUnavailable(f"cannot open the log at {self.url}: {err}") from err
        database = parsed.database or ""
        in_memory = database in ("", ":memory:") or "mode=memory" in database
        if in_memory:
            engine = create_engine(
                parsed, poolclass=StaticPool, connect_args={"check_same_thread": False}
            )
        else:
            if not database.startswith("file:"):
                Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
            engine = create_engine(parsed, connect_args={"timeout": busy_timeout_s})

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_connection: Any, _record: Any) -> None:
            # Let SQLAlchemy's BEGIN below, not the driver, open transactions.
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            cursor.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
            if not in_memory:
                _enable_wal(cursor, busy_timeout_s)
            cursor.execute("PRAGMA synchronous = FULL")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Connection) -> None:
            mode = conn.get_execution_options().get("eul_begin", "DEFERRED")
            conn.exec_driver_sql(f"BEGIN {mode}")

        return engine

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        """A write transaction holding the write lock from its first statement."""
        try:
            with self.engine.connect() as conn:
                conn.execution_options(eul_begin="IMMEDIATE")
                with conn.begin():
                    yield conn
        except IntegrityError:
            raise
        except DatabaseError as err:  # locked, unreachable, or not a database at all
            raise self._db_error(err) from err

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        """A read transaction: one consistent snapshot of the log, no lock on writers."""
        try:
            with self.engine.connect() as conn:
                if self.engine.dialect.name in ("postgresql", "mysql", "mariadb"):
                    # One snapshot for every statement (SQLite's read transactions are one).
                    conn.execution_options(isolation_level="REPEATABLE READ")
                with conn.begin():
                    yield conn
        except IntegrityError:
            raise
        except DatabaseError as err:  # locked, unreachable, or not a database at all
            raise self._db_error(err) from err

    def _db_error(self, err: DatabaseError) -> LedgerError:
        message = str(err.orig).splitlines()[0] if err.orig else str(err).splitlines()[0]
        if "locked" in message or "busy" in message:
            return LedgerUnavailable(
                f"the log at {self.url} stayed locked by another writer; retry"
            )
        return LedgerUnavailable(f"cannot use the log at {self.url}: {message}")

    def _create_schema(self) -> None:
        with self._write() as conn:
            metadata.create_all(conn)
            if conn.execute(select(head_table.c.id)).first() is None:
                conn.execute(head_table.insert().values(id=1, seq=0, hash=GENESIS_HASH))

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writing --

    def check(self, spec: RequestSpec | Mapping[str, Any]) -> RequestSpec:
        """The spec checked (LedgerError naming the problem) with its request id and deadline
        days filled in; writes nothing."""
        if isinstance(spec, Mapping):
            allowed = {"subject_id", "record_ids", "request_id", "deadline_days"}
            unknown = sorted(set(spec) - allowed)
            if unknown:
                fields = ", ".join(sorted(allowed))
                raise LedgerError(f"unknown request field(s) {', '.join(unknown)}; use {fields}")
            ids = spec.get("record_ids") or ()
            if isinstance(ids, str):
                raise LedgerError("record_ids must be a list of ids, not one string")
            spec = RequestSpec(**{**spec, "record_ids": tuple(ids)})
        if isinstance(spec.record_ids, str):
            raise LedgerError("record_ids must be a list of ids, not one string")
        if (spec.subject_id is None) == (not spec.record_ids):
            raise LedgerError("a request names either a subject or record ids (exactly one)")
        if spec.subject_id is not None:
            _check_id(spec.subject_id, "subject id")
        record_ids = tuple(sorted({_check_id(r, "record id") for r in spec.record_ids}))
        request_id = _check_id(spec.request_id or new_request_id(), "request id")
        days = resolve_deadline_days(
            spec.deadline_days if spec.deadline_days is not None else self.deadline_days
        )
        return RequestSpec(spec.subject_id, record_ids, request_id, days)

    def submit(
        self,
        *,
        subject_id: str | None = None,
        record_ids: Sequence[str] = (),
        request_id: str | None = None,
        deadline_days: int | None = None,
    ) -> Entry:
        """Record a new request; with a request id already in the log, change nothing and
        return that request's first entry (so clients can retry safely)."""
        spec = RequestSpec(subject_id, tuple(record_ids), request_id, deadline_days)
        spec = self.check(spec)  # fixes a generated id before a retry could change it
        try:
            return self.submit_many([spec])[0].entry
        except IntegrityError:
            # Only a database that ignored the head lock gets here; the retry sees the winner.
            return self.submit_many([spec])[0].entry

    def submit_many(self, specs: Iterable[RequestSpec | Mapping[str, Any]]) -> list[SubmitResult]:
        """Record many requests in one transaction: all of them or, on any error, none."""
        results: list[SubmitResult] = []
        with self._write() as conn:
            chain = _Chain(conn)
            created: dict[str, Entry] = {}
            for chunk in _chunks(specs, _FLUSH_EVERY):
                checked = [self.check(s) for s in chunk]
                existing = self._first_entries(conn, [s.request_id for s in checked])
                rows = []
                for spec in checked:
                    rid = str(spec.request_id)
                    earlier = existing.get(rid) or created.get(rid)
                    if earlier is not None:
                        results.append(SubmitResult(earlier, False))
                        continue
                    now = utcnow()
                    at = _iso(now)
                    deadline = _iso(now + timedelta(days=int(spec.deadline_days or 0)))
                    details = {
                        "subject_id": spec.subject_id,
                        "record_ids": list(spec.record_ids),
                        "deadline": deadline,
                    }
                    entry = chain.append(rid, "received", at, details)
                    created[rid] = entry
                    results.append(SubmitResult(entry, True))
                    rows.append(
                        {
                            "request_id": rid,
                            "subject_id": spec.subject_id,
                            "record_ids": json.dumps(list(spec.record_ids)),
                            "matched_ids": None,
                            "status": "received",
                            "submitted_at": at,
                            "deadline": deadline,
                            "updated_at": at,
                            "note": None,
                            "first_seq": entry.seq,
                            "last_seq": entry.seq,
                        }
                    )
                chain.flush()
                if rows:
                    conn.execute(requests_table.insert(), rows)
            chain.close()
        return results

    def _first_entries(self, conn: Connection, request_ids: list[str]) -> dict[str, Entry]:
        rows = conn.execute(
            select(entries_table)
            .join(requests_table, requests_table.c.first_seq == entries_table.c.seq)
            .where(requests_table.c.request_id.in_(request_ids))
        ).all()
        return {row.request_id: _entry(row) for row in rows}

    def validate(
        self,
        records: Iterable[Any] | Mapping[str, Iterable[str]],
        data_version: str | None = None,
    ) -> ValidationReport:
        """Validate every received request against the data set's ids.

        ``records`` is a list of :class:`eul.data.records.Record` or a mapping subject id -> record
        ids. A request matching nothing is rejected with the reason and stays in the log; one
        matching something is validated with the matched record ids. Unknown ids in a request
        that also names known ones are kept as ``unknown_record_ids``: the known ones are
        still deleted. ``data_version`` (e.g. a content hash of the data file) is recorded.
        """
        by_subject, known = _record_index(records)
        validated: list[str] = []
        rejected: dict[str, str] = {}
        with self._write() as conn:
            chain = _Chain(conn)
            pending = conn.execute(
                select(requests_table)
                .where(requests_table.c.status == "received")
                .order_by(requests_table.c.first_seq)
            ).all()
            updates = []
            for row in pending:
                at = _iso(utcnow())
                extra = {"data_version": data_version} if data_version else {}
                matched, details = self._match(row, by_subject, known)
                if matched:
                    status, note = "validated", _records_note(len(matched))
                    entry = chain.append(
                        row.request_id, status, at, {"record_ids": matched, **details, **extra}
                    )
                    validated.append(row.request_id)
                else:
                    status, note = "rejected", details["reason"]
                    entry = chain.append(row.request_id, status, at, {**details, **extra})
                    rejected[row.request_id] = note
                updates.append(
                    {
                        "rid": row.request_id,
                        "new_status": status,
                        "new_matched": json.dumps(matched) if matched else None,
                        "new_note": note,
                        "new_updated": at,
                        "new_seq": entry.seq,
                    }
                )
            chain.close()
            if updates:
                conn.execute(
                    update(requests_table)
                    .where(requests_table.c.request_id == bindparam("rid"))
                    .values(
                        status=bindparam("new_status"),
                        matched_ids=bindparam("new_matched"),
                        note=bindparam("new_note"),
                        updated_at=bindparam("new_updated"),
                        last_seq=bindparam("new_seq"),
                    ),
                    updates,
                )
        return ValidationReport(validated, rejected, chain.seq, chain.hash)

    @staticmethod
    def _match(
        row: Any, by_subject: dict[str, list[str]], known: set[str]
    ) -> tuple[list[str], dict[str, Any]]:
        """(matched record ids, details) for one request row."""
        if row.subject_id is not None:
            matched = by_subject.get(row.subject_id, [])
            if not matched:
                return [], {"reason": f"no records for subject {row.subject_id}"}
            return matched, {}
        asked = json.loads(row.record_ids)
        matched = [r for r in asked if r in known]
        unknown = [r for r in asked if r not in known]
        if not matched:
            return [], {"reason": f"unknown record ids: {_shown_ids(unknown)}"}
        return matched, ({"unknown_record_ids": unknown} if unknown else {})

    def mark(self, request_id: str, status: str, **details: Any) -> Entry:
        """Move one request to ``status`` (a later pipeline step); see :meth:`mark_many`."""
        return self.mark_many([request_id], status, **details)[0]

    def mark_many(self, request_ids: Sequence[str], status: str, **details: Any) -> list[Entry]:
        """Move requests to ``status`` in one transaction, all or none.

        ``deployed`` needs ``model_version``; ``purged`` needs ``evidence`` (a dict of content
        hashes showing the rows are gone); ``rejected`` needs ``reason``; ``validated`` needs
        ``record_ids``. An illegal transition (e.g. purged before deployed) raises LedgerError.
        """
        if status not in STATUSES or status == "received":
            raise LedgerError(
                f"cannot mark a request {status!r}; use one of {', '.join(STATUSES[1:])}"
            )
        details = _normal_details(details)
        note = self._check_details(status, details)
        entries: list[Entry] = []
        with self._write() as conn:
            chain = _Chain(conn)
            current = {
                row.request_id: row.status
                for row in conn.execute(
                    select(requests_table.c.request_id, requests_table.c.status).where(
                        requests_table.c.request_id.in_(list(request_ids))
                    )
                )
            }
            for request_id in request_ids:
                if request_id not in current:
                    raise LedgerError(_unknown_request(request_id))
                before = current[request_id]
                if status not in TRANSITIONS[before]:
                    allowed = " or ".join(TRANSITIONS[before]) or "nothing (it is final)"
                    raise LedgerError(
                        f"cannot mark {request_id} {status}: it is {before}, "
                        f"and {before} may only become {allowed}"
                    )
                at = _iso(utcnow())
                entry = chain.append(request_id, status, at, details)
                entries.append(entry)
                current[request_id] = status
                values: dict[str, Any] = {
                    "status": status,
                    "updated_at": at,
                    "last_seq": entry.seq,
                    "note": note,
                }
                if status == "validated":
                    values["matched_ids"] = json.dumps(details["record_ids"])
                conn.execute(
                    update(requests_table)
                    .where(requests_table.c.request_id == request_id)
                    .values(**values)
                )
            chain.close()
        return entries

    @staticmethod
    def _check_details(status: str, details: dict[str, Any]) -> str | None:
        """Check the details a status needs; return the short note shown by list()."""
        if status == "deployed":
            version = details.get("model_version")
            if not isinstance(version, (str, int)) or str(version) == "":
                raise LedgerError("deployed needs model_version (the registered model version)")
            return f"model {version}"
        if status == "purged":
            evidence = details.get("evidence")
            if not isinstance(evidence, dict) or not evidence:
                raise LedgerError(
                    "purged needs evidence: a dict of content hashes, e.g. "
                    "{'data.jsonl': 'sha256:...'}"
                )
            return f"evidence for {len(evidence)} item(s)"
        if status == "rejected":
            if not details.get("reason"):
                raise LedgerError("rejected needs a reason")
            return str(details["reason"])
        if status == "validated":
            ids = details.get("record_ids")
            if not isinstance(ids, list) or not ids:
                raise LedgerError("validated needs record_ids (the matched record ids)")
            return _records_note(len(ids))
        layer = details.get("layer")
        return f"layer {layer}" if layer else None

    # -- reading --

    def head(self) -> tuple[int, str]:
        """(seq, hash) of the last entry; (0, 64 zeros) for an empty log."""
        with self._read() as conn:
            row = conn.execute(select(head_table.c.seq, head_table.c.hash)).one()
        return int(row.seq), str(row.hash)

    def get(self, request_id: str) -> RequestHistory:
        """A request's current state and full history; LedgerError if it is not in the log."""
        with self._read() as conn:
            row = conn.execute(
                select(requests_table).where(requests_table.c.request_id == request_id)
            ).first()
            if row is None:
                raise LedgerError(_unknown_request(request_id))
            history = conn.execute(
                select(entries_table)
                .where(entries_table.c.request_id == request_id)
                .order_by(entries_table.c.seq)
            ).all()
        return RequestHistory(_state(row), [_entry(h) for h in history])

    def entry_at(self, seq: int) -> Entry | None:
        """The entry with sequence number `seq`, or None (a model version names the log entry
        its batch was cut at; this checks that entry still has the hash the version records)."""
        with self._read() as conn:
            row = conn.execute(select(entries_table).where(entries_table.c.seq == seq)).first()
        return None if row is None else _entry(row)

    def entries(self, statuses: Sequence[str] | None = None) -> list[Entry]:
        """Every entry in sequence order, optionally only those that set one of `statuses`
        (the audit reads the `deployed` and `purged` entries of every request at once)."""
        wanted = self._statuses(statuses)
        query = select(entries_table).order_by(entries_table.c.seq)
        if wanted is not None:
            query = query.where(entries_table.c.status.in_(wanted))
        with self._read() as conn:
            return [_entry(row) for row in conn.execute(query)]

    def list(
        self,
        status: str | Sequence[str] | None = None,
        overdue: bool = False,
        now: datetime | None = None,
    ) -> list[RequestState]:
        """Requests in submission order, optionally only those in ``status`` or overdue."""
        statuses = self._statuses(status)
        query = select(requests_table).order_by(requests_table.c.first_seq)
        if statuses is not None:
            query = query.where(requests_table.c.status.in_(statuses))
        if overdue:
            query = query.where(
                requests_table.c.status.not_in(DONE_STATUSES),
                requests_table.c.deadline < _iso(now or utcnow()),
            )
        with self._read() as conn:
            return [_state(row) for row in conn.execute(query)]

    def overdue(self, now: datetime | None = None) -> list[RequestState]:
        """Requests past their deadline that are not yet deployed, purged or rejected."""
        return self.list(overdue=True, now=now)

    def counts(self) -> dict[str, int]:
        """Number of requests per current status."""
        with self._read() as conn:
            rows = conn.execute(
                select(requests_table.c.status, func.count()).group_by(requests_table.c.status)
            ).all()
        return {status: n for status, n in rows}

    @staticmethod
    def _statuses(status: str | Sequence[str] | None) -> list[str] | None:
        if status is None:
            return None
        wanted = [status] if isinstance(status, str) else list(status)
        unknown = [s for s in wanted if s not in STATUSES]
        if unknown:
            raise LedgerError(f"unknown status {unknown[0]!r}; use one of {', '.join(STATUSES)}")
        return wanted

    def snapshot(self, statuses: Sequence[str] = ("validated",)) -> dict[str, Any]:
        """The requests in ``statuses`` and the log head they were read at, in one read.

        Keys: log_seq, log_hash, taken_at, requests (request_id, subject_id, record_ids,
        status, submitted_at, deadline); record_ids are the ids matched at validation.
        """
        wanted = self._statuses(statuses) or []
        with self._read() as conn:
            row = conn.execute(select(head_table.c.seq, head_table.c.hash)).one()
            rows = conn.execute(
                select(requests_table)
                .where(requests_table.c.status.in_(wanted))
                .order_by(requests_table.c.first_seq)
            ).all()
        return {
            "log_seq": int(row.seq),
            "log_hash": str(row.hash),
            "taken_at": _iso(utcnow()),
            "requests": [
                {
                    "request_id": r.request_id,
                    "subject_id": r.subject_id,
                    "record_ids": json.loads(r.matched_ids) if r.matched_ids else [],
                    "status": r.status,
                    "submitted_at": r.submitted_at,
                    "deadline": r.deadline,
                }
                for r in rows
            ],
        }

    def write_snapshot(
        self, path: str | Path, statuses: Sequence[str] = ("validated",)
    ) -> dict[str, Any]:
        """Write :meth:`snapshot` as JSON (atomically) and return it.

        When the file already holds the same log head and requests, it is left untouched, so
        a pipeline stage that depends on it does not rerun for a log that has not changed.
        """
        snap = self.snapshot(statuses)
        path = Path(path)
        if path.is_file():
            try:
                old = json.loads(path.read_text())
            except ValueError:
                old = None
            if isinstance(old, dict) and {**old, "taken_at": snap["taken_at"]} == snap:
                return old
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(snap, indent=2) + "\n")
        os.replace(tmp, path)
        return snap

    def verify(self) -> VerifyReport:
        """Walk the chain from the first entry; report the first broken link or OK.

        Checks, per entry: consecutive seq, prev_hash equal to the previous hash, the stored
        hash equal to a recomputed one, and a legal lifecycle step; then that the head row
        names the last entry (entries cut from the end) and that every request's current
        state matches its latest entry. Someone able to rewrite the whole chain can forge it:
        compare the head hash with one recorded elsewhere (e.g. a model version's tags).
        """
        seq, prev_hash, n = 0, GENESIS_HASH, 0
        latest: dict[str, tuple[str, int]] = {}

        def broken(at_seq: int | None, reason: str) -> VerifyReport:
            return VerifyReport(False, n, seq, prev_hash, at_seq, reason)

        with self._read() as conn:
            for row in conn.execute(select(entries_table).order_by(entries_table.c.seq)):
                if row.seq != seq + 1:
                    return broken(seq + 1, f"entry {seq + 1} is missing (next is {row.seq})")
                if row.prev_hash != prev_hash:
                    return broken(row.seq, "prev_hash differs from the previous entry's hash")
                try:
                    details = json.loads(row.details)
                except ValueError:
                    return broken(row.seq, "details are not valid JSON")
                digest = entry_hash(
                    row.seq, row.request_id, row.status, row.at, details, row.prev_hash
                )
                if digest != row.hash:
                    return broken(row.seq, "hash does not match the content (entry changed)")
                before = latest.get(row.request_id)
                if before is None and row.status != "received":
                    return broken(row.seq, f"{row.request_id} starts with {row.status}")
                if before is not None and row.status not in TRANSITIONS[before[0]]:
                    return broken(
                        row.seq, f"{row.request_id} goes from {before[0]} to {row.status}"
                    )
                latest[row.request_id] = (row.status, row.seq)
                seq, prev_hash, n = row.seq, row.hash, n + 1
            head = conn.execute(select(head_table.c.seq, head_table.c.hash)).one()
            if (head.seq, head.hash) != (seq, prev_hash):
                why = (
                    "entries removed from the end?"
                    if head.seq > seq
                    else "entries added without moving the head?"
                )
                return broken(
                    min(head.seq, seq) + 1,
                    f"the head records entry {head.seq} but the chain ends at {seq} ({why})",
                )
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
        if current != latest:
            request_id = min(
                set(current) ^ set(latest) or {r for r in latest if current[r] != latest[r]}
            )
            where = latest.get(request_id, current.get(request_id, ("", 0)))[1]
            return broken(
                where, f"the current-state table disagrees with the entries for {request_id}"
            )
        return VerifyReport(True, n, seq, prev_hash)
