"""Side-by-side layers on each engine `pipeline.task_runner` names: the same batch on the
thread pool and on a real local Dask cluster of worker processes gives the same candidate
(layers byte for byte, the same metrics), since each layer of a wave trains from the same
inputs on the CPU."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from test_flows import set_params, submit, unique_subjects

from eul.params import PipelineParams
from eul.pipeline.context import PipelineError, load_context
from eul.stores.log.store import Ledger
from flows.runners import check_task_runner, task_runner_for

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy"),
    pytest.mark.filterwarnings("ignore::ResourceWarning"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
]


def _layers(root: Path) -> dict[str, str]:
    """Request id -> the sha256 of its layer, from the log's `unlearned` entries."""
    with Ledger(f"sqlite:///{root / 'state/deletion-log.sqlite'}") as ledger:
        return {
            status.request_id: next(
                e.details["layer_sha256"]
                for e in ledger.get(status.request_id).history
                if e.status == "unlearned"
            )
            for status in ledger.list()
        }


def _numbers(metrics: dict) -> dict:
    """The metrics with NaN (a metric with no rows to measure) as None, so that equal
    candidates compare equal."""
    assert metrics, "the batch measured no metric"
    return {k: None if v != v else v for k, v in metrics.items()}


def _batch(root: Path, subjects: list[str], runner: str) -> dict:
    from flows.nightly import nightly_deletion_batch

    set_params(
        root,
        pipeline={"stack_layers": False, "train_workers": 2, "task_runner": runner},
    )
    submit(root, **{f"req-{i}": subject for i, subject in enumerate(subjects)})
    return nightly_deletion_batch(project_dir=str(root), auto_promote=False)


def test_a_dask_cluster_trains_the_same_candidate_as_the_thread_pool(
    tmp_path, flow_template, tool_env, prefect_harness
):
    pytest.importorskip("prefect_dask", reason="prefect-dask is not installed (eul[dask])")
    roots = {}
    for runner in ("thread", "dask"):
        roots[runner] = tmp_path / runner
        shutil.copytree(flow_template, roots[runner], symlinks=True)
    subjects = unique_subjects(roots["thread"], 3)
    summaries = {runner: _batch(root, subjects, runner) for runner, root in roots.items()}
    for summary in summaries.values():
        assert summary["trained"] == 3 and "awaits a reviewer" in summary["outcome"], summary
    # the layers are the same bytes, and so are the candidate's metrics
    assert _layers(roots["dask"]) == _layers(roots["thread"])
    assert len(set(_layers(roots["dask"]).values())) == 3
    assert _numbers(summaries["dask"]["metrics"]) == _numbers(summaries["thread"]["metrics"])
    # and with two workers the third layer trained on top of the first wave's two
    ctx = load_context(roots["dask"])
    done = {
        d["request_id"]: d
        for d in (
            json.loads((folder / "done.json").read_text())
            for folder in sorted((ctx.workdir / "layers").iterdir())
        )
    }
    assert done["req-0"]["trained_on"] == done["req-1"]["trained_on"] == []
    assert sorted(done["req-2"]["trained_on"]) == ["req-0", "req-1"]


def test_the_thread_pool_is_the_default_engine_and_is_sized_by_train_workers():
    from prefect.task_runners import ThreadPoolTaskRunner

    runner = task_runner_for(PipelineParams(train_workers=3))
    assert isinstance(runner, ThreadPoolTaskRunner) and runner._max_workers == 3


def test_a_dask_runner_takes_the_cluster_address_or_a_local_cluster_of_processes():
    pytest.importorskip("prefect_dask", reason="prefect-dask is not installed (eul[dask])")
    remote = task_runner_for(PipelineParams(task_runner="dask", cluster_address="tcp://x:8786"))
    assert remote.address == "tcp://x:8786"
    local = task_runner_for(PipelineParams(task_runner="dask", train_workers=4))
    assert local.address is None
    assert local.cluster_kwargs["n_workers"] == 4 and local.cluster_kwargs["processes"]


def test_an_engine_that_is_not_installed_is_refused_before_any_work(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "prefect_ray" else real(name, *a),
    )
    params = PipelineParams(stack_layers=False, task_runner="ray")
    with pytest.raises(PipelineError, match=r"pip install 'eul\[ray\]'"):
        check_task_runner(params)
    check_task_runner(PipelineParams(stack_layers=True, task_runner="ray"))  # not used
