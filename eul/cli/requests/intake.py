"""`eul requests submit` and `validate`: requests into the log, and checked against the data."""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path
from typing import Any

from eul.cli.common import add_data_options, load_data
from eul.cli.requests.common import (
    UsageError,
    add_log_options,
    open_ledger,
    print_json,
    shown_target,
    table,
    when,
)
from eul.stores.log.schema import LedgerError, RequestSpec
from eul.stores.log.store import Ledger

LINE_FORMATS = (
    'one request per line: JSON ({"subject_id": "s1"} or {"record_ids": ["r1", "r2"]}, '
    'optionally with "request_id" and "deadline_days"), subject:ID, or comma-separated record ids'
)


# -- submit -------------------------------------------------------------------------------


def parse_request_line(line: str) -> RequestSpec | None:
    """One line of a request file as a spec; None for a blank or comment line."""
    text = line.strip()
    if not text or text.startswith("#"):
        return None
    if text.startswith("{"):
        try:
            value = json.loads(text)
        except (ValueError, RecursionError) as err:  # a JSON line nested too deep to read
            raise LedgerError(f"not valid JSON ({str(err).split(':')[0]})") from err
        if not isinstance(value, dict):
            raise LedgerError("a JSON line must be an object")
        if "subject" in value:
            value["subject_id"] = value.pop("subject")
        if isinstance(value.get("record_ids"), str):
            value["record_ids"] = [r.strip() for r in value["record_ids"].split(",") if r.strip()]
        allowed = {"subject_id", "record_ids", "request_id", "deadline_days"}
        unknown = sorted(set(value) - allowed)
        if unknown:
            raise LedgerError(f"unknown field(s) {', '.join(unknown)}")
        return RequestSpec(
            subject_id=value.get("subject_id"),
            record_ids=tuple(value.get("record_ids") or ()),
            request_id=value.get("request_id"),
            deadline_days=value.get("deadline_days"),
        )
    if text.startswith("subject:"):
        return RequestSpec(subject_id=text.removeprefix("subject:").strip())
    for prefix in ("records:", "ids:"):
        text = text.removeprefix(prefix)
    ids = tuple(r.strip() for r in text.split(",") if r.strip())
    return RequestSpec(record_ids=ids)


def _specs_from_args(args: argparse.Namespace, ledger: Ledger) -> list[RequestSpec]:
    if args.file:
        if args.request_id:
            raise UsageError(
                "--request-id names one request; with --file put a request_id on each line"
            )
        path = Path(args.file)
        if not path.is_file():
            raise UsageError(f"no request file at {path}; check the path")
        specs = []
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            try:
                spec = parse_request_line(line)
                if spec is None:
                    continue
                if spec.deadline_days is None:
                    spec = RequestSpec(
                        spec.subject_id, spec.record_ids, spec.request_id, args.deadline_days
                    )
                specs.append(ledger.check(spec))
            except (LedgerError, TypeError) as err:
                raise UsageError(f"{path} line {number}: {err}; write {LINE_FORMATS}") from err
        if not specs:
            raise UsageError(f"{path} holds no requests; write {LINE_FORMATS}")
        return specs
    record_ids = tuple(r.strip() for r in (args.record_ids or "").split(",") if r.strip())
    if args.record_ids is not None and not record_ids:
        raise UsageError("--record-ids is empty; give ids separated by commas, e.g. r1,r2")
    spec = RequestSpec(args.subject, record_ids, args.request_id, args.deadline_days)
    return [ledger.check(spec)]


def _submitted_subject(spec: RequestSpec, details: dict[str, Any]) -> str | None:
    """The subject the caller gave, echoed back; the entry keeps only its keyed digest."""
    return spec.subject_id if details.get("subject_hmac") else None


def cmd_submit(args: argparse.Namespace) -> None:
    with open_ledger(args) as ledger:
        specs = _specs_from_args(args, ledger)
        results = ledger.submit_many(specs)
    if args.json:
        print_json(
            [
                {
                    "request_id": r.entry.request_id,
                    "created": r.created,
                    "seq": r.entry.seq,
                    "subject_id": _submitted_subject(spec, r.entry.details),
                    "subject_hmac": r.entry.details.get("subject_hmac"),
                    "record_ids": r.entry.details["record_ids"],
                    "submitted_at": r.entry.at,
                    "deadline": r.entry.details["deadline"],
                }
                for spec, r in zip(specs, results, strict=True)
            ]
        )
        return
    for spec, r in zip(specs, results, strict=True):
        subject = _submitted_subject(spec, r.entry.details)
        target = shown_target(subject, r.entry.details["record_ids"])
        if r.created:
            deadline = when(r.entry.details["deadline"])
            print(f"submitted {r.entry.request_id}: {target}, deadline {deadline} UTC")
        else:
            print(
                f"{r.entry.request_id} was already submitted on {when(r.entry.at)} UTC "
                f"({target}); nothing changed"
            )
    if len(results) > 1:
        print(f"{sum(r.created for r in results)} new of {len(results)} requests")


# -- validate -----------------------------------------------------------------------------


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return f"sha256:{digest.hexdigest()}"


def cmd_validate(args: argparse.Namespace) -> None:
    records = load_data(args.data, args)
    with open_ledger(args) as ledger:
        report = ledger.validate(records, data_version=_file_sha256(Path(args.data)))
    if args.json:
        print_json(report.to_dict())
        return
    total = len(report.validated) + len(report.rejected)
    if total == 0:
        print("no received requests to validate")
        return
    print(
        f"validated {len(report.validated)}, rejected {len(report.rejected)} of {total} "
        f"received requests against {args.data} ({len(records)} records); "
        f"log now at entry {report.log_seq}"
    )
    if report.rejected:
        print()
        rows = [[rid, reason] for rid, reason in report.rejected.items()]
        print(table(["REJECTED", "REASON"], rows))


def declare_submit(sub: Any) -> None:
    """`eul requests submit`."""
    submit = sub.add_parser(
        "submit",
        help="record a deletion request (or many, from a file)",
        description="Record a request to forget a subject (all their records) or explicit "
        "record ids. Submitting a --request-id that is already in the log changes nothing, "
        "so a client may retry safely.",
    )
    what = submit.add_mutually_exclusive_group(required=True)
    what.add_argument("--subject", help="subject id: forget all of this person's records")
    what.add_argument("--record-ids", help="record ids to forget, separated by commas")
    what.add_argument("--file", help=f"request file, {LINE_FORMATS}")
    submit.add_argument("--request-id", help="idempotency key (default: a new req-... id)")
    submit.add_argument(
        "--deadline-days",
        type=int,
        help="days to honour the request (default: log.deadline_days in params.yaml, else 30)",
    )
    add_log_options(submit)
    submit.set_defaults(func=cmd_submit, needs_ml=False)


def declare_validate(sub: Any) -> None:
    """`eul requests validate`."""
    validate = sub.add_parser(
        "validate",
        help="check received requests against the data set",
        description="Match every received request against the records in --data: a request "
        "with matching records becomes validated (the matched record ids are kept), one that "
        "matches nothing becomes rejected with the reason. Both stay in the log.",
    )
    validate.add_argument("--data", required=True, help="training records (.jsonl/.csv/...)")
    add_data_options(validate)
    add_log_options(validate)
    validate.set_defaults(func=cmd_validate)
