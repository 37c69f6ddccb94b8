"""The steps every flow shares, composed from the tasks in `tasks/`: a batch of requests
(nightly or one urgent request), and the tail of every flow (promote, purge, report).

Failure drills: `pipeline.drill_fail_at: after-register` in params.yaml stops a batch
between registration and promotion, `after-promote` between promotion and purge; the other
points (`eul.params.DrillPoint`) sit inside the steps. A rerun with it null finishes the
batch.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

from prefect.concurrency.sync import concurrency
from prefect.logging import get_logger

from eul.pipeline.batch import plan_batch
from eul.pipeline.checks import check_project
from eul.pipeline.context import MODEL_LIMIT, Context, PipelineError, fail_point
from eul.pipeline.outcome import RunSummary, should_promote
from eul.pipeline.production import Production
from eul.pipeline.results import LayerResult, Partition, Registered
from eul.runtime.quiet import quiet_libraries
from flows.runners import check_task_runner, task_runner_for
from tasks.pipeline import (
    check_gates,
    erase_trained_on,
    evaluate,
    find_registered,
    fuse_layers,
    hold_statistics,
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
from tasks.report import publish_report, report


def ensure_model_limit() -> None:
    """Create the `eul-model` global concurrency limit (1 slot) where the Prefect server has
    none: without it, holding a slot would be a silent no-op. One an operator disabled is
    refused: the flows do not run unguarded."""
    from prefect import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            limit = client.read_global_concurrency_limit_by_name(MODEL_LIMIT)
        except ObjectNotFound:
            try:
                client.create_global_concurrency_limit(
                    GlobalConcurrencyLimitCreate(name=MODEL_LIMIT, limit=1)
                )
            except ObjectAlreadyExists:  # created by a flow starting at the same time
                pass
            return
    if not limit.active:
        raise PipelineError(
            f"the global concurrency limit {MODEL_LIMIT!r} is disabled, so two flows could "
            f"move production at once; enable it (`prefect gcl enable {MODEL_LIMIT}`)"
        )


# The slot's lease: renewed every 45 s while its flow runs, so a killed flow's slot is free
# again about a minute later (plus the server's 15 s sweep), not after Prefect's default 5
# minutes. 60 s is the shortest lease the server accepts.
MODEL_SLOT_LEASE_S = 60.0
# A flow waits for the slot as long as it takes (another batch may train for hours), saying
# every few minutes what it waits for.
MODEL_SLOT_NOTICE_S = 300.0


@contextmanager
def model_slot(notice_s: float = MODEL_SLOT_NOTICE_S) -> Iterator[None]:
    """Hold the `eul-model` slot for the whole flow run, the limit created first where it is
    missing (`ensure_model_limit`); strict, so a slot that cannot be taken is an error. While
    another flow holds it, a warning every `notice_s` seconds says so and how to free a slot
    that no living flow holds (`stale_slot_advice`)."""
    ensure_model_limit()
    waited = 0.0
    with ExitStack() as stack:
        while True:
            try:
                stack.enter_context(
                    concurrency(
                        MODEL_LIMIT,
                        occupy=1,
                        timeout_seconds=notice_s,
                        strict=True,
                        lease_duration=MODEL_SLOT_LEASE_S,
                        raise_on_lease_renewal_failure=False,
                    )
                )
                break
            except TimeoutError:
                waited += notice_s
                get_logger("eul").warning(stale_slot_advice(waited))
        yield


def stale_slot_advice(waited_s: float) -> str:
    return (
        f"waiting for the {MODEL_LIMIT!r} slot for {waited_s / 60:.0f} min: another flow "
        f"moves production. If none runs, a killed flow's slot is freed when its "
        f"{MODEL_SLOT_LEASE_S:.0f} s lease expires on a Prefect server; a flow run without "
        f"one (an ephemeral server) never frees it: `prefect gcl update {MODEL_LIMIT} "
        f"--active-slots 0` does"
    )


def _version_tag(version: int | None) -> str:
    return "base" if version is None else f"v{version}"


def label_flow_run(name: str | None = None, tags: list[str] | None = None) -> None:
    """Name the running flow run after its batch (`nightly-<batch id>`) and add tags (batch
    id, production version before and after), so that the Prefect UI lists runs by batch;
    outside a flow run, nothing. A label is a convenience: a failure to set it is logged."""
    from prefect import get_client
    from prefect.runtime import flow_run

    if not flow_run.id:
        return
    try:
        with get_client(sync_client=True) as client:
            current = client.read_flow_run(flow_run.id)
            client.update_flow_run(
                flow_run.id,
                name=name or current.name,
                tags=sorted(set(current.tags) | set(tags or [])),
            )
    except Exception as err:  # noqa: BLE001 - the batch must not fail over a label
        get_logger("eul").warning(f"could not label the flow run: {type(err).__name__}")


def open_project(project_dir: str, params_file: str) -> Context:
    """The project a flow run works on, its parameters checked before any work (one-line
    errors: `eul.pipeline.checks`), with the libraries' progress bars off."""
    ctx = check_project(project_dir, params_file)
    check_task_runner(ctx.params.pipeline)
    quiet_libraries()
    return ctx


def train_all(
    ctx: Context, production: Production, request_ids: list[str], split: Partition
) -> list[LayerResult]:
    """The batch's layers. Stacked (`pipeline.stack_layers`): one after the other, each on
    top of the earlier ones, in one task. Side by side: in waves of `pipeline.train_workers`
    requests on the engine `pipeline.task_runner` names (threads, Dask or Ray:
    `flows.runners`); the layers of a wave train at once, on top of the earlier waves' and
    held off each other's forget tokens and the retained ones (`hold_statistics`, one task
    per wave). Either way the `gpu` tag limit on the server bounds how many run at once."""
    if ctx.params.pipeline.stack_layers:
        return train_stack(ctx, production, request_ids, split)
    width = ctx.params.pipeline.train_workers
    results: list[LayerResult] = []
    with task_runner_for(ctx.params.pipeline) as runner:
        for start in range(0, len(request_ids), width):
            wave = request_ids[start : start + width]
            holds = hold_statistics(ctx, production, wave, split, results)
            futures = [
                runner.submit(
                    train_layer,
                    parameters={
                        "ctx": ctx,
                        "production": production,
                        "request_id": request_id,
                        "partition": split,
                        "below": list(results),
                        "holds": holds,
                    },
                )
                for request_id in wave
            ]
            results += [future.result() for future in futures]
    return results


def finish(
    ctx: Context,
    run: RunSummary,
    production: Production,
    registered: Registered | None,
    auto_promote: bool | None,
    promoted_by: str,
    key: str,
    erase: bool = False,
) -> dict[str, Any]:
    """Promote a passing candidate (when auto-promotion is on), purge what is deployed,
    with `erase` delete what was trained on the rows a compaction in production was trained
    without (and mark those requests erased), publish the report; returns the summary."""
    run.finishing(production)
    if registered is not None:
        run.registered(registered)
        fail_point(ctx, "after-register")
        if should_promote(ctx, registered, auto_promote):
            with run.clock("promote"):
                promoted = promote(
                    ctx,
                    registered.version,
                    promoted_by=promoted_by,
                    expected_production=production.version,
                )
            run.promoted(registered, promoted)
        else:
            run.not_promoted(registered)
        fail_point(ctx, "after-promote")
    with run.clock("purge"):
        purged = purge(ctx)
    run.purged(purged)
    if erase:
        with run.clock("erase"):
            erased = erase_trained_on(ctx)
        run.erased(erased)
    with run.clock("report"):
        written = report(ctx, run.for_report(), key)
    publish_report(written, key)
    label_flow_run(tags=[f"production-after:{_version_tag(run.summary.get('production_after'))}"])
    return run.closed(written.audit)


def run_batch(
    ctx: Context,
    kind: str,
    flow_name: str,
    only: list[str] | None = None,
    auto_promote: bool | None = None,
) -> dict[str, Any]:
    """Every pending request (or only those in `only`): train, fuse, evaluate, gate,
    register, then `finish`."""
    run = RunSummary(flow_name, kind)
    started_at = time.time()
    with run.clock("production"):
        production = production_model(ctx)
    with run.clock("snapshot"):
        snapshot = snapshot_log(ctx, production)
    pending = snapshot.pending
    request_ids = pending if only is None else [r for r in pending if r in set(only)]
    run.batch_started(production, snapshot, request_ids, only)
    registered = None
    if request_ids:
        with run.clock("partition"):
            split = partition(ctx, snapshot)
        plan = plan_batch(ctx, production, request_ids, snapshot, kind)
        run.planned(plan)
        label_flow_run(
            f"{plan.folder_name}",
            [f"batch:{plan.batch_id}", f"production-before:{_version_tag(production.version)}"],
        )
        registered = find_registered(ctx, plan)
        if registered is None:
            with run.clock("train"):
                trained = train_all(ctx, production, request_ids, split)
            run.trained(trained)
            with run.clock("fuse"):
                fused = fuse_layers(ctx, production, trained, plan)
            with run.clock("evaluate"):
                evaluation = evaluate(
                    ctx, production, fused.base_dir, fused.layer_dir, split, request_ids
                )
            verdict = check_gates(ctx, evaluation)
            with run.clock("register"):
                registered = register_candidate(
                    ctx, production, plan, fused, evaluation, verdict, started_at
                )
            run.built(fused, evaluation, registered, evaluation=evaluation)
        mark_fused(ctx, request_ids, registered.version, plan.folder_name)
    return finish(
        ctx,
        run,
        production,
        registered,
        auto_promote,
        f"{flow_name} flow (gates passed)",
        flow_name,
    )
