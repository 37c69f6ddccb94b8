"""Forget and retained sets from a snapshot of the deletion log.

A snapshot lists the requests to act on; each names a subject (all of that person's rows)
and/or explicit record ids. `partition` writes one forget file per request, the retained
rows (every row named by no request) and a manifest that ties the output to the log
(sequence number and hash) with per-row keyed digests (`row_hmac`, the HMAC of each row's
SHA-256 under the project's evidence key, eul.runtime.evidence) and the subject only keyed
(`subject_hmac`). The manifest never holds row content or a subject id, so it can be logged
and kept after the rows themselves are purged.

Rows are written exactly as they are stored in the input file, in input order, so the same
snapshot and data always give the same bytes.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from eul.runtime.evidence import (  # noqa: F401  (canonical_bytes, row_sha256: re-exported)
    canonical_bytes,
    keyed_row,
    keyed_subject,
    row_sha256,
)

MANIFEST = "manifest.json"
RETAINED = "retained.jsonl"
FORGET_DIR = "forget"


class PartitionError(ValueError):
    """A snapshot or data file that cannot be partitioned; the message names the problem."""


@dataclass(frozen=True)
class SnapshotRequest:
    """One deletion request as the log hands it over."""

    request_id: str
    subject_id: str | None
    record_ids: tuple[str, ...]
    status: str
    submitted_at: str
    deadline: str


@dataclass(frozen=True)
class Snapshot:
    """The requests of the deletion log at one sequence number."""

    log_seq: int
    log_hash: str
    taken_at: str
    requests: tuple[SnapshotRequest, ...]

    def with_status(self, status: str) -> list[SnapshotRequest]:
        return [r for r in self.requests if r.status == status]


@dataclass(frozen=True)
class DataRows:
    """A .jsonl data file: each row's line as stored (no newline) and its ids."""

    lines: list[str]
    record_ids: list[str]
    subject_ids: list[str | None]


# -- snapshot -----------------------------------------------------------------------------


def _field(obj: dict[str, Any], key: str, kinds: tuple[type, ...], where: str) -> Any:
    if key not in obj:
        raise PartitionError(f"{where}: missing key {key!r}")
    value = obj[key]
    if isinstance(value, bool) or not isinstance(value, kinds):
        names = " or ".join("null" if k is type(None) else k.__name__ for k in kinds)
        raise PartitionError(f"{where}: {key!r} must be {names}, got {type(value).__name__}")
    return value


def parse_snapshot(obj: Any, source: str = "snapshot") -> Snapshot:
    """Check a snapshot object; unknown keys are ignored so the log can add fields."""
    if not isinstance(obj, dict):
        raise PartitionError(f"{source}: must be a JSON object")
    log_seq = _field(obj, "log_seq", (int,), source)
    log_hash = _field(obj, "log_hash", (str,), source)
    taken_at = _field(obj, "taken_at", (str,), source)
    raw_requests = _field(obj, "requests", (list,), source)
    requests: list[SnapshotRequest] = []
    seen: set[str] = set()
    for i, item in enumerate(raw_requests):
        where = f"{source}: requests[{i}]"
        if not isinstance(item, dict):
            raise PartitionError(f"{where}: must be an object")
        request_id = _field(item, "request_id", (str,), where)
        if not request_id.strip() or len(request_id) > 200:
            raise PartitionError(f"{where}: request_id must be 1 to 200 characters")
        if request_id in seen:
            raise PartitionError(f"{where}: request_id {request_id!r} appears twice")
        seen.add(request_id)
        record_ids = _field(item, "record_ids", (list,), where)
        if not all(isinstance(r, str) and r for r in record_ids):
            raise PartitionError(f"{where}: record_ids must be non-empty strings")
        subject_id = _field(item, "subject_id", (str, type(None)), where)
        if not subject_id and not record_ids:
            raise PartitionError(f"{where}: request {request_id} names no subject and no record")
        requests.append(
            SnapshotRequest(
                request_id=request_id,
                subject_id=subject_id or None,
                record_ids=tuple(record_ids),
                status=_field(item, "status", (str,), where),
                submitted_at=_field(item, "submitted_at", (str,), where),
                deadline=_field(item, "deadline", (str,), where),
            )
        )
    return Snapshot(log_seq=log_seq, log_hash=log_hash, taken_at=taken_at, requests=tuple(requests))


def load_snapshot(path: str | Path) -> Snapshot:
    """Read a snapshot JSON file written by the deletion log."""
    path = Path(path)
    if not path.is_file():
        raise PartitionError(f"no snapshot at {path}")
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise PartitionError(f"{path}: not valid JSON (line {err.lineno})") from None
    return parse_snapshot(obj, source=str(path))


def forget_filename(request_id: str) -> str:
    """The forget file of a request: its id, with every character other than letters,
    digits and '._-~' percent-encoded (log ids may hold '/', ':' or '@')."""
    return quote(request_id, safe="") + ".jsonl"


def empty_snapshot() -> dict[str, Any]:
    """The snapshot of a log with no requests; lets the pipeline run before the first one."""
    return {"log_seq": 0, "log_hash": "", "taken_at": "1970-01-01T00:00:00+00:00", "requests": []}


# -- rows ---------------------------------------------------------------------------------


def read_rows(path: str | Path) -> DataRows:
    """Read a .jsonl data file; every row needs a unique string `record_id`."""
    path = Path(path)
    if not path.is_file():
        raise PartitionError(f"no data file at {path}")
    if path.suffix.lower() != ".jsonl":
        raise PartitionError(f"{path.name}: partition reads .jsonl files (one record a line)")
    lines: list[str] = []
    record_ids: list[str] = []
    subject_ids: list[str | None] = []
    seen: set[str] = set()
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                raise PartitionError(f"{path}: line {number} is not valid JSON") from None
            record_id = row.get("record_id") if isinstance(row, dict) else None
            if not isinstance(record_id, str) or not record_id:
                raise PartitionError(f"{path}: line {number} has no string record_id")
            if record_id in seen:
                raise PartitionError(f"{path}: record_id {record_id} appears twice")
            seen.add(record_id)
            subject = row.get("subject_id")
            lines.append(line)
            record_ids.append(record_id)
            subject_ids.append(subject if isinstance(subject, str) else None)
    return DataRows(lines=lines, record_ids=record_ids, subject_ids=subject_ids)


@dataclass(frozen=True)
class Match:
    """The rows one request names: indices in data order, and record ids not found."""

    request_id: str
    subject_id: str | None
    rows: list[int]
    missing_record_ids: list[str]


def match_requests(rows: DataRows, requests: Iterable[SnapshotRequest]) -> list[Match]:
    """For each request, the rows of its subject and of its record ids."""
    by_record = {rid: i for i, rid in enumerate(rows.record_ids)}
    by_subject: dict[str, list[int]] = {}
    for i, subject in enumerate(rows.subject_ids):
        if subject is not None:
            by_subject.setdefault(subject, []).append(i)
    matches = []
    for request in requests:
        found = set(by_subject.get(request.subject_id, ())) if request.subject_id else set()
        missing = []
        for record_id in request.record_ids:
            index = by_record.get(record_id)
            if index is None:
                missing.append(record_id)
            else:
                found.add(index)
        matches.append(
            Match(request.request_id, request.subject_id, sorted(found), sorted(set(missing)))
        )
    return matches


# -- partition ----------------------------------------------------------------------------


def _write_lines(path: Path, lines: Sequence[str]) -> str:
    """Write lines with a newline each; return the file's SHA-256."""
    data = "".join(line + "\n" for line in lines).encode("utf-8")
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def partition(
    snapshot: Snapshot,
    data: str | Path,
    out: str | Path,
    status: str = "validated",
    *,
    key: bytes,
) -> dict[str, Any]:
    """Write forget/<request_id>.jsonl, retained.jsonl and manifest.json; return the manifest.

    `key`: the project's evidence key (eul.runtime.evidence.evidence_key), which the
    manifest's subject and row digests are keyed with.

    (An id with characters other than letters, digits and '._-~' is percent-encoded in the
    file name; the manifest's `file` gives the name.)

    Only requests with `status` are acted on (several statuses: comma-separated, e.g.
    "validated,unlearned,fused", every request not yet deployed); the others are listed in
    the manifest as skipped. A row named by two requests is in both forget files and not
    retained.
    """
    data = Path(data)
    out = Path(out)
    rows = read_rows(data)
    wanted = {s.strip() for s in status.split(",") if s.strip()}
    chosen = [r for r in snapshot.requests if r.status in wanted]
    matches = match_requests(rows, chosen)

    forget_dir = out / FORGET_DIR
    if forget_dir.exists():
        shutil.rmtree(forget_dir)
    forget_dir.mkdir(parents=True)
    forgotten: set[int] = set()
    entries = []
    for match in matches:
        lines = [rows.lines[i] for i in match.rows]
        name = forget_filename(match.request_id)
        file_sha = _write_lines(forget_dir / name, lines)
        forgotten.update(match.rows)
        entries.append(
            {
                "request_id": match.request_id,
                "subject_hmac": keyed_subject(key, match.subject_id),
                "rows": len(lines),
                "file": f"{FORGET_DIR}/{name}",
                "file_sha256": file_sha,
                "row_hmac": [keyed_row(key, line) for line in lines],
                "missing_record_ids": match.missing_record_ids,
            }
        )
    retained = [line for i, line in enumerate(rows.lines) if i not in forgotten]
    retained_sha = _write_lines(out / RETAINED, retained)
    manifest = {
        "log_seq": snapshot.log_seq,
        "log_hash": snapshot.log_hash,
        "taken_at": snapshot.taken_at,
        "status": status,
        "data_sha256": hashlib.sha256(data.read_bytes()).hexdigest(),
        "rows_total": len(rows.lines),
        "rows_forgotten": len(forgotten),
        "rows_retained": len(retained),
        "retained_sha256": retained_sha,
        "requests": entries,
        "skipped": [
            {"request_id": r.request_id, "status": r.status}
            for r in snapshot.requests
            if r.status not in wanted
        ],
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest
