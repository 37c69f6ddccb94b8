"""The deletion log: an append-only, hash-chained ledger of data-deletion requests.

Every change to a request is a new *entry* (an event), appended to the hash chain
(:mod:`eul.stores.log.chain`); nothing is updated or deleted in the entries table. A small
``ledger_requests`` table holds each request's current state, written in the same transaction
as the entry, so that listing stays fast; the entries are the source of truth and
:meth:`Ledger.verify` checks the two agree.

Lifecycle: received -> validated | rejected -> unlearned -> fused -> deployed -> purged
-> erased.

Only ids and content hashes are stored: never the text of the data being forgotten. The
entries, kept forever, hold a subject only as its keyed digest (`subject_hmac`, see
:mod:`eul.runtime.evidence`); the current-state row keeps the raw subject id while it is
needed to match rows and replaces it by the keyed digest once the request is purged (or
rejected: then it matches nothing).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, bindparam, func, select, update
from sqlalchemy.exc import IntegrityError

from eul.runtime import evidence
from eul.stores.log.chain import Chain, normal_details
from eul.stores.log.config import resolve_deadline_days, resolve_erasure_days, resolve_url
from eul.stores.log.database import BUSY_TIMEOUT_S, Database
from eul.stores.log.migrate import EvidenceMigration, migrate_log
from eul.stores.log.proofs import check_anchor, check_covered, check_purge_count
from eul.stores.log.rules import (
    case_collision,
    check_details,
    check_spec,
    check_statuses,
    folded_id,
    match_request,
    record_index,
    records_note,
    unknown_request,
)
from eul.stores.log.schema import (
    DONE_STATUSES,
    RAW_SUBJECT_STATUSES,
    STATUSES,
    TRANSITIONS,
    Entry,
    LedgerError,
    RequestHistory,
    RequestSpec,
    RequestState,
    SubmitResult,
    ValidationReport,
    VerifyReport,
    entries_table,
    entry_from_row,
    head_table,
    iso,
    requests_table,
    state_from_row,
    utcnow,
)
from eul.stores.log.snapshot import read_snapshot, write_snapshot_file
from eul.stores.log.verify import verify_chain

_FLUSH_EVERY = 500


def _chunks(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    chunk: list[Any] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


class Ledger:
    """The deletion log at one database URL (see :func:`resolve_url` for the default).

    Subject ids are keyed with `evidence_key`, else with the key of the project that holds
    `params_path` (its folder: `$EUL_EVIDENCE_KEY` or `state/evidence.key` there, created on
    first use; see :func:`eul.runtime.evidence.evidence_key`). The key is read only when a
    subject is first keyed, so reading the log never creates one.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        params_path: str | Path = "params.yaml",
        deadline_days: int | None = None,
        erasure_days: int | None = None,
        busy_timeout_s: float = BUSY_TIMEOUT_S,
        evidence_key: bytes | None = None,
    ) -> None:
        self.project_root = Path(params_path).parent
        self._evidence_key = evidence_key
        resolved = resolve_url(url, params_path)
        self.deadline_days = resolve_deadline_days(deadline_days, params_path)
        self.erasure_days = resolve_erasure_days(erasure_days, params_path)
        self.db = Database(resolved, busy_timeout_s)
        self.url, self.is_sqlite, self.engine = self.db.url, self.db.is_sqlite, self.db.engine
        self.db.create_schema()

    def close(self) -> None:
        self.db.close()

    @property
    def evidence_key(self) -> bytes:
        """The key subject ids are keyed with (read or created on first use)."""
        if self._evidence_key is None:
            self._evidence_key = evidence.evidence_key(self.project_root)
        return self._evidence_key

    def keyed_subject(self, subject_id: str | None) -> str | None:
        """The subject's keyed digest (None stays None; no key is read for it)."""
        return None if subject_id is None else evidence.keyed(self.evidence_key, subject_id)

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writing --

    def check(self, spec: RequestSpec | Mapping[str, Any]) -> RequestSpec:
        """The spec checked (LedgerError naming the problem) with its request id and deadline
        days filled in; writes nothing."""
        return check_spec(spec, self.deadline_days)

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
        """Record many requests in one transaction: all of them or, on any error, none.

        A request id already in the log (or earlier in the batch) is not recorded again; one
        that differs from such an id only in case is refused (LedgerError naming both): the
        two would share a forget file and a layer folder on a case-insensitive file system.
        """
        results: list[SubmitResult] = []
        with self.db.write() as conn:
            chain = Chain(conn)
            exact: dict[str, Entry] = {}
            folded: dict[str, str] = {}
            for chunk in _chunks(specs, _FLUSH_EVERY):
                checked = [self.check(s) for s in chunk]
                for entry in self._first_entries(conn, [str(s.request_id) for s in checked]):
                    exact[entry.request_id] = entry
                    folded.setdefault(folded_id(entry.request_id), entry.request_id)
                rows = []
                for spec in checked:
                    rid = str(spec.request_id)
                    if rid in exact:
                        results.append(SubmitResult(exact[rid], False))
                        continue
                    other = folded.get(folded_id(rid))
                    if other is not None:
                        raise LedgerError(case_collision(rid, other))
                    entry, row = self._received(chain, rid, spec)
                    exact[rid], folded[folded_id(rid)] = entry, rid
                    results.append(SubmitResult(entry, True))
                    rows.append(row)
                chain.flush()
                if rows:
                    conn.execute(requests_table.insert(), rows)
            chain.close()
        return results

    def _received(self, chain: Chain, rid: str, spec: RequestSpec) -> tuple[Entry, dict[str, Any]]:
        """Append a new request's ``received`` entry (the subject keyed); return it and its
        current-state row (the raw subject id, needed to match rows until the purge)."""
        now = utcnow()
        at = iso(now)
        deadline = iso(now + timedelta(days=int(spec.deadline_days or 0)))
        details = {
            "subject_hmac": self.keyed_subject(spec.subject_id),
            "record_ids": list(spec.record_ids),
            "deadline": deadline,
        }
        entry = chain.append(rid, "received", at, details)
        row = {
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
        return entry, row

    @staticmethod
    def _first_entries(conn: Connection, request_ids: list[str]) -> list[Entry]:
        """The first entries of the requests whose ids equal these but for case (one query,
        on lower(request_id): SQLite and PostgreSQL index it, see Database.create_schema)."""
        wanted = sorted({folded_id(r) for r in request_ids})
        rows = conn.execute(
            select(entries_table)
            .join(requests_table, requests_table.c.first_seq == entries_table.c.seq)
            .where(func.lower(requests_table.c.request_id).in_(wanted))
        ).all()
        return [entry_from_row(row) for row in rows]

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
        by_subject, known = record_index(records)
        validated: list[str] = []
        rejected: dict[str, str] = {}
        with self.db.write() as conn:
            chain = Chain(conn)
            pending = conn.execute(
                select(requests_table)
                .where(requests_table.c.status == "received")
                .order_by(requests_table.c.first_seq)
            ).all()
            updates = []
            for row in pending:
                at = iso(utcnow())
                extra = {"data_version": data_version} if data_version else {}
                matched, details = match_request(row, by_subject, known)
                if matched:
                    status, note = "validated", records_note(len(matched))
                    entry = chain.append(
                        row.request_id, status, at, {"record_ids": matched, **details, **extra}
                    )
                    validated.append(row.request_id)
                else:
                    status, note = "rejected", details["reason"]
                    entry = chain.append(row.request_id, status, at, {**details, **extra})
                    rejected[row.request_id] = note
                subject = row.subject_id
                if status not in RAW_SUBJECT_STATUSES:
                    subject = self.keyed_subject(subject)
                updates.append(
                    {
                        "rid": row.request_id,
                        "new_subject": subject,
                        "new_status": status,
                        "new_matched": json.dumps(matched) if matched else None,
                        "new_note": note,
                        "new_updated": at,
                        "new_seq": entry.seq,
                    }
                )
            chain.close()
            if updates:
                self._update_states(conn, updates)
        return ValidationReport(validated, rejected, chain.seq, chain.hash)

    @staticmethod
    def _update_states(conn: Connection, updates: list[dict[str, Any]]) -> None:
        """Write validation's new current states, one executemany for all requests."""
        conn.execute(
            update(requests_table)
            .where(requests_table.c.request_id == bindparam("rid"))
            .values(
                subject_id=bindparam("new_subject"),
                status=bindparam("new_status"),
                matched_ids=bindparam("new_matched"),
                note=bindparam("new_note"),
                updated_at=bindparam("new_updated"),
                last_seq=bindparam("new_seq"),
            ),
            updates,
        )

    def mark(self, request_id: str, status: str, **details: Any) -> Entry:
        """Move one request to ``status`` (a later pipeline step); see :meth:`mark_many`."""
        return self.mark_many([request_id], status, **details)[0]

    def mark_many(self, request_ids: Sequence[str], status: str, **details: Any) -> list[Entry]:
        """Move requests to ``status`` in one transaction, all or none.

        ``deployed`` needs ``model_version`` and the log entry that version was cut at
        (``log_seq``, ``log_hash``: its tags), which must be in the log with that hash, and
        each request must have been validated at or before it; ``purged`` needs the purge
        step's ``evidence`` (see :func:`eul.stores.log.rules.purge_rows`), one removed row's
        keyed digest per record id the request matched; ``erased`` needs ``evidence`` naming
        the ``compaction_version`` trained without the rows; ``rejected`` needs ``reason``;
        ``validated`` needs ``record_ids``. An illegal transition (e.g. purged before
        deployed), or missing or inconsistent evidence, raises LedgerError.
        """
        if status not in STATUSES or status == "received":
            raise LedgerError(
                f"cannot mark a request {status!r}; use one of {', '.join(STATUSES[1:])}"
            )
        details = normal_details(details)
        note = check_details(status, details)
        entries: list[Entry] = []
        with self.db.write() as conn:
            chain = Chain(conn)
            rows = conn.execute(
                select(
                    requests_table.c.request_id,
                    requests_table.c.status,
                    requests_table.c.subject_id,
                    requests_table.c.matched_ids,
                ).where(requests_table.c.request_id.in_(list(request_ids)))
            ).all()
            states = {row.request_id: row for row in rows}
            current = {row.request_id: row.status for row in rows}
            for request_id in request_ids:
                if request_id not in current:
                    raise LedgerError(unknown_request(request_id))
                before = current[request_id]
                if status not in TRANSITIONS[before]:
                    allowed = " or ".join(TRANSITIONS[before]) or "nothing (it is final)"
                    raise LedgerError(
                        f"cannot mark {request_id} {status}: it is {before}, "
                        f"and {before} may only become {allowed}"
                    )
                current[request_id] = status
                if status == "purged":
                    check_purge_count(request_id, states[request_id].matched_ids, details)
            if status == "deployed":
                check_anchor(conn, details, chain.seq)
                check_covered(conn, request_ids, details)
            for request_id in request_ids:
                entry = self._marked(conn, chain, states[request_id], status, details, note)
                entries.append(entry)
            chain.close()
        return entries

    def _marked(
        self,
        conn: Connection,
        chain: Chain,
        state: Any,
        status: str,
        details: dict[str, Any],
        note: str | None,
    ) -> Entry:
        """Append one request's entry and write its new current state."""
        at = iso(utcnow())
        entry = chain.append(state.request_id, status, at, details)
        values: dict[str, Any] = {
            "status": status,
            "updated_at": at,
            "last_seq": entry.seq,
            "note": note,
        }
        if status == "validated":
            values["matched_ids"] = json.dumps(details["record_ids"])
        if status not in RAW_SUBJECT_STATUSES:
            values["subject_id"] = self.keyed_subject(state.subject_id)
        conn.execute(
            update(requests_table)
            .where(requests_table.c.request_id == state.request_id)
            .values(**values)
        )
        return entry

    def migrate_evidence(self) -> EvidenceMigration:
        """Key what an older version kept in the clear (see :mod:`eul.stores.log.migrate`):
        entries' subject ids and row hashes, rejection reasons naming a subject, and the
        subject ids of purged or rejected requests' state rows; the chain is rehashed from
        the first changed entry. A log already keyed is left as it is. Refused (LedgerError)
        when the chain does not verify: rehashing would hide what broke it."""
        with self.db.write() as conn:
            report = migrate_log(conn, self.evidence_key, RAW_SUBJECT_STATUSES)
        if report.changed:
            self.db.rewrite_file()
        return report

    # -- reading --

    def head(self) -> tuple[int, str]:
        """(seq, hash) of the last entry; (0, 64 zeros) for an empty log."""
        with self.db.read() as conn:
            row = conn.execute(select(head_table.c.seq, head_table.c.hash)).one()
        return int(row.seq), str(row.hash)

    def get(self, request_id: str) -> RequestHistory:
        """A request's current state and full history; LedgerError if it is not in the log."""
        with self.db.read() as conn:
            row = conn.execute(
                select(requests_table).where(requests_table.c.request_id == request_id)
            ).first()
            if row is None:
                raise LedgerError(unknown_request(request_id))
            history = conn.execute(
                select(entries_table)
                .where(entries_table.c.request_id == request_id)
                .order_by(entries_table.c.seq)
            ).all()
        return RequestHistory(state_from_row(row), [entry_from_row(h) for h in history])

    def entry_at(self, seq: int) -> Entry | None:
        """The entry with sequence number `seq`, or None (a model version names the log entry
        its batch was cut at; this checks that entry still has the hash the version records)."""
        with self.db.read() as conn:
            row = conn.execute(select(entries_table).where(entries_table.c.seq == seq)).first()
        return None if row is None else entry_from_row(row)

    def entries(self, statuses: Sequence[str] | None = None) -> list[Entry]:
        """Every entry in sequence order, optionally only those that set one of `statuses`
        (the audit reads the `deployed` and `purged` entries of every request at once)."""
        wanted = check_statuses(statuses)
        query = select(entries_table).order_by(entries_table.c.seq)
        if wanted is not None:
            query = query.where(entries_table.c.status.in_(wanted))
        with self.db.read() as conn:
            return [entry_from_row(row) for row in conn.execute(query)]

    def list(
        self,
        status: str | Sequence[str] | None = None,
        overdue: bool = False,
        now: datetime | None = None,
    ) -> list[RequestState]:
        """Requests in submission order, optionally only those in ``status`` or overdue."""
        statuses = check_statuses(status)
        query = select(requests_table).order_by(requests_table.c.first_seq)
        if statuses is not None:
            query = query.where(requests_table.c.status.in_(statuses))
        if overdue:
            query = query.where(
                requests_table.c.status.not_in(DONE_STATUSES),
                requests_table.c.deadline < iso(now or utcnow()),
            )
        with self.db.read() as conn:
            return [state_from_row(row) for row in conn.execute(query)]

    def overdue(self, now: datetime | None = None) -> list[RequestState]:
        """Requests past their deadline that are not yet deployed, purged or rejected."""
        return self.list(overdue=True, now=now)

    def erasure_overdue(self, now: datetime | None = None) -> list[RequestState]:
        """Requests past their erasure deadline (`erasure_days` after submission) that are
        not yet erased (nor rejected)."""
        return [s for s in self.list() if s.is_erasure_overdue(self.erasure_days, now)]

    def counts(self) -> dict[str, int]:
        """Number of requests per current status."""
        with self.db.read() as conn:
            rows = conn.execute(
                select(requests_table.c.status, func.count()).group_by(requests_table.c.status)
            ).all()
        return {status: n for status, n in rows}

    def snapshot(self, statuses: Sequence[str] = ("validated",)) -> dict[str, Any]:
        """The requests in ``statuses`` and the log head they were read at, in one read
        (see :func:`eul.stores.log.snapshot.read_snapshot` for its keys)."""
        wanted = check_statuses(statuses) or []
        with self.db.read() as conn:
            return read_snapshot(conn, wanted)

    def write_snapshot(
        self, path: str | Path, statuses: Sequence[str] = ("validated",)
    ) -> dict[str, Any]:
        """Write :meth:`snapshot` as JSON (atomically) and return it; a file that already
        holds the same log head and requests is left untouched (see
        :func:`eul.stores.log.snapshot.write_snapshot_file`)."""
        return write_snapshot_file(path, self.snapshot(statuses))

    def verify(self) -> VerifyReport:
        """Walk the chain from the first entry and recompute every request's current state
        from it; report the first broken link or OK (see
        :func:`eul.stores.log.verify.verify_chain` for what is checked). The subjects of
        requests in progress are checked with the evidence key, read (never created) here.
        Someone able to rewrite the whole chain can forge it: compare the head hash with one
        recorded elsewhere (e.g. a model version's tags)."""
        with self.db.read() as conn:
            return verify_chain(conn, self._read_evidence_key)

    def _read_evidence_key(self) -> bytes:
        """The evidence key if it exists (EvidenceKeyError when it cannot be read)."""
        if self._evidence_key is None:
            self._evidence_key = evidence.evidence_key(self.project_root, create=False)
        return self._evidence_key
