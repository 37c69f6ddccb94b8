"""The steps every flow shares, composed from the tasks in `tasks/`: a batch of requests
(nightly or one urgent request), and the tail of every flow (promote, purge, report).

Failure drills: $EUL_PIPELINE_FAIL_AT=after-register stops a batch between registration and
promotion, after-promote between promotion and purge; a rerun finishes the batch.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any

from prefect.concurrency.sync import concurrency

from eul.pipeline.checks import check_project
from eul.pipeline.gates import failure_reasons
from eul.pipeline.steps import (
    MODEL_LIMIT,
    Clock,
    Context,
    Production,
    fail_point,
    plan_batch,
)
from eul.runtime.quiet import quiet_libraries
from tasks.pipeline import (
    check_gates,
    evaluate,
    find_registered,
    fuse_layers,
    mark_fused,
    partition,
    production_model,
    promote,
    purge,
    register_candidate,
    snapshot_log,
    train_layer,
    train_stack,
)
from tasks.report import report


def model_slot() -> AbstractContextManager[None]:
    """Hold the `eul-model` slot (a no-op, with a warning, where no such limit exists)."""
    return concurrency(MODEL_LIMIT, occupy=1)


def open_project(project_dir: str, params_file: str) -> Context:
    """The project a flow run works on, its parameters checked before any work (one-line
    errors: `eul.pipeline.checks`), with the libraries' progress bars off."""
    ctx = check_project(project_dir, params_file)
    quiet_libraries()
    return ctx


def add_seconds(total: dict[str, float], part: dict[str, Any] | None) -> None:
    for name, value in ((part or {}).get("seconds") or {}).items():
        total[name] = total.get(name, 0.0) + float(value)


def train_all(
    ctx: Context, production: Production, request_ids: list[str], split: dict[str, Any]
) -> list[dict[str, Any]]:
    """The batch's layers. Stacked (`pipeline.stack_layers`): one after the other, each on
    top of the earlier ones, in one task. Side by side: submitted to the flow's task runner
    `pipeline.train_workers` at a time, each against production alone. Either way the
    `gpu` tag limit on the server bounds how many run at once."""
    if ctx.params.pipeline.stack_layers:
        return train_stack(ctx, production, request_ids, split)
    results: list[dict[str, Any]] = []
    width = ctx.params.pipeline.train_workers
    for start in range(0, len(request_ids), width):
        wave = [
            train_layer.submit(ctx, production, request_id, split)
            for request_id in request_ids[start : start + width]
        ]
        results += [future.result() for future in wave]
    return results


def finish(
    ctx: Context,
    summary: dict[str, Any],
    clock: Clock,
    inner: dict[str, float],
    production: Production,
    registered: dict[str, Any] | None,
    auto_promote: bool | None,
    promoted_by: str,
    key: str,
) -> dict[str, Any]:
    """Promote a passing candidate (when auto-promotion is on), purge what is deployed,
    publish the report; returns the run's summary."""
    summary.setdefault("production_after", production.version)
    summary.setdefault("promoted", False)
    if registered is not None:
        summary.update(
            version=registered["version"],
            reused=registered.get("reused", False),
            gates=registered["gates"],
            gates_passed=registered["passed"],
            gate_reasons=failure_reasons(registered["gates"]),
        )
        fail_point("after-register")
        wanted = ctx.params.pipeline.auto_promote if auto_promote is None else auto_promote
        if registered["passed"] and wanted:
            with clock("promote"):
                promoted = promote(
                    ctx,
                    registered["version"],
                    promoted_by=promoted_by,
                    expected_production=production.version,
                )
            add_seconds(inner, promoted)
            summary.update(promoted=True, production_after=promoted["version"])
            summary["outcome"] = f"version {registered['version']} promoted to production"
        elif registered["passed"]:
            summary["outcome"] = f"version {registered['version']} awaits a reviewer"
        else:
            summary["outcome"] = f"version {registered['version']} failed its gates"
        fail_point("after-promote")
    with clock("purge"):
        purged = purge(ctx)
    add_seconds(inner, purged)
    summary["purged"] = purged["purged"]
    summary.setdefault("outcome", "nothing to do")
    with clock("report"):
        found = report(ctx, {**summary, "seconds": dict(clock.seconds)}, key)
    summary["audit_ok"] = found["ok"]
    summary["overdue"] = found["overdue"]
    summary["seconds"] = dict(clock.seconds)
    summary["inner_seconds"] = inner
    return summary


def run_batch(
    ctx: Context,
    kind: str,
    flow_name: str,
    only: list[str] | None = None,
    auto_promote: bool | None = None,
) -> dict[str, Any]:
    """Every pending request (or only those in `only`): train, fuse, evaluate, gate,
    register, then `finish`."""
    clock = Clock()
    inner: dict[str, float] = {}
    with clock("production"):
        production = production_model(ctx)
    with clock("snapshot"):
        snapshot = snapshot_log(ctx, production)
    pending = snapshot["pending"]
    request_ids = pending if only is None else [r for r in pending if r in set(only)]
    summary: dict[str, Any] = {
        "flow": flow_name,
        "kind": kind,
        "production_before": production.version,
        "log_seq": snapshot["log_seq"],
        "validated": snapshot["validated"],
        "rejected": snapshot["rejected"],
        "reconciled": snapshot["reconciled"],
        "new_requests": request_ids,
    }
    if only is not None:
        summary["not_pending"] = sorted(set(only) - set(pending))
    registered = None
    if request_ids:
        with clock("partition"):
            split = partition(ctx, snapshot)
        plan = plan_batch(ctx, production, request_ids, snapshot, kind)
        summary["batch_id"] = plan.folder_name
        registered = find_registered(ctx, plan)
        if registered is None:
            with clock("train"):
                trained = train_all(ctx, production, request_ids, split)
            for result in trained:
                add_seconds(inner, result)
            summary["trained"] = sum(1 for r in trained if not r["skipped"] and r["layer_dir"])
            summary["reused_layers"] = sum(1 for r in trained if r["skipped"])
            with clock("fuse"):
                fused = fuse_layers(ctx, production, trained, plan)
            with clock("evaluate"):
                evaluation = evaluate(
                    ctx, production, fused["base_dir"], fused["layer_dir"], split, request_ids
                )
            verdict = check_gates(ctx, evaluation)
            with clock("register"):
                registered = register_candidate(ctx, production, plan, fused, evaluation, verdict)
            for part in (fused, evaluation, registered):
                add_seconds(inner, part)
            summary["metrics"] = evaluation["candidate"]
            summary["production_metrics"] = evaluation["production"]
        mark_fused(ctx, request_ids, registered["version"], plan.folder_name)
    return finish(
        ctx,
        summary,
        clock,
        inner,
        production,
        registered,
        auto_promote,
        f"{flow_name} flow (gates passed)",
        flow_name,
    )
