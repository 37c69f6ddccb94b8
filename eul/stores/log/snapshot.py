"""The snapshot of the log the partition stage reads: the pending requests and the log head
they were read at, written so that an unchanged log leaves the file (and the stage) as is."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, select

from eul.stores.log.schema import head_table, iso, requests_table, utcnow


def read_snapshot(conn: Connection, statuses: list[str]) -> dict[str, Any]:
    """The requests in `statuses` and the head, read in the caller's (one) read transaction.

    Keys: log_seq, log_hash, taken_at, requests (request_id, subject_id, record_ids, status,
    submitted_at, deadline); record_ids are the ids matched at validation.
    """
    head = conn.execute(select(head_table.c.seq, head_table.c.hash)).one()
    rows = conn.execute(
        select(requests_table)
        .where(requests_table.c.status.in_(statuses))
        .order_by(requests_table.c.first_seq)
    ).all()
    return {
        "log_seq": int(head.seq),
        "log_hash": str(head.hash),
        "taken_at": iso(utcnow()),
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


def write_snapshot_file(path: str | Path, snap: dict[str, Any]) -> dict[str, Any]:
    """Write `snap` as JSON (atomically) and return it; when the file already holds the same
    log head and requests it is left untouched, so a pipeline stage that depends on it does
    not rerun for a log that has not changed (and the file's content comes back)."""
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
