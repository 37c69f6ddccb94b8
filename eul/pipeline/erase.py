"""The erase step: once the production base is a compaction, every stored artifact whose
weights were trained on the rows it was trained without is deleted, and those requests
become `erased`.

A request is *suppressed* when a deployed layer forgets it; the base under that layer still
learnt from its rows. A compaction (`eul.pipeline.compaction.retrain`) trains a base without
them and records which requests (tag `eul.trained_without`). Once production is that version
or one built on it, this step deletes what still holds weights trained on those rows:

- registered versions not descended from the compaction: their model's `base` and `layer`
  and their batch run's fused layer and state (`eul.stores.registry.erasure`); the version
  records stay, tagged `eul.erased=true` and `eul.erased_at`, and can no longer be promoted;
- `models/base` (the DVC `train` stage's output) in the workspace, the DVC cache and every
  DVC remote, unless dvc.lock shows it was trained on the current (purged) training data.
  dvc.lock is left as it is: it holds hashes, not weights, and `dvc repro train` then
  trains `models/base` again from the purged data (`dvc pull` cannot bring it back);
- working folders under `pipeline.workdir`: batches and downloaded production versions of
  the versions above, and any per-request layer left of the requests erased.

Then each `purged` request the compaction was trained without (and whose layer is not in the
production stack) is marked `erased`, with the compaction version and counts as evidence. A
request only `deployed` is erased on a later run, after its purge. Every deletion is a no-op
when already done, so a rerun after a kill finishes the job.
"""

from __future__ import annotations

import json
import shutil
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

from eul.pipeline.compaction import PARENT_TAG, base_compaction, stacked_requests
from eul.pipeline.context import Context
from eul.pipeline.files import layer_key
from eul.pipeline.production import current_production
from eul.pipeline.results import ErasureReport
from eul.stores.registry.tags import trained_without_ids


def descendants(records: dict[int, dict[str, str]], root: int) -> set[int]:
    """`root` and every version built on it, through `eul.parent_version` links."""
    clean = {root}
    grown = True
    while grown:
        grown = False
        for version, tags in records.items():
            parent = tags.get(PARENT_TAG, "")
            if version not in clean and parent.isdigit() and int(parent) in clean:
                clean.add(version)
                grown = True
    return clean


# -- models/base in DVC ---------------------------------------------------------------------


def _lock_stages(root: Path) -> dict[str, Any]:
    lock = root / "dvc.lock"
    if not lock.is_file():
        return {}
    return (yaml.safe_load(lock.read_text(encoding="utf-8")) or {}).get("stages") or {}


def _listing(root: Path, oid: str, remotes: list[str]) -> list[str]:
    """The file ids a `.dir` object lists, read from the cache, else from a remote."""
    from eul.stores.dvc import dvcstore

    path = root / ".dvc" / "cache" / dvcstore.object_relpath(oid)
    if path.is_file():
        return [e["md5"] for e in json.loads(path.read_text())]
    for remote in remotes:
        if oid in dvcstore.remote_oids(root, remote):
            data = next(dvcstore.read_remote_objects(root, remote, [oid]))
            return [e["md5"] for e in json.loads(data)]
    return []


def _expand(root: Path, oids: list[str], remotes: list[str]) -> set[str]:
    found = set(oids)
    for oid in oids:
        if oid.endswith(".dir"):
            found.update(_listing(root, oid, remotes))
    return found


def erase_dvc_base(ctx: Context, remotes: list[str]) -> dict[str, Any]:
    """Delete `train.out` (models/base) from the workspace, the cache and `remotes`, unless
    dvc.lock shows it was trained on the training data as it is now (after the purges).
    Objects another tracked output still uses are kept."""
    from eul.stores.dvc import dvcstore

    root, out = ctx.root, Path(ctx.params.train.out).as_posix()
    stages = _lock_stages(root)
    stage = next(
        (s for s in stages.values() if any(o.get("path") == out for o in s.get("outs", []))),
        None,
    )
    workspace = root / out
    if stage is None:
        if workspace.exists():
            shutil.rmtree(workspace)
            return {"models_base": "deleted (untracked)", "dvc_objects_deleted": 0}
        return {"models_base": "absent", "dvc_objects_deleted": 0}
    data = ctx.prepared("train.jsonl")
    trained_on = [d.get("md5") for d in stage.get("deps", []) if root / d["path"] == data]
    if data.is_file() and trained_on == [dvcstore.file_md5(data)]:
        return {"models_base": "kept: trained on the purged data", "dvc_objects_deleted": 0}
    mine = [o["md5"] for o in stage["outs"] if o.get("path") == out and "md5" in o]
    others = [dvcstore.tracked_md5(root / ctx.params.data.dvc_file)]
    others += [o["md5"] for s in stages.values() if s is not stage for o in s.get("outs", [])
               if "md5" in o]  # fmt: skip
    doomed = _expand(root, mine, remotes) - _expand(root, others, remotes)
    if workspace.exists():
        shutil.rmtree(workspace)
    deleted = dvcstore.delete_cache_objects(root, doomed)
    for remote in remotes:
        deleted += dvcstore.delete_remote_objects(root, remote, doomed)
    return {"models_base": "deleted", "dvc_objects_deleted": deleted}


# -- working folders -------------------------------------------------------------------------


def erase_workdir(
    ctx: Context, clean: set[int], records: dict[int, dict[str, str]], request_ids: list[str]
) -> int:
    """Delete batches and downloaded production versions of versions outside `clean`, batch
    folders no clean version came from, and the requests' own layers; returns how many."""
    keep_batches = {records[v].get("eul.batch_id") for v in clean if v in records}
    doomed: list[Path] = []
    batches = ctx.workdir / "batches"
    if batches.is_dir():
        doomed += [p for p in batches.iterdir() if p.name not in keep_batches]
    downloads = ctx.workdir / "production"
    if downloads.is_dir():
        doomed += [
            p
            for p in downloads.iterdir()
            if not (p.name.startswith("v") and p.name[1:].isdigit() and int(p.name[1:]) in clean)
        ]
    doomed += [ctx.workdir / "layers" / layer_key(r) for r in request_ids]
    deleted = 0
    for path in doomed:
        if path.is_dir():
            shutil.rmtree(path)
            deleted += 1
        elif path.exists():
            path.unlink()
            deleted += 1
    return deleted


# -- the step --------------------------------------------------------------------------------


def erase_requests(ctx: Context) -> ErasureReport:
    """Erase what the production base's compaction was trained without: delete the older
    versions' weights, models/base and the working folders, then mark `erased` each
    `purged` request among them. Nothing to do unless production's base is a compaction."""
    from eul.stores.dvc import dvcstore
    from eul.stores.registry.erasure import erase_versions, is_erased, version_records

    started = time.perf_counter()
    production = current_production(ctx)
    found = base_compaction(ctx, production)
    if found is None:
        return ErasureReport(erased=[], note="the production base is not a compaction")
    compaction, tags = found
    trained_without = set(trained_without_ids(tags))
    stacked = set(stacked_requests(production))
    with ctx.ledger() as ledger:
        purged = [
            s.request_id
            for s in ledger.list(status="purged")
            if s.request_id in trained_without and s.request_id not in stacked
        ]
    if not purged:
        return ErasureReport(
            erased=[], note="no purged request the production base was trained without",
            compaction_version=compaction,
        )  # fmt: skip
    records = version_records(ctx.settings)
    clean = descendants(records, compaction)
    older = sorted(v for v in records if v not in clean)
    erased_versions = erase_versions(ctx.settings, older, erased_by=f"compaction {compaction}")
    artifacts = sum(len(e.deleted) for e in erased_versions)
    configured = dvcstore.remotes(ctx.root)
    wanted = ctx.params.pipeline.remotes
    remotes = sorted(configured) if wanted is None else [r for r in wanted if r in configured]
    base = erase_dvc_base(ctx, remotes)
    folders = erase_workdir(ctx, clean, records, purged)
    evidence = {
        "compaction_version": compaction,
        "trained_without_sha256": tags.get("eul.trained_without_sha256", ""),
        "versions_erased": older,
        "model_artifacts_deleted": artifacts,
        **base,
        "remotes_swept": remotes,
        "workdir_folders_deleted": folders,
        "erased_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    with ctx.ledger() as ledger:
        for request_id in purged:
            if ledger.get(request_id).state.status == "purged":
                ledger.mark(request_id, "erased", model_version=compaction, evidence=evidence)
    still = [v for v, t in version_records(ctx.settings).items() if v in older and not is_erased(t)]
    return ErasureReport(
        erased=purged,
        note=f"versions not tagged erased: {still}" if still else None,
        compaction_version=compaction,
        versions=older,
        model_artifacts_deleted=artifacts,
        dvc_objects=int(base["dvc_objects_deleted"]),
        remotes=remotes,
        folders=folders,
        seconds={"erase": time.perf_counter() - started},
    )
