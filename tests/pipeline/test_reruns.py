"""Each step rerun after a failure at its drill points converges: one MLflow run per request,
a registered version that gets its `candidate` alias, and promotion as a compare-and-set
(two promotions racing on the same production: one wins, the other fails, no request
dropped). The steps as plain functions on a built project, without Prefect."""

from __future__ import annotations

import dataclasses
import json
import threading
from pathlib import Path

import pytest

from eul.pipeline import release
from eul.pipeline.batch import find_registered, plan_batch
from eul.pipeline.context import BATCH_KEY_TAG, Context, PipelineError, load_context
from eul.pipeline.intake import partition_data, snapshot_log
from eul.pipeline.production import current_production
from eul.pipeline.promotion_lock import lock_path, promotion_lock
from eul.pipeline.train import train_request
from eul.stores.registry.artifacts import find_runs
from eul.stores.registry.runs import log_batch_run
from eul.stores.registry.tags import compliance_tags
from eul.stores.registry.versions import (
    CANDIDATE,
    PRODUCTION,
    get_alias_version,
    register_version,
    version_tags,
)

pytestmark = pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy")

GATES_OK = {"utility": {"value": 0.0, "max": 1.0, "passed": True}}


@pytest.fixture
def project(flow_project) -> Path:
    return flow_project


def _subjects(root: Path, n: int) -> list[str]:
    rows = [json.loads(x) for x in (root / "data/prepared/train.jsonl").read_text().splitlines()]
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["subject_id"]] = counts.get(row["subject_id"], 0) + 1
    return [s for s, c in sorted(counts.items()) if c >= 3][:n]


def _drilled(ctx: Context, point: str | None) -> Context:
    """`ctx` with `pipeline.drill_fail_at` set to `point`."""
    pipeline = ctx.params.pipeline.model_copy(update={"drill_fail_at": point})
    return dataclasses.replace(ctx, params=ctx.params.model_copy(update={"pipeline": pipeline}))


def _submit(ctx: Context, n: int) -> list[str]:
    ids = [f"req-{i}" for i in range(n)]
    with ctx.ledger() as ledger:
        for request_id, subject in zip(ids, _subjects(ctx.root, n), strict=True):
            ledger.submit(subject_id=subject, request_id=request_id)
    return ids


def _history(ctx: Context, request_id: str) -> list:
    with ctx.ledger() as ledger:
        return ledger.get(request_id).history


# `make test` runs the point between the run and the log's mark; `make reliability` all three.
@pytest.mark.parametrize(
    "point",
    [p if p == "after-run-logged" else pytest.param(p, marks=pytest.mark.reliability)
     for p in ("before-done", "after-done", "after-run-logged")],
)  # fmt: skip
def test_a_layer_stopped_at_each_point_ends_with_one_mlflow_run(project, point):
    # given a validated request
    ctx = load_context(project)
    (request_id,) = _submit(ctx, 1)
    production = current_production(ctx)
    split = partition_data(ctx, snapshot_log(ctx, production))
    # when its layer's training stops at the point
    with pytest.raises(PipelineError, match=f"failure injected at '{point}'"):
        train_request(_drilled(ctx, point), production, request_id, split)
    # and is run again
    again = train_request(ctx, production, request_id, split)
    # then the request has one finished MLflow run, the one the log's mark names
    runs = find_runs(ctx.settings, {"eul.kind": "request", "eul.request_id": request_id})
    assert [r.info.run_id for r in runs] == [again.mlflow_run_id]
    assert runs[0].info.status == "FINISHED"
    assert runs[0].data.params["rows"] == str(split.requests[request_id].rows)
    history = _history(ctx, request_id)
    assert [e.status for e in history] == ["received", "validated", "unlearned"]
    assert history[-1].details["mlflow_run_id"] == again.mlflow_run_id
    # and the layer was trained once, unless the stop came before its done.json
    assert again.skipped is (point != "before-done")
    # and a third call finds it all: the same run, still one
    third = train_request(ctx, production, request_id, split)
    assert third.skipped and third.mlflow_run_id == again.mlflow_run_id
    assert len(find_runs(ctx.settings, {"eul.request_id": request_id})) == 1


def _fused_layer(ctx: Context, folder: Path) -> Path:
    """An empty fused layer on the project's base (what a version needs to register)."""
    from eul.fusion.fuse import FusionState, add_shared_fused_layer, fuse_shared
    from eul.layers import LayerConfig
    from eul.pipeline.production import load_serving

    tm = load_serving(ctx.root / "models/base", None)
    config = LayerConfig(**ctx.params.unlearn.layer.model_dump())
    state = FusionState.empty(tm.unlearning_layers(), config)
    add_shared_fused_layer(tm.unlearning_layers(), "_fused", config, fuse_shared(state))
    tm.unlearning_layers().save_layer("_fused", folder)
    return folder


def _register(ctx: Context, covered: list[str], key: str, layer: Path) -> int:
    """A version covering `covered`, cut at the log's head, with its gates passed."""
    with ctx.ledger() as ledger:
        seq, head = ledger.head()
    tags = {**compliance_tags(covered, seq, head, GATES_OK), BATCH_KEY_TAG: key}
    run_id = log_batch_run(ctx.settings, key[:12], covered, {"test_acc": 0.5}, key=key)
    return register_version(ctx.settings, run_id, ctx.root / "models/base", layer, tags)


def test_a_version_registered_without_its_alias_gets_it_on_the_rerun(project, tmp_path):
    # given a batch whose version was registered, and the run stopped before the alias
    ctx = load_context(project)
    ids = _submit(ctx, 1)
    production = current_production(ctx)
    snapshot = snapshot_log(ctx, production)
    plan = plan_batch(ctx, production, ids, snapshot, "nightly")
    version = _register(ctx, ids, plan.key, _fused_layer(ctx, tmp_path / "layer"))
    assert get_alias_version(ctx.settings, CANDIDATE) is None
    # when the rerun looks for the batch's version
    found = find_registered(ctx, plan)
    # then it finds it, and it is the candidate now, with the tag that records the move
    assert found.version == version and found.reused is True
    assert get_alias_version(ctx.settings, CANDIDATE) == version
    assert "candidate_since" in version_tags(ctx.settings, version)


def test_two_promotions_racing_on_the_same_production_one_wins_none_is_dropped(
    project, tmp_path, monkeypatch
):
    # given two versions built on the same production (none yet), each for its own request
    ctx = load_context(project)
    ids = _submit(ctx, 2)
    snapshot_log(ctx, current_production(ctx))  # both validated
    layer = _fused_layer(ctx, tmp_path / "layer")
    versions = {rid: _register(ctx, [rid], f"{i}" * 64, layer) for i, rid in enumerate(ids)}
    # and a promotion that takes a while between reading production and moving it
    moved = release.set_version_tags
    both_in = threading.Barrier(2, timeout=30)

    def slow_tags(*args, **kwargs):
        threading.Event().wait(0.3)  # without the lock, the other reads production meanwhile
        return moved(*args, **kwargs)

    monkeypatch.setattr(release, "set_version_tags", slow_tags)
    outcomes: dict[str, object] = {}

    def promote(request_id: str) -> None:
        both_in.wait()
        try:
            outcomes[request_id] = release.promote_version(
                ctx, versions[request_id], promoted_by="test", expected_production=None
            )
        except PipelineError as err:
            outcomes[request_id] = err

    # when both promote at once
    threads = [threading.Thread(target=promote, args=(rid,)) for rid in ids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    # then exactly one won, and production is its version
    won = [rid for rid, o in outcomes.items() if not isinstance(o, Exception)]
    lost = [rid for rid, o in outcomes.items() if isinstance(o, Exception)]
    assert len(won) == 1 and len(lost) == 1, outcomes
    assert get_alias_version(ctx.settings, PRODUCTION) == versions[won[0]]
    # and the other failed clearly, changing nothing: its request still pending
    message = str(outcomes[lost[0]])
    assert "production moved from version None to" in message and "rerun" in message
    with ctx.ledger() as ledger:
        states = {s.request_id: s.status for s in ledger.list()}
    assert states == {won[0]: "deployed", lost[0]: "validated"}
    assert "eul.promoted_by" not in version_tags(ctx.settings, versions[lost[0]])


def test_the_promotion_lock_waits_for_its_holder_and_names_it(project):
    # given a project whose promotion lock is held
    ctx = load_context(project)
    held = threading.Event()
    release_it = threading.Event()

    def holder() -> None:
        with promotion_lock(ctx):
            held.set()
            release_it.wait(30)

    thread = threading.Thread(target=holder)
    thread.start()
    assert held.wait(30)
    # when another promotion asks for it, then it fails once its wait is over, naming it
    with pytest.raises(PipelineError, match=r"another promotion holds .*pid \d+"):
        with promotion_lock(ctx, timeout_s=0.2):
            pass
    release_it.set()
    thread.join(30)
    # and once the holder is done, it is free
    with promotion_lock(ctx, timeout_s=5):
        assert lock_path(ctx).is_file()


def test_a_killed_holder_leaves_no_stale_promotion_lock(project):
    import os
    import signal
    import subprocess
    import sys

    # given a process that took the promotion lock and was killed while holding it
    ctx = load_context(project)
    code = (
        "import sys, time\n"
        "from eul.pipeline.context import load_context\n"
        "from eul.pipeline.promotion_lock import promotion_lock\n"
        "with promotion_lock(load_context(sys.argv[1])):\n"
        "    print('held', flush=True)\n"
        "    time.sleep(60)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(project)], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert proc.stdout.readline().strip() == "held"
        with pytest.raises(PipelineError, match="another promotion holds"):
            with promotion_lock(ctx, timeout_s=0.2):
                pass
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
        # when the next promotion asks for the lock, then it gets it at once
        with promotion_lock(ctx, timeout_s=5):
            pass
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)


@pytest.fixture
def postgres_url():
    """A database of its own on the local PostgreSQL, dropped afterwards."""
    import secrets

    psycopg2 = pytest.importorskip("psycopg2")
    try:
        admin = psycopg2.connect(host="127.0.0.1", port=5432, user="postgres", dbname="postgres")
    except psycopg2.OperationalError:
        pytest.skip("PostgreSQL is not reachable on 127.0.0.1:5432")
    admin.autocommit = True
    name = f"eul_lock_{secrets.token_hex(4)}"
    with admin.cursor() as cur:
        cur.execute(f"CREATE DATABASE {name}")
    try:
        yield f"postgresql+psycopg2://postgres@127.0.0.1:5432/{name}"
    finally:
        with admin.cursor() as cur:
            cur.execute(f"DROP DATABASE {name} WITH (FORCE)")
        admin.close()


def test_on_postgresql_the_promotion_lock_is_an_advisory_lock(tmp_path, postgres_url):
    # given a project whose log is on PostgreSQL, and a promotion holding the lock
    ctx = dataclasses.replace(load_context(tmp_path), log_url=postgres_url)
    held, release_it = threading.Event(), threading.Event()

    def holder() -> None:
        with promotion_lock(ctx):
            held.set()
            release_it.wait(30)

    thread = threading.Thread(target=holder)
    thread.start()
    assert held.wait(30)
    # when another asks for it, then it waits, and fails once its wait is over
    with pytest.raises(PipelineError, match="promotion lock"):
        with promotion_lock(ctx, timeout_s=0.2):
            pass
    release_it.set()
    thread.join(30)
    # and once the holder is done it is free, with no file lock anywhere
    with promotion_lock(ctx, timeout_s=5):
        pass
    assert not lock_path(ctx).exists()
