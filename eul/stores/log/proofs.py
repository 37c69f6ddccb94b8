"""What a mark must show against the log itself, checked inside the mark's write transaction:
the log entry a deployed version was cut at, the requests it may cover, and a purge's row
count against the ids the request matched.

A `deployed` mark is the log's word that a model forgets a request, and a `purged` mark that
its rows are gone; neither may rest on a bare version number or an empty dict.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, select

from eul.stores.log.rules import purge_rows
from eul.stores.log.schema import LedgerError, entries_table


def check_anchor(conn: Connection, details: dict[str, Any], head_seq: int) -> None:
    """The entry at the version's `log_seq` exists and has its `log_hash`."""
    version, seq = details["model_version"], details["log_seq"]
    found = conn.execute(select(entries_table.c.hash).where(entries_table.c.seq == seq)).first()
    if found is None:
        raise LedgerError(
            f"cannot mark deployed in model version {version}: the log entry it was cut at "
            f"({seq}) is not in the log, which ends at entry {head_seq}; check the version's "
            "log_seq tag"
        )
    if found.hash != details["log_hash"]:
        raise LedgerError(
            f"cannot mark deployed in model version {version}: log entry {seq} does not have "
            "the hash the version records (log_hash); it was cut from another log, or this "
            "one was rewritten since (`eul requests verify`)"
        )


def check_covered(conn: Connection, request_ids: Sequence[str], details: dict[str, Any]) -> None:
    """Each request was validated at or before the version's `log_seq`: it was pending in the
    snapshot the version was cut from, so the version can forget it. (Its `fused` entry comes
    later: a batch is fused and registered after its snapshot.)"""
    version, seq = details["model_version"], details["log_seq"]
    validated = dict(
        conn.execute(
            select(entries_table.c.request_id, entries_table.c.seq).where(
                entries_table.c.request_id.in_(list(request_ids)),
                entries_table.c.status == "validated",
            )
        ).all()
    )
    for request_id in request_ids:
        at = validated.get(request_id)
        if at is None or at > seq:
            why = "it was never validated" if at is None else f"it was validated at entry {at}"
            raise LedgerError(
                f"cannot mark {request_id} deployed in model version {version}: {why}, after "
                f"the log entry the version was cut at ({seq}), so the version cannot cover it"
            )


def check_purge_count(request_id: str, matched_ids: str | None, details: dict[str, Any]) -> None:
    """The purge accounts for every record id the request matched at validation: a keyed
    row removed for each, or counted as already gone (`rows_already_gone`: removed by an
    earlier purge of another request that shared it). It may remove more (a subject's rows
    added after validation go too). Counts only in the error: never the ids."""
    evidence = details.get("evidence")
    rows = purge_rows(evidence)
    gone = evidence.get("rows_already_gone", 0) if isinstance(evidence, dict) else 0
    matched = len(json.loads(matched_ids)) if matched_ids else 0
    if rows + gone < matched:
        raise LedgerError(
            f"cannot mark {request_id} purged: its evidence removes {rows} row(s)"
            + (f" and finds {gone} already gone" if gone else "")
            + f" but it matched {matched} record(s) at validation; the purge evidence is "
            "not this request's"
        )
