"""What the purge deletes besides the rows: every file derived from a purged request alone,
and every older fusion state that, next to another, would single it out.

Per request: its layer folder in the working folder (layer, statistics, training.json,
done.json, a leftover `.tmp`), its forget file in the partition (and a DVC cache object of
it, where one is left), and the artifacts of its MLflow runs (the run records stay, with
their params and metrics). Across requests: fusion states are running sums, so two of them
differ by the requests added in between; every fusion state but production's (which the
next batch adds to) and those of candidates built on it goes, from the batch runs, the
batch folders and the older production downloads. Every step is idempotent: a rerun after a
kill deletes what is left, and the counts say what this run deleted.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eul.pipeline.context import STATE_ARTIFACT, Context
from eul.pipeline.production import current_production
from eul.pipeline.train import layer_folder

STATE_META = "fusion_state.json"  # eul.fusion.fuse.STATE_META_FILE (no torch import here)


@dataclass(frozen=True)
class Derivatives:
    """Counts of what was deleted: per request, and for the fusion states shared by all."""

    per_request: dict[str, dict[str, int]]
    shared: dict[str, int] = field(default_factory=dict)

    def counts(self, request_id: str) -> dict[str, int]:
        """The counts a request's `purged` entry records (counts only, no names)."""
        return {**self.per_request.get(request_id, {}), **self.shared}


def _remove(path: Path) -> int:
    """Delete a file or folder; how many files went (0: it was not there)."""
    if path.is_file() or path.is_symlink():
        path.unlink()
        return 1
    if not path.is_dir():
        return 0
    files = sum(1 for p in path.rglob("*") if p.is_file())
    shutil.rmtree(path)
    return files


def delete_layer_folder(ctx: Context, request_id: str) -> int:
    """The request's layer folder and a half-written `<key>.tmp` beside it."""
    folder = layer_folder(ctx, request_id)
    return _remove(folder) + _remove(folder.with_name(folder.name + ".tmp"))


def delete_forget_file(ctx: Context, request_id: str) -> tuple[int, int]:
    """(files, DVC cache objects) deleted: the request's forget file, and the cache object
    of its bytes where the cache holds one.

    The purge reruns the DVC `partition` stage from the snapshot the batch took, in which the
    request is still pending: the file comes back empty (the rows are gone) and the old
    object is swept from the cache. Without that stage the file still holds the rows; it
    goes all the same, and so does any cache object of it. The next partition rebuilds the
    folder from a snapshot without the request."""
    from eul.stores.dvc import dvcstore
    from eul.stores.dvc.partition import FORGET_DIR, forget_filename

    path = ctx.partition_dir() / FORGET_DIR / forget_filename(request_id)
    objects = 0
    if path.is_file() and path.stat().st_size > 0:
        cached = ctx.root / ".dvc" / "cache" / dvcstore.object_relpath(dvcstore.file_md5(path))
        objects = _remove(cached)
    return _remove(path), objects


def delete_request_runs(ctx: Context, request_id: str) -> tuple[int, int]:
    """(runs, files): every MLflow run of the request, its artifacts deleted (runs counts
    those of earlier tries too; files only what this call deleted)."""
    from eul.stores.registry.artifacts import delete_run_artifacts, find_runs

    runs = find_runs(ctx.settings, {"eul.kind": "request", "eul.request_id": request_id})
    files = sum(delete_run_artifacts(ctx.settings, r.info.run_id) for r in runs)
    return len(runs), files


def _kept_batches(ctx: Context, version: int) -> tuple[str, set[str], list[Any]]:
    """(production's run id, batch ids whose state stays, every batch run): production's
    and the candidates built on it (`promote` needs theirs) keep their fusion state."""
    from eul.stores.registry.artifacts import find_runs
    from eul.stores.registry.versions import version_run_id

    run_id = version_run_id(ctx.settings, version)
    # batch runs say so in `eul.run`; those logged before it existed, in `eul.kind`
    found = [*find_runs(ctx.settings, {"eul.run": "batch"}),
             *find_runs(ctx.settings, {"eul.kind": "batch"})]  # fmt: skip
    runs = list({r.info.run_id: r for r in found}.values())
    kept = {
        r.data.tags.get("eul.batch_id", "")
        for r in runs
        if r.info.run_id == run_id or r.data.params.get("production_version") == str(version)
    }
    return run_id, kept, runs


def _state_requests(folder: Path) -> set[str] | None:
    """The requests a saved fusion state sums over; None where the folder holds none."""
    meta = folder / STATE_META
    return set(json.loads(meta.read_text())["requests"]) if meta.is_file() else None


def _stale_batch_folder(folder: Path, kept: set[str], known: set[str], on: set[str]) -> bool:
    """A batch folder goes unless its batch keeps its state, or it has no run yet and no
    state or one built on production's (a batch under way)."""
    if folder.name in kept:
        return False
    if folder.name in known:
        return True
    state = _state_requests(folder / "state")
    return state is not None and not state > on


def delete_older_fusion_states(ctx: Context) -> dict[str, int]:
    """Every fusion state but production's and its candidates': batch runs' `fusion_state/`
    artifacts, batch folders, and the downloads of older production versions."""
    from eul.stores.registry.artifacts import delete_run_artifacts

    counts = {"fusion_states": 0, "fusion_state_files": 0, "batch_folders": 0,
              "production_folders": 0}  # fmt: skip
    production = current_production(ctx)
    if production.version is None:
        return counts
    run_id, kept, runs = _kept_batches(ctx, production.version)
    for run in runs:
        if run.info.run_id == run_id or run.data.tags.get("eul.batch_id", "") in kept:
            continue
        files = delete_run_artifacts(ctx.settings, run.info.run_id, [STATE_ARTIFACT])
        counts["fusion_states"] += int(files > 0)
        counts["fusion_state_files"] += files
    on = _state_requests(production.state_dir) if production.state_dir else None
    known = {r.data.tags.get("eul.batch_id", "") for r in runs}
    batches = ctx.workdir / "batches"
    for folder in sorted(batches.iterdir()) if batches.is_dir() else []:
        if folder.is_dir() and _stale_batch_folder(folder, kept, known, on or set()):
            _remove(folder)
            counts["batch_folders"] += 1
    downloads = ctx.workdir / "production"
    serving = f"v{production.version}"
    for folder in sorted(downloads.iterdir()) if downloads.is_dir() else []:
        if folder.name != serving:
            _remove(folder)
            counts["production_folders"] += 1
    return counts


def delete_derivatives(ctx: Context, request_ids: Sequence[str]) -> Derivatives:
    """Delete what each request left besides its rows, then the older fusion states; the
    counts go into each request's `purged` entry."""
    per_request: dict[str, dict[str, int]] = {}
    for request_id in request_ids:
        partition_files, cache_objects = delete_forget_file(ctx, request_id)
        runs, run_files = delete_request_runs(ctx, request_id)
        per_request[request_id] = {
            "layer_files": delete_layer_folder(ctx, request_id),
            "partition_files": partition_files,
            "partition_cache_objects": cache_objects,
            "request_runs": runs,
            "run_artifacts": run_files,
        }
    return Derivatives(per_request, delete_older_fusion_states(ctx))
