"""`eul requests`: submit, validate, list, show and verify deletion requests in the log, and
the one-time migration of older evidence to keyed digests.

Tables for people by default, ``--json`` for machines. Only ids and hashes are printed,
never the text of the data being forgotten.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from datetime import datetime
from pathlib import Path
from typing import Any

from eul.cli.args import writable_path
from eul.cli.common import add_data_options, load_data
from eul.runtime.evidence import is_keyed
from eul.stores.log.config import URL_ENV
from eul.stores.log.schema import STATUSES, LedgerError, RequestSpec, RequestState, utcnow
from eul.stores.log.store import Ledger

EXIT_BROKEN = 1


class UsageError(ValueError):
    """Bad command-line input; `eul` prints it as one line and exits 2."""


LINE_FORMATS = (
    'one request per line: JSON ({"subject_id": "s1"} or {"record_ids": ["r1", "r2"]}, '
    'optionally with "request_id" and "deadline_days"), subject:ID, or comma-separated record ids'
)


# -- output helpers -----------------------------------------------------------------------


def _table(headers: list[str], rows: list[list[str]]) -> str:
    """Left-aligned columns separated by two spaces."""
    widths = [max(len(str(x)) for x in column) for column in zip(headers, *rows, strict=True)]
    lines = [headers, *rows]
    return "\n".join(
        "  ".join(str(cell).ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
        for line in lines
    )


def _when(iso: str) -> str:
    """'2026-11-29 19:45' from a stored UTC timestamp."""
    return iso[:16].replace("T", " ")


def _target(subject_id: str | None, record_ids: list[str]) -> str:
    if is_keyed(subject_id):  # purged or rejected: the log keeps only the keyed subject
        return "a subject (keyed)"
    if subject_id is not None:
        return f"subject {subject_id}"
    if len(record_ids) == 1:
        return f"record {record_ids[0]}"
    return f"{len(record_ids)} record ids"


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2))


def _ledger(args: argparse.Namespace) -> Ledger:
    if args.params != "params.yaml" and not Path(args.params).is_file():
        raise UsageError(f"--params: no file at {args.params}; check the path")
    return Ledger(args.log_url, params_path=args.params)


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
    with _ledger(args) as ledger:
        specs = _specs_from_args(args, ledger)
        results = ledger.submit_many(specs)
    if args.json:
        _print_json(
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
        target = _target(subject, r.entry.details["record_ids"])
        if r.created:
            deadline = _when(r.entry.details["deadline"])
            print(f"submitted {r.entry.request_id}: {target}, deadline {deadline} UTC")
        else:
            print(
                f"{r.entry.request_id} was already submitted on {_when(r.entry.at)} UTC "
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
    with _ledger(args) as ledger:
        report = ledger.validate(records, data_version=_file_sha256(Path(args.data)))
    if args.json:
        _print_json(report.to_dict())
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
        print(_table(["REJECTED", "REASON"], rows))


# -- list and show ------------------------------------------------------------------------


def _deadline_cell(state: RequestState, now: datetime) -> str:
    return _when(state.deadline) + (" OVERDUE" if state.is_overdue(now) else "")


def cmd_list(args: argparse.Namespace) -> None:
    now = utcnow()
    with _ledger(args) as ledger:
        states = ledger.list(status=args.status, overdue=args.overdue, now=now)
    if args.json:
        _print_json([{**s.to_dict(), "overdue": s.is_overdue(now)} for s in states])
        return
    if not states:
        print("no requests" + (" match" if args.status or args.overdue else " in the log"))
        return
    rows = [
        [
            s.request_id,
            s.status,
            _target(s.subject_id, s.record_ids),
            _when(s.submitted_at),
            _deadline_cell(s, now),
            s.note or "",
        ]
        for s in states
    ]
    print(_table(["REQUEST", "STATUS", "TARGET", "SUBMITTED", "DEADLINE (UTC)", "NOTE"], rows))
    counts: dict[str, int] = {}
    for s in states:
        counts[s.status] = counts.get(s.status, 0) + 1
    by_status = ", ".join(f"{counts[k]} {k}" for k in STATUSES if k in counts)
    print(f"\n{len(states)} requests: {by_status}")


def _details_cell(details: dict[str, Any], limit: int = 70) -> str:
    parts = []
    for key, value in details.items():
        if isinstance(value, list):
            shown = f"[{len(value)} ids]" if len(value) > 3 else f"[{','.join(map(str, value))}]"
        elif isinstance(value, dict):
            shown = f"{{{len(value)} items}}"
        else:
            shown = str(value)
        parts.append(f"{key}={shown}")
    text = " ".join(parts)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def cmd_show(args: argparse.Namespace) -> None:
    with _ledger(args) as ledger:
        found = ledger.get(args.request_id)
        erasure_days = ledger.erasure_days
    levels = found.compliance(erasure_days, utcnow())
    if args.json:
        _print_json({**found.to_dict(), "compliance": levels})
        return
    s = found.state
    matched = s.matched_ids
    suppressed = levels["suppressed_at"] or "not yet"
    erased = levels["erased_at"] or "not yet"
    fields = [
        ("request", s.request_id),
        ("status", s.status),
        ("level", levels["level"]),
        ("target", _target(s.subject_id, s.record_ids)),
        ("submitted", f"{s.submitted_at}"),
        ("suppressed", suppressed),
        ("deadline", s.deadline + (" (OVERDUE)" if levels["overdue"] else "")),
        ("erased", erased),
        (
            "erasure by",
            levels["erasure_deadline"] + (" (OVERDUE)" if levels["erasure_overdue"] else ""),
        ),
    ]
    if s.record_ids:
        fields.append(("record ids", ", ".join(s.record_ids)))
    if matched is not None:
        more = f" ... ({len(matched)} in all)" if len(matched) > 20 else ""
        fields.append(("matched", f"{len(matched)} records: {', '.join(matched[:20])}{more}"))
    if s.note:
        fields.append(("note", s.note))
    width = max(len(k) for k, _ in fields)
    for key, value in fields:
        print(f"{key:<{width}}  {value}")
    print()
    rows = [
        [str(e.seq), e.status, _when(e.at), _details_cell(e.details), e.hash[:12]]
        for e in found.history
    ]
    print(_table(["SEQ", "STATUS", "AT (UTC)", "DETAILS", "HASH"], rows))


# -- verify and snapshot ------------------------------------------------------------------


def cmd_verify(args: argparse.Namespace) -> int:
    with _ledger(args) as ledger:
        report = ledger.verify()
    if args.json:
        _print_json(report.to_dict())
    elif report.ok:
        print(
            f"chain OK: {report.entries} entries, head entry {report.head_seq}, "
            f"hash {report.head_hash}"
        )
    else:
        print(
            f"chain BROKEN at entry {report.broken_seq}: {report.reason} "
            f"({report.entries} entries before it check out)"
        )
    return 0 if report.ok else EXIT_BROKEN


def cmd_snapshot(args: argparse.Namespace) -> None:
    writable_path(args.out, "--out")
    with _ledger(args) as ledger:
        snap = ledger.write_snapshot(args.out, statuses=args.status or ["validated"])
    if args.json:
        _print_json({k: v for k, v in snap.items() if k != "requests"} | {"out": args.out})
        return
    print(
        f"wrote {len(snap['requests'])} requests at log entry {snap['log_seq']} "
        f"(hash {snap['log_hash'][:12]}) to {args.out}"
    )


# -- migrate-evidence ---------------------------------------------------------------------

DEFAULT_PURGE_LEDGER = "data/purge-log.jsonl"


def _purge_ledger_path(args: argparse.Namespace, root: Path) -> Path:
    """--purge-ledger, else `purge.ledger` in the params file, else the default; relative
    paths from the project root (the params file's folder)."""
    if args.purge_ledger:
        return Path(args.purge_ledger)
    configured = DEFAULT_PURGE_LEDGER
    params = Path(args.params)
    if params.is_file():
        import yaml

        try:
            loaded = yaml.safe_load(params.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as err:
            raise UsageError(f"--params: {params} is not valid YAML; fix it") from err
        section = loaded.get("purge") if isinstance(loaded, dict) else None
        if isinstance(section, dict) and section.get("ledger"):
            configured = str(section["ledger"])
    return root / configured


def cmd_migrate_evidence(args: argparse.Namespace) -> None:
    from eul.stores.log.migrate import migrate_purge_ledger

    with _ledger(args) as ledger:
        report = ledger.migrate_evidence()
        verified = ledger.verify()
        lines = migrate_purge_ledger(
            _purge_ledger_path(args, ledger.project_root), ledger.evidence_key
        )
    counts = {**report.to_dict(), "purge_ledger_lines_rewritten": lines, "chain_ok": verified.ok}
    if args.json:
        _print_json(counts)
        return
    if not report.changed and not lines:
        print(
            f"nothing to migrate: the log ({verified.entries} entries) and the purge ledger "
            "keep only keyed evidence already"
        )
        return
    print(
        f"migrated: {report.entries_rewritten} entries rewritten, {report.entries_rehashed} "
        f"rehashed from entry {report.first_changed_seq or '-'}; {report.states_rewritten} "
        f"request states keyed; {lines} purge-ledger lines keyed"
    )
    chain = "OK" if verified.ok else f"BROKEN at entry {verified.broken_seq}"
    print(f"chain {chain}: {verified.entries} entries, head hash {verified.head_hash}")
    if report.entries_rehashed:
        print(
            "model versions registered before now name their log entry's old hash: run a "
            "new batch rather than promote one of them"
        )


# -- parser -------------------------------------------------------------------------------


def _add_common(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("the log")
    g.add_argument(
        "--log-url",
        help=f"SQLAlchemy URL of the log (default: ${URL_ENV}, else log.url in params.yaml, "
        "else sqlite:///state/deletion-log.sqlite)",
    )
    g.add_argument(
        "--params",
        default="params.yaml",
        help="params file with a `log` section (default: params.yaml; may be absent)",
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


def register(subparsers: Any) -> None:
    """Add `eul requests ...` to the `eul` command line."""
    requests = subparsers.add_parser(
        "requests",
        help="the deletion log: submit, validate, list, show, verify, migrate-evidence",
        description="The append-only, hash-chained log of deletion requests. Lifecycle: "
        "received -> validated | rejected -> unlearned -> fused -> deployed -> purged. "
        "Each request has a deadline (30 days unless log.deadline_days or --deadline-days "
        "says otherwise).",
    )
    sub = requests.add_subparsers(dest="requests_command", metavar="ACTION", required=True)
    _declare_submit(sub)
    _declare_validate(sub)
    _declare_list(sub)
    _declare_show(sub)
    _declare_verify(sub)
    _declare_snapshot(sub)
    _declare_migrate_evidence(sub)


def _declare_submit(sub: Any) -> None:
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
    _add_common(submit)
    submit.set_defaults(func=cmd_submit, needs_ml=False)


def _declare_validate(sub: Any) -> None:
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
    _add_common(validate)
    validate.set_defaults(func=cmd_validate)


def _declare_list(sub: Any) -> None:
    """`eul requests list`."""
    listing = sub.add_parser(
        "list",
        help="list requests and their current status",
        description="One row per request, in submission order.",
    )
    listing.add_argument("--status", choices=STATUSES, help="only requests in this status")
    listing.add_argument(
        "--overdue",
        action="store_true",
        help="only requests past their deadline and not yet deployed, purged or rejected",
    )
    _add_common(listing)
    listing.set_defaults(func=cmd_list, needs_ml=False)


def _declare_show(sub: Any) -> None:
    """`eul requests show`."""
    show = sub.add_parser(
        "show",
        help="one request: current state and full history",
        description="The request's current state and every entry of its history, with hashes.",
    )
    show.add_argument("request_id", metavar="ID", help="the request id")
    _add_common(show)
    show.set_defaults(func=cmd_show, needs_ml=False)


def _declare_verify(sub: Any) -> None:
    """`eul requests verify`."""
    verify = sub.add_parser(
        "verify",
        help="check the hash chain (exit 1 if broken)",
        description="Walk the hash chain from the first entry and report the first broken "
        "link (an entry changed, removed or out of order). Exit status 1 if broken.",
    )
    _add_common(verify)
    verify.set_defaults(func=cmd_verify, needs_ml=False)


def _declare_snapshot(sub: Any) -> None:
    """`eul requests snapshot`."""
    snapshot = sub.add_parser(
        "snapshot",
        help="write the validated requests as JSON for the partition stage",
        description="Write {log_seq, log_hash, taken_at, requests} for the requests in the "
        "given status(es); an unchanged log leaves an existing file untouched.",
    )
    snapshot.add_argument("--out", required=True, help="JSON file to write")
    snapshot.add_argument(
        "--status",
        action="append",
        choices=STATUSES,
        help="status to include (repeatable; default validated)",
    )
    _add_common(snapshot)
    snapshot.set_defaults(func=cmd_snapshot, needs_ml=False)


def _declare_migrate_evidence(sub: Any) -> None:
    """`eul requests migrate-evidence`."""
    migrate = sub.add_parser(
        "migrate-evidence",
        help="once, after upgrading: key what an older log kept in the clear",
        description="Rewrite, in place, what an older version kept in the clear: entries' "
        "subject ids become subject_hmac, row_sha256 lists become row_hmac (exact, without "
        "the rows), rejection reasons no longer name a subject, purged and rejected requests' "
        "state rows keep only the keyed subject, and the purge ledger's lines likewise; then "
        "rehash the chain from the first changed entry so `verify` passes. Uses the project's "
        "evidence key ($EUL_EVIDENCE_KEY or state/evidence.key). Refused on a broken chain; "
        "a second run changes nothing. Prints counts, never values.",
    )
    migrate.add_argument(
        "--purge-ledger",
        help="the purge ledger to rewrite (default: purge.ledger in params.yaml, else "
        f"{DEFAULT_PURGE_LEDGER}, from the project root)",
    )
    _add_common(migrate)
    migrate.set_defaults(func=cmd_migrate_evidence, needs_ml=False)
