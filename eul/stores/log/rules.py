"""What a request and an entry must hold: a request spec's fields, the details each status
needs, and how a request matches the data set's ids at validation. Nothing here touches the
database, so a client can check a request before it writes anything."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from eul.runtime.evidence import PREFIX
from eul.stores.log.config import resolve_deadline_days
from eul.stores.log.schema import (
    STATUSES,
    LedgerError,
    RequestSpec,
    check_id,
    is_valid_id,
    new_request_id,
    shown_id,
)

# The reason a subject request matching nothing is rejected with; it never names the subject
# (the log keeps it forever).
NO_SUBJECT_RECORDS = "no records for the subject"


def unknown_request(request_id: str) -> str:
    shown = repr(request_id) if is_valid_id(request_id) else shown_id(request_id)  # not in full
    return f"no request {shown} in the log; check the id (`eul requests list`)"


def shown_ids(ids: Sequence[str], limit: int = 10) -> str:
    shown = ", ".join(ids[:limit])
    return shown + (f", ... ({len(ids)} in all)" if len(ids) > limit else "")


def records_note(n: int) -> str:
    return f"{n} record" + ("" if n == 1 else "s")


def check_spec(spec: RequestSpec | Mapping[str, Any], deadline_days: int) -> RequestSpec:
    """The spec checked (LedgerError naming the problem) with its request id and deadline
    days (else `deadline_days`) filled in."""
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
        check_id(spec.subject_id, "subject id")
        if spec.subject_id.startswith(PREFIX):
            # It would read as a keyed digest, and verify() could not tell it from one.
            raise LedgerError(f"bad subject id: it may not start with {PREFIX!r}")
    record_ids = tuple(sorted({check_id(r, "record id") for r in spec.record_ids}))
    request_id = check_id(spec.request_id or new_request_id(), "request id")
    days = resolve_deadline_days(
        spec.deadline_days if spec.deadline_days is not None else deadline_days
    )
    return RequestSpec(spec.subject_id, record_ids, request_id, days)


def check_statuses(status: str | Sequence[str] | None) -> list[str] | None:
    """The statuses asked for as a list (None for all); LedgerError for an unknown one."""
    if status is None:
        return None
    wanted = [status] if isinstance(status, str) else list(status)
    unknown = [s for s in wanted if s not in STATUSES]
    if unknown:
        raise LedgerError(f"unknown status {unknown[0]!r}; use one of {', '.join(STATUSES)}")
    return wanted


# What the purge step's evidence of one request holds (eul.pipeline.purge_step._evidence).
PURGE_EVIDENCE = (
    "rows_removed",
    "row_hmac",
    "data_dvc_md5_before",
    "data_dvc_md5_after",
    "remotes_swept",
    "purge_log",
    "purged_at",
)
_HASH = re.compile(r"[0-9a-f]{64}")
_KEYED_ROW = re.compile(re.escape(PREFIX) + r"[0-9a-f]{64}")


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_deployed(details: dict[str, Any]) -> str:
    version = details.get("model_version")
    if not isinstance(version, (str, int)) or str(version) == "":
        raise LedgerError("deployed needs model_version (the registered model version)")
    seq, digest = details.get("log_seq"), details.get("log_hash")
    if not (_is_count(seq) and seq >= 1 and isinstance(digest, str) and _HASH.fullmatch(digest)):
        raise LedgerError(
            "deployed needs log_seq and log_hash: the log entry the registered version was cut "
            "at (its tags log_seq and log_hash), an entry number and a 64-hex hash"
        )
    return f"model {version}"


def purge_rows(evidence: Any) -> int:
    """The number of rows the purge evidence of one request says were removed, once its form
    is checked (LedgerError naming the field, never a value)."""
    if not isinstance(evidence, dict):
        raise LedgerError(f"purged needs evidence: the purge step's {', '.join(PURGE_EVIDENCE)}")
    missing = [name for name in PURGE_EVIDENCE if name not in evidence]
    if missing:
        raise LedgerError(
            f"purged evidence lacks {', '.join(missing)} (the purge step's evidence holds "
            f"{', '.join(PURGE_EVIDENCE)})"
        )
    digests = evidence["row_hmac"]
    if not isinstance(digests, list) or not all(
        isinstance(d, str) and _KEYED_ROW.fullmatch(d) for d in digests
    ):
        raise LedgerError(
            f"purged evidence row_hmac must be a list of keyed row digests ({PREFIX} and 64 "
            "hex digits, one a removed row)"
        )
    if not _is_count(evidence["rows_removed"]) or evidence["rows_removed"] != len(digests):
        raise LedgerError(
            f"purged evidence rows_removed must be the number of row_hmac digests ({len(digests)})"
        )
    for name in ("data_dvc_md5_before", "data_dvc_md5_after", "purged_at", "purge_log"):
        if not isinstance(evidence[name], str) or not evidence[name]:
            raise LedgerError(f"purged evidence {name} must be a non-empty string")
    gone = evidence.get("rows_already_gone", 0)
    if not _is_count(gone) or gone < 0:
        raise LedgerError("purged evidence rows_already_gone must be a count (0 or more)")
    remotes = evidence["remotes_swept"]
    if not isinstance(remotes, list) or not all(isinstance(r, str) for r in remotes):
        raise LedgerError("purged evidence remotes_swept must be a list of remote names")
    return len(digests)


def check_details(status: str, details: dict[str, Any]) -> str | None:
    """Check the details a status needs; return the short note shown by list(). What needs
    the log itself (a deployed version's anchor, a purge's count against the matched ids) is
    checked by the store inside its write transaction."""
    if status == "deployed":
        return _check_deployed(details)
    if status == "purged":
        rows = purge_rows(details.get("evidence"))
        return f"{rows} row{'' if rows == 1 else 's'} removed"
    if status == "erased":
        evidence = details.get("evidence")
        version = evidence.get("compaction_version") if isinstance(evidence, dict) else None
        if not isinstance(version, (str, int)) or str(version) == "":
            raise LedgerError(
                "erased needs evidence with compaction_version (the production version "
                "trained without the rows), e.g. {'compaction_version': 7, ...}"
            )
        return f"erased, compaction {version}"
    if status == "rejected":
        if not details.get("reason"):
            raise LedgerError("rejected needs a reason")
        return str(details["reason"])
    if status == "validated":
        ids = details.get("record_ids")
        if not isinstance(ids, list) or not ids:
            raise LedgerError("validated needs record_ids (the matched record ids)")
        return records_note(len(ids))
    layer = details.get("layer")
    return f"layer {layer}" if layer else None


def folded_id(request_id: str) -> str:
    """A request id as a case-insensitive file system sees it: ids are ASCII, so this is
    SQL's lower() too (the store queries lower(request_id))."""
    return request_id.lower()


def case_collision(request_id: str, other: str) -> str:
    return (
        f"request id {request_id!r} differs from {other!r} only in case: both would share one "
        "forget file and one layer folder on a case-insensitive file system; use another id"
    )


def record_index(
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


def match_request(
    row: Any, by_subject: dict[str, list[str]], known: set[str]
) -> tuple[list[str], dict[str, Any]]:
    """(matched record ids, details) for one request row."""
    if row.subject_id is not None:
        matched = by_subject.get(row.subject_id, [])
        if not matched:
            return [], {"reason": NO_SUBJECT_RECORDS}
        return matched, {}
    asked = json.loads(row.record_ids)
    matched = [r for r in asked if r in known]
    unknown = [r for r in asked if r not in known]
    if not matched:
        return [], {"reason": f"unknown record ids: {shown_ids(unknown)}"}
    return matched, ({"unknown_record_ids": unknown} if unknown else {})
