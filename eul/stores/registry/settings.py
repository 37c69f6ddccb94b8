"""Where MLflow keeps runs, versions and artifacts, and the block that points MLflow there.

What reaches MLflow is ids, counts, hashes, configs, metrics and model files. No function in
the registry takes forget-set text, so none can log it. MLflow (and torch) are imported inside
the functions: `import eul`, and Prefect tasks that only build settings, stay light.

MLflow falls back to a store in the working directory (`./mlflow.db`, `./mlruns`) whenever
it is given no tracking URI. Nothing here lets it: settings without a tracking URI or an
artifact location are refused, and the block leaves MLflow as it found it, unset if it was.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from eul.runtime.environment import restore

if TYPE_CHECKING:
    from mlflow import MlflowClient

MLFLOW_ENV = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLFLOW_S3_ENDPOINT_URL")


class RegistryError(RuntimeError):
    """A registry state the caller can fix: no such alias, an experiment stored elsewhere."""


def _file_uri(location: str) -> str:
    """A plain path becomes an absolute file URI; URIs (file:, s3:, gs:, ...) pass through."""
    if "://" in location or location.startswith("file:"):
        return location
    return Path(location).resolve().as_uri()


@dataclass(frozen=True)
class TrackingSettings:
    """Where runs, versions and artifacts go; relative paths are from the working directory.

    Holds no secret: S3 credentials are read by boto3 from AWS_* variables (or its config
    files) and never pass through here. An empty tracking URI or artifact location is refused:
    MLflow would take either as its default store in the working directory.
    """

    tracking_uri: str = "sqlite:///state/mlflow.db"
    artifact_location: str = "state/mlartifacts"
    model_name: str = "eul-model"
    experiment: str = "eul"
    s3_endpoint_url: str | None = None

    @property
    def shown_uri(self) -> str:
        """The tracking URI as messages may show it (no password)."""
        from eul.runtime.urls import shown_url

        return shown_url(self.tracking_uri)

    def __post_init__(self) -> None:
        if not self.tracking_uri or not self.tracking_uri.strip():
            raise RegistryError(
                "no MLflow tracking URI: set MLFLOW_TRACKING_URI or registry.tracking_uri "
                "in params.yaml (MLflow would otherwise write ./mlflow.db)"
            )
        if not self.artifact_location or not self.artifact_location.strip():
            raise RegistryError(
                "no MLflow artifact location: set EUL_MLFLOW_ARTIFACTS or "
                "registry.artifact_location in params.yaml"
            )
        object.__setattr__(self, "artifact_location", _file_uri(self.artifact_location))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> TrackingSettings:
        """MLFLOW_TRACKING_URI, EUL_MLFLOW_ARTIFACTS (a folder or s3://bucket/prefix),
        EUL_MLFLOW_MODEL, EUL_MLFLOW_EXPERIMENT, MLFLOW_S3_ENDPOINT_URL; unset means default."""
        env = os.environ if environ is None else environ
        defaults = cls()
        return cls(
            tracking_uri=env.get("MLFLOW_TRACKING_URI") or defaults.tracking_uri,
            artifact_location=env.get("EUL_MLFLOW_ARTIFACTS") or defaults.artifact_location,
            model_name=env.get("EUL_MLFLOW_MODEL") or defaults.model_name,
            experiment=env.get("EUL_MLFLOW_EXPERIMENT") or defaults.experiment,
            s3_endpoint_url=env.get("MLFLOW_S3_ENDPOINT_URL") or None,
        )


def _sqlite_folder(tracking_uri: str) -> None:
    """SQLite cannot create the folder of its database file: make it."""
    prefix = "sqlite:///"
    if tracking_uri.startswith(prefix) and ":memory:" not in tracking_uri:
        Path(tracking_uri[len(prefix) :]).parent.mkdir(parents=True, exist_ok=True)


def _set_uris() -> tuple[str | None, str | None]:
    """The tracking and registry URIs MLflow was given (None: none), not what it would use.

    `mlflow.get_tracking_uri()` answers its default (`./mlflow.db` of the working directory)
    when none is set; saving and setting that back would pin every later MLflow call in the
    process to the working directory. MLflow's own `_use_tracking_uri` saves this value too.
    """
    from mlflow.tracking._model_registry import utils as registry_utils
    from mlflow.tracking._tracking_service import utils as tracking_utils

    return tracking_utils._tracking_uri, registry_utils._registry_uri


# MLflow's tracking URI and the env variables are process-wide: blocks that overlap (tasks
# in threads) set them on entry, and the last block to leave puts back what the first found.
_STATE_LOCK = threading.Lock()
_state: dict[str, Any] = {"depth": 0, "saved_env": {}, "saved_uris": (None, None)}


@contextmanager
def tracking(settings: TrackingSettings) -> Iterator[MlflowClient]:
    """A client on `settings`; MLflow's fluent calls inside (log_model, load_model) use them too.

    MLflow keeps the tracking URI in a process global and in MLFLOW_TRACKING_URI, and reads the
    S3 endpoint from MLFLOW_S3_ENDPOINT_URL: all are set for the block and put back after the
    last overlapping block, unset where they were unset. Threads may overlap with the same
    settings, not with different ones.
    """
    import mlflow

    _sqlite_folder(settings.tracking_uri)
    with _STATE_LOCK:
        if _state["depth"] == 0:
            _state["saved_env"] = {name: os.environ.get(name) for name in MLFLOW_ENV}
            _state["saved_uris"] = _set_uris()
        _state["depth"] += 1
        mlflow.set_tracking_uri(settings.tracking_uri)
        mlflow.set_registry_uri(settings.tracking_uri)
        if settings.s3_endpoint_url:
            os.environ["MLFLOW_S3_ENDPOINT_URL"] = settings.s3_endpoint_url
    try:
        yield mlflow.MlflowClient(settings.tracking_uri, settings.tracking_uri)
    finally:
        with _STATE_LOCK:
            _state["depth"] -= 1
            if _state["depth"] == 0:
                saved_tracking, saved_registry = _state["saved_uris"]
                mlflow.set_tracking_uri(saved_tracking)
                mlflow.set_registry_uri(saved_registry)
                restore(_state["saved_env"])
