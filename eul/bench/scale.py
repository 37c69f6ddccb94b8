"""How a batch scales with its number of requests (`eul bench --scale`).

For each count N, N deletion requests (whole subjects of the embedded synthetic data, as the
pipeline gets them) are trained on the tiny model two ways, as the nightly batch trains them:

- `stacked`: one after the other in one process, each on top of the earlier ones (held
  off their forget tokens); the layers underneath are folded into one by their exact sum,
  so a step costs the same at request 1,000 as at request 1;
- side by side with 1, 2 and 4 worker processes: in waves of that many, a layer per process,
  each wave on top of the earlier ones and each layer held off its wave's other forget
  features and the retained ones (`eul.pipeline.train`'s holds, taken once per wave).

Either way the layers are fused by the exact sum and the fused model is measured: test
accuracy, each request's forget accuracy, the MIA AUC of all forget rows against held-out
rows, fusion time and one forward pass. Costs: batch wall time, peak memory, the files a
request keeps until its purge (and after), and each update against retraining the base.
The EUL settings are shortened (`ScaleConfig.eul`): the figures are costs and how they grow,
not the benchmark's quality figures (`eul bench`).
"""

from __future__ import annotations

import random
import resource
import statistics
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context
from pathlib import Path

import torch

from eul.bench.fusion_scale import forward_ms
from eul.data.records import LABEL_WORDS, Record, split_records
from eul.data.synthetic import SyntheticConfig, generate
from eul.evaluate.metrics import EvalSets, accuracy, evaluate
from eul.fusion.fuse import FusionState, add_shared_fused_layer, fuse_shared, up_matrix
from eul.fusion.statistics import (
    FusionStats,
    capture_statistics,
    keep_grams,
    served_feature_statistics,
)
from eul.methods import ForgetTask, get_method
from eul.methods.eul import EULConfig
from eul.model.text_model import ModelSpec, TextModel
from eul.model.training import TrainConfig, train_full
from eul.pipeline.train import BatchHolds, side_by_side_grams
from eul.runtime.scratch import scratch_folder

COUNTS = (1, 10, 100, 1000)
WORKERS = (1, 2, 4)
BELOW = "_below"
FUSED = "_fused"


def short_eul() -> EULConfig:
    """EUL with fewer and shorter epochs: a request costs about a second on the tiny model."""
    return EULConfig(epochs=2, retained_sample=256, retained_per_epoch=64, unseen_sample=100)


@dataclass(frozen=True)
class ScaleConfig:
    counts: tuple[int, ...] = COUNTS
    workers: tuple[int, ...] = WORKERS
    stacked: bool = True
    # The pipeline holds side-by-side layers off retained tokens too (`pipeline.retained_hold`
    # 1.0, measured with full-length EUL). With these shortened updates that hold cost the
    # sum its utility (10 requests in waves of one: test 0.587, against 0.836 stacked), so
    # here a wave's layers are held off each other only.
    retained_hold: float = 0.0
    train_epochs: int = 3
    retained_subjects: int = 300
    eval_rows: int = 300
    seed: int = 0
    eul: EULConfig = field(default_factory=short_eul)

    def __post_init__(self) -> None:
        if not self.counts or min(self.counts) < 1:
            raise ValueError("counts must be at least 1")
        if self.workers and min(self.workers) < 1:
            raise ValueError("workers must be at least 1")


@dataclass(frozen=True)
class _Setup:
    """What every count starts from: the data, the subjects in request order, the original."""

    train: list[Record]
    heldout: list[Record]
    test: list[Record]
    subjects: list[str]
    original: TextModel
    model_dir: Path
    retrain_s: float


# -- worker processes ------------------------------------------------------------------------

_WORKER: dict = {}


def _start_worker(model_dir: str, retained: list[Record], heldout: list[Record], cfg):
    torch.set_num_threads(1)
    _WORKER.update(model=TextModel.load(model_dir), retained=retained, heldout=heldout, cfg=cfg)


def _on_top(tm: TextModel, cfg: ScaleConfig, state: FusionState | None) -> TextModel:
    """`tm` with the layers of `state` folded into one active layer underneath (their sum)."""
    if state is not None and state.requests:
        layers = tm.unlearning_layers()
        if BELOW in layers.layers:
            layers.remove_layer(BELOW)
        add_shared_fused_layer(layers, BELOW, cfg.eul.layer, fuse_shared(state))
        layers.set_active([BELOW])
    return tm


def _train_in_wave(job):
    """One request's layer, on top of the earlier waves (`state`) and held off its wave."""
    name, forget, state, holds = job
    cfg = _WORKER["cfg"]
    tm = _on_top(_WORKER["model"].copy(), cfg, state)
    own = served_feature_statistics(tm, forget, cfg.eul.layer)
    earlier = state.stats if state is not None and state.requests else None
    keep = side_by_side_grams(earlier, holds, own, cfg.retained_hold)
    task = ForgetTask(forget, _WORKER["retained"], _WORKER["heldout"], name=name, keep=keep)
    result = get_method("eul", config=cfg.eul).run(tm, task, progress=False)
    return _layer_of(tm, name, forget) + (result.update_s,)


def _layer_of(tm: TextModel, name: str, forget: list[Record]):
    layers = tm.unlearning_layers()
    stats = capture_statistics(tm, name, forget, space="features")
    return {p: up_matrix(layers.layers[name][p]) for p in layers.position_names}, stats


# -- one batch ------------------------------------------------------------------------------


def _holds(tm: TextModel, requests, retained, cfg: ScaleConfig) -> BatchHolds:
    layers = tm.unlearning_layers()
    forget = FusionStats.zeros(layers.position_names, layers.d_model, cfg.eul.layer.width)
    for rows in requests:
        forget = forget + served_feature_statistics(tm, rows, cfg.eul.layer)
    sample = random.Random(cfg.seed).sample(retained, min(cfg.eul.retained_sample, len(retained)))
    return BatchHolds(forget, served_feature_statistics(tm, sample, cfg.eul.layer))


def side_by_side(setup: _Setup, requests, retained, workers: int, cfg: ScaleConfig):
    """The batch's layers in waves of `workers`, a process each, as the pipeline trains
    them; (per-request results, wall seconds)."""
    started = time.perf_counter()
    tm = setup.original.copy()
    state = FusionState.empty(tm.unlearning_layers(), cfg.eul.layer)
    results = []
    args = (str(setup.model_dir), retained, setup.heldout, cfg)
    with ProcessPoolExecutor(workers, get_context("spawn"), _start_worker, args) as pool:
        for start in range(0, len(requests), workers):
            wave = requests[start : start + workers]
            holds = _holds(_on_top(tm, cfg, state), wave, retained, cfg)
            jobs = [(f"request-{start + i}", rows, state, holds) for i, rows in enumerate(wave)]
            for i, (ups, stats, update_s) in enumerate(pool.map(_train_in_wave, jobs)):
                state.add_up(f"request-{start + i}", ups, stats)
                results.append((ups, stats, update_s))
    return results, time.perf_counter() - started


def stacked(setup: _Setup, requests, retained, cfg: ScaleConfig):
    """The batch's layers one after the other, each on top of the earlier ones folded into
    one layer (their exact sum) and held off their tokens; (results, wall seconds)."""
    started = time.perf_counter()
    tm = setup.original.copy()
    layers = tm.unlearning_layers()
    state = FusionState.empty(layers, cfg.eul.layer)
    method = get_method("eul", config=cfg.eul)
    results = []
    for i, rows in enumerate(requests):
        name = f"request-{i}"
        _on_top(tm, cfg, state)
        keep = keep_grams(state.stats) if state.requests else None
        result = method.run(tm, ForgetTask(rows, retained, setup.heldout, name, keep), False)
        ups, stats = _layer_of(tm, name, rows)
        state.add_up(name, ups, stats)
        layers.remove_layer(name)
        results.append((ups, stats, result.update_s))
    return results, time.perf_counter() - started


# -- measuring ------------------------------------------------------------------------------


def _fused_model(setup: _Setup, results, cfg: ScaleConfig) -> tuple[TextModel, float, FusionState]:
    """The original with the batch's layers fused by their exact sum; the fusion's seconds."""
    tm = setup.original.copy()
    layers = tm.unlearning_layers()
    started = time.perf_counter()
    state = FusionState.empty(layers, cfg.eul.layer)
    for i, (ups, stats, _) in enumerate(results):
        state.add_up(f"request-{i}", ups, stats)
    add_shared_fused_layer(layers, FUSED, state.config, fuse_shared(state))
    layers.set_active([FUSED])
    return tm, time.perf_counter() - started, state


def _forward_ms(tm: TextModel, rows: Sequence[Record]) -> float:
    return forward_ms(tm, tm.batch([r.text for r in rows], [r.target for r in rows]))


def _request_bytes(setup: _Setup, requests, cfg: ScaleConfig) -> int:
    """The files one request keeps until its purge: layer, hidden and feature sums."""
    from eul.fusion.statistics import save_request_statistics

    tm = setup.original.copy()
    rows = requests[0]
    tm.unlearning_layers().add_layer("one", cfg.eul.layer)
    with scratch_folder("model") as folder:
        tm.unlearning_layers().save_layer("one", folder)
        save_request_statistics(tm, "one", rows, folder)
        return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())


def _state_bytes(state: FusionState) -> int:
    with scratch_folder("model") as folder:
        state.save(folder)
        return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())


def _peak_rss_mb() -> float:
    """The largest resident set of this process and of any finished worker, so far."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, children) / 1024


def _measure(setup: _Setup, requests, results, wall_s: float, cfg: ScaleConfig) -> dict:
    tm, fuse_s, state = _fused_model(setup, results, cfg)
    union = [r for rows in requests for r in rows]
    sets = EvalSets(test=setup.test[:1000], retained=[], forget=union, unseen=setup.heldout)
    metrics, _ = evaluate(tm, sets)
    per_request = [accuracy(tm, rows, LABEL_WORDS) for rows in requests]
    updates = [r[2] for r in results]
    return {
        "wall_s": wall_s,
        "per_request_s": wall_s / len(requests),
        "update_s_mean": statistics.fmean(updates),
        "update_share_of_retrain": statistics.fmean(updates) / setup.retrain_s,
        "fuse_s": fuse_s,
        "forward_ms": _forward_ms(tm, setup.test[:64]),
        "state_bytes": _state_bytes(state),
        "test_acc": metrics["test_acc"],
        "forget_acc_mean": statistics.fmean(per_request),
        "mia_auc": metrics["mia_auc"],
        "peak_rss_mb": _peak_rss_mb(),
    }


# -- the benchmark --------------------------------------------------------------------------


def _prepare(cfg: ScaleConfig, log: Callable[[str], None], folder: Path) -> _Setup:
    n_subjects = max(cfg.counts) + cfg.retained_subjects
    records = generate(SyntheticConfig(n_subjects=n_subjects, seed=cfg.seed))[1]
    train, heldout, test = split_records(records, seed=cfg.seed)
    subjects = sorted({r.subject_id for r in train})
    random.Random(cfg.seed).shuffle(subjects)
    original = TextModel.create([r.text for r in train] + list(LABEL_WORDS), ModelSpec())
    started = time.perf_counter()
    train_full(original, train, TrainConfig(epochs=cfg.train_epochs, seed=cfg.seed), "base", False)
    retrain_s = time.perf_counter() - started
    log(f"base: {len(train)} rows, {n_subjects} subjects, trained in {retrain_s:.1f} s")
    original.save(folder)
    return _Setup(train, heldout[: cfg.eval_rows], test, subjects, original, folder, retrain_s)


def run_scale(cfg: ScaleConfig, log: Callable[[str], None] = print) -> dict:
    """Every count, stacked and with each number of workers; a row per (count, way)."""
    torch.set_num_threads(1)
    rows = []
    with scratch_folder("model") as folder:
        setup = _prepare(cfg, log, Path(folder))
        for n in cfg.counts:
            chosen = set(setup.subjects[:n])
            requests = [[r for r in setup.train if r.subject_id == s] for s in setup.subjects[:n]]
            retained = [r for r in setup.train if r.subject_id not in chosen]
            ways = [("stacked", 1)] if cfg.stacked else []
            ways += [("side by side", w) for w in cfg.workers]
            for way, workers in ways:
                if way == "stacked":
                    results, wall = stacked(setup, requests, retained, cfg)
                else:
                    results, wall = side_by_side(setup, requests, retained, workers, cfg)
                row = {"requests": n, "way": way, "workers": workers}
                row |= _measure(setup, requests, results, wall, cfg)
                row["request_bytes"] = _request_bytes(setup, requests, cfg)
                rows.append(row)
                log(
                    f"{n} requests, {way} ({workers}): {wall:.1f} s, test "
                    f"{row['test_acc']:.3f}, forget {row['forget_acc_mean']:.3f}, MIA "
                    f"{row['mia_auc']:.3f}, fuse {row['fuse_s'] * 1000:.1f} ms, forward "
                    f"{row['forward_ms']:.1f} ms"
                )
    settings = {k: v for k, v in asdict(cfg).items() if k != "eul"}
    settings["eul"] = {k: v for k, v in asdict(cfg.eul).items() if k != "layer"}
    return {"rows": rows, "retrain_s": setup.retrain_s, "settings": settings}


def format_scale(result: dict) -> str:
    """A row per (count, way). A request's files (layer and sums) are deleted at its purge;
    what stays is the fused state, one layer and sums for all requests (and their ids)."""
    lines = [
        "| requests | way | workers | wall s | s/request | update / retrain | fuse ms | "
        "forward ms | peak RSS MB | request files KB | fused state KB | test | forget | MIA |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['requests']} | {r['way']} | {r['workers']} | {r['wall_s']:.1f} | "
            f"{r['per_request_s']:.2f} | {r['update_share_of_retrain']:.3f} | "
            f"{r['fuse_s'] * 1000:.1f} | {r['forward_ms']:.1f} | {r['peak_rss_mb']:.0f} | "
            f"{r['request_bytes'] / 1024:.0f} | {r['state_bytes'] / 1024:.0f} | "
            f"{r['test_acc']:.3f} | "
            f"{r['forget_acc_mean']:.3f} | {r['mia_auc']:.3f} |"
        )
    return "\n".join(lines)


def plot_scale(result: dict, path: str | Path) -> Path:
    """Batch wall time and forward time against the number of requests, a line per way."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (wall, forward) = plt.subplots(1, 2, figsize=(10, 4))
    ways = sorted({(r["way"], r["workers"]) for r in result["rows"]})
    for way, workers in ways:
        rows = [r for r in result["rows"] if (r["way"], r["workers"]) == (way, workers)]
        label = way if way == "stacked" else f"side by side, {workers} workers"
        counts = [r["requests"] for r in rows]
        wall.plot(counts, [r["wall_s"] for r in rows], marker="o", label=label)
        forward.plot(counts, [r["forward_ms"] for r in rows], marker="o", label=label)
    for ax, title in ((wall, "batch wall time (s)"), (forward, "fused forward pass (ms)")):
        ax.set_xscale("log")
        ax.set_xlabel("requests in the batch")
        ax.set_title(title)
    wall.set_yscale("log")
    wall.legend(fontsize=8)
    path = Path(path)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
