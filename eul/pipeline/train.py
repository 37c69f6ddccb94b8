"""One unlearning layer per request, trained against the production model.

Intent -> effect -> record: the layer, its statistics and what its MLflow run will hold are
written to a temporary folder, moved into place with its done.json (the layer's checksum
included), then the request's MLflow run is found or created by the layer's key (tag
`eul.request_key`), and last the log marks the request `unlearned` with the run's id. A
request whose layer folder has its done.json is not retrained: a rerun reads it back, logs
the run if the try before was killed first, and marks the request; so a kill at any point
leaves one layer and one MLflow run per request.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from eul.pipeline.context import DONE_FILE, Clock, Context, fail_point
from eul.pipeline.files import (
    canonical,
    file_sha256,
    layer_key,
    numeric_metrics,
    read_done,
    replace_dir,
    write_done,
    write_json,
)
from eul.pipeline.marks import mark_unlearned
from eul.pipeline.production import Production, load_serving
from eul.pipeline.results import LayerResult, Partition
from eul.runtime.jsonsafe import clean_json
from eul.stores.registry.runs import RunStory, log_request_run

if TYPE_CHECKING:
    import torch

    from eul.data.records import Record
    from eul.fusion.statistics import FusionStats
    from eul.methods.base import UnlearnResult
    from eul.model.text_model import TextModel

# What the request's MLflow run logs (params, metrics, evaluation: numbers and ids only),
# written into the layer folder before its done.json, so that a rerun after a kill logs the
# run from disk.
RUN_FILE = "run.json"


def layer_folder(ctx: Context, request_id: str) -> Path:
    return ctx.workdir / "layers" / layer_key(request_id)


def load_rows(path: str | Path, task: str) -> list[Record]:
    from eul.data.readers import load_records

    return load_records(path, task=task)


def forget_side(tm: TextModel, forget: list[Record], unseen: list[Record], task: str):
    """Forget-set metrics of one model: accuracy (ROUGE), memorised share, MIA AUC."""
    from eul.evaluate.metrics import EvalSets, evaluate

    metrics, _ = evaluate(tm, EvalSets([], [], forget, unseen), task=task)
    keep = ("forget_acc", "forget_memorised_acc", "forget_rouge1", "forget_rougeL", "mia_auc")
    return {k: v for k, v in metrics.items() if k in keep}


@dataclass(frozen=True)
class _Rows:
    """The rows one request's layer trains and is measured on."""

    forget: list[Record]
    retained: list[Record]
    unseen: list[Record]


@dataclass(frozen=True)
class BatchHolds:
    """What layers trained side by side are held off, in the shared basis: the feature sums
    of every forget token of their wave and of a retained sample, on the model they train on
    (`batch_holds`). Sums of many rows, no text; kept in memory only."""

    forget: FusionStats
    retained: FusionStats


def train_request(
    ctx: Context,
    production: Production,
    request_id: str,
    partition: Partition,
    below: Sequence[LayerResult] = (),
    holds: BatchHolds | None = None,
) -> LayerResult:
    """Train (or find on disk) the unlearning layer of one request, log its MLflow run and
    mark it `unlearned`. It trains on `unlearn.device`; layer and statistics are written
    from the CPU.

    The layer is trained on top of the production model and of the layers in `below` (the
    batch's earlier requests, when the batch stacks its layers): its teacher is that model
    with the new layer switched off, so the fused sum is exactly what was trained. Side by
    side (`holds`), it is also held to no output on its wave's other forget tokens and on
    retained tokens, so that the sum of layers that never trained together keeps what each
    does alone.
    """
    folder = layer_folder(ctx, request_id)
    done_file = folder / DONE_FILE
    if done_file.is_file():
        result = LayerResult.from_json(read_done(folder), skipped=True)
        result = _with_run(ctx, folder, result)
        mark_unlearned(ctx, result)
        return result
    rows = partition.requests[request_id].rows
    trained_on = [b.request_id for b in below if b.layer_dir]
    if rows == 0:
        # the request's rows are not in the training split: nothing to unlearn, only to purge
        result = LayerResult(request_id, rows, production.version, trained_on, None)
        tmp = folder.with_name(folder.name + ".tmp")
        write_done(tmp, result.to_json())
        replace_dir(tmp, folder)
        mark_unlearned(ctx, result)
        return result
    return _train_layer(ctx, production, request_id, partition, below, trained_on, holds)


def _train_layer(
    ctx: Context,
    production: Production,
    request_id: str,
    partition: Partition,
    below: Sequence[LayerResult],
    trained_on: list[str],
    holds: BatchHolds | None,
) -> LayerResult:
    """The layer of a request with rows to forget: train, measure, save, log, mark."""
    import torch

    from eul.model.device import resolve_device

    started = time.perf_counter()
    started_at = time.time()
    params = ctx.params
    task = params.data.task
    clock = Clock()
    folder = layer_folder(ctx, request_id)
    device = resolve_device(params.unlearn.device)
    if params.train.threads:
        torch.set_num_threads(params.train.threads)
    with clock("layer_load"):
        rows = _Rows(
            forget=load_rows(partition.requests[request_id].file, task),
            retained=load_rows(partition.retained_file, task),
            unseen=load_rows(ctx.prepared("heldout.jsonl"), task),
        )
        tm = _model_under_training(production, below).to(device)
    with clock("layer_evaluate"):
        before = forget_side(tm, rows.forget, rows.unseen, task)
    name = layer_key(request_id)
    tmp = folder.with_name(folder.name + ".tmp")
    outcome = _fit_and_save(ctx, tm, production, below, holds, rows, name, tmp, clock)
    with clock("layer_evaluate"):
        after = forget_side(tm, rows.forget, rows.unseen, task)
    metrics = {**after, **{f"{k}_before": v for k, v in before.items()}}
    training = {
        "reference": params.eul_config().reference,
        "epochs": len(outcome.history),
        "update_s": outcome.update_s,
        "trainable_share": outcome.trainable_share,
        "history": outcome.history,
    }
    write_json(tmp / "training.json", training)
    inputs = _run_inputs(production, rows.forget, metrics, training)
    write_json(tmp / RUN_FILE, {**inputs, "times": {"started": started_at, "ended": time.time()}})
    result = LayerResult(
        request_id=request_id,
        rows=partition.requests[request_id].rows,
        production_version=production.version,
        trained_on=trained_on,
        layer_dir=str(folder),
        layer_sha256=file_sha256(tmp / "layer.safetensors"),
        metrics=clean_json(metrics),
        epochs=len(outcome.history),
    )
    fail_point(ctx, "before-done")
    write_done(tmp, result.to_json())
    replace_dir(tmp, folder)
    fail_point(ctx, "after-done")
    with clock("layer_mlflow"):
        result = _with_run(ctx, folder, result)
    mark_unlearned(ctx, result)
    # the rest: files, hashes, the log's `unlearned` entry
    clock.seconds["layer_other"] = time.perf_counter() - started - sum(clock.seconds.values())
    return replace(result, seconds=clock.seconds)


BELOW_LAYER = "_below"


def _model_under_training(production: Production, below: Sequence[LayerResult]) -> TextModel:
    """The production model with the batch's earlier layers (`below`) on top, all active.

    Shared-basis layers underneath are folded into one (`_below`, the exact sum of their up
    projections, as the fusion adds them), so that a step costs the same for the batch's
    thousandth layer as for its first; other layers stay apart."""
    from eul.fusion.fuse import add_shared_fused_layer, up_matrix

    tm = load_serving(production.base_dir, production.layer_dir)
    layers = tm.unlearning_layers()
    underneath = [layers.load_layer(b.layer_dir) for b in below if b.layer_dir]
    configs = {layers.configs[name] for name in underneath}
    if len(underneath) > 1 and len(configs) == 1 and next(iter(configs)).shared_basis:
        ups = {
            p: sum(up_matrix(layers.layers[name][p]) for name in underneath)
            for p in layers.position_names
        }
        for name in underneath:
            layers.remove_layer(name)
        add_shared_fused_layer(layers, BELOW_LAYER, configs.pop(), ups)
        underneath = [BELOW_LAYER]
    layers.set_active([*layers.active, *underneath])
    return tm


def _fit_and_save(
    ctx: Context,
    tm: TextModel,
    production: Production,
    below: Sequence[LayerResult],
    holds: BatchHolds | None,
    rows: _Rows,
    name: str,
    tmp: Path,
    clock: Clock,
) -> UnlearnResult:
    """Train the layer `name` with EUL, then save it and its statistics into `tmp`."""
    from eul.fusion.statistics import save_request_statistics
    from eul.methods import ForgetTask, get_method

    config = ctx.params.eul_config()
    keeps = config.keep_weight > 0 and config.layer.shared_basis
    keep = None
    if keeps:
        with clock("layer_holds"):
            keep = keep_for(ctx, tm, production, below, holds, rows.forget)
    with clock("layer_train"):
        outcome = get_method("eul", config=config).run(
            tm,
            ForgetTask(rows.forget, rows.retained, rows.unseen, name=name, keep=keep),
            progress=False,
        )
    if tmp.exists():
        shutil.rmtree(tmp)
    with clock("layer_statistics"):
        tm.unlearning_layers().save_layer(name, tmp)
        save_request_statistics(tm, name, rows.forget, tmp)
    return outcome


def _run_inputs(
    production: Production,
    forget: list[Record],
    metrics: dict[str, Any],
    training: dict[str, Any],
) -> dict[str, Any]:
    """What the request's MLflow run holds besides the layer folder and the settings."""
    return {
        "metrics": numeric_metrics(
            {**metrics, "update_s": training["update_s"], "epochs": training["epochs"]}
        ),
        "params": {
            "rows": len(forget),
            "memorised_rows": sum(r.memorised for r in forget),
            "production_version": production.version or "none",
        },
        "evaluation": clean_json({"metrics": metrics, "rows": len(forget), "training": training}),
    }


def request_key(result: LayerResult) -> str:
    """The key a request's MLflow run is found by: its id and its layer's checksum."""
    source = {"request_id": result.request_id, "layer_sha256": result.layer_sha256}
    return hashlib.sha256(canonical(source).encode()).hexdigest()


def _with_run(ctx: Context, folder: Path, result: LayerResult) -> LayerResult:
    """`result` with the id of the request's MLflow run: found by the layer's key, or logged
    from the layer folder (its layer, statistics and `run.json`) where no try logged it yet.
    A layer-less request (no rows to forget) has no run; a done.json from before runs were
    keyed names its run already."""
    if result.layer_dir is None or result.mlflow_run_id is not None:
        return result
    inputs = json.loads((folder / RUN_FILE).read_text())
    config = ctx.params.eul_config()
    run_id = log_request_run(
        ctx.settings,
        result.request_id,
        folder,
        inputs["metrics"],
        layer_config=config.layer,
        eul_config=config,
        params=inputs["params"],
        evaluation=inputs["evaluation"],
        key=request_key(result),
        story=_request_story(result, inputs),
    )
    fail_point(ctx, "after-run-logged")
    return replace(result, mlflow_run_id=run_id)


def _request_story(result: LayerResult, inputs: dict[str, Any]) -> RunStory:
    """The request run's description, commit and the times its layer really trained."""
    from eul.runtime.source import UNKNOWN, git_commit

    times = inputs.get("times") or {}
    params = inputs["params"]
    version = params.get("production_version", "none")
    on = "the base model" if version == "none" else f"production version {version}"
    commit = git_commit()
    return RunStory(
        description=(
            f"Unlearning layer of deletion request {result.request_id}: {params['rows']} "
            f"row(s) forgotten, {params.get('memorised_rows', 0)} of them memorised, trained "
            f"on {on}. Layer and statistics are purged with the request."
        ),
        started=times.get("started"),
        ended=times.get("ended"),
        commit=None if commit == UNKNOWN else commit,
    )


def train_stack(
    ctx: Context, production: Production, request_ids: Sequence[str], partition: Partition
) -> list[LayerResult]:
    """The batch's layers one after the other, each on top of the earlier ones."""
    results: list[LayerResult] = []
    for request_id in request_ids:
        results.append(train_request(ctx, production, request_id, partition, list(results)))
    return results


def earlier_requests(production: Production, below: Sequence[LayerResult]) -> FusionStats | None:
    """Feature statistics of the requests already served (production's fused ones and the
    batch's layers underneath); None where there are none or the layers have no shared
    basis (no feature statistics)."""
    from eul.fusion.fuse import STATE_FILE, FusionState
    from eul.fusion.statistics import FEATURE_STATS, FusionStats

    parts = []
    if production.state_dir is not None and (production.state_dir / STATE_FILE).is_file():
        state = FusionState.load(production.state_dir)
        if state.requests:
            parts.append(state.stats)
    for layer in below:
        folder = Path(layer.layer_dir) if layer.layer_dir else None
        if folder is not None and (folder / f"{FEATURE_STATS}.safetensors").is_file():
            parts.append(FusionStats.load(folder, stem=FEATURE_STATS))
    return sum(parts) if parts else None


def keep_for(
    ctx: Context,
    tm: TextModel,
    production: Production,
    below: Sequence[LayerResult],
    holds: BatchHolds | None,
    forget: Sequence[Record],
):
    """`ForgetTask.keep` of a new layer: the mean feature Gram of the tokens it must leave
    alone. Stacked: the requests already served and those underneath. Side by side
    (`holds`): those, the wave's other requests (the wave's sums less this request's own,
    taken the same way), plus `pipeline.retained_hold` times the retained tokens' mean
    Gram. None where nothing is held."""
    from eul.fusion.statistics import keep_grams, served_feature_statistics

    earlier = earlier_requests(production, below)
    if holds is None:
        return None if earlier is None else keep_grams(earlier)
    own = served_feature_statistics(tm, forget, ctx.params.eul_config().layer)
    return side_by_side_grams(earlier, holds, own, ctx.params.pipeline.retained_hold)


def side_by_side_grams(
    earlier: FusionStats | None, holds: BatchHolds, own: FusionStats, retained_hold: float
) -> dict[str, torch.Tensor] | None:
    """The Grams a side-by-side layer is held off: the mean over the served requests' and the
    batch's other requests' forget tokens (the batch's sums less `own`), plus `retained_hold`
    times the retained tokens' mean. In the shared basis a layer's mean square output over
    tokens of mean Gram G is trace(U^T G U) / d, so this bounds what each layer does where
    the others' requests and the retained data are, and the exact sum of the layers keeps
    what each one does alone. None where nothing is held."""
    from eul.fusion.statistics import keep_grams

    others = holds.forget - own
    total = others if earlier is None else earlier + others
    grams = keep_grams(total) if all(total.count.values()) else {}
    if retained_hold > 0:
        retained = keep_grams(holds.retained)
        grams = {p: grams.get(p, 0) + retained_hold * g for p, g in retained.items()}
    return grams or None


def batch_holds(
    ctx: Context,
    production: Production,
    request_ids: Sequence[str],
    partition: Partition,
    below: Sequence[LayerResult] = (),
) -> BatchHolds | None:
    """The sums a wave of side-by-side layers is held off (`BatchHolds`), taken once per wave
    on the model its layers train on (production and the layers in `below`): each request's
    forget rows in turn (the same batches its own task takes out again), then a sample of
    `unlearn.retained_sample` retained rows. None where layers have no shared basis or
    `unlearn.keep_weight` is 0 (nothing is held)."""
    import random

    from eul.fusion.statistics import FusionStats, served_feature_statistics
    from eul.model.device import resolve_device

    config = ctx.params.eul_config()
    if not (config.keep_weight > 0 and config.layer.shared_basis):
        return None
    task = ctx.params.data.task
    tm = _model_under_training(production, below).to(resolve_device(ctx.params.unlearn.device))
    layers = tm.unlearning_layers()
    forget = FusionStats.zeros(layers.position_names, layers.d_model, config.layer.width)
    for request_id in request_ids:
        request = partition.requests[request_id]
        if request.rows:
            rows = load_rows(request.file, task)
            forget = forget + served_feature_statistics(tm, rows, config.layer)
    retained = load_rows(partition.retained_file, task)
    sample = random.Random(config.seed).sample(retained, min(config.retained_sample, len(retained)))
    return BatchHolds(forget, served_feature_statistics(tm, sample, config.layer))
