"""Downloading and loading a registered version: as a TextModel with its fused layer on, or
as the pyfunc model MLflow serves."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from eul.runtime.scratch import scratch_folder
from eul.stores.registry.settings import RegistryError, TrackingSettings, tracking
from eul.stores.registry.versions import (
    BASE_ARTIFACT,
    LAYER_ARTIFACT,
    PRODUCTION,
    get_alias_version,
    layer_file,
)

if TYPE_CHECKING:
    from mlflow.pyfunc import PyFuncModel

    from eul.model.text_model import TextModel


def _model_uri(settings: TrackingSettings, version: int) -> str:
    return f"models:/{settings.model_name}/{version}"


def _resolve(settings: TrackingSettings, version: int | str) -> int:
    """A version number, or the version an alias points at."""
    if isinstance(version, int):
        return version
    found = get_alias_version(settings, version)
    if found is None:
        raise RegistryError(
            f"no version of {settings.model_name!r} has the alias {version!r} "
            f"in {settings.shown_uri}"
        )
    return found


def download_version(
    settings: TrackingSettings, version: int | str, dst: str | Path
) -> tuple[Path, Path]:
    """Download a version (number or alias) into `dst`; returns (base model, layer) folders."""
    import mlflow
    from mlflow.models import Model

    number = _resolve(settings, version)
    with tracking(settings):
        local = Path(
            mlflow.artifacts.download_artifacts(
                artifact_uri=_model_uri(settings, number),
                dst_path=str(dst),
                tracking_uri=settings.tracking_uri,
                registry_uri=settings.tracking_uri,
            )
        )
    paths = Model.load(str(local)).flavors["python_function"]["artifacts"]
    return local / paths[BASE_ARTIFACT]["path"], local / paths[LAYER_ARTIFACT]["path"]


def load_model_folders(base_dir: str | Path, layer_dir: str | Path) -> TextModel:
    """The base model with the layer in `layer_dir` loaded and switched on."""
    from eul.fusion.fuse import FUSED_FILE, add_fused_layer, load_fused
    from eul.model.text_model import TextModel

    tm = TextModel.load(base_dir)
    layers = tm.unlearning_layers()
    if layer_file(layer_dir) == FUSED_FILE:
        name = "fused"
        add_fused_layer(layers, name, load_fused(layer_dir))
    else:
        name = layers.load_layer(layer_dir)
    layers.set_active([name])
    return tm


def load_version(settings: TrackingSettings, version: int | str = PRODUCTION) -> TextModel:
    """A registered version (number or alias) as a TextModel with its fused layer active."""
    with scratch_folder("model") as tmp:
        base, layer = download_version(settings, version, tmp)
        return load_model_folders(base, layer)


def load_production(settings: TrackingSettings) -> TextModel:
    """What is deployed: the version with the production alias, fused layer active."""
    return load_version(settings, PRODUCTION)


def load_pyfunc(settings: TrackingSettings, version: int | str = PRODUCTION) -> PyFuncModel:
    """A version as MLflow serves it: `predict(texts)` returns greedy outputs."""
    import mlflow

    number = _resolve(settings, version)
    with tracking(settings):
        return mlflow.pyfunc.load_model(_model_uri(settings, number))
