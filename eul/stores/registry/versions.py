"""Registered versions: register one, move its aliases, read its tags and links.

A registered version is an MLflow pyfunc model whose artifacts are the base model folder
(`TextModel.save`) and the fused unlearning layer folder; its tags tie it to the deletion log
(covered request ids, log sequence number and hash, data version, gate results). Stages are
deprecated in MLflow 3: the aliases `candidate` and `production` say what is proposed and
what is deployed, and tags `<alias>_since` / `<alias>_until` record when an alias moved,
which MLflow itself does not keep.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from eul.runtime.scratch import scratch_folder
from eul.stores.registry.settings import RegistryError, TrackingSettings, tracking
from eul.stores.registry.tags import DESCRIPTION_LIMIT

if TYPE_CHECKING:
    from mlflow import MlflowClient

CANDIDATE = "candidate"
PRODUCTION = "production"
MODEL_ARTIFACT = "model"
MODEL_CODE = Path(__file__).with_name("pyfunc_model.py")
BASE_ARTIFACT = "base"
LAYER_ARTIFACT = "layer"
TAGS_ARTIFACT = "tags"
# MLflow accepts model version tag values up to 100,000 characters; longer values (the
# covered request ids after some thousands of requests) go into a file of the model, and the
# tag holds a reference that `version_tags` resolves.
TAG_VALUE_LIMIT = 100_000
TAG_FILE_PREFIX = "@file:"
REQUIREMENTS = ("mlflow", "torch", "transformers", "tokenizers", "safetensors", "pandas")


def layer_file(folder: str | Path) -> str:
    """Which kind of layer a folder holds: a saved unlearning layer or a fused linear map."""
    from eul.fusion.fuse import FUSED_FILE
    from eul.layers.model import WEIGHTS_FILE

    for name in (WEIGHTS_FILE, FUSED_FILE):
        if (Path(folder) / name).is_file():
            return name
    raise FileNotFoundError(
        f"no unlearning layer in {folder}: expected {WEIGHTS_FILE} (save_layer) "
        f"or {FUSED_FILE} (save_fused)"
    )


def _link_or_copy(src: str, dst: str) -> None:
    """Hard-link where possible: staging a large base model should not copy it twice."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _requirements() -> list[str]:
    """Pins of what loading the model imports (the `eul` package itself must be installed)."""
    from importlib.metadata import version

    return [f"{name}=={version(name).split('+')[0]}" for name in REQUIREMENTS]


def _ensure_registered_model(client: MlflowClient, name: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        client.create_registered_model(
            name,
            description=(
                "A text model kept compliant with a log of data-deletion requests. Each "
                "version is the base model plus one fused unlearning layer; its tags name "
                "the requests it honours. Alias 'production' is what is deployed."
            ),
        )
    except MlflowException as err:
        if err.error_code != "RESOURCE_ALREADY_EXISTS":
            raise


def register_version(
    settings: TrackingSettings,
    run_id: str,
    model_dir: str | Path,
    layer_dir: str | Path,
    tags: Mapping[str, str],
    description: str = "",
) -> int:
    """Log base model + fused layer as a pyfunc model of run `run_id` and register it.

    Returns the new version number. `tags` usually come from `compliance_tags`; a value
    longer than MLflow allows is stored as a file of the model and resolved by `version_tags`.
    """
    import mlflow

    if not (Path(model_dir) / "config.json").is_file():
        raise FileNotFoundError(f"no base model at {model_dir}: expected a folder with config.json")
    layer_file(layer_dir)
    with tracking(settings) as client, scratch_folder("stage") as tmp:
        staged = Path(tmp)
        shutil.copytree(model_dir, staged / BASE_ARTIFACT, copy_function=_link_or_copy)
        shutil.copytree(layer_dir, staged / LAYER_ARTIFACT, copy_function=_link_or_copy)
        artifacts = {name: str(staged / name) for name in (BASE_ARTIFACT, LAYER_ARTIFACT)}
        short_tags: dict[str, str] = {}
        for key, value in tags.items():
            if len(value) <= TAG_VALUE_LIMIT:
                short_tags[key] = value
                continue
            (staged / TAGS_ARTIFACT).mkdir(exist_ok=True)
            (staged / TAGS_ARTIFACT / f"{key}.txt").write_text(value)
            artifacts[TAGS_ARTIFACT] = str(staged / TAGS_ARTIFACT)
            short_tags[key] = f"{TAG_FILE_PREFIX}{TAGS_ARTIFACT}/{key}.txt"
        with mlflow.start_run(run_id=run_id):
            info = mlflow.pyfunc.log_model(
                name=MODEL_ARTIFACT,
                python_model=str(MODEL_CODE),
                artifacts=artifacts,
                pip_requirements=_requirements(),
            )
        _ensure_registered_model(client, settings.model_name)
        version = client.create_model_version(
            settings.model_name,
            source=info.model_uri,
            run_id=run_id,
            tags=short_tags,
            description=description[:DESCRIPTION_LIMIT],
            model_id=info.model_id,
        )
        return int(version.version)


def _alias_version(client: MlflowClient, name: str, alias: str) -> int | None:
    from mlflow.exceptions import MlflowException

    try:
        model = client.get_registered_model(name)
    except MlflowException as err:
        if err.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise
    version = model.aliases.get(alias)
    return None if version is None else int(version)


def get_alias_version(settings: TrackingSettings, alias: str) -> int | None:
    """The version `alias` points at; None when the alias (or the model) does not exist."""
    with tracking(settings) as client:
        return _alias_version(client, settings.model_name, alias)


def set_alias(settings: TrackingSettings, alias: str, version: int) -> None:
    """Point `alias` at `version`, tagging it `<alias>_since` and the previous one
    `<alias>_until` (UTC, ISO 8601): the registry keeps no history of alias moves.

    In this order, so that a call killed anywhere is finished by the next: the previous
    version's `_until` (it still holds the alias: a rerun tags it again), the alias, then
    the version's `_since`, written whenever it is missing (the record that the move is
    done: `eul.pipeline.batch.find_registered` reads it)."""
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    name = settings.model_name
    with tracking(settings) as client:
        previous = _alias_version(client, name, alias)
        target = client.get_model_version(name, str(version))  # fails clearly if none
        if previous is not None and previous != version:
            client.set_model_version_tag(name, str(previous), f"{alias}_until", now)
        client.set_registered_model_alias(name, alias, str(version))
        if previous != version or f"{alias}_since" not in target.tags:
            client.set_model_version_tag(name, str(version), f"{alias}_since", now)


def set_version_tags(settings: TrackingSettings, version: int, tags: Mapping[str, str]) -> None:
    """Add or overwrite tags of a version (who promoted it, a reviewer's override reason)."""
    with tracking(settings) as client:
        for key, value in tags.items():
            client.set_model_version_tag(settings.model_name, str(version), key, value)


def find_versions(settings: TrackingSettings, tag: str, value: str) -> list[int]:
    """Versions of the model whose tag `tag` equals `value`, oldest first; [] if none.

    The pipeline tags each version with a key of what it was built from, so that a rerun
    finds the version an interrupted run already registered instead of adding another.
    """
    from mlflow.exceptions import MlflowException

    if "'" in value or "`" in tag:
        raise ValueError("tag names and values searched for may not hold quotes")
    query = f"name='{settings.model_name}' and tags.`{tag}`='{value}'"
    with tracking(settings) as client:
        try:
            found = client.search_model_versions(query)
        except MlflowException as err:
            if err.error_code == "RESOURCE_DOES_NOT_EXIST":
                return []
            raise
    return sorted(int(v.version) for v in found)


def version_exists(settings: TrackingSettings, version: int) -> bool:
    """Whether the registered model has this version (checked before a flow starts work)."""
    from mlflow.exceptions import MlflowException

    with tracking(settings) as client:
        try:
            client.get_model_version(settings.model_name, str(version))
        except MlflowException as err:
            if err.error_code == "RESOURCE_DOES_NOT_EXIST":
                return False
            raise
    return True


def version_run_id(settings: TrackingSettings, version: int) -> str:
    """The run a version was logged from (the batch run, with the fusion state)."""
    with tracking(settings) as client:
        run_id = client.get_model_version(settings.model_name, str(version)).run_id
    if not run_id:
        raise RegistryError(f"version {version} of {settings.model_name!r} names no run")
    return run_id


def version_artifact_links(
    settings: TrackingSettings, version: int, folder: str = "plots"
) -> list[dict[str, str]]:
    """The files under `folder` of the run a version was logged from, each as its name, its
    `runs:/` URI (what `mlflow artifacts download -u` takes) and its location in the
    artifact store (a file: or s3: URI): the links a report gives to the batch's plots."""
    run_id = version_run_id(settings, version)
    with tracking(settings) as client:
        base = client.get_run(run_id).info.artifact_uri.rstrip("/")
        files = [a.path for a in client.list_artifacts(run_id, folder) if not a.is_dir]
    return [
        {"name": Path(path).name, "uri": f"runs:/{run_id}/{path}", "location": f"{base}/{path}"}
        for path in sorted(files)
    ]


def version_tags(settings: TrackingSettings, version: int) -> dict[str, str]:
    """A version's tags, with values stored as files of the model read back in."""
    import mlflow

    with tracking(settings) as client:
        model_version = client.get_model_version(settings.model_name, str(version))
        tags = dict(model_version.tags)
        for key, value in list(tags.items()):
            if value.startswith(TAG_FILE_PREFIX):
                location = client.get_model_version_download_uri(settings.model_name, str(version))
                uri = f"{location.rstrip('/')}/artifacts/{value[len(TAG_FILE_PREFIX) :]}"
                with scratch_folder("tag") as tmp:
                    local = mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=tmp)
                    tags[key] = Path(local).read_text()
        return tags


def version_links(settings: TrackingSettings, version: int) -> dict[str, str]:
    """Where a reviewer finds a version: its MLflow page, its batch run and plots (pages where
    the tracking store is a server; otherwise the model URI and plain paths)."""
    from eul.stores.registry.runs import page_base, run_links

    base = page_base(settings.tracking_uri)
    page = (
        f"{base}/#/models/{settings.model_name}/versions/{version}"
        if base is not None
        else f"models:/{settings.model_name}/{version} in {settings.shown_uri}"
    )
    return {"MLflow version": page, **run_links(settings, version_run_id(settings, version))}
