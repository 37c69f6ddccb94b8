"""The production model: what serves now, downloaded once into the working folder."""

from __future__ import annotations

import os
import shutil
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from eul.pipeline.context import (
    DONE_FILE,
    PRODUCTION_LAYER,
    STATE_ARTIFACT,
    Context,
    PipelineError,
)
from eul.pipeline.files import replace_dir, write_json
from eul.stores.registry.loading import download_version
from eul.stores.registry.runs import download_run_artifacts
from eul.stores.registry.tags import covered_request_ids
from eul.stores.registry.versions import PRODUCTION, get_alias_version, version_run_id, version_tags

if TYPE_CHECKING:
    from eul.model.text_model import TextModel

# transformers builds a model under a process-wide "meta device" context: two threads
# loading at once break each other's load, so loads (cheap) take turns.
LOAD_LOCK = threading.Lock()


@dataclass(frozen=True)
class Production:
    """What serves now: a registered version (base + fused layer + fusion state), or the
    base model of the DVC `train` stage before any version exists."""

    version: int | None
    base_dir: Path
    layer_dir: Path | None
    state_dir: Path | None
    covered: tuple[str, ...] = ()
    tags: dict[str, str] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "covered_requests": len(self.covered),
            "base": str(self.base_dir),
        }


def _download(ctx: Context, version: int, folder: Path) -> None:
    """Base, fused layer and fusion state of `version` into `folder`, all or nothing."""
    tmp = folder.with_name(folder.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    base, layer = download_version(ctx.settings, version, tmp / "download")
    run_id = version_run_id(ctx.settings, version)
    state = download_run_artifacts(ctx.settings, run_id, STATE_ARTIFACT, tmp / "state-dl")
    os.replace(base, tmp / "base")
    os.replace(layer, tmp / "layer")
    os.replace(state, tmp / "state")
    shutil.rmtree(tmp / "download")
    shutil.rmtree(tmp / "state-dl")
    write_json(tmp / DONE_FILE, {"version": version, "run_id": run_id})
    replace_dir(tmp, folder)


def current_production(ctx: Context) -> Production:
    """The production version, downloaded once into the working folder (base, fused layer
    and the fusion state of the batch run that made it)."""
    version = get_alias_version(ctx.settings, PRODUCTION)
    if version is None:
        base = ctx.root / ctx.params.train.out
        if not (base / "config.json").is_file():
            raise PipelineError(
                f"no production version in {ctx.settings.tracking_uri} and no base model at "
                f"{base}: run `dvc repro train` first"
            )
        return Production(None, base, None, None)
    folder = ctx.workdir / "production" / f"v{version}"
    if not (folder / DONE_FILE).is_file():
        _download(ctx, version, folder)
    tags = version_tags(ctx.settings, version)
    return Production(
        version,
        folder / "base",
        folder / "layer",
        folder / "state",
        tuple(covered_request_ids(tags)),
        tags,
    )


def load_base(base_dir: Path) -> TextModel:
    """The base model alone, on the CPU (loads take turns: LOAD_LOCK)."""
    from eul.model.text_model import TextModel

    with LOAD_LOCK:
        return TextModel.load(base_dir)


def load_serving(base_dir: Path, layer_dir: Path | None) -> TextModel:
    """The base model with `layer_dir`'s layer (if any) loaded as `_production` and on, on
    the CPU (`TextModel.to` moves it, layer included)."""
    tm = load_base(base_dir)
    if layer_dir is not None:
        layers = tm.unlearning_layers()
        layers.load_layer(layer_dir, PRODUCTION_LAYER)
        layers.set_active([PRODUCTION_LAYER])
    return tm
