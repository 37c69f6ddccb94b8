"""A batch: its plan (and key), the fusion of its new layers with production's, the
evaluation of the candidate against production, and the gates.

The same batch rerun gets the same key, hence the same folder and the same registered
version; a request already fused into the production model's fusion state is not added
twice.
"""

from __future__ import annotations

import hashlib
import random
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from eul.pipeline import gates as gate_checks
from eul.pipeline.context import BATCH_KEY_TAG, FUSED_LAYER, Context, PipelineError
from eul.pipeline.files import canonical, read_done, replace_dir
from eul.pipeline.production import Production, load_base, load_serving
from eul.pipeline.results import (
    Evaluation,
    FusedBatch,
    LayerResult,
    Partition,
    Registered,
    Snapshot,
    Verdict,
)
from eul.pipeline.train import load_rows
from eul.stores.registry.tags import gates_from_tags
from eul.stores.registry.versions import CANDIDATE, find_versions, set_alias, version_tags

if TYPE_CHECKING:
    from eul.data.records import Record
    from eul.fusion.fuse import FusionState
    from eul.layers.model import UnlearningModel
    from eul.model.text_model import TextModel


@dataclass(frozen=True)
class Plan:
    """A batch: the requests it adds, what the resulting version covers, and its key.

    The key is a hash of the production version it builds on, the covered request ids and
    the layer basis: the same batch rerun gets the same key, hence the same folder and the
    same registered version.
    """

    key: str
    batch_id: str
    kind: str
    new_ids: tuple[str, ...]
    covered: tuple[str, ...]
    production_version: int | None
    log_seq: int
    log_hash: str

    @property
    def folder_name(self) -> str:
        return f"{self.kind}-{self.batch_id}"


def plan_batch(
    ctx: Context,
    production: Production,
    request_ids: Sequence[str],
    snapshot: Snapshot,
    kind: str,
) -> Plan:
    covered = tuple(sorted(set(production.covered) | set(request_ids)))
    key_source = {
        "production_version": production.version,
        "covered": covered,
        "layer": ctx.params.unlearn.layer.model_dump(),
        "kind": "compaction" if kind == "compaction" else "layers",
    }
    key = hashlib.sha256(canonical(key_source).encode()).hexdigest()
    return Plan(
        key=key,
        batch_id=key[:12],
        kind=kind,
        new_ids=tuple(sorted(request_ids)),
        covered=covered,
        production_version=production.version,
        log_seq=int(snapshot.log_seq),
        log_hash=str(snapshot.log_hash),
    )


def batch_folder(ctx: Context, plan: Plan) -> Path:
    return ctx.workdir / "batches" / plan.folder_name


def find_registered(ctx: Context, plan: Plan) -> Registered | None:
    """The version an earlier run registered for this very batch, if any. One that never
    got its `candidate` alias (a run killed between registering it and setting the alias:
    no `candidate_since` tag) gets it now."""
    found = find_versions(ctx.settings, BATCH_KEY_TAG, plan.key)
    if not found:
        return None
    version = found[-1]
    tags = version_tags(ctx.settings, version)
    if f"{CANDIDATE}_since" not in tags:
        set_alias(ctx.settings, CANDIDATE, version)
    gates = gates_from_tags(tags)
    return Registered(version=version, gates=gates, passed=gate_checks.passed(gates), reused=True)


# -- fusion ------------------------------------------------------------------------------------


def _fusion_state(ctx: Context, production: Production, layers: UnlearningModel) -> FusionState:
    """Production's fusion state (an empty one before any version), on params.yaml's basis."""
    from eul.fusion.fuse import FusionState
    from eul.layers import LayerConfig

    config = LayerConfig(**ctx.params.unlearn.layer.model_dump())
    if production.state_dir is not None:
        state = FusionState.load(production.state_dir)
    else:
        state = FusionState.empty(layers, config)
    if state.config != config:
        raise PipelineError(
            f"the production layers use basis {state.config}, params.yaml asks for {config}: "
            "layers of different bases do not fuse; run the `compact` flow to start afresh"
        )
    return state


def _add_layers(
    state: FusionState, layers: UnlearningModel, trained: Sequence[LayerResult]
) -> tuple[list[str], list[str]]:
    """Each new layer's up matrices and statistics into `state`; (added, already fused)."""
    from eul.fusion.fuse import up_matrix
    from eul.fusion.statistics import FEATURE_STATS, FusionStats

    added, already = [], []
    for result in trained:
        if not result.layer_dir:
            continue
        request_id = result.request_id
        if request_id in state.requests:
            already.append(request_id)
            continue
        read_done(Path(result.layer_dir))  # every file as written, or CorruptFileError
        name = layers.load_layer(result.layer_dir)
        if layers.configs[name] != state.config:
            raise PipelineError(f"the layer of {request_id} has another basis than production's")
        up = {p: up_matrix(layers.layers[name][p]) for p in layers.position_names}
        stats = FusionStats.load(result.layer_dir, stem=FEATURE_STATS)
        state.add_up(request_id, up, stats)
        layers.remove_layer(name)
        added.append(request_id)
    return added, already


def fuse_batch(
    ctx: Context, production: Production, trained: Sequence[LayerResult], plan: Plan
) -> FusedBatch:
    """Add the new layers to the production model's fusion state and solve it ("sum" mode:
    exactly the stack of production's fused layer and the new layers, in one layer)."""
    from eul.fusion.fuse import add_shared_fused_layer, fuse_shared

    started = time.perf_counter()
    tm = load_base(production.base_dir)
    layers = tm.unlearning_layers()
    state = _fusion_state(ctx, production, layers)
    added, already = _add_layers(state, layers, trained)
    matrices = fuse_shared(state, "sum")
    add_shared_fused_layer(layers, FUSED_LAYER, state.config, matrices)
    folder = batch_folder(ctx, plan)
    tmp = folder / "fused.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    layers.save_layer(FUSED_LAYER, tmp / "layer")
    state.save(tmp / "state")
    replace_dir(tmp / "layer", folder / "layer")
    replace_dir(tmp / "state", folder / "state")
    shutil.rmtree(tmp)
    return FusedBatch(
        layer_dir=str(folder / "layer"),
        state_dir=str(folder / "state"),
        base_dir=str(production.base_dir),
        added=added,
        already_fused=already,
        requests_in_state=len(state.requests),
        seconds={"fuse": time.perf_counter() - started},
    )


# -- evaluation and gates ----------------------------------------------------------------------


def forget_rows(partition: Partition, request_ids: Sequence[str], task: str) -> list[Record]:
    rows: dict[str, Record] = {}
    for request_id in request_ids:
        entry = partition.requests.get(request_id)
        if entry and entry.rows:
            for record in load_rows(entry.file, task):
                rows.setdefault(record.record_id, record)
    return list(rows.values())


def evaluate_batch(
    ctx: Context,
    production: Production,
    base_dir: str | Path,
    layer_dir: str | Path,
    partition: Partition | None,
    request_ids: Sequence[str],
) -> Evaluation:
    """The candidate and the production model measured on the same rows: test, a sample of
    retained rows, the batch's forget rows, and held-out rows for membership inference; the
    forget metrics per request too, and the MIA ROC curves (aggregates, for the plots).
    Both models run on `unlearn.device`."""
    from eul.evaluate.metrics import EvalSets, evaluate_with_scores, membership_roc
    from eul.model.device import resolve_device

    params = ctx.params
    device = resolve_device(params.unlearn.device)
    task = params.data.task
    started = time.perf_counter()
    test = load_rows(ctx.prepared("test.jsonl"), task)
    unseen = load_rows(ctx.prepared("heldout.jsonl"), task)
    retained_file = partition.retained_file if partition else str(ctx.prepared("train.jsonl"))
    retained = load_rows(retained_file, task)
    sample = random.Random(0).sample(retained, min(params.pipeline.eval_retained, len(retained)))
    forget = forget_rows(partition, request_ids, task) if partition else []
    sets = EvalSets(test=test, retained=sample, forget=forget, unseen=unseen)
    candidate = load_serving(Path(base_dir), Path(layer_dir)).to(device)
    cand_metrics, _, cand_scores = evaluate_with_scores(candidate, sets, task=task)
    bands = _reference_bands(ctx, candidate, sets, retained, cand_scores)
    serving = load_serving(production.base_dir, production.layer_dir).to(device)
    prod_metrics, _, prod_scores = evaluate_with_scores(serving, sets, task=task)
    for metrics in (cand_metrics, prod_metrics):
        metrics.pop("ks_p", None)  # needs an oracle, which the nightly batch has not
    models = {"candidate": candidate, "production": serving}
    return Evaluation(
        candidate=cand_metrics,
        production=prod_metrics,
        per_request=per_request(models, partition, request_ids, task) if partition else {},
        mia_roc={
            "candidate": membership_roc(**cand_scores),
            "production": membership_roc(**prod_scores),
        },
        rows={
            "test": len(test),
            "retained": len(sample),
            "forget": len(forget),
            "forget_memorised": sum(r.memorised for r in forget),
            "unseen": len(unseen),
        },
        seconds={"evaluate": time.perf_counter() - started},
        bands=bands.to_json() if bands else None,
    )


def _reference_bands(
    ctx: Context, candidate: TextModel, sets, retained: Sequence[Record], scores: dict
):
    """The bands the gates hold the candidate's forget rows to (None: nothing to draw)."""
    from eul.data.records import LABEL_WORDS
    from eul.evaluate.bands import BandConfig, reference_bands

    gates = ctx.params.gates
    if not gates.two_sided or not sets.forget:
        return None
    words = LABEL_WORDS if ctx.params.data.task == "classification" else None
    config = BandConfig(quantile=gates.band_quantile, resamples=gates.band_resamples)
    return reference_bands(
        candidate, sets.forget, sets.unseen, retained, scores["unseen"]["loss"], words, config
    )


def per_request(
    models: dict[str, TextModel],
    partition: Partition,
    request_ids: Sequence[str],
    task: str,
) -> dict[str, dict[str, Any]]:
    """Each request's forget metrics, per model: {request id: {"rows": n, model: metrics}}
    (requests without rows in the training data are left out: nothing to measure)."""
    from eul.evaluate.metrics import forget_metrics

    found: dict[str, dict[str, Any]] = {}
    for request_id in request_ids:
        rows = forget_rows(partition, [request_id], task)
        if rows:
            found[request_id] = {"rows": len(rows)} | {
                name: forget_metrics(tm, rows, task) for name, tm in models.items()
            }
    return found


def check_batch_gates(ctx: Context, evaluation: Evaluation) -> Verdict:
    from eul.evaluate.bands import ReferenceBands

    bands = ReferenceBands.from_json(evaluation.bands) if evaluation.bands else None
    gates = gate_checks.check_gates(
        evaluation.candidate,
        evaluation.production,
        evaluation.rows["forget"],
        ctx.params.gates,
        bands,
    )
    return Verdict(
        gates=gates,
        passed=gate_checks.passed(gates),
        reasons=gate_checks.failure_reasons(gates),
    )
