"""What a request and an entry must hold: a request spec's fields, the details each status
needs, and how a request matches the data set's ids at validation. Nothing here touches the
database, so a client can check a request before it writes anything."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

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


def check_details(status: str, details: dict[str, Any]) -> str | None:
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
                "purged needs evidence: a dict of content hashes, e.g. {'data.jsonl': 'sha256:...'}"
            )
        return f"evidence for {len(evidence)} item(s)"
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
