"""The pipeline's steps as plain functions, without Prefect: a built project (real DVC), a
real SQLite MLflow store and deletion log inside it."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from eul.fusion.fuse import FusionState
from eul.pipeline.batch import evaluate_batch, fuse_batch, plan_batch
from eul.pipeline.compaction import compaction_status
from eul.pipeline.context import (
    FAIL_POINTS,
    FUSED_LAYER,
    PipelineError,
    fail_point,
    load_context,
)
from eul.pipeline.files import layer_key
from eul.pipeline.intake import partition_data, snapshot_log
from eul.pipeline.production import Production, current_production, load_serving
from eul.pipeline.release import promotion_problems
from eul.pipeline.results import ForgetSet, Partition, Snapshot
from eul.pipeline.train import train_request
from eul.stores.log.store import Ledger

pytestmark = pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy")


@pytest.fixture
def project(flow_project) -> Path:
    return flow_project


def _subjects(root: Path, n: int) -> list[str]:
    rows = [json.loads(x) for x in (root / "data/prepared/train.jsonl").read_text().splitlines()]
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["subject_id"]] = counts.get(row["subject_id"], 0) + 1
    return [s for s, c in sorted(counts.items()) if c >= 3][:n]


def test_layer_names_hold_no_dots_and_stay_distinct():
    assert layer_key("ticket.7") == "ticket%2E7"
    assert layer_key("a/b:c@d") == "a%2Fb%3Ac%40d"
    assert layer_key("a.b") != layer_key("a_b")


def test_a_batch_step_by_step(project):
    # given two requests in the log and no production version yet
    ctx = load_context(project)
    a, b = _subjects(project, 2)
    with ctx.ledger() as ledger:
        ledger.submit(subject_id=a, request_id="req.a")
        ledger.submit(subject_id=b, request_id="req-b")
    production = current_production(ctx)
    assert production.version is None and production.base_dir == project / "models/base"
    # when the log is snapshotted and partitioned through DVC
    snapshot = snapshot_log(ctx, production)
    assert snapshot.validated == ["req.a", "req-b"] == snapshot.pending
    split = partition_data(ctx, snapshot)
    assert split.via == "dvc" and split.requests["req.a"].rows >= 3
    # and each request's layer is trained, the second on top of the first
    first = train_request(ctx, production, "req.a", split)
    trained = [first, train_request(ctx, production, "req-b", split, [first])]
    assert [t.skipped for t in trained] == [False, False]
    assert [t.trained_on for t in trained] == [[], ["req.a"]]
    with ctx.ledger() as ledger:
        assert {s.request_id: s.status for s in ledger.list()} == {
            "req.a": "unlearned",
            "req-b": "unlearned",
        }
    # then asking again finds the layer on disk: nothing is retrained or logged twice
    again = train_request(ctx, production, "req.a", split)
    assert again.skipped is True and again.mlflow_run_id == trained[0].mlflow_run_id

    # when the layers are fused
    plan = plan_batch(ctx, production, ["req.a", "req-b"], snapshot, "nightly")
    fused = fuse_batch(ctx, production, trained, plan)
    assert fused.added == ["req.a", "req-b"] and fused.requests_in_state == 2
    # then the one fused layer is exactly the two layers stacked
    stacked = load_serving(production.base_dir, None)
    layers = stacked.unlearning_layers()
    names = [layers.load_layer(t.layer_dir) for t in trained]
    layers.set_active(names)
    one = load_serving(production.base_dir, Path(fused.layer_dir))
    rows = [json.loads(x) for x in Path(split.requests["req.a"].file).read_text().split("\n")
            if x]  # fmt: skip
    batch = stacked.batch([r["text"] for r in rows], [r["target"] for r in rows])
    with torch.no_grad():
        assert torch.allclose(stacked.logits(batch), one.logits(batch), atol=1e-5)

    # and a production state that already holds a request does not take it twice
    on_top = Production(1, production.base_dir, Path(fused.layer_dir),
                        Path(fused.state_dir), ("req.a", "req-b"))  # fmt: skip
    plan_again = plan_batch(ctx, on_top, ["req.a"], snapshot, "nightly")
    assert plan_again.key != plan.key
    refused = fuse_batch(ctx, on_top, trained[:1], plan_again)
    assert refused.already_fused == ["req.a"] and refused.added == []
    assert FusionState.load(refused.state_dir).requests == ["req.a", "req-b"]

    # and the stacked requests count towards compaction
    status = compaction_status(ctx, on_top)
    assert status.stacked_requests == 2 and status.forgotten_rows > 0
    assert status.due is (status.forget_share > ctx.params.compaction.max_forget_share)


def test_the_same_batch_gets_the_same_key(project):
    ctx = load_context(project)
    production = Production(3, project, None, None, ("old",))
    snapshot = Snapshot(9, "h", [], [], [], [], {})
    first = plan_batch(ctx, production, ["b", "a"], snapshot, "nightly")
    # the same requests on the same production version, from either flow: the same key
    assert plan_batch(ctx, production, ["a", "b"], snapshot, "request").key == first.key
    assert first.covered == ("a", "b", "old")
    # another production version, or other requests: another key
    other = Production(4, project, None, None, ("old",))
    assert plan_batch(ctx, other, ["a", "b"], snapshot, "nightly").key != first.key
    assert plan_batch(ctx, production, ["a"], snapshot, "nightly").key != first.key


def test_promotion_checks_compliance(tmp_path):
    with Ledger(f"sqlite:///{tmp_path / 'log.sqlite'}") as ledger:
        for rid in ("r1", "r2", "r3"):
            ledger.submit(record_ids=[f"x-{rid}"], request_id=rid)
        ledger.validate({"s": ["x-r1", "x-r2"]})  # r3 names no known record: rejected
        seq, head = ledger.head()
        production = Production(1, tmp_path, None, None, ("r1",))
        good = {"covered_request_ids": "r1,r2", "gates_passed": "true", "log_seq": str(seq),
                "log_hash": head}  # fmt: skip
        # a version that passed its gates and honours what production honours may go
        assert promotion_problems(good, production, ledger) == []
        # failed gates need a reviewer's reason
        failed = {**good, "gates_passed": "false", "eul.gate_reasons": "utility: fell"}
        assert "gates failed (utility: fell)" in promotion_problems(failed, production, ledger)[0]
        assert promotion_problems(failed, production, ledger, "accepted by the DPO") == []
        # a version that drops a request production honours may never go
        dropped = {**good, "covered_request_ids": "r2"}
        assert "does not honour 1 request(s)" in promotion_problems(dropped, production, ledger)[0]
        # nor one whose log entry changed, or that covers a rejected request
        moved = {**good, "log_hash": "0" * 64}
        assert "hash differs" in promotion_problems(moved, production, ledger)[0]
        bad = {**good, "covered_request_ids": "r1,r2,r3"}
        assert "rejected requests: r3" in promotion_problems(bad, production, ledger)[0]


def test_a_production_layer_is_switched_on_when_served(project):
    # given a fused layer saved as the pipeline saves it
    from eul.fusion.fuse import add_shared_fused_layer, fuse_shared
    from eul.layers import LayerConfig

    ctx = load_context(project)
    base = project / "models/base"
    tm = load_serving(base, None)
    config = LayerConfig(**ctx.params.unlearn.layer.model_dump())
    state = FusionState.empty(tm.unlearning_layers(), config)
    add_shared_fused_layer(tm.unlearning_layers(), FUSED_LAYER, config, fuse_shared(state))
    tm.unlearning_layers().save_layer(FUSED_LAYER, project / "layer")
    # when it is served
    served = load_serving(base, project / "layer")
    # then it is on, under the production name
    assert served.unlearning_layers().active == ["_production"]


def test_a_gpu_named_in_params_on_a_machine_without_one_stops_before_any_work(project, monkeypatch):
    # given unlearn.device: cuda on a machine without a GPU
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    ctx = load_context(project)
    unlearn = ctx.params.unlearn.model_copy(update={"device": "cuda"})
    ctx = dataclasses.replace(ctx, params=ctx.params.model_copy(update={"unlearn": unlearn}))
    production = current_production(ctx)
    partition = Partition("python", 1, {"r1": ForgetSet(3, "unread")}, 3, 0, "unread")
    # when a request's layer would be trained or a batch evaluated, then both stop at once
    # with one line that names the fix, before reading any data or writing any file
    with pytest.raises(ValueError, match="use --device cpu or auto") as err:
        train_request(ctx, production, "r1", partition)
    assert "\n" not in str(err.value)
    assert not ctx.workdir.exists()
    with pytest.raises(ValueError, match="'cuda' is not available"):
        evaluate_batch(ctx, production, production.base_dir, "unread", partition, ["r1"])


def test_a_request_trains_against_the_probe_reference_when_params_ask(project):
    # given unlearn.reference: probe (labelled data) and one request in the log
    ctx = load_context(project)
    unlearn = ctx.params.unlearn.model_copy(update={"reference": "probe"})
    ctx = dataclasses.replace(ctx, params=ctx.params.model_copy(update={"unlearn": unlearn}))
    (subject,) = _subjects(project, 1)
    with ctx.ledger() as ledger:
        ledger.submit(subject_id=subject, request_id="req-p")
    production = current_production(ctx)
    split = partition_data(ctx, snapshot_log(ctx, production))
    # when its layer is trained
    trained = train_request(ctx, production, "req-p", split)
    # then it is, and the layer's record says which reference set its forget levels
    assert trained.skipped is False
    training = json.loads((Path(trained.layer_dir) / "training.json").read_text())
    assert training["reference"] == "probe" and training["epochs"] >= 1


def test_a_failure_drill_stops_only_at_its_own_point(tmp_path):
    # given a project whose params.yaml sets a failure drill after registration
    (tmp_path / "params.yaml").write_text("pipeline:\n  drill_fail_at: after-register\n")
    ctx = load_context(tmp_path)
    assert ctx.drill_fail_at == "after-register"
    # then that point raises, in one line that names the setting, and the others pass
    with pytest.raises(PipelineError, match=r"'after-register' \(pipeline.drill_fail_at\)"):
        fail_point(ctx, "after-register")
    for point in set(FAIL_POINTS) - {"after-register"}:
        fail_point(ctx, point)
    # and a point that does not exist is a mistake in the code, not a silent pass
    with pytest.raises(ValueError, match="not a failure drill point"):
        fail_point(ctx, "after-lunch")
    # without the setting (production), no point raises
    (tmp_path / "params.yaml").write_text("pipeline:\n  drill_fail_at: null\n")
    for point in FAIL_POINTS:
        fail_point(load_context(tmp_path), point)
