"""The deletion pipeline's steps as plain functions; the Prefect tasks in `tasks/` call them.

One batch: validate and snapshot the deletion log, partition the data (DVC), train one
unlearning layer per request against the production model, fuse the new layers with the
production model's fusion state, evaluate, gate, register in MLflow, promote, purge.

Every step reads what it needs from the log's statuses and from files in the working folder
(`pipeline.workdir`), so a rerun after a failure skips what is done and repeats nothing:

- a request already `unlearned` whose layer and statistics are on disk is not retrained;
- a version already registered for the same requests on the same production version (tag
  `eul.batch_key`) is not registered again;
- a request already fused into the production model's fusion state is not added twice;
- requests the production version already honours are marked deployed, not redone;
- ledger marks move a request only forward, and only from the status the step expects.

What leaves the data files is ids, counts, hashes, metrics and weights: never record text.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import shutil
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from eul.params import Params, load_params
from eul.pipeline import gates as gate_checks
from eul.stores.log.config import resolve_url
from eul.stores.log.schema import TRANSITIONS
from eul.stores.log.store import Ledger
from eul.stores.registry.loading import download_version
from eul.stores.registry.runs import download_run_artifacts, log_batch_run, log_request_run
from eul.stores.registry.settings import TrackingSettings
from eul.stores.registry.tags import compliance_tags, covered_request_ids, version_description
from eul.stores.registry.versions import (
    CANDIDATE,
    PRODUCTION,
    find_versions,
    get_alias_version,
    register_version,
    set_alias,
    set_version_tags,
    version_run_id,
    version_tags,
)

if TYPE_CHECKING:
    from eul.data.records import Record
    from eul.model.text_model import TextModel

PENDING = ("validated", "unlearned", "fused")
PRODUCTION_LAYER = "_production"
FUSED_LAYER = "_fused"
STATE_ARTIFACT = "fusion_state"
DONE_FILE = "done.json"
BATCH_KEY_TAG = "eul.batch_key"
# A global concurrency limit every flow that may move the production alias holds while it
# runs (`prefect global-concurrency-limit create eul-model --limit 1`): a nightly batch and
# an urgent request then never build on the same production version at once. Without the
# limit the flows run unguarded, and promotion's compare-and-set still refuses the loser.
MODEL_LIMIT = "eul-model"
FAIL_ENV = "EUL_PIPELINE_FAIL_AT"

# transformers builds a model under a process-wide "meta device" context: two threads
# loading at once break each other's load, so loads (cheap) take turns.
_LOAD_LOCK = threading.Lock()


class PipelineError(RuntimeError):
    """A pipeline step cannot go on; the message says why and what to do."""


def fail_point(name: str) -> None:
    """Raise here when $EUL_PIPELINE_FAIL_AT names this point: lets tests (and drills)
    interrupt a batch at a known step and check that a rerun finishes it."""
    if os.environ.get(FAIL_ENV) == name:
        raise PipelineError(f"failure injected at {name!r} (${FAIL_ENV})")


class Clock:
    """Wall time per named phase, summed over repeats (the benchmark reads them)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            spent = time.perf_counter() - started
            self.seconds[name] = self.seconds.get(name, 0.0) + spent


# -- context ------------------------------------------------------------------------------


def _absolute_sqlite(url: str, root: Path) -> str:
    """A relative SQLite path is taken from the project root, not the working directory."""
    prefix = "sqlite:///"
    if not url.startswith(prefix) or url.startswith(prefix + "/") or ":memory:" in url:
        return url
    return prefix + str((root / url[len(prefix) :]).resolve())


def _absolute_location(location: str, root: Path) -> str:
    if "://" in location or location.startswith("file:"):
        return location
    return str((root / location).resolve())


@dataclass(frozen=True)
class Context:
    """The project a flow run works on: its root, params.yaml, the log and MLflow."""

    root: Path
    params: Params
    params_path: Path
    settings: TrackingSettings
    log_url: str

    @property
    def workdir(self) -> Path:
        return self.root / self.params.pipeline.workdir

    def ledger(self) -> Ledger:
        """A connection to the deletion log; use it as a context manager."""
        return Ledger(self.log_url, params_path=self.params_path)

    def prepared(self, name: str) -> Path:
        return self.root / self.params.prepare.out / name

    def partition_dir(self) -> Path:
        return self.root / self.params.partition.out


def load_context(project_dir: str | Path = ".", params_file: str = "params.yaml") -> Context:
    """The project at `project_dir`; relative paths in params.yaml are taken from it.

    The log URL comes from $EUL_LOG_URL or `log.url`; MLflow from MLFLOW_TRACKING_URI,
    EUL_MLFLOW_ARTIFACTS, EUL_MLFLOW_MODEL, EUL_MLFLOW_EXPERIMENT or the `registry` section.
    """
    root = Path(project_dir).resolve()
    if not root.is_dir():
        raise PipelineError(f"no project folder at {root}")
    params_path = root / params_file
    params = load_params(params_path if params_path.is_file() else None)
    env = os.environ
    registry = params.registry
    tracking_uri = env.get("MLFLOW_TRACKING_URI") or registry.tracking_uri
    settings = TrackingSettings(
        tracking_uri=_absolute_sqlite(tracking_uri, root),
        artifact_location=_absolute_location(
            env.get("EUL_MLFLOW_ARTIFACTS") or registry.artifact_location, root
        ),
        model_name=env.get("EUL_MLFLOW_MODEL") or registry.model_name,
        experiment=env.get("EUL_MLFLOW_EXPERIMENT") or registry.experiment,
        s3_endpoint_url=env.get("MLFLOW_S3_ENDPOINT_URL") or None,
    )
    log_url = _absolute_sqlite(resolve_url(None, params_path), root)
    return Context(root, params, params_path, settings, log_url)


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def write_json(path: Path, value: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(_clean(value), indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def _clean(value: Any) -> Any:
    """NaN is not JSON: null instead (nested)."""
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _metrics(values: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """The numeric, non-NaN entries, for MLflow."""
    return {
        f"{prefix}{k}": float(v)
        for k, v in values.items()
        if isinstance(v, int | float) and not isinstance(v, bool) and not math.isnan(v)
    }


def _replace_dir(tmp: Path, final: Path) -> None:
    """Move a finished folder into place (a half-written one never has the final name)."""
    if final.exists():
        shutil.rmtree(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, final)


def layer_key(request_id: str) -> str:
    """A request's layer name and folder name: its id percent-encoded, dots included
    (torch module names may not hold '.', and ids may hold '/')."""
    return quote(request_id, safe="").replace(".", "%2E")


# -- the production model -----------------------------------------------------------------


@dataclass(frozen=True)
class Production:
    """What serves now: a registered version (base + fused layer + fusion state), or the
    base model of the DVC `train` stage before any version exists."""

    version: int | None
    base_dir: Path
    layer_dir: Path | None
    state_dir: Path | None
    covered: tuple[str, ...] = ()
    tags: dict[str, str] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "covered_requests": len(self.covered),
            "base": str(self.base_dir),
        }


def current_production(ctx: Context) -> Production:
    """The production version, downloaded once into the working folder (base, fused layer
    and the fusion state of the batch run that made it)."""
    version = get_alias_version(ctx.settings, PRODUCTION)
    if version is None:
        base = ctx.root / ctx.params.train.out
        if not (base / "config.json").is_file():
            raise PipelineError(
                f"no production version in {ctx.settings.tracking_uri} and no base model at "
                f"{base}: run `dvc repro train` first"
            )
        return Production(None, base, None, None)
    folder = ctx.workdir / "production" / f"v{version}"
    if not (folder / DONE_FILE).is_file():
        tmp = folder.with_name(folder.name + ".tmp")
        if tmp.exists():
            shutil.rmtree(tmp)
        base, layer = download_version(ctx.settings, version, tmp / "download")
        run_id = version_run_id(ctx.settings, version)
        state = download_run_artifacts(ctx.settings, run_id, STATE_ARTIFACT, tmp / "state-dl")
        os.replace(base, tmp / "base")
        os.replace(layer, tmp / "layer")
        os.replace(state, tmp / "state")
        shutil.rmtree(tmp / "download")
        shutil.rmtree(tmp / "state-dl")
        write_json(tmp / DONE_FILE, {"version": version, "run_id": run_id})
        _replace_dir(tmp, folder)
    tags = version_tags(ctx.settings, version)
    return Production(
        version,
        folder / "base",
        folder / "layer",
        folder / "state",
        tuple(covered_request_ids(tags)),
        tags,
    )


def load_serving(base_dir: Path, layer_dir: Path | None) -> TextModel:
    """The base model with `layer_dir`'s layer (if any) loaded as `_production` and on, on
    the CPU (`TextModel.to` moves it, layer included)."""
    from eul.model.text_model import TextModel

    with _LOAD_LOCK:
        tm = TextModel.load(base_dir)
    if layer_dir is not None:
        layers = tm.unlearning_layers()
        layers.load_layer(layer_dir, PRODUCTION_LAYER)
        layers.set_active([PRODUCTION_LAYER])
    return tm


# -- the log --------------------------------------------------------------------------------


def _advance(ledger: Ledger, request_id: str, status: str, target: str, **details: Any) -> None:
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
    return _mark_deployed(ledger, production.covered, production.version, reconciled=True)


def _mark_deployed(
    ledger: Ledger, covered: Iterable[str], version: int, **details: Any
) -> list[str]:
    """Move every pending request that `version` covers to deployed; returns their ids."""
    covered = set(covered)
    done = []
    for state in ledger.list(status=PENDING):
        if state.request_id in covered:
            _advance(
                ledger, state.request_id, state.status, "deployed", model_version=version, **details
            )
            done.append(state.request_id)
    return done


def snapshot_log(ctx: Context, production: Production) -> dict[str, Any]:
    """Validate received requests against the raw data, reconcile with production, and
    write the snapshot of every pending request (validated, unlearned or fused) that the
    partition stage reads."""
    params = ctx.params
    raw = ctx.root / params.data.raw / params.data.records_file
    with ctx.ledger() as ledger:
        validated: list[str] = []
        rejected: list[str] = []
        if ledger.counts().get("received"):
            from eul.data.readers import load_records

            if not raw.is_file():
                raise PipelineError(f"no raw data at {raw}; run `eul data init` or `dvc pull`")
            records = load_records(raw, task=params.data.task)
            report = ledger.validate(records, data_version=f"sha256:{file_sha256(raw)}")
            validated, rejected = report.validated, sorted(report.rejected)
        reconciled = reconcile(ledger, production)
        snap = ledger.write_snapshot(ctx.root / params.partition.snapshot, statuses=PENDING)
    return {
        "log_seq": snap["log_seq"],
        "log_hash": snap["log_hash"],
        "validated": validated,
        "rejected": rejected,
        "reconciled": reconciled,
        "pending": [r["request_id"] for r in snap["requests"]],
        "statuses": {r["request_id"]: r["status"] for r in snap["requests"]},
    }


# -- partition -----------------------------------------------------------------------------


def _dvc_stages(root: Path) -> set[str]:
    import yaml

    path = root / "dvc.yaml"
    if not path.is_file() or not (root / ".dvc").is_dir():
        return set()
    return set((yaml.safe_load(path.read_text()) or {}).get("stages") or {})


def partition_data(ctx: Context, snapshot: dict[str, Any]) -> dict[str, Any]:
    """Forget sets per pending request and the retained set, through the DVC `partition`
    stage where the project has one (so the outputs are versioned), else in-process."""
    from eul.stores.dvc.partition import MANIFEST, load_snapshot, partition

    params = ctx.params
    out = ctx.partition_dir()
    if "partition" in _dvc_stages(ctx.root):
        from eul.stores.dvc import dvcstore

        dvcstore.run_dvc(["repro", "partition"], ctx.root)
        via = "dvc"
    else:
        snap = load_snapshot(ctx.root / params.partition.snapshot)
        partition(snap, ctx.root / params.partition.data, out, status=",".join(PENDING))
        via = "python"
    manifest = json.loads((out / MANIFEST).read_text())
    if manifest["log_seq"] != snapshot["log_seq"]:
        raise PipelineError(
            f"{out}/{MANIFEST} is of log entry {manifest['log_seq']}, not of the snapshot just "
            f"taken ({snapshot['log_seq']}); check the `partition` stage in dvc.yaml"
        )
    requests = {
        e["request_id"]: {"rows": e["rows"], "file": str(out / e["file"])}
        for e in manifest["requests"]
    }
    missing = sorted(set(snapshot["pending"]) - set(requests))
    if missing:
        raise PipelineError(f"the partition has no forget set for {', '.join(missing[:5])}")
    return {
        "via": via,
        "log_seq": manifest["log_seq"],
        "requests": requests,
        "rows_forgotten": manifest["rows_forgotten"],
        "rows_retained": manifest["rows_retained"],
        "retained_file": str(out / "retained.jsonl"),
    }


# -- one layer per request -----------------------------------------------------------------


def layer_folder(ctx: Context, request_id: str) -> Path:
    return ctx.workdir / "layers" / layer_key(request_id)


def _load(path: str | Path, task: str) -> list[Record]:
    from eul.data.readers import load_records

    return load_records(path, task=task)


def _forget_side(tm: TextModel, forget: list[Record], unseen: list[Record], task: str):
    """Forget-set metrics of one model: accuracy (ROUGE), memorised share, MIA AUC."""
    from eul.evaluate.metrics import EvalSets, evaluate

    metrics, _ = evaluate(tm, EvalSets([], [], forget, unseen), task=task)
    keep = ("forget_acc", "forget_memorised_acc", "forget_rouge1", "forget_rougeL", "mia_auc")
    return {k: v for k, v in metrics.items() if k in keep}


def train_request(
    ctx: Context,
    production: Production,
    request_id: str,
    partition: dict[str, Any],
    below: Sequence[dict[str, Any]] = (),
) -> dict[str, Any]:
    """Train (or find on disk) the unlearning layer of one request, log its MLflow run and
    mark it `unlearned`. It trains on `unlearn.device`; layer and statistics are written
    from the CPU.

    The layer is trained on top of the production model and of the layers in `below` (the
    batch's earlier requests, when the batch stacks its layers): its teacher is that model
    with the new layer switched off, so the fused sum is exactly what was trained.
    """
    started = time.perf_counter()
    folder = layer_folder(ctx, request_id)
    done_file = folder / DONE_FILE
    if done_file.is_file():
        result = json.loads(done_file.read_text())
        _mark_unlearned(ctx, request_id, result)
        return {**result, "skipped": True, "seconds": {}}
    params = ctx.params
    task = params.data.task
    clock = Clock()
    entry = partition["requests"][request_id]
    result: dict[str, Any] = {
        "request_id": request_id,
        "rows": entry["rows"],
        "production_version": production.version,
        "trained_on": [b["request_id"] for b in below if b.get("layer_dir")],
    }
    if entry["rows"] == 0:
        # the request's rows are not in the training split: nothing to unlearn, only to purge
        tmp = folder.with_name(folder.name + ".tmp")
        write_json(tmp / DONE_FILE, {**result, "layer_dir": None})
        _replace_dir(tmp, folder)
        result = {**result, "layer_dir": None}
        _mark_unlearned(ctx, request_id, result)
        return {**result, "skipped": False, "seconds": {}}

    import torch

    from eul.fusion.statistics import save_request_statistics
    from eul.methods import ForgetTask, get_method
    from eul.model.device import resolve_device

    device = resolve_device(params.unlearn.device)
    if params.train.threads:
        torch.set_num_threads(params.train.threads)
    with clock("layer_load"):
        forget = _load(entry["file"], task)
        retained = _load(partition["retained_file"], task)
        unseen = _load(ctx.prepared("heldout.jsonl"), task)
        tm = load_serving(production.base_dir, production.layer_dir).to(device)
        layers = tm.unlearning_layers()
        underneath = [layers.load_layer(b["layer_dir"]) for b in below if b.get("layer_dir")]
        layers.set_active([*layers.active, *underneath])
    with clock("layer_evaluate"):
        before = _forget_side(tm, forget, unseen, task)
    name = layer_key(request_id)
    config = params.eul_config()
    keeps = config.keep_weight > 0 and config.layer.shared_basis
    keep = _earlier_requests(production, below) if keeps else None
    with clock("layer_train"):
        outcome = get_method("eul", config=config).run(
            tm, ForgetTask(forget, retained, unseen, name=name, keep=keep), progress=False
        )
    tmp = folder.with_name(folder.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    with clock("layer_statistics"):
        tm.unlearning_layers().save_layer(name, tmp)
        save_request_statistics(tm, name, forget, tmp)
    with clock("layer_evaluate"):
        after = _forget_side(tm, forget, unseen, task)
    metrics = {**after, **{f"{k}_before": v for k, v in before.items()}}
    training = {
        "reference": config.reference,
        "epochs": len(outcome.history),
        "update_s": outcome.update_s,
        "trainable_share": outcome.trainable_share,
        "history": outcome.history,
    }
    write_json(tmp / "training.json", training)
    with clock("layer_mlflow"):
        run_id = log_request_run(
            ctx.settings,
            request_id,
            tmp,
            _metrics({**metrics, "update_s": outcome.update_s, "epochs": len(outcome.history)}),
            layer_config=config.layer,
            eul_config=config,
            params={
                "rows": len(forget),
                "memorised_rows": sum(r.memorised for r in forget),
                "production_version": production.version or "none",
            },
            evaluation=_clean({"metrics": metrics, "rows": len(forget), "training": training}),
        )
    result.update(
        layer_dir=str(folder),
        layer_sha256=file_sha256(tmp / "layer.safetensors"),
        mlflow_run_id=run_id,
        metrics=_clean(metrics),
        epochs=len(outcome.history),
    )
    write_json(tmp / DONE_FILE, result)
    _replace_dir(tmp, folder)
    _mark_unlearned(ctx, request_id, result)
    # the rest: files, hashes, the log's `unlearned` entry
    clock.seconds["layer_other"] = time.perf_counter() - started - sum(clock.seconds.values())
    return {**result, "skipped": False, "seconds": clock.seconds}


def _earlier_requests(production: Production, below: Sequence[dict[str, Any]]):
    """Mean feature Grams of the requests already served (production's fused ones and the
    batch's layers underneath), for `ForgetTask.keep`; None where there are none or the
    layers have no shared basis (no feature statistics)."""
    from eul.fusion.fuse import STATE_FILE, FusionState
    from eul.fusion.statistics import FEATURE_STATS, FusionStats, keep_grams

    parts = []
    if production.state_dir is not None and (production.state_dir / STATE_FILE).is_file():
        state = FusionState.load(production.state_dir)
        if state.requests:
            parts.append(state.stats)
    for layer in below:
        folder = Path(layer["layer_dir"]) if layer.get("layer_dir") else None
        if folder is not None and (folder / f"{FEATURE_STATS}.safetensors").is_file():
            parts.append(FusionStats.load(folder, stem=FEATURE_STATS))
    if not parts:
        return None
    total = parts[0]
    for part in parts[1:]:
        total = total + part
    return keep_grams(total)


def _mark_unlearned(ctx: Context, request_id: str, result: dict[str, Any]) -> None:
    with ctx.ledger() as ledger:
        if ledger.get(request_id).state.status != "validated":
            return
        ledger.mark(
            request_id,
            "unlearned",
            layer=layer_key(request_id) if result.get("layer_dir") else None,
            rows=result["rows"],
            layer_sha256=result.get("layer_sha256"),
            mlflow_run_id=result.get("mlflow_run_id"),
        )


# -- a batch ---------------------------------------------------------------------------------


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
    ctx: Context, production: Production, request_ids: Sequence[str], snapshot: dict, kind: str
) -> Plan:
    covered = tuple(sorted(set(production.covered) | set(request_ids)))
    key_source = {
        "production_version": production.version,
        "covered": covered,
        "layer": ctx.params.unlearn.layer.model_dump(),
        "kind": "compaction" if kind == "compaction" else "layers",
    }
    key = hashlib.sha256(_canonical(key_source).encode()).hexdigest()
    return Plan(
        key=key,
        batch_id=key[:12],
        kind=kind,
        new_ids=tuple(sorted(request_ids)),
        covered=covered,
        production_version=production.version,
        log_seq=int(snapshot["log_seq"]),
        log_hash=str(snapshot["log_hash"]),
    )


def batch_folder(ctx: Context, plan: Plan) -> Path:
    return ctx.workdir / "batches" / plan.folder_name


def find_registered(ctx: Context, plan: Plan) -> dict[str, Any] | None:
    """The version an earlier run registered for this very batch, if any."""
    found = find_versions(ctx.settings, BATCH_KEY_TAG, plan.key)
    if not found:
        return None
    version = found[-1]
    tags = version_tags(ctx.settings, version)
    gates = json.loads(tags.get("gates", "{}"))
    return {"version": version, "gates": gates, "passed": gate_checks.passed(gates), "reused": True}


def fuse_batch(
    ctx: Context, production: Production, trained: Sequence[dict[str, Any]], plan: Plan
) -> dict[str, Any]:
    """Add the new layers to the production model's fusion state and solve it ("sum" mode:
    exactly the stack of production's fused layer and the new layers, in one layer)."""
    from eul.fusion.fuse import FusionState, add_shared_fused_layer, fuse_shared, up_matrix
    from eul.fusion.statistics import FEATURE_STATS, FusionStats
    from eul.layers import LayerConfig
    from eul.model.text_model import TextModel

    started = time.perf_counter()
    with _LOAD_LOCK:
        tm = TextModel.load(production.base_dir)
    layers = tm.unlearning_layers()
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
    added, already = [], []
    for result in trained:
        if not result.get("layer_dir"):
            continue
        request_id = result["request_id"]
        if request_id in state.requests:
            already.append(request_id)
            continue
        name = layers.load_layer(result["layer_dir"])
        if layers.configs[name] != state.config:
            raise PipelineError(f"the layer of {request_id} has another basis than production's")
        up = {p: up_matrix(layers.layers[name][p]) for p in layers.position_names}
        stats = FusionStats.load(result["layer_dir"], stem=FEATURE_STATS)
        state.add_up(request_id, up, stats)
        layers.remove_layer(name)
        added.append(request_id)
    matrices = fuse_shared(state, "sum")
    add_shared_fused_layer(layers, FUSED_LAYER, config, matrices)
    folder = batch_folder(ctx, plan)
    tmp = folder / "fused.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    layers.save_layer(FUSED_LAYER, tmp / "layer")
    state.save(tmp / "state")
    _replace_dir(tmp / "layer", folder / "layer")
    _replace_dir(tmp / "state", folder / "state")
    shutil.rmtree(tmp)
    return {
        "layer_dir": str(folder / "layer"),
        "state_dir": str(folder / "state"),
        "base_dir": str(production.base_dir),
        "added": added,
        "already_fused": already,
        "requests_in_state": len(state.requests),
        "seconds": {"fuse": time.perf_counter() - started},
    }


def _forget_rows(partition: dict[str, Any], request_ids: Sequence[str], task: str):
    rows: dict[str, Record] = {}
    for request_id in request_ids:
        entry = partition["requests"].get(request_id)
        if entry and entry["rows"]:
            for record in _load(entry["file"], task):
                rows.setdefault(record.record_id, record)
    return list(rows.values())


def evaluate_batch(
    ctx: Context,
    production: Production,
    base_dir: str | Path,
    layer_dir: str | Path,
    partition: dict[str, Any] | None,
    request_ids: Sequence[str],
) -> dict[str, Any]:
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
    test = _load(ctx.prepared("test.jsonl"), task)
    unseen = _load(ctx.prepared("heldout.jsonl"), task)
    retained_file = partition["retained_file"] if partition else str(ctx.prepared("train.jsonl"))
    retained = _load(retained_file, task)
    sample = random.Random(0).sample(retained, min(params.pipeline.eval_retained, len(retained)))
    forget = _forget_rows(partition, request_ids, task) if partition else []
    sets = EvalSets(test=test, retained=sample, forget=forget, unseen=unseen)
    candidate = load_serving(Path(base_dir), Path(layer_dir)).to(device)
    cand_metrics, _, cand_scores = evaluate_with_scores(candidate, sets, task=task)
    serving = load_serving(production.base_dir, production.layer_dir).to(device)
    prod_metrics, _, prod_scores = evaluate_with_scores(serving, sets, task=task)
    for metrics in (cand_metrics, prod_metrics):
        metrics.pop("ks_p", None)  # needs an oracle, which the nightly batch has not
    models = {"candidate": candidate, "production": serving}
    return {
        "candidate": cand_metrics,
        "production": prod_metrics,
        "per_request": _per_request(models, partition, request_ids, task) if partition else {},
        "mia_roc": {
            "candidate": membership_roc(**cand_scores),
            "production": membership_roc(**prod_scores),
        },
        "rows": {
            "test": len(test),
            "retained": len(sample),
            "forget": len(forget),
            "forget_memorised": sum(r.memorised for r in forget),
            "unseen": len(unseen),
        },
        "seconds": {"evaluate": time.perf_counter() - started},
    }


def _per_request(
    models: dict[str, TextModel],
    partition: dict[str, Any],
    request_ids: Sequence[str],
    task: str,
) -> dict[str, dict[str, Any]]:
    """Each request's forget metrics, per model: {request id: {"rows": n, model: metrics}}
    (requests without rows in the training data are left out: nothing to measure)."""
    from eul.evaluate.metrics import forget_metrics

    found: dict[str, dict[str, Any]] = {}
    for request_id in request_ids:
        rows = _forget_rows(partition, [request_id], task)
        if rows:
            found[request_id] = {"rows": len(rows)} | {
                name: forget_metrics(tm, rows, task) for name, tm in models.items()
            }
    return found


def check_batch_gates(ctx: Context, evaluation: dict[str, Any]) -> dict[str, Any]:
    gates = gate_checks.check_gates(
        evaluation["candidate"],
        evaluation["production"],
        evaluation["rows"]["forget"],
        ctx.params.gates,
    )
    return {
        "gates": gates,
        "passed": gate_checks.passed(gates),
        "reasons": gate_checks.failure_reasons(gates),
    }


_KIND_LINES = {
    "nightly": "Nightly deletion batch: one unlearning layer per new request, fused exactly "
    "with the production model's layers.",
    "request": "Urgent deletion request: its unlearning layer fused exactly with the "
    "production model's layers.",
    "compaction": "Compaction: a full retrain on the retained data replaces the stack of "
    "unlearning layers (no layer left to fuse).",
}


def register_candidate(
    ctx: Context,
    production: Production,
    plan: Plan,
    *,
    base_dir: str | Path,
    layer_dir: str | Path,
    state_dir: str | Path,
    evaluation: dict[str, Any],
    verdict: dict[str, Any],
    extra_params: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Log the batch run, register base + fused layer as a new version tagged with the log,
    and point `candidate` at it; a version failing its gates is registered all the same,
    with the reasons, for a reviewer."""
    from eul.evaluate.plots import batch_plots
    from eul.stores.dvc import dvcstore

    started = time.perf_counter()
    folder = batch_folder(ctx, plan)
    document = _clean(
        {
            "batch_id": plan.batch_id,
            "kind": plan.kind,
            "new_requests": list(plan.new_ids),
            "evaluation": evaluation,
            "gates": verdict["gates"],
        }
    )
    write_json(folder / "evaluation.json", document)
    metrics = {
        **_metrics(evaluation["candidate"]),
        **_metrics(evaluation["production"], "production_"),
        **_metrics(evaluation["rows"], "rows_"),
    }
    run_id = log_batch_run(
        ctx.settings,
        plan.folder_name,
        list(plan.new_ids),
        metrics,
        params={
            "kind": plan.kind,
            "production_version": plan.production_version or "none",
            "covered_request_count": len(plan.covered),
            "log_seq": plan.log_seq,
            "gates": ctx.params.gates.model_dump(),
            **(extra_params or {}),
        },
        layer_dir=layer_dir,
        state_dir=state_dir,
        evaluation=document,
        plots=batch_plots(evaluation, gate_checks.gate_bands(verdict["gates"]), folder),
    )
    dvc_file = ctx.root / ctx.params.data.dvc_file
    data_md5 = dvcstore.tracked_md5(dvc_file) if dvc_file.is_file() else None
    tags = compliance_tags(plan.covered, plan.log_seq, plan.log_hash, verdict["gates"], data_md5)
    tags.update(
        {
            BATCH_KEY_TAG: plan.key,
            "eul.batch_id": plan.folder_name,
            "eul.kind": plan.kind,
            "eul.parent_version": str(plan.production_version or "none"),
            "eul.new_request_count": str(len(plan.new_ids)),
        }
    )
    if verdict["reasons"]:
        tags["eul.gate_reasons"] = " | ".join(verdict["reasons"])
    description = "\n\n".join(
        [
            _KIND_LINES.get(plan.kind, plan.kind),
            version_description(
                list(plan.new_ids),
                _metrics(evaluation["candidate"]),
                covered_count=len(plan.covered),
                production_metrics=_metrics(evaluation["production"]),
                production_version=plan.production_version,
                gates=verdict["gates"],
                log_seq=plan.log_seq,
            ),
        ]
    )
    if verdict["reasons"]:
        description = (
            "NOT PROMOTED: " + "; ".join(verdict["reasons"]) + " (a reviewer may promote it "
            "with the `promote` flow and a reason).\n\n" + description
        )
    fail_point("before-register")
    version = register_version(ctx.settings, run_id, base_dir, layer_dir, tags, description)
    set_alias(ctx.settings, CANDIDATE, version)
    return {
        "version": version,
        "run_id": run_id,
        "reused": False,
        "passed": verdict["passed"],
        "gates": verdict["gates"],
        "seconds": {"register": time.perf_counter() - started},
    }


def mark_fused(ctx: Context, request_ids: Sequence[str], version: int, batch_id: str) -> list[str]:
    """Requests of the batch still `unlearned` become `fused` into `version`."""
    marked = []
    with ctx.ledger() as ledger:
        for request_id in request_ids:
            if ledger.get(request_id).state.status == "unlearned":
                ledger.mark(request_id, "fused", model_version=version, batch_id=batch_id)
                marked.append(request_id)
    return marked


# -- promotion -------------------------------------------------------------------------------


def promotion_problems(
    tags: dict[str, str],
    production: Production,
    ledger: Ledger,
    override_reason: str | None = None,
) -> list[str]:
    """Why a version may not become production (empty: it may).

    - its gates passed, or a reviewer gives a reason to override them;
    - it honours every request the production version honours (never un-forget);
    - the log entry it was cut at still has the hash it records, and the chain verifies;
    - every request it covers is in the log and none was rejected.
    """
    problems = []
    if tags.get("gates_passed") != "true" and not override_reason:
        reasons = tags.get("eul.gate_reasons") or "gates not passed"
        problems.append(f"its gates failed ({reasons}); a reviewer must give a reason")
    covered = set(covered_request_ids(tags))
    dropped = sorted(set(production.covered) - covered)
    if dropped:
        problems.append(
            f"it does not honour {len(dropped)} request(s) that production (version "
            f"{production.version}) honours: {', '.join(dropped[:5])}"
        )
    try:
        seq = int(tags.get("log_seq", ""))
    except ValueError:
        seq = -1
    entry = ledger.entry_at(seq) if seq > 0 else None
    if entry is None or entry.hash != tags.get("log_hash"):
        problems.append(f"log entry {seq} is missing or its hash differs from the version's")
    report = ledger.verify()
    if not report.ok:
        problems.append(f"the deletion log's chain is broken at entry {report.broken_seq}")
    states = {s.request_id: s.status for s in ledger.list()}
    unknown = sorted(i for i in covered if i not in states)
    rejected = sorted(i for i in covered if states.get(i) == "rejected")
    if unknown:
        problems.append(f"it covers requests not in the log: {', '.join(unknown[:5])}")
    if rejected:
        problems.append(f"it covers rejected requests: {', '.join(rejected[:5])}")
    return problems


def promote_version(
    ctx: Context,
    version: int,
    *,
    promoted_by: str,
    override_reason: str | None = None,
    expected_production: int | None | str = "any",
) -> dict[str, Any]:
    """Check compliance, move `production` to `version`, and mark the requests it covers
    `deployed`. `expected_production`: the version the batch was built on; when production
    moved since (another batch won), nothing changes and the error says to rerun."""
    started = time.perf_counter()
    production = current_production(ctx)
    if expected_production != "any" and production.version != expected_production:
        raise PipelineError(
            f"production moved from version {expected_production} to {production.version} "
            "while this batch ran; rerun the flow to build on the new version"
        )
    tags = version_tags(ctx.settings, version)
    with ctx.ledger() as ledger:
        problems = promotion_problems(tags, production, ledger, override_reason)
        if problems:
            raise PipelineError(f"version {version} may not be promoted: " + "; ".join(problems))
        audit_tags = {"eul.promoted_by": promoted_by}
        if override_reason:
            audit_tags["eul.override_reason"] = override_reason
        set_version_tags(ctx.settings, version, audit_tags)
        fail_point("before-alias")
        set_alias(ctx.settings, PRODUCTION, version)
        deployed = _mark_deployed(ledger, covered_request_ids(tags), version)
    return {
        "version": version,
        "previous": production.version,
        "deployed": deployed,
        "seconds": {"promote": time.perf_counter() - started},
    }


# -- purge -----------------------------------------------------------------------------------


def purge_deployed(ctx: Context) -> dict[str, Any]:
    """Remove the rows of every `deployed` request from the data, the DVC cache and the
    remotes (`eul.stores.dvc.purge`), and mark each `purged` with the hashes as evidence."""
    from eul.stores.dvc.purge import PurgeRequest, purge

    params = ctx.params
    with ctx.ledger() as ledger:
        deployed = ledger.list(status="deployed")
    if not deployed:
        return {"purged": [], "note": "no deployed request awaits a purge", "seconds": {}}
    if not params.pipeline.purge:
        return {"purged": [], "note": "pipeline.purge is off", "seconds": {}}
    started = time.perf_counter()
    requests = [
        PurgeRequest(s.request_id, tuple(s.matched_ids or s.record_ids), s.subject_id)
        for s in deployed
    ]
    evidence = purge(
        requests, ctx.root, params, remotes=params.pipeline.remotes, scan=params.pipeline.scan
    )
    by_id = {r["request_id"]: r for r in evidence["requests"]}
    with ctx.ledger() as ledger:
        for state in deployed:
            found = by_id[state.request_id]
            ledger.mark(
                state.request_id,
                "purged",
                evidence={
                    "data_dvc_md5_before": evidence["old_md5"],
                    "data_dvc_md5_after": evidence["new_md5"],
                    "rows_removed": found["rows_removed"],
                    "row_sha256": found["row_sha256"],
                    "remotes_swept": evidence["remotes_swept"],
                    "purge_log": params.purge.ledger,
                    "purged_at": evidence["purged_at"],
                },
            )
    return {
        "purged": [s.request_id for s in deployed],
        "rows_removed": evidence["rows_removed"],
        "data_dvc_md5": evidence["new_md5"],
        "remotes": evidence["remotes_swept"],
        "seconds": {"purge": time.perf_counter() - started},
    }
