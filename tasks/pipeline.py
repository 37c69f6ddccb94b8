"""Prefect tasks of the deletion pipeline: each one calls one plain function of `eul`.

Training is tagged `gpu`: a tag concurrency limit on the Prefect server
(`prefect concurrency-limit create gpu 1`) lets one training run at a time per GPU, while
the flow's task runner submits them all. Tasks that touch a store (log, MLflow, DVC) retry
once; the functions they call are idempotent, so a retry repeats nothing. No caching: every
run must look at the log and the registry as they are now. What they take and return are
the frozen results of `eul.pipeline.results`: ids, counts, paths, metrics, never rows.
"""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from eul.pipeline import batch, compaction, erase, intake, marks, purge_step, release, train
from eul.pipeline.batch import Plan
from eul.pipeline.context import Context
from eul.pipeline.production import Production, current_production
from eul.pipeline.results import (
    CompactionStatus,
    ErasureReport,
    Evaluation,
    FusedBatch,
    LayerResult,
    Partition,
    Promoted,
    PurgeReport,
    Registered,
    Retrained,
    Snapshot,
    Verdict,
)


def retryable(task: object, task_run: object, state: object) -> bool:
    """Retry a training that may pass on a second try (a store that did not answer), not one
    that diverged or met a corrupted file: those fail the same way again."""
    from eul.methods.loop import DivergedError
    from eul.pipeline.files import CorruptFileError

    try:
        state.result()  # type: ignore[attr-defined]  # raises the task's exception
    except (DivergedError, CorruptFileError):
        return False
    except Exception:  # noqa: BLE001 - any other failure may pass on a second try
        return True
    return True


@task(name="production-model", retries=1, retry_delay_seconds=5, cache_policy=NO_CACHE)
def production_model(ctx: Context) -> Production:
    """The production version (downloaded once), or the DVC-trained base before any."""
    return current_production(ctx)


@task(name="snapshot-log", retries=1, retry_delay_seconds=5, cache_policy=NO_CACHE)
def snapshot_log(ctx: Context, production: Production) -> Snapshot:
    """Validate received requests, reconcile with production, snapshot the pending ones."""
    return intake.snapshot_log(ctx, production)


@task(name="partition", retries=1, retry_delay_seconds=5, cache_policy=NO_CACHE)
def partition(ctx: Context, snapshot: Snapshot) -> Partition:
    """Forget sets per request and the retained set (the DVC `partition` stage)."""
    return intake.partition_data(ctx, snapshot)


@task(name="find-registered", cache_policy=NO_CACHE)
def find_registered(ctx: Context, plan: Plan) -> Registered | None:
    """The version an earlier run of this very batch registered, if any."""
    return batch.find_registered(ctx, plan)


@task(
    name="train-layer",
    task_run_name="train-layer-{request_id}",
    tags=["gpu"],
    retries=2,
    retry_delay_seconds=10,
    retry_condition_fn=retryable,
    cache_policy=NO_CACHE,
)
def train_layer(
    ctx: Context,
    production: Production,
    request_id: str,
    partition: Partition,
    below: list[LayerResult] | None = None,
    holds: train.BatchHolds | None = None,
) -> LayerResult:
    """One request's unlearning layer, on top of `below` and, side by side, held off `holds`
    (its wave's other requests, retained rows); skipped when already on disk."""
    return train.train_request(ctx, production, request_id, partition, below or [], holds)


@task(
    name="hold-statistics", tags=["gpu"], retries=1, retry_delay_seconds=10, cache_policy=NO_CACHE
)
def hold_statistics(
    ctx: Context,
    production: Production,
    request_ids: list[str],
    partition: Partition,
    below: list[LayerResult] | None = None,
) -> train.BatchHolds | None:
    """The feature sums a wave of side-by-side layers is held off (its forget rows, retained
    rows), taken once on the model they train on (production and the earlier waves)."""
    return train.batch_holds(ctx, production, request_ids, partition, below or [])


@task(
    name="train-stack",
    tags=["gpu"],
    retries=2,
    retry_delay_seconds=10,
    retry_condition_fn=retryable,
    cache_policy=NO_CACHE,
)
def train_stack(
    ctx: Context, production: Production, request_ids: list[str], partition: Partition
) -> list[LayerResult]:
    """The batch's layers one after the other, each on top of the earlier ones.

    One task holds the GPU slot for the whole stack: the layers cannot run side by side
    anyway, and each slot request costs a round trip (seconds on a SQLite server). A retry
    finds the layers already on disk and trains only the rest.
    """
    return train.train_stack(ctx, production, request_ids, partition)


@task(name="fuse-layers", cache_policy=NO_CACHE)
def fuse_layers(
    ctx: Context, production: Production, trained: list[LayerResult], plan: Plan
) -> FusedBatch:
    """Production's fusion state plus the new layers, solved into one layer."""
    return batch.fuse_batch(ctx, production, trained, plan)


@task(name="evaluate", cache_policy=NO_CACHE)
def evaluate(
    ctx: Context,
    production: Production,
    base_dir: str,
    layer_dir: str,
    partition: Partition | None,
    request_ids: list[str],
) -> Evaluation:
    """The candidate and the production model on the same rows."""
    return batch.evaluate_batch(ctx, production, base_dir, layer_dir, partition, request_ids)


@task(name="check-gates", cache_policy=NO_CACHE)
def check_gates(ctx: Context, evaluation: Evaluation) -> Verdict:
    """Utility, membership-inference and forget-vs-test gates (thresholds in params.yaml)."""
    return batch.check_batch_gates(ctx, evaluation)


@task(name="register-candidate", retries=1, retry_delay_seconds=5, cache_policy=NO_CACHE)
def register_candidate(
    ctx: Context,
    production: Production,
    plan: Plan,
    fused: FusedBatch | Retrained,
    evaluation: Evaluation,
    verdict: Verdict,
    started_at: float | None = None,
) -> Registered:
    """Batch run, registered version tagged with the log, alias `candidate`; the version
    page links the flow run that built it."""
    found = batch.find_registered(ctx, plan)  # a retry after a half-finished attempt
    if found is not None:
        return found
    return release.register_candidate(
        ctx,
        production,
        plan,
        base_dir=fused.base_dir,
        layer_dir=fused.layer_dir,
        state_dir=fused.state_dir,
        evaluation=evaluation,
        verdict=verdict,
        trained_without=fused.trained_without if isinstance(fused, Retrained) else None,
        links=flow_run_links(),
        started_at=started_at,
    )


def flow_run_links() -> dict[str, str]:
    """The Prefect flow run this task runs in: its UI page where the API is a server, else
    its name and id (an ephemeral API serves no page); {} outside a flow run."""
    from prefect.runtime import flow_run

    if not flow_run.id:
        return {}
    url = flow_run.ui_url
    if url and url.startswith(("http://", "https://")) and "ephemeral" not in url:
        return {"Prefect flow run": url}
    return {"Prefect flow run": f"{flow_run.name} (id {flow_run.id})"}


@task(name="mark-fused", retries=1, retry_delay_seconds=5, cache_policy=NO_CACHE)
def mark_fused(ctx: Context, request_ids: list[str], version: int, batch_id: str) -> list[str]:
    """The batch's requests become `fused` into the registered version."""
    return marks.mark_fused(ctx, request_ids, version, batch_id)


@task(name="promote", cache_policy=NO_CACHE)
def promote(
    ctx: Context,
    version: int,
    promoted_by: str,
    override_reason: str | None = None,
    expected_production: int | None | str = "any",
) -> Promoted:
    """Compliance checks, then alias `production` and the log's `deployed` marks."""
    return release.promote_version(
        ctx,
        version,
        promoted_by=promoted_by,
        override_reason=override_reason,
        expected_production=expected_production,
    )


@task(name="purge", retries=1, retry_delay_seconds=10, cache_policy=NO_CACHE)
def purge(ctx: Context) -> PurgeReport:
    """Deployed requests' rows out of data, DVC cache and remotes; `purged` with hashes."""
    return purge_step.purge_deployed(ctx)


@task(name="compaction-status", cache_policy=NO_CACHE)
def compaction_status(ctx: Context, production: Production) -> CompactionStatus:
    """Forget share and stacked requests of the production base against the thresholds."""
    return compaction.compaction_status(ctx, production)


@task(name="retrain", tags=["gpu"], retries=1, retry_delay_seconds=10, cache_policy=NO_CACHE)
def retrain(ctx: Context, plan: Plan) -> Retrained:
    """The base recipe trained again on the retained rows (skipped when on disk)."""
    return compaction.retrain(ctx, plan)


@task(name="erase", retries=1, retry_delay_seconds=10, cache_policy=NO_CACHE)
def erase_trained_on(ctx: Context) -> ErasureReport:
    """Once production's base is a compaction: delete every stored artifact trained on the
    rows it was trained without, and mark those requests `erased`."""
    return erase.erase_requests(ctx)
