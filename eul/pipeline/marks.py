"""The deletion log's marks the steps make. Marks move a request only forward, and only
from the status the step expects, so a rerun never marks a request twice."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from eul.pipeline.context import PENDING, Context, PipelineError
from eul.pipeline.files import layer_key
from eul.pipeline.production import Production
from eul.pipeline.results import LayerResult
from eul.stores.log.schema import TRANSITIONS
from eul.stores.log.store import Ledger


def advance(ledger: Ledger, request_id: str, status: str, target: str, **details: Any) -> None:
    """Walk a request forward from `status` to `target` (e.g. unlearned -> fused ->
    deployed), one legal step at a time."""
    path: list[str] = []
    current = status
    while current != target:
        following = [s for s in TRANSITIONS[current] if s != "rejected"]
        if not following:
            raise PipelineError(f"{request_id} is {status} and cannot become {target}")
        current = following[0]
        path.append(current)
    for step in path:
        ledger.mark(request_id, step, **details)


def reconcile(ledger: Ledger, production: Production) -> list[str]:
    """Requests still pending that the production version already honours (a run stopped
    after moving the alias, before writing the log): mark them deployed now."""
    if production.version is None:
        return []
    tags = production.tags  # the log entry the version was cut at: a deployed mark's anchor
    anchor = {"log_seq": int(tags.get("log_seq") or 0), "log_hash": tags.get("log_hash", "")}
    return mark_deployed(ledger, production.covered, production.version, reconciled=True, **anchor)


def mark_deployed(
    ledger: Ledger, covered: Iterable[str], version: int, **details: Any
) -> list[str]:
    """Move every pending request that `version` covers to deployed; returns their ids."""
    covered = set(covered)
    done = []
    for state in ledger.list(status=PENDING):
        if state.request_id in covered:
            advance(
                ledger, state.request_id, state.status, "deployed", model_version=version, **details
            )
            done.append(state.request_id)
    return done


def mark_unlearned(ctx: Context, result: LayerResult) -> None:
    """A validated request whose layer is on disk becomes `unlearned`."""
    request_id = result.request_id
    with ctx.ledger() as ledger:
        if ledger.get(request_id).state.status != "validated":
            return
        ledger.mark(
            request_id,
            "unlearned",
            layer=layer_key(request_id) if result.layer_dir else None,
            rows=result.rows,
            layer_sha256=result.layer_sha256,
            mlflow_run_id=result.mlflow_run_id,
        )


def mark_fused(ctx: Context, request_ids: Sequence[str], version: int, batch_id: str) -> list[str]:
    """Requests of the batch still `unlearned` become `fused` into `version`."""
    marked = []
    with ctx.ledger() as ledger:
        for request_id in request_ids:
            if ledger.get(request_id).state.status == "unlearned":
                ledger.mark(request_id, "fused", model_version=version, batch_id=batch_id)
                marked.append(request_id)
    return marked
