"""Requests that arrive one by one (the paper's Table 6 protocol), measured against the oracle.

Three requests in turn, each 1% of the training rows (whole subjects, half of their rows with
a flipped label). After each step four ways of serving the requests so far are measured:

- `sequential`: one layer, retrained from scratch on the union of the requests so far;
- `stacked`: one layer per request, each trained on top of the earlier ones (and held off
  their forget tokens through their feature statistics), all active;
- `fused`: the same layers fused into one layer of the same size (`eul.fusion.fuse`);
- `oracle`: the base recipe retrained on the data without any request so far.

Each step also reports the `original` model on the same sets, the reference for test accuracy.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from eul.bench.classification import BenchConfig, load_bench_records
from eul.bench.envelope import run_record
from eul.bench.forget_sets import choose_requests
from eul.data.records import LABEL_WORDS, Record, split_records
from eul.evaluate.metrics import EvalSets, accuracy, evaluate
from eul.fusion.fuse import FusionState, add_fused_layer, add_shared_fused_layer, fuse, fuse_shared
from eul.fusion.statistics import FusionStats, anchor_statistics, capture_statistics, keep_grams
from eul.methods import ForgetTask, get_method
from eul.model.text_model import TextModel
from eul.model.training import train_full

NAMES = ("sequential", "stacked", "fused", "oracle")
FUSED = "fused"

#: The EUL settings the protocol runs with (`protocol_bench`). The probe reference gives each
#: forget row the level the retained data alone supports, so flipped labels end well below
#: one half and ordinary rows keep their answer; without the retained task term (lam 0) a new
#: layer does not pull rows back toward the labels it was trained on. The keep penalty is off:
#: with the probe it slowed each new request's forgetting more than it held the earlier ones
#: (README, sequential section).
PROTOCOL_EUL = {"reference": "probe", "lam": 0.0, "keep_weight": 0.0}


@dataclass(frozen=True)
class SequentialConfig:
    """The sequential protocol: how many requests, and how the layers are fused."""

    bench: BenchConfig = field(default_factory=BenchConfig)
    requests: int = 3
    fusion: str = "sum"
    anchor_weight: float = 0.0
    anchor_rows: int = 1000
    ridge: float = 1e-6
    variants: bool = False

    def __post_init__(self) -> None:
        if self.requests < 1:
            raise ValueError(f"requests must be at least 1, got {self.requests}")


def protocol_bench(bench: BenchConfig) -> BenchConfig:
    """`bench` with the EUL settings the sequential protocol runs with (`PROTOCOL_EUL`)."""
    return replace(bench, eul=replace(bench.eul, **PROTOCOL_EUL))


def _measure(tm: TextModel, sets: EvalSets, requests: list[list[Record]], update_s: float) -> dict:
    """The step's metrics over all requests so far, and forget metrics per request."""
    metrics, _ = evaluate(tm, sets)
    return {
        "test_acc": metrics["test_acc"],
        "retained_acc": metrics["retained_acc"],
        "forget_acc": metrics["forget_acc"],
        "forget_memorised_acc": metrics["forget_memorised_acc"],
        "mia_auc": metrics["mia_auc"],
        "update_s": update_s,
        "per_request": _per_request(tm, requests),
    }


def _per_request(tm: TextModel, requests: list[list[Record]]) -> list[dict]:
    rows = []
    for records in requests:
        memorised = [r for r in records if r.memorised]
        rows.append(
            {
                "forget_acc": accuracy(tm, records, LABEL_WORDS),
                "forget_memorised_acc": accuracy(tm, memorised, LABEL_WORDS),
            }
        )
    return rows


@dataclass(frozen=True)
class Protocol:
    """What every step starts from: the data, the requests and the trained original."""

    source: str
    train: list[Record]
    heldout: list[Record]
    test: list[Record]
    requests: list[list[Record]]
    original: TextModel


@dataclass
class Served:
    """The state carried from step to step: the stack of per-request layers with their
    fusion statistics, and (with `variants`) the trained-basis stack with its statistics."""

    stack: TextModel
    trained_stack: TextModel | None
    state: FusionState | None = None
    trained_state: FusionStats | None = None


@dataclass(frozen=True)
class Step:
    """One step's sets: the requests so far, their union and the rows retained."""

    k: int
    done: list[list[Record]]
    union: list[Record]
    retained: list[Record]
    sets: EvalSets


def run_sequential(
    config: SequentialConfig,
    progress: bool = True,
    log: Callable[[str], None] = print,
    device: str | torch.device = "auto",
) -> dict:
    """Run the protocol on `device`; returns {"steps": [...], "setup": {...}} ready for JSON,
    and what ran under `run` (kept in memory for the result's envelope)."""
    protocol = _prepare(config, progress, log, device)
    original = protocol.original
    eul = get_method("eul", config=config.bench.eul)
    served = Served(
        stack=original.copy(), trained_stack=original.copy() if config.variants else None
    )
    steps: list[dict] = []
    for k in range(1, config.requests + 1):
        step = _run_step(config, protocol, served, eul, _step_sets(protocol, k), progress)
        for serving in ("original", *NAMES):
            row = step[serving]
            log(
                f"step {k} {serving}: test {row['test_acc']:.3f} forget {row['forget_acc']:.3f} "
                f"memorised {row['forget_memorised_acc']:.3f} MIA {row['mia_auc']:.3f} "
                f"({row['update_s']:.1f} s)"
            )
        steps.append({name: step[name] for name in [*NAMES, *sorted(set(step) - set(NAMES))]})
    return {
        "steps": steps,
        "setup": _setup(config, protocol),
        "run": run_record("sequential", asdict(config), original.device.type),
    }


def _prepare(
    config: SequentialConfig,
    progress: bool,
    log: Callable[[str], None],
    device: str | torch.device,
) -> Protocol:
    """The data split, the requests chosen, and the original trained on everything."""
    bench = config.bench
    records, source = load_bench_records(bench)
    train, heldout, test = split_records(records, seed=bench.seed)
    train, requests = choose_requests(
        train, config.requests, bench.forget_share, bench.flip_share, bench.seed
    )
    log(
        f"data: {source}; train {len(train)}, requests "
        + ", ".join(f"{len(r)} rows ({sum(x.memorised for x in r)} memorised)" for r in requests)
    )
    original = TextModel.create([r.text for r in train] + list(LABEL_WORDS), bench.spec)
    original.to(device)  # copies and the oracle follow it there
    started = time.perf_counter()
    train_full(original, train, bench.train, "original", progress)
    log(f"original trained in {time.perf_counter() - started:.1f} s")
    return Protocol(source, train, heldout, test, requests, original)


def _step_sets(protocol: Protocol, k: int) -> Step:
    done = protocol.requests[:k]
    union = [r for request in done for r in request]
    gone = {r.record_id for r in union}
    retained = [r for r in protocol.train if r.record_id not in gone]
    sets = EvalSets(test=protocol.test, retained=retained, forget=union, unseen=protocol.heldout)
    return Step(k, done, union, retained, sets)


def _run_step(
    config: SequentialConfig,
    protocol: Protocol,
    served: Served,
    eul: object,
    at: Step,
    progress: bool,
) -> dict[str, dict]:
    """Step k: every way of serving the requests so far, measured on the same sets."""
    bench, original, k = config.bench, protocol.original, at.k
    step: dict[str, dict] = {"original": _measure(original, at.sets, at.done, 0.0)}

    # one layer per request, on top of the earlier ones
    name = f"request-{k}"
    stack = served.stack
    layers = stack.unlearning_layers()
    layers.set_active([f"request-{i}" for i in range(1, k)])
    # held off the earlier requests' tokens through their statistics (`keep_weight`)
    state = served.state
    keep = keep_grams(state.stats) if state is not None and bench.eul.keep_weight else None
    task = ForgetTask(protocol.requests[k - 1], at.retained, protocol.heldout, name=name, keep=keep)
    result = eul.run(stack, task, progress)
    step["stacked"] = _measure(stack, at.sets, at.done, result.update_s)
    step["fused"] = _fuse_step(config, served, name, task.forget, at, result.update_s)
    if config.variants:
        step.update(
            _other_fusions(config, stack, served.state, at.retained, at.sets, at.done, name)
        )
        served.trained_stack, served.trained_state = _trained_basis_step(
            config,
            original,
            served.trained_stack,
            served.trained_state,
            task,
            at.sets,
            at.done,
            step,
            progress,
        )

    # one layer retrained on everything asked so far
    single = original.copy()
    union_task = ForgetTask(
        forget=at.union, retained=at.retained, heldout=protocol.heldout, name="all"
    )
    result = eul.run(single, union_task, progress)
    step["sequential"] = _measure(single, at.sets, at.done, result.update_s)

    # the oracle: retrained without every request so far
    oracle = get_method("retrain", train=bench.train).run(original, union_task, progress)
    step["oracle"] = _measure(oracle.model, at.sets, at.done, oracle.update_s)
    return step


def _fuse_step(
    config: SequentialConfig,
    served: Served,
    name: str,
    forget: list[Record],
    at: Step,
    train_s: float,
) -> dict:
    """Fuse the stack into one layer: add this request's statistics, solve; the fused layer
    measured alone, its time the layer's training plus the fusion."""
    stack = served.stack
    layers = stack.unlearning_layers()
    started = time.perf_counter()
    stats = capture_statistics(stack, name, forget, space="features")
    if served.state is None:
        served.state = FusionState.empty(layers, layers.configs[name])
    state = served.state
    state.add(layers, name, stats)
    anchor = None
    if config.anchor_weight > 0:
        anchor = anchor_statistics(stack, at.retained[: config.anchor_rows], basis_of=name)
    matrices = fuse_shared(state, config.fusion, config.ridge, anchor, config.anchor_weight)
    if FUSED in layers.layers:
        layers.remove_layer(FUSED)
    add_shared_fused_layer(layers, FUSED, state.config, matrices)
    fuse_s = time.perf_counter() - started
    with layers.only([FUSED]):
        row = _measure(stack, at.sets, at.done, train_s + fuse_s)
    row["fuse_s"] = fuse_s
    return row


def _setup(config: SequentialConfig, protocol: Protocol) -> dict:
    """The protocol's data and settings, as the result reports them."""
    bench, requests = config.bench, protocol.requests
    return {
        "data": protocol.source,
        "train_rows": len(protocol.train),
        "request_rows": [len(r) for r in requests],
        "request_memorised_rows": [sum(x.memorised for x in r) for r in requests],
        "fusion": config.fusion,
        "anchor_weight": config.anchor_weight,
        "ridge": config.ridge,
        "variants": [name for name, _, _ in OTHER_FUSIONS] if config.variants else [],
        "layer": asdict(bench.eul.layer),
        "eul": {k: v for k, v in asdict(bench.eul).items() if k != "layer"},
        "quick": bench.quick,
        "seed": bench.seed,
    }


OTHER_FUSIONS = (("fused_fit", "fit", 0.0), ("fused_anchored", "sum", 0.5))


def _other_fusions(
    config: SequentialConfig,
    stack: TextModel,
    state: FusionState,
    retained: list[Record],
    sets: EvalSets,
    done: list[list[Record]],
    basis_of: str,
) -> dict[str, dict]:
    """The same shared-basis layers fused other ways: the paper's per-layer fit, and the sum
    held toward no change on retained tokens by an anchor."""
    layers = stack.unlearning_layers()
    with layers.only([]):
        anchor = anchor_statistics(stack, retained[: config.anchor_rows], basis_of=basis_of)
    rows = {}
    for serving, mode, weight in OTHER_FUSIONS:
        started = time.perf_counter()
        matrices = fuse_shared(state, mode, config.ridge, anchor if weight else None, weight)
        fuse_s = time.perf_counter() - started
        add_shared_fused_layer(layers, serving, state.config, matrices)
        with layers.only([serving]):
            rows[serving] = _measure(stack, sets, done, fuse_s)
        layers.remove_layer(serving)
    return rows


def _trained_basis_step(
    config: SequentialConfig,
    original: TextModel,
    stack: TextModel,
    stats: FusionStats | None,
    task: ForgetTask,
    sets: EvalSets,
    done: list[list[Record]],
    step: dict[str, dict],
    progress: bool,
) -> tuple[TextModel, FusionStats]:
    """The paper's layer (both projections trained) stacked, and fused by the linear closed
    form W = (sum G_i)^-1 sum G_i W_i over hidden states: the form this pipeline replaced."""
    bench = config.bench
    trained = replace(bench.eul, layer=replace(bench.eul.layer, basis="trained", width=32))
    layers = stack.unlearning_layers()
    earlier = [n for n in layers.layers if n.startswith("request-")]
    layers.set_active(earlier)
    task = replace(task, keep=None)  # feature statistics exist in a shared basis only
    result = get_method("eul", config=trained).run(stack, task, progress)
    step["stacked_trained_basis"] = _measure(stack, sets, done, result.update_s)
    started = time.perf_counter()
    added = capture_statistics(stack, task.name, task.forget)
    stats = added if stats is None else stats + added
    matrices = fuse(stats, ridge=config.ridge)
    fuse_s = time.perf_counter() - started
    if "linear" in layers.layers:
        layers.remove_layer("linear")
    add_fused_layer(layers, "linear", matrices)
    with layers.only(["linear"]):
        step["fused_linear_trained_basis"] = _measure(stack, sets, done, result.update_s + fuse_s)
    layers.set_active([*earlier, task.name])
    return stack, stats


def after_last_step(result: dict) -> dict:
    """A protocol result as a benchmark report: each way of serving after the last request
    under `methods` (what `eul.bench.seeds` sums up over seeds), the steps kept beside it."""
    if not result["steps"]:
        raise ValueError("the protocol ran no step")
    return {"methods": dict(result["steps"][-1]), **result}


def format_sequential(result: dict) -> str:
    """One Markdown table: a row per step and way of serving."""
    lines = [
        "| step | serving | test | retained | forget | memorised | MIA AUC | update s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for k, step in enumerate(result["steps"], start=1):
        for name in [*NAMES, *(n for n in step if n not in NAMES)]:
            row = step[name]
            lines.append(
                f"| {k} | {name} | {row['test_acc']:.3f} | {row['retained_acc']:.3f} | "
                f"{row['forget_acc']:.3f} | {row['forget_memorised_acc']:.3f} | "
                f"{row['mia_auc']:.3f} | {row['update_s']:.1f} |"
            )
    return "\n".join(lines)


def draw_sequential(report: dict, path: str | Path) -> list[Path]:
    """The protocol's figure beside its JSON at `path` ({"sequential": steps, ...}): each
    metric per step, a line per way of serving. Nothing when there is no step."""
    from eul.evaluate.plots import plot_sequential, sibling

    steps = report["sequential"]
    if not steps:
        return []
    title = "requests one by one: each way of serving against the oracle"
    return [plot_sequential(steps, sibling(path, "steps"), title)]
