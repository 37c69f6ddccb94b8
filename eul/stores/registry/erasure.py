"""Erasure in the registry: the weights of a registered version deleted, its record kept.

Once the production model's base was retrained without some requests' rows (a compaction),
every older version's weights still hold what they learnt from those rows. Erasing a
version deletes its weights wherever MLflow stores them (the pyfunc model's `base` and
`layer` folders, and its batch run's `fused_layer` and `fusion_state`), on a local folder
or S3 alike, and tags it `eul.erased=true` with the time: the version, its tags (the
compliance record) and its description stay. An erased version can no longer be loaded or
promoted. Deleting what is already gone is a no-op, so a rerun after a kill finishes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone

from eul.stores.registry.settings import TrackingSettings, tracking
from eul.stores.registry.versions import BASE_ARTIFACT, LAYER_ARTIFACT

ERASED_TAG = "eul.erased"
ERASED_AT_TAG = "eul.erased_at"
ERASED_BY_TAG = "eul.erased_by"
# The weights of a version: folders of its pyfunc model, and of the batch run it was
# logged from (`eul.stores.registry.runs.log_batch_run`).
MODEL_WEIGHTS = (BASE_ARTIFACT, LAYER_ARTIFACT)
RUN_WEIGHTS = ("fused_layer", "fusion_state")


@dataclass(frozen=True)
class VersionErasure:
    """What erasing one version found and deleted (folders, not files)."""

    version: int
    deleted: tuple[str, ...]
    already_erased: bool


def is_erased(tags: dict[str, str]) -> bool:
    return tags.get(ERASED_TAG) == "true"


def version_records(settings: TrackingSettings) -> dict[int, dict[str, str]]:
    """Every version of the registered model with its raw tags; {} before the first."""
    from mlflow.exceptions import MlflowException

    with tracking(settings) as client:
        try:
            found = client.search_model_versions(f"name='{settings.model_name}'")
        except MlflowException as err:
            if err.error_code == "RESOURCE_DOES_NOT_EXIST":
                return {}
            raise
    return {int(v.version): dict(v.tags) for v in found}


def _model_artifact_uri(client, settings: TrackingSettings, version: int) -> str | None:
    """Where the version's pyfunc model keeps its artifact folders (`artifacts/` of the model
    folder, as `versions.version_tags` reads them too)."""
    location = client.get_model_version_download_uri(settings.model_name, str(version))
    return location.rstrip("/") + "/artifacts" if location else None


def _delete_folders(uri: str, names: Sequence[str]) -> list[str]:
    """Delete the folders `names` under artifact location `uri`; returns those found."""
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    repo = get_artifact_repository(uri)
    present = {info.path.rsplit("/", 1)[-1] for info in repo.list_artifacts() if info.is_dir}
    deleted = []
    for name in names:
        if name in present:
            repo.delete_artifacts(name)
            deleted.append(name)
    return deleted


def erase_version(
    settings: TrackingSettings, version: int, erased_by: str = "erase"
) -> VersionErasure:
    """Delete `version`'s weights (model and batch run) and tag it erased; its record stays."""
    name = settings.model_name
    with tracking(settings) as client:
        model_version = client.get_model_version(name, str(version))
        already = is_erased(dict(model_version.tags))
        deleted: list[str] = []
        model_uri = _model_artifact_uri(client, settings, version)
        if model_uri is not None:
            deleted += [f"model/{n}" for n in _delete_folders(model_uri, MODEL_WEIGHTS)]
        if model_version.run_id:
            run_uri = client.get_run(model_version.run_id).info.artifact_uri
            deleted += [f"run/{n}" for n in _delete_folders(run_uri, RUN_WEIGHTS)]
        if not already:
            now = datetime.now(timezone.utc).isoformat(timespec="seconds")
            client.set_model_version_tag(name, str(version), ERASED_AT_TAG, now)
            client.set_model_version_tag(name, str(version), ERASED_BY_TAG, erased_by)
            client.set_model_version_tag(name, str(version), ERASED_TAG, "true")
    return VersionErasure(version, tuple(deleted), already)


def erase_versions(
    settings: TrackingSettings, versions: Sequence[int], erased_by: str = "erase"
) -> list[VersionErasure]:
    """`erase_version` for each of `versions`, oldest first."""
    return [erase_version(settings, v, erased_by) for v in sorted(versions)]
