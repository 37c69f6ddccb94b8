"""The purge step: once deployed, a request's rows leave the data, the DVC cache and the
remotes, and the log keeps the hashes as evidence (never the rows).

Intent -> effect -> record: the purge ledger takes the evidence before the data changes and
completes it after (`eul.stores.dvc.purge`); the log's `purged` marks come last. A rerun
after a kill finishes a pending purge with its first attempt's evidence, and one after the
purge finished (before the marks) takes each request's evidence from the ledger."""

from __future__ import annotations

import time
from typing import Any

from eul.pipeline.context import Context, PipelineError, fail_point
from eul.pipeline.results import PurgeReport


def _evidence(params: Any, evidence: dict[str, Any], found: dict[str, Any]) -> dict[str, Any]:
    """What the log's `purged` entry of one request keeps: hashes, counts, remotes; the data
    versions and time of the purge that removed its rows (an earlier one, on a rerun after
    that purge finished: `earlier`)."""
    earlier = found.get("earlier") or {}
    return {
        "data_dvc_md5_before": earlier.get("old_md5") or evidence["old_md5"],
        "data_dvc_md5_after": earlier.get("new_md5") or evidence["new_md5"],
        "rows_removed": found["rows_removed"],
        "row_hmac": found["row_hmac"],
        # matched record ids no longer in the data (an earlier purge of a request that shared
        # them removed them): the log checks every matched id is accounted for
        "rows_already_gone": len(found.get("missing_record_ids") or []),
        "remotes_swept": evidence["remotes_swept"],
        "purge_log": params.purge.ledger,
        "purged_at": earlier.get("purged_at") or evidence["purged_at"],
    }


def _leak_scan(
    ctx: Context, by_id: dict[str, dict[str, Any]], needles: list[bytes]
) -> dict[str, int]:
    """Read every store back for the requests' rows (text and keyed digests) and own files
    (`eul.pipeline.leaks`); PipelineError on any hit, so no request is marked `purged` while a
    copy is left. Returns the counts the `purged` entries keep."""
    from eul.pipeline.leaks import scan_leaks

    keyed_rows = [h for r in by_id.values() for h in r.get("row_hmac", r.get("row_sha256", []))]
    report = scan_leaks(ctx, list(by_id), needles=needles, keyed_rows=keyed_rows)
    if not report.clean:
        where = [
            f"{s.store} ({s.hits} hits{'; ' + s.error if s.error else ''})"
            for s in report.stores
            if s.hits or s.error
        ]
        paths = [p for s in report.stores for p in (*s.text_hits, *s.keyed_hits,
                                                     *s.request_file_hits)]  # fmt: skip
        raise PipelineError(
            f"the leak scan found copies of the purged requests' data, so they stay deployed: "
            f"{', '.join(where)}; first paths: {', '.join(paths[:5])}"
        )
    return {
        "stores": len(report.stores),
        "files_scanned": sum(s.files_scanned for s in report.stores),
        "bytes_scanned": sum(s.bytes_scanned for s in report.stores),
        "hits": report.hits,
    }


def purge_deployed(ctx: Context) -> PurgeReport:
    """Remove the rows of every `deployed` request from the data, the DVC cache and the
    remotes (`eul.stores.dvc.purge`), then what was derived from each request alone and the
    older fusion states (`eul.pipeline.derivatives`), and mark each `purged` with the hashes
    and the counts as evidence."""
    from eul.pipeline.derivatives import delete_derivatives
    from eul.stores.dvc.purge import PurgeRequest, purge, purge_needles

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
    needles = purge_needles(requests, ctx.root, params) if params.pipeline.scan else []
    evidence = purge(
        requests,
        ctx.root,
        params,
        remotes=params.pipeline.remotes,
        scan=params.pipeline.scan,
        checkpoint=lambda name: fail_point(ctx, name),
    )
    fail_point(ctx, "after-purge")
    derivatives = delete_derivatives(ctx, [s.request_id for s in deployed])
    by_id = {r["request_id"]: r for r in evidence["requests"]}
    scan_started = time.perf_counter()
    scanned = _leak_scan(ctx, by_id, needles) if params.pipeline.scan else None
    del needles
    scan_s = time.perf_counter() - scan_started
    with ctx.ledger() as ledger:
        for state in deployed:
            found = by_id[state.request_id]
            entry = _evidence(params, evidence, found)
            entry["derivatives"] = derivatives.counts(state.request_id)
            if scanned is not None:
                entry["leak_scan"] = scanned
            ledger.mark(state.request_id, "purged", evidence=entry)
    return PurgeReport(
        purged=[s.request_id for s in deployed],
        rows_removed=evidence["rows_removed"],
        data_dvc_md5=evidence["new_md5"],
        remotes=evidence["remotes_swept"],
        seconds={"purge": time.perf_counter() - started, "leak_scan": scan_s},
    )
