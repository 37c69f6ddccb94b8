"""`eul requests list`, `show` and `snapshot`: what the log holds, for people and for the
partition stage."""

from __future__ import annotations

import argparse
from datetime import datetime
from typing import Any

from eul.cli.args import writable_path
from eul.cli.requests.common import (
    add_log_options,
    open_ledger,
    print_json,
    shown_target,
    table,
    when,
)
from eul.stores.log.schema import STATUSES, RequestState, utcnow

# -- list and show ------------------------------------------------------------------------


def _deadline_cell(state: RequestState, now: datetime) -> str:
    return when(state.deadline) + (" OVERDUE" if state.is_overdue(now) else "")


def cmd_list(args: argparse.Namespace) -> None:
    now = utcnow()
    with open_ledger(args) as ledger:
        states = ledger.list(status=args.status, overdue=args.overdue, now=now)
    if args.json:
        print_json([{**s.to_dict(), "overdue": s.is_overdue(now)} for s in states])
        return
    if not states:
        print("no requests" + (" match" if args.status or args.overdue else " in the log"))
        return
    rows = [
        [
            s.request_id,
            s.status,
            shown_target(s.subject_id, s.record_ids),
            when(s.submitted_at),
            _deadline_cell(s, now),
            s.note or "",
        ]
        for s in states
    ]
    print(table(["REQUEST", "STATUS", "TARGET", "SUBMITTED", "DEADLINE (UTC)", "NOTE"], rows))
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
    with open_ledger(args) as ledger:
        found = ledger.get(args.request_id)
        erasure_days = ledger.erasure_days
    levels = found.compliance(erasure_days, utcnow())
    if args.json:
        print_json({**found.to_dict(), "compliance": levels})
        return
    s = found.state
    matched = s.matched_ids
    suppressed = levels["suppressed_at"] or "not yet"
    erased = levels["erased_at"] or "not yet"
    fields = [
        ("request", s.request_id),
        ("status", s.status),
        ("level", levels["level"]),
        ("target", shown_target(s.subject_id, s.record_ids)),
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
        [str(e.seq), e.status, when(e.at), _details_cell(e.details), e.hash[:12]]
        for e in found.history
    ]
    print(table(["SEQ", "STATUS", "AT (UTC)", "DETAILS", "HASH"], rows))


def cmd_snapshot(args: argparse.Namespace) -> None:
    writable_path(args.out, "--out")
    with open_ledger(args) as ledger:
        snap = ledger.write_snapshot(args.out, statuses=args.status or ["validated"])
    if args.json:
        print_json({k: v for k, v in snap.items() if k != "requests"} | {"out": args.out})
        return
    print(
        f"wrote {len(snap['requests'])} requests at log entry {snap['log_seq']} "
        f"(hash {snap['log_hash'][:12]}) to {args.out}"
    )


def declare_list(sub: Any) -> None:
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
    add_log_options(listing)
    listing.set_defaults(func=cmd_list, needs_ml=False)


def declare_show(sub: Any) -> None:
    """`eul requests show`."""
    show = sub.add_parser(
        "show",
        help="one request: current state and full history",
        description="The request's current state and every entry of its history, with hashes.",
    )
    show.add_argument("request_id", metavar="ID", help="the request id")
    add_log_options(show)
    show.set_defaults(func=cmd_show, needs_ml=False)


def declare_snapshot(sub: Any) -> None:
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
    add_log_options(snapshot)
    snapshot.set_defaults(func=cmd_snapshot, needs_ml=False)
