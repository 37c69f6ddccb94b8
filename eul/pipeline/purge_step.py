"""The purge step: once deployed, a request's rows leave the data, the DVC cache and the
remotes, and the log keeps the hashes as evidence (never the rows)."""

from __future__ import annotations

import time
from typing import Any

from eul.pipeline.context import Context
from eul.pipeline.results import PurgeReport


def _evidence(params: Any, evidence: dict[str, Any], found: dict[str, Any]) -> dict[str, Any]:
    """What the log's `purged` entry of one request keeps: hashes, counts, remotes."""
    return {
        "data_dvc_md5_before": evidence["old_md5"],
        "data_dvc_md5_after": evidence["new_md5"],
        "rows_removed": found["rows_removed"],
        "row_hmac": found["row_hmac"],
        "remotes_swept": evidence["remotes_swept"],
        "purge_log": params.purge.ledger,
        "purged_at": evidence["purged_at"],
    }


def purge_deployed(ctx: Context) -> PurgeReport:
    """Remove the rows of every `deployed` request from the data, the DVC cache and the
    remotes (`eul.stores.dvc.purge`), and mark each `purged` with the hashes as evidence."""
    from eul.stores.dvc.purge import PurgeRequest, purge

    params = ctx.params
    with ctx.ledger() as ledger:
        deployed = ledger.list(status="deployed")
    if not deployed:
        return PurgeReport(purged=[], note="no deployed request awaits a purge")
    if not params.pipeline.purge:
        return PurgeReport(purged=[], note="pipeline.purge is off")
    started = time.perf_counter()
    requests = [
        PurgeRequest(s.request_id, tuple(s.matched_ids or s.record_ids), s.subject_id)
        for s in deployed
    ]
    evidence = purge(
        requests, ctx.root, params, remotes=params.pipeline.remotes, scan=params.pipeline.scan
    )
    by_id = {r["request_id"]: r for r in evidence["requests"]}
    with ctx.ledger() as ledger:
        for state in deployed:
            found = by_id[state.request_id]
            ledger.mark(state.request_id, "purged", evidence=_evidence(params, evidence, found))
    return PurgeReport(
        purged=[s.request_id for s in deployed],
        rows_removed=evidence["rows_removed"],
        data_dvc_md5=evidence["new_md5"],
        remotes=evidence["remotes_swept"],
        seconds={"purge": time.perf_counter() - started},
    )
