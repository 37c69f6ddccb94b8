"""Checks of a flow run's parameters, made before the run does any work.

Prefect checks the types of a run's parameters (a str, an int); these check what they
mean: the project folder and its params file exist and load, the deletion log opens, MLflow
answers, a request id is in the log, a version is registered. Each failure is one line that
names the parameter and the fix, so that a deployment run with a typo fails in seconds, in
words, instead of minutes later deep inside a task (MLflow's client alone retries an
unreachable server for minutes).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from eul.params import DEFAULT_PATH, ParamsError

if TYPE_CHECKING:
    from eul.pipeline.context import Context


class ParameterError(ValueError):
    """A flow parameter that cannot work; the message names the parameter and the fix."""


def check_project(project_dir: str, params_file: str = DEFAULT_PATH) -> Context:
    """The project a flow run works on, once its folder, params file, log and MLflow store
    are known to be usable."""
    from eul.pipeline.context import PipelineError, load_context
    from eul.pipeline.probes import mlflow_problem

    if not str(project_dir).strip():
        raise ParameterError("project_dir is empty; give the project's root folder")
    root = Path(project_dir).expanduser()
    if not root.is_dir():
        raise ParameterError(
            f"project_dir: no folder at {root}; give the project's root (the folder with "
            "params.yaml and dvc.yaml), as an absolute path for deployments"
        )
    if params_file != DEFAULT_PATH and not (root / params_file).is_file():
        raise ParameterError(f"params_file: no {params_file} in {root}; check the file name")
    try:
        ctx = load_context(root, params_file)
    except ParamsError as err:
        raise ParameterError(f"params_file: {err}") from None
    problem = mlflow_problem(ctx.settings.tracking_uri)
    if problem:
        raise PipelineError("; ".join(problem))
    with ctx.ledger() as ledger:  # a log that cannot be opened fails here, in one line
        ledger.head()
    return ctx


def check_request_id(ctx: Context, request_id: str) -> None:
    """`request_id` names a request in the log (an unknown id is an error, not a no-op)."""
    from eul.stores.log.schema import LedgerError

    if not request_id.strip():
        raise ParameterError("request_id is empty; give an id from `eul requests list`")
    with ctx.ledger() as ledger:
        try:
            ledger.get(request_id)
        except LedgerError as err:
            raise ParameterError(f"request_id: {err}") from None


def check_promotion(reviewer: str, version: int | None, override_reason: str | None) -> None:
    """The promote flow's own parameters, before the project is opened."""
    if not reviewer.strip():
        raise ParameterError("reviewer is empty; name the reviewer who decides the promotion")
    if version is not None and version < 1:
        raise ParameterError(f"version: registered versions start at 1, got {version}")
    if override_reason is not None and not override_reason.strip():
        raise ParameterError("override_reason is empty; give the reason, or leave it out")


def check_version(ctx: Context, version: int) -> None:
    """`version` is registered under the project's model name."""
    from eul.stores.registry.versions import version_exists

    if not version_exists(ctx.settings, version):
        raise ParameterError(
            f"version: model {ctx.settings.model_name!r} has no version {version} in "
            f"{ctx.settings.shown_uri}; pick one from the MLflow registry"
        )
