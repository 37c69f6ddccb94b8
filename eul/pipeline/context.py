"""The project a pipeline run works on, and what every step shares: its errors, its clock,
the names of its files and layers, and the failure drill's points.

Every step reads what it needs from the log's statuses and from files in the working folder
(`pipeline.workdir`), so a rerun after a failure skips what is done and repeats nothing.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import get_args

from eul.params import DrillPoint, Params, load_params
from eul.stores.log.config import resolve_url
from eul.stores.log.store import Ledger
from eul.stores.registry.runs import BATCH_KEY_TAG  # noqa: F401 (the steps' batch key tag)
from eul.stores.registry.settings import TrackingSettings

PENDING = ("validated", "unlearned", "fused")
PRODUCTION_LAYER = "_production"
FUSED_LAYER = "_fused"
STATE_ARTIFACT = "fusion_state"
DONE_FILE = "done.json"
# A global concurrency limit every flow that may move the production alias holds while it
# runs (created with one slot where the Prefect server has none: flows/batch.py): a nightly
# batch and an urgent request then never build on the same production version at once.
# Promotion's compare-and-set (eul.pipeline.promotion_lock) still refuses a loser.
MODEL_LIMIT = "eul-model"
# The points where `pipeline.drill_fail_at` stops a batch (eul.params.DrillPoint).
FAIL_POINTS: tuple[str, ...] = get_args(DrillPoint)
# A kill drill: with this variable set, a drill point ends its process by SIGKILL instead of
# raising (no cleanup, no `finally`, as a power cut or the OOM killer would). "1" kills at the
# point `pipeline.drill_fail_at` names; a point's name kills there whatever params.yaml says.
KILL_ENV = "EUL_DRILL_KILL"


class PipelineError(RuntimeError):
    """A pipeline step cannot go on; the message says why and what to do."""


class Clock:
    """Wall time per named phase, summed over repeats (the benchmark reads them)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            spent = time.perf_counter() - started
            self.seconds[name] = self.seconds.get(name, 0.0) + spent


def _absolute_sqlite(url: str, root: Path) -> str:
    """A relative SQLite path is taken from the project root, not the working directory."""
    prefix = "sqlite:///"
    if not url.startswith(prefix) or url.startswith(prefix + "/") or ":memory:" in url:
        return url
    return prefix + str((root / url[len(prefix) :]).resolve())


def _absolute_location(location: str, root: Path) -> str:
    if "://" in location or location.startswith("file:"):
        return location
    return str((root / location).resolve())


@dataclass(frozen=True)
class Context:
    """The project a flow run works on: its root, params.yaml, the log and MLflow."""

    root: Path
    params: Params
    params_path: Path
    settings: TrackingSettings
    log_url: str

    @property
    def workdir(self) -> Path:
        return self.root / self.params.pipeline.workdir

    def ledger(self) -> Ledger:
        """A connection to the deletion log; use it as a context manager."""
        return Ledger(self.log_url, params_path=self.params_path)

    def prepared(self, name: str) -> Path:
        return self.root / self.params.prepare.out / name

    def partition_dir(self) -> Path:
        return self.root / self.params.partition.out

    @property
    def drill_fail_at(self) -> str | None:
        """The failure drill's point (`pipeline.drill_fail_at`); None in production."""
        return self.params.pipeline.drill_fail_at


def fail_point(ctx: Context, name: str) -> None:
    """Raise here when `pipeline.drill_fail_at` names this point: lets tests (and drills)
    interrupt a batch at a known step and check that a rerun finishes it. With $EUL_DRILL_KILL
    set (`KILL_ENV`), the process is killed here instead (SIGKILL to itself)."""
    if name not in FAIL_POINTS:
        raise ValueError(f"{name!r} is not a failure drill point ({', '.join(FAIL_POINTS)})")
    kill = os.environ.get(KILL_ENV, "").strip()
    if kill == name or (kill == "1" and ctx.drill_fail_at == name):
        os.kill(os.getpid(), signal.SIGKILL)
    if ctx.drill_fail_at == name:
        raise PipelineError(f"failure injected at {name!r} (pipeline.drill_fail_at)")


def load_context(project_dir: str | Path = ".", params_file: str = "params.yaml") -> Context:
    """The project at `project_dir`; relative paths in params.yaml are taken from it.

    The log URL comes from $EUL_LOG_URL or `log.url`; MLflow from MLFLOW_TRACKING_URI,
    EUL_MLFLOW_ARTIFACTS, EUL_MLFLOW_MODEL, EUL_MLFLOW_EXPERIMENT or the `registry` section.
    """
    root = Path(project_dir).resolve()
    if not root.is_dir():
        raise PipelineError(f"no project folder at {root}")
    params_path = root / params_file
    params = load_params(params_path if params_path.is_file() else None)
    env = os.environ
    registry = params.registry
    tracking_uri = env.get("MLFLOW_TRACKING_URI") or registry.tracking_uri
    settings = TrackingSettings(
        tracking_uri=_absolute_sqlite(tracking_uri, root),
        artifact_location=_absolute_location(
            env.get("EUL_MLFLOW_ARTIFACTS") or registry.artifact_location, root
        ),
        model_name=env.get("EUL_MLFLOW_MODEL") or registry.model_name,
        experiment=env.get("EUL_MLFLOW_EXPERIMENT") or registry.experiment,
        s3_endpoint_url=env.get("MLFLOW_S3_ENDPOINT_URL") or None,
    )
    log_url = _absolute_sqlite(resolve_url(None, params_path), root)
    return Context(root, params, params_path, settings, log_url)
