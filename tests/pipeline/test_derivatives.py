"""The purge step deletes what each request left besides its rows (layer folder, forget
file, its MLflow run's artifacts) and the older fusion states, while production still
serves and the next batch still fuses: two real batches on a built project (real DVC,
SQLite MLflow with file artifacts, the deletion log), without Prefect."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
from conftest import unique_text_subjects

from eul.fusion.fuse import FusionState
from eul.pipeline.batch import check_batch_gates, evaluate_batch, fuse_batch, plan_batch
from eul.pipeline.context import STATE_ARTIFACT, Context, load_context
from eul.pipeline.derivatives import delete_derivatives
from eul.pipeline.intake import partition_data, snapshot_log
from eul.pipeline.marks import mark_fused
from eul.pipeline.production import current_production, load_serving
from eul.pipeline.purge_step import purge_deployed
from eul.pipeline.release import promote_version, register_candidate
from eul.pipeline.train import layer_folder, train_request
from eul.stores.dvc.partition import FORGET_DIR, forget_filename
from eul.stores.registry.artifacts import DELETED_AT_TAG

pytestmark = pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy")


@pytest.fixture
def project(flow_project) -> Path:
    return flow_project


def _deploy(ctx: Context, *request_ids: str) -> tuple[str, str]:
    """One batch of the requests, trained, fused, registered and promoted (not purged);
    returns (the first request's run id, the batch folder name)."""
    production = current_production(ctx)
    snapshot = snapshot_log(ctx, production)
    split = partition_data(ctx, snapshot)
    trained = [train_request(ctx, production, r, split) for r in request_ids]
    plan = plan_batch(ctx, production, list(request_ids), snapshot, "nightly")
    fused = fuse_batch(ctx, production, trained, plan)
    evaluation = evaluate_batch(ctx, production, fused.base_dir, fused.layer_dir, split,
                                list(request_ids))  # fmt: skip
    registered = register_candidate(
        ctx, production, plan, base_dir=fused.base_dir, layer_dir=fused.layer_dir,
        state_dir=fused.state_dir, evaluation=evaluation,
        verdict=check_batch_gates(ctx, evaluation),
    )  # fmt: skip
    mark_fused(ctx, list(request_ids), registered.version, plan.folder_name)
    promote_version(ctx, registered.version, promoted_by="test",
                    expected_production=production.version)  # fmt: skip
    assert trained[0].mlflow_run_id
    return trained[0].mlflow_run_id, plan.folder_name


def _hashes(folder: Path, skip: str = "") -> set[str]:
    return {hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*")
            if p.is_file() and p.name != skip}  # fmt: skip


def _client(ctx: Context):
    from mlflow import MlflowClient

    return MlflowClient(ctx.settings.tracking_uri, ctx.settings.tracking_uri)


def _artifacts(ctx: Context, run_id: str, path: str | None = None) -> list[str]:
    found = []
    for info in _client(ctx).list_artifacts(run_id, path):
        found += _artifacts(ctx, run_id, info.path) if info.is_dir else [info.path]
    return found


def _batch_run(ctx: Context, version: int) -> str:
    return _client(ctx).get_model_version(ctx.settings.model_name, str(version)).run_id


def _derivatives(ctx: Context, request_id: str) -> dict[str, int]:
    with ctx.ledger() as ledger:
        entry = [e for e in ledger.get(request_id).history if e.status == "purged"][-1]
    return entry.details["evidence"]["derivatives"]


def test_a_purge_deletes_each_requests_derivatives_and_older_fusion_states(project):
    ctx = load_context(project)
    rows = [json.loads(x) for x in (project / "data/prepared/train.jsonl").read_text().splitlines()]
    a, b, c = unique_text_subjects(rows)[:3]
    with ctx.ledger() as ledger:
        ledger.submit(subject_id=a, request_id="req.a")
        ledger.submit(subject_id=c, request_id="req-c")
    # given requests req.a and req-c deployed in version 1 (a fused layer and a fusion state
    # that sum over both), req.a's layer, forget file and run in place
    run_a, batch_1 = _deploy(ctx, "req.a", "req-c")
    layer_a = layer_folder(ctx, "req.a")
    forget_a = ctx.partition_dir() / FORGET_DIR / forget_filename("req.a")
    assert (layer_a / "layer.safetensors").is_file() and forget_a.stat().st_size > 0
    assert "layer/layer.safetensors" in _artifacts(ctx, run_a)
    own = _hashes(layer_a, skip="layer_config.json")  # the config: the same for every layer
    # when it is purged
    report = purge_deployed(ctx)
    assert sorted(report.purged) == ["req-c", "req.a"]
    # then its layer folder, forget file and run artifacts are gone, the run record stays
    assert not layer_a.exists() and not forget_a.exists()
    assert _artifacts(ctx, run_a) == []
    run = _client(ctx).get_run(run_a)
    assert run.data.params["request_id"] == "req.a" and "forget_acc" in run.data.metrics
    assert run.data.tags[DELETED_AT_TAG]
    # and no stored file anywhere has the bytes of its layer or statistics (a sum over one
    # request would: that is why the test batch holds two)
    assert not own & _hashes(project / "state") and not own & _hashes(project / ".dvc")
    counts = _derivatives(ctx, "req.a")
    assert counts["layer_files"] == len(own) + 1 and counts["partition_files"] == 1
    assert counts["request_runs"] == 1 and counts["run_artifacts"] >= len(own) + 1
    # while version 1's fusion state, which the next batch builds on, is kept
    assert _artifacts(ctx, _batch_run(ctx, 1), STATE_ARTIFACT)
    assert counts["fusion_states"] == 0

    # when the next request is deployed on top of version 1 and purged
    with ctx.ledger() as ledger:
        ledger.submit(subject_id=b, request_id="req-b")
    _, batch_2 = _deploy(ctx, "req-b")
    purge_deployed(ctx)
    # then it fused with version 1's state: version 2's state sums over both requests
    production = current_production(ctx)
    assert production.version == 2
    assert FusionState.load(production.state_dir).requests == ["req.a", "req-c", "req-b"]
    # and the older fusion state is gone: from version 1's batch run, the batch folders,
    # the download of version 1; version 2's stays in each
    assert _artifacts(ctx, _batch_run(ctx, 1), STATE_ARTIFACT) == []
    assert "request_ids.json" in _artifacts(ctx, _batch_run(ctx, 1))
    assert _artifacts(ctx, _batch_run(ctx, 2), STATE_ARTIFACT)
    batches = {p.name for p in (ctx.workdir / "batches").iterdir()}
    assert batches == {batch_2} != {batch_1}
    assert [p.name for p in (ctx.workdir / "production").iterdir()] == ["v2"]
    counts = _derivatives(ctx, "req-b")
    assert counts["fusion_states"] == 1 and counts["fusion_state_files"] >= 3
    assert counts["batch_folders"] == 1 and counts["production_folders"] == 1

    # and production still serves from the registry alone (its state downloaded again)
    shutil.rmtree(ctx.workdir / "production")
    again = current_production(ctx)
    assert FusionState.load(again.state_dir).requests == ["req.a", "req-c", "req-b"]
    assert load_serving(again.base_dir, again.layer_dir).generate(["the soup was"])
    # and a rerun (after a kill before the marks) finds nothing left to delete
    rerun = delete_derivatives(ctx, ["req.a", "req-b", "req-c"])
    for request_id in ("req.a", "req-b", "req-c"):
        left = rerun.counts(request_id)
        assert left.pop("request_runs") == 1 and set(left.values()) == {0}, left
