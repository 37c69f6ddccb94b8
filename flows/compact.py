"""`compact`: when the production base has forgotten more than `compaction.max_forget_share`
of its training rows, or carries more than `compaction.max_requests` fused requests, or a
suppressed request's erasure deadline is less than `compaction.erasure_lead_days` away,
train it again on the retained data and register the result like any version (an empty
stack of layers, every honoured request still honoured). After promotion and purge, the
erase step deletes what was trained on the rows the compaction in production was trained
without and marks those requests `erased` (also on a run with no compaction due)."""

from __future__ import annotations

import time
from typing import Any

from prefect import flow

from eul.pipeline.batch import plan_batch
from eul.pipeline.outcome import RunSummary
from flows.batch import finish, model_slot, open_project
from tasks.pipeline import (
    check_gates,
    compaction_status,
    evaluate,
    find_registered,
    partition,
    production_model,
    register_candidate,
    retrain,
    snapshot_log,
)

NAME = "compact"


@flow(name=NAME)
def compact(
    project_dir: str = ".",
    params_file: str = "params.yaml",
    force: bool = False,
    auto_promote: bool | None = None,
) -> dict[str, Any]:
    """Retrain when a threshold is passed (or `force`); else report the status only."""
    ctx = open_project(project_dir, params_file)
    with model_slot():
        run = RunSummary(NAME, "compaction")
        started_at = time.time()
        with run.clock("production"):
            production = production_model(ctx)
        with run.clock("snapshot"):
            snapshot = snapshot_log(ctx, production)
        status = compaction_status(ctx, production)
        run.compaction_started(production, status)
        registered = None
        if status.due or force:
            with run.clock("partition"):
                split = partition(ctx, snapshot)
            # requests too large for a layer: the retrain leaves their rows out and covers them
            oversized = status.oversized
            plan = plan_batch(ctx, production, oversized, snapshot, "compaction")
            run.planned(plan)
            registered = find_registered(ctx, plan)
            if registered is None:
                with run.clock("retrain"):
                    model = retrain(ctx, plan)
                with run.clock("evaluate"):
                    evaluation = evaluate(
                        ctx, production, model.base_dir, model.layer_dir, split, oversized
                    )
                verdict = check_gates(ctx, evaluation)
                with run.clock("register"):
                    registered = register_candidate(
                        ctx, production, plan, model, evaluation, verdict, started_at
                    )
                run.built(model, evaluation, registered, evaluation=evaluation)
        else:
            run.nothing_due("no compaction due")
        return finish(
            ctx, run, production, registered, auto_promote, "compact flow", NAME, erase=True
        )
