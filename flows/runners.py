"""The engine side-by-side layers train on (`pipeline.task_runner`): threads of the flow's
process, a Dask cluster or a Ray cluster. Each is a Prefect task runner, so a layer's task
run is tracked, retried and limited by its `gpu` tag the same way on every engine."""

from __future__ import annotations

from typing import TYPE_CHECKING

from eul.pipeline.context import PipelineError

if TYPE_CHECKING:
    from prefect.task_runners import TaskRunner

    from eul.params import PipelineParams

# What each engine needs installed, and the extra of this package that pins it.
_ENGINES = {
    "dask": ("prefect_dask", "eul[dask]"),
    "ray": ("prefect_ray", "eul[ray]"),
}


def task_runner_for(pipeline: PipelineParams) -> TaskRunner:
    """A new (not started) task runner for `pipeline.task_runner`, sized by `train_workers`.

    Dask: the scheduler at `cluster_address` where one is given, else a local cluster of
    `train_workers` worker processes with one thread each (torch in one process per layer,
    as on a GPU runner with one device per worker). Ray: the cluster at `cluster_address`, or
    a local one.
    """
    kind = pipeline.task_runner
    if kind == "thread":
        from prefect.task_runners import ThreadPoolTaskRunner

        return ThreadPoolTaskRunner(max_workers=pipeline.train_workers)
    _check_installed(kind)
    if kind == "dask":
        from prefect_dask import DaskTaskRunner

        if pipeline.cluster_address:
            return DaskTaskRunner(address=pipeline.cluster_address)
        return DaskTaskRunner(
            cluster_kwargs={
                "n_workers": pipeline.train_workers,
                "threads_per_worker": 1,
                "processes": True,
                "dashboard_address": None,
            }
        )
    from prefect_ray import RayTaskRunner

    if pipeline.cluster_address:
        return RayTaskRunner(address=pipeline.cluster_address)
    return RayTaskRunner(init_kwargs={"num_cpus": pipeline.train_workers})


def _check_installed(kind: str) -> None:
    import importlib.util

    module, extra = _ENGINES[kind]
    if importlib.util.find_spec(module) is None:
        raise PipelineError(
            f"pipeline.task_runner is {kind!r} but {module} is not installed: "
            f"pip install '{extra}' (or set pipeline.task_runner: thread)"
        )


def check_task_runner(pipeline: PipelineParams) -> None:
    """Before any work: the configured engine is installed (side-by-side batches only)."""
    if not pipeline.stack_layers and pipeline.task_runner != "thread":
        _check_installed(pipeline.task_runner)
