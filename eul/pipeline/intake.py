"""The start of a batch: validate and snapshot the deletion log, then partition the data
into forget sets per pending request and the retained set (DVC)."""

from __future__ import annotations

import json
from pathlib import Path

from eul.pipeline.compaction import for_compaction
from eul.pipeline.context import PENDING, Context, PipelineError
from eul.pipeline.files import file_sha256
from eul.pipeline.marks import reconcile
from eul.pipeline.production import Production
from eul.pipeline.results import ForgetSet, Partition, Snapshot


def snapshot_log(ctx: Context, production: Production) -> Snapshot:
    """Validate received requests against the raw data, reconcile with production, and
    write the snapshot of every pending request (validated, unlearned or fused) that the
    partition stage reads."""
    params = ctx.params
    raw = ctx.root / params.data.raw / params.data.records_file
    with ctx.ledger() as ledger:
        validated: list[str] = []
        rejected: list[str] = []
        reasons: dict[str, str] = {}
        if ledger.counts().get("received"):
            from eul.data.readers import load_records

            if not raw.is_file():
                raise PipelineError(f"no raw data at {raw}; run `eul data init` or `dvc pull`")
            records = load_records(raw, task=params.data.task)
            report = ledger.validate(records, data_version=f"sha256:{file_sha256(raw)}")
            validated, rejected = report.validated, sorted(report.rejected)
            reasons = dict(report.rejected)
        reconciled = reconcile(ledger, production)
        snap = ledger.write_snapshot(ctx.root / params.partition.snapshot, statuses=PENDING)
        # in the snapshot (the partition keeps their rows out of the retained set), not in
        # `pending`: no layer is trained for them
        to_compaction = for_compaction(ctx, ledger.list(status="validated"))
    return Snapshot(
        log_seq=snap["log_seq"],
        log_hash=snap["log_hash"],
        validated=validated,
        rejected=rejected,
        reconciled=reconciled,
        pending=[r["request_id"] for r in snap["requests"] if r["request_id"] not in to_compaction],
        statuses={r["request_id"]: r["status"] for r in snap["requests"]},
        to_compaction=to_compaction,
        rejected_reasons=reasons,
    )


def _dvc_stages(root: Path) -> set[str]:
    import yaml

    path = root / "dvc.yaml"
    if not path.is_file() or not (root / ".dvc").is_dir():
        return set()
    return set((yaml.safe_load(path.read_text()) or {}).get("stages") or {})


def partition_data(ctx: Context, snapshot: Snapshot) -> Partition:
    """Forget sets per pending request and the retained set, through the DVC `partition`
    stage where the project has one (so the outputs are versioned), else in-process."""
    from eul.stores.dvc.partition import MANIFEST, load_snapshot, partition

    params = ctx.params
    out = ctx.partition_dir()
    if "partition" in _dvc_stages(ctx.root):
        from eul.stores.dvc import dvcstore

        dvcstore.run_dvc(["repro", "partition"], ctx.root)
        via = "dvc"
    else:
        snap = load_snapshot(ctx.root / params.partition.snapshot)
        from eul.runtime.evidence import evidence_key

        key = evidence_key(ctx.root)
        partition(snap, ctx.root / params.partition.data, out, ",".join(PENDING), key=key)
        via = "python"
    manifest = json.loads((out / MANIFEST).read_text())
    if manifest["log_seq"] != snapshot.log_seq:
        raise PipelineError(
            f"{out}/{MANIFEST} is of log entry {manifest['log_seq']}, not of the snapshot just "
            f"taken ({snapshot.log_seq}); check the `partition` stage in dvc.yaml"
        )
    requests = {
        e["request_id"]: ForgetSet(rows=e["rows"], file=str(out / e["file"]))
        for e in manifest["requests"]
    }
    missing = sorted(set(snapshot.pending) - set(requests))
    if missing:
        raise PipelineError(f"the partition has no forget set for {', '.join(missing[:5])}")
    return Partition(
        via=via,
        log_seq=manifest["log_seq"],
        requests=requests,
        rows_forgotten=manifest["rows_forgotten"],
        rows_retained=manifest["rows_retained"],
        retained_file=str(out / "retained.jsonl"),
    )
