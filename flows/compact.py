"""`compact`: when the production base has forgotten more than `compaction.max_forget_share`
of its training rows, or carries more than `compaction.max_requests` fused requests, train
it again on the retained data and register the result like any version (an empty stack of
layers, every honoured request still honoured)."""

from __future__ import annotations

from typing import Any

from prefect import flow

from eul.pipeline.steps import Clock, plan_batch
from flows.batch import add_seconds, finish, model_slot, open_project
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
        clock = Clock()
        inner: dict[str, float] = {}
        with clock("production"):
            production = production_model(ctx)
        with clock("snapshot"):
            snapshot = snapshot_log(ctx, production)
        status = compaction_status(ctx, production)
        summary: dict[str, Any] = {
            "flow": NAME,
            "kind": "compaction",
            "production_before": production.version,
            "compaction": status,
            "new_requests": [],
        }
        registered = None
        if status["due"] or force:
            with clock("partition"):
                split = partition(ctx, snapshot)
            plan = plan_batch(ctx, production, [], snapshot, "compaction")
            summary["batch_id"] = plan.folder_name
            registered = find_registered(ctx, plan)
            if registered is None:
                with clock("retrain"):
                    model = retrain(ctx, plan)
                with clock("evaluate"):
                    evaluation = evaluate(
                        ctx, production, model["base_dir"], model["layer_dir"], split, []
                    )
                verdict = check_gates(ctx, evaluation)
                with clock("register"):
                    registered = register_candidate(
                        ctx, production, plan, model, evaluation, verdict
                    )
                for part in (model, evaluation, registered):
                    add_seconds(inner, part)
                summary["metrics"] = evaluation["candidate"]
                summary["production_metrics"] = evaluation["production"]
        else:
            summary["outcome"] = "no compaction due"
        return finish(
            ctx, summary, clock, inner, production, registered, auto_promote, "compact flow", NAME
        )
