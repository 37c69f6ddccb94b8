"""Compaction: a full retrain on the retained data replaces the stack of unlearning layers.

Fused layers are exact and cheap, but each forgotten request still leaves the base model
holding what it learnt from those rows, masked by the layer (the request is *suppressed*).
Once enough has been forgotten (a share of the training rows, or a number of requests
fused on top of the base), or once a suppressed request would otherwise miss its erasure
deadline (`log.erasure_days`, less `compaction.erasure_lead_days`), the exact path is due:
train the base recipe again on the rows that remain, with a tokenizer built from them
alone, and start a fresh, empty stack. The new version is registered like any other (tags
tie it to the log, gates compare it with production), honours every request the production
version honours, and records the requests it was trained without (`eul.trained_without`),
which the erase step (`eul.pipeline.erase`) then erases.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from datetime import datetime, timedelta

from eul.pipeline.batch import Plan, batch_folder
from eul.pipeline.context import DONE_FILE, FUSED_LAYER, Context, PipelineError
from eul.pipeline.files import write_json
from eul.pipeline.production import Production
from eul.pipeline.results import CompactionStatus, Retrained
from eul.stores.log.schema import RequestState, iso, utcnow

# Requests whose rows a retrain must leave out: every one not yet purged from the data.
EXCLUDED_STATUSES = ("validated", "unlearned", "fused", "deployed")
# Requests whose rows are already out of the prepared data (the purge rebuilt it).
GONE_STATUSES = ("purged", "erased")
PARENT_TAG = "eul.parent_version"


def erasure_due(
    states: list[RequestState],
    trained_without: set[str],
    stacked: set[str],
    erasure_days: int,
    lead_days: int,
    now: datetime | None = None,
) -> list[str]:
    """Suppressed requests, not yet erased, that only a new compaction can erase, whose
    erasure deadline falls within `lead_days` of `now` (or has passed). A request the
    production base was already trained without needs no compaction (the erase step erases
    it once purged), unless its layer sits in the production stack."""
    limit = iso((now or utcnow()) + timedelta(days=lead_days))
    due = []
    for state in states:
        if state.level != "suppressed":
            continue
        rid = state.request_id
        if rid in trained_without and rid not in stacked:
            continue
        if state.erasure_deadline(erasure_days) <= limit:
            due.append(rid)
    return due


def oversized_requests(
    states: list[RequestState], train_ids: set[str], limit: float
) -> dict[str, float]:
    """{request id: share of the training rows} of the validated requests whose rows are more
    than `limit` of the training rows (`compaction.max_request_share`): too much for one small
    layer to forget, so they get none and wait for a compaction instead."""
    if not train_ids:
        return {}
    found = {}
    for state in states:
        if state.status != "validated":
            continue
        share = len(set(state.matched_ids or state.record_ids) & train_ids) / len(train_ids)
        if share > limit:
            found[state.request_id] = share
    return found


def routing_note(oversized: dict[str, float]) -> str:
    """What the nightly batch says of the requests it leaves to compaction."""
    shown = ", ".join(f"{rid} ({share:.0%})" for rid, share in sorted(oversized.items()))
    return (
        f"routed to compaction, no layer: {shown} of the training rows, more than "
        "compaction.max_request_share each; the `compact` flow is due and retrains without "
        "their rows"
    )


def for_compaction(ctx: Context, states: list[RequestState]) -> dict[str, float]:
    """`oversized_requests` against the prepared training split (none without one)."""
    from eul.stores.dvc.partition import read_rows

    path = ctx.prepared("train.jsonl")
    if not path.is_file():
        return {}
    train_ids = set(read_rows(path).record_ids)
    return oversized_requests(states, train_ids, ctx.params.compaction.max_request_share)


def stacked_requests(production: Production) -> list[str]:
    """The requests fused on top of the production version's base model."""
    if production.state_dir is None:
        return []
    meta = json.loads((production.state_dir / "fusion_state.json").read_text())
    return list(meta["requests"])


def base_compaction(ctx: Context, production: Production) -> tuple[int, dict[str, str]] | None:
    """(version, tags) of the compaction the production base comes from: production itself
    or the nearest ancestor (tag `eul.parent_version`) of kind compaction; None if none."""
    from eul.stores.registry.versions import version_tags

    version, tags = production.version, production.tags
    seen: set[int] = set()
    while version is not None and version not in seen:
        if tags.get("eul.kind") == "compaction":
            return version, tags
        seen.add(version)
        parent = tags.get(PARENT_TAG, "")
        if not parent.isdigit():
            return None
        version = int(parent)
        tags = version_tags(ctx.settings, version)
    return None


def compaction_status(
    ctx: Context, production: Production, now: datetime | None = None
) -> CompactionStatus:
    """How much the production base has had to forget, and whether a compaction is due: on
    the share or request threshold, or for a request's erasure deadline (`erasure_due`).

    forget_share = rows of the stacked requests / (those rows + rows still in training).
    """
    from eul.stores.dvc.partition import read_rows
    from eul.stores.registry.tags import trained_without_ids

    stacked = stacked_requests(production)
    with ctx.ledger() as ledger:
        erasure_days = ledger.erasure_days
        states = {s.request_id: s for s in ledger.list()}
    forgotten: set[str] = set()
    for request_id in stacked:
        state = states.get(request_id)
        if state is not None:
            forgotten.update(state.matched_ids or state.record_ids)
    train = read_rows(ctx.prepared("train.jsonl"))
    remaining = sum(1 for rid in train.record_ids if rid not in forgotten)
    total = len(forgotten) + remaining
    share = len(forgotten) / total if total else 0.0
    limits = ctx.params.compaction
    reasons = []
    if share > limits.max_forget_share:
        reasons.append(f"forget share {share:.3f} > {limits.max_forget_share}")
    if len(stacked) > limits.max_requests:
        reasons.append(f"{len(stacked)} stacked requests > {limits.max_requests}")
    oversized = oversized_requests(
        list(states.values()), set(train.record_ids), limits.max_request_share
    )
    if oversized:
        reasons.append(
            f"{len(oversized)} pending request(s) over compaction.max_request_share "
            f"({limits.max_request_share:.0%}) of the training rows each: only a retrain "
            "forgets them"
        )
    found = base_compaction(ctx, production)
    trained_without = set(trained_without_ids(found[1])) if found else set()
    deadline_due = erasure_due(
        list(states.values()),
        trained_without,
        set(stacked),
        erasure_days,
        limits.erasure_lead_days,
        now,
    )
    if deadline_due:
        reasons.append(
            f"{len(deadline_due)} suppressed request(s) due for erasure within "
            f"{limits.erasure_lead_days} day(s)"
        )
    return CompactionStatus(
        production_version=production.version,
        stacked_requests=len(stacked),
        forgotten_rows=len(forgotten),
        training_rows=remaining,
        forget_share=share,
        due=bool(reasons),
        reasons=reasons,
        erasure_due=deadline_due,
        oversized=sorted(oversized),
    )


def retrain(ctx: Context, plan: Plan) -> Retrained:
    """Train the base recipe (params `model`, `train`) on the prepared training rows minus
    every row of a request not yet purged, on `train.device`; save it with an identity
    (all-zero) fused layer and an empty fusion state. Records the requests it was trained
    without (those left out, and those already purged from the data) in its done.json.
    Done once per plan: a rerun finds it on disk."""
    import torch

    from eul.data.readers import load_records
    from eul.fusion.fuse import FusionState, add_shared_fused_layer, fuse_shared
    from eul.layers import LayerConfig
    from eul.model.device import resolve_device
    from eul.model.tokenizer import train_tokenizer
    from eul.model.training import seed_everything, train_full
    from eul.pipeline.stages import _tokenizer_texts, starting_model

    folder = batch_folder(ctx, plan) / "retrain"
    if (folder / DONE_FILE).is_file():
        done = json.loads((folder / DONE_FILE).read_text())
        done["trained_without"] = tuple(done.get("trained_without") or ())
        return Retrained(**done, skipped=True)
    params = ctx.params
    started = time.perf_counter()
    device = resolve_device(params.train.device)
    if params.train.threads:
        torch.set_num_threads(params.train.threads)
    records = load_records(ctx.prepared("train.jsonl"), task=params.data.task)
    with ctx.ledger() as ledger:
        pending = ledger.list(status=EXCLUDED_STATUSES)
        gone = ledger.list(status=GONE_STATUSES)
    ids = {i for s in pending for i in (s.matched_ids or s.record_ids)}
    subjects = {s.subject_id for s in pending if s.subject_id}
    kept = [r for r in records if r.record_id not in ids and r.subject_id not in subjects]
    if not kept:
        raise PipelineError("no training rows would remain; nothing to retrain on")
    spec = params.model_spec()
    config = params.train_config()
    seed_everything(config.seed)
    tm = starting_model(
        params, ctx.root, lambda: train_tokenizer(_tokenizer_texts(kept), spec.vocab_size)
    ).to(device)
    stats = train_full(tm, kept, config, desc="compaction retrain", progress=False)
    tm.save(folder / "base")
    layers = tm.unlearning_layers()
    layer_config = LayerConfig(**params.unlearn.layer.model_dump())
    state = FusionState.empty(layers, layer_config)
    add_shared_fused_layer(layers, FUSED_LAYER, layer_config, fuse_shared(state, "sum"))
    layers.save_layer(FUSED_LAYER, folder / "layer")
    state.save(folder / "state")
    result = Retrained(
        base_dir=str(folder / "base"),
        layer_dir=str(folder / "layer"),
        state_dir=str(folder / "state"),
        rows=len(kept),
        rows_left_out=len(records) - len(kept),
        final_loss=stats["final_loss"],
        trained_without=tuple(sorted({s.request_id for s in pending + gone})),
    )
    write_json(folder / DONE_FILE, result.to_json())
    return replace(result, seconds={"retrain": time.perf_counter() - started})
