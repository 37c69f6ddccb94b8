"""Deleting a run's artifacts while its record stays: what a purge does to the MLflow runs
that hold files derived from a purged request (its layer, its statistics, older fusion
states).

The run keeps its params, metrics and tags, so the history of what was done stays
readable; its files leave the artifact store (a local folder or S3) through MLflow's own
artifact repository. `mlflow gc` is not needed for this and would not do it: gc only
removes runs in the `deleted` lifecycle stage, with their artifacts, and these runs stay
active. Every function is idempotent: a rerun deletes what an interrupted one left.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from eul.stores.registry.settings import RegistryError, TrackingSettings, tracking

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import Run

# When the artifacts were deleted (UTC, ISO 8601), and which (comma-separated, "*": all).
DELETED_AT_TAG = "eul.artifacts_deleted_at"
DELETED_PATHS_TAG = "eul.artifacts_deleted"


def _files(repo: Any, path: str | None = None) -> list[str]:
    """Every file under `path` of an artifact repository (all of it: None)."""
    found: list[str] = []
    for info in repo.list_artifacts(path):
        if info.is_dir:
            found += _files(repo, info.path)
        else:
            found.append(info.path)
    return found


def _under(files: Sequence[str], paths: Sequence[str] | None) -> list[str]:
    if paths is None:
        return list(files)
    tops = [p.strip("/") for p in paths]
    return [f for f in files if any(f == p or f.startswith(p + "/") for p in tops)]


def _tag_deleted(client: MlflowClient, run: Run, paths: Sequence[str] | None) -> None:
    """Record on the run that (and which of) its artifacts were deleted."""
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    done = set(filter(None, run.data.tags.get(DELETED_PATHS_TAG, "").split(",")))
    done |= {"*"} if paths is None else {p.strip("/") for p in paths}
    client.set_tag(run.info.run_id, DELETED_AT_TAG, now)
    client.set_tag(run.info.run_id, DELETED_PATHS_TAG, ",".join(sorted(done)))


def delete_run_artifacts(
    settings: TrackingSettings, run_id: str, paths: Sequence[str] | None = None
) -> int:
    """Delete the artifacts under `paths` of run `run_id` (every artifact: None) from its
    artifact store, check that none is left, and tag the run `eul.artifacts_deleted_at`.

    Returns how many files were deleted (0 on a rerun that finds them gone). The run's
    params, metrics and tags stay.
    """
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    with tracking(settings) as client:
        run = client.get_run(run_id)
        repo = get_artifact_repository(run.info.artifact_uri)
        doomed = _under(_files(repo), paths)
        if paths is None:
            if doomed:
                repo.delete_artifacts()
        else:
            for path in paths:
                if _under(doomed, [path]):
                    repo.delete_artifacts(path.strip("/"))
        left = _under(_files(repo), paths)
        if left:
            raise RegistryError(
                f"run {run_id} still has {len(left)} artifact(s) after their deletion "
                f"from {run.info.artifact_uri}, e.g. {left[0]}"
            )
        if doomed or DELETED_AT_TAG not in run.data.tags:
            _tag_deleted(client, run, paths)
    return len(doomed)


def find_runs(settings: TrackingSettings, tags: dict[str, str]) -> list[Run]:
    """The runs of the settings' experiment whose tags have these values, oldest first,
    deleted ones included (their artifacts stay until `mlflow gc`); [] when the experiment
    does not exist yet."""
    from mlflow.entities import ViewType

    if any("'" in v or "`" in k for k, v in tags.items()):
        raise ValueError("tag names and values searched for may not hold quotes")
    query = " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items())
    with tracking(settings) as client:
        experiment = client.get_experiment_by_name(settings.experiment)
        if experiment is None:
            return []
        runs: list[Run] = []
        token = None
        while True:
            page = client.search_runs(
                [experiment.experiment_id],
                filter_string=query,
                max_results=1000,
                order_by=["attributes.start_time ASC"],
                page_token=token,
                run_view_type=ViewType.ALL,
            )
            runs += list(page)
            token = page.token
            if not token:
                return runs
