"""The benchmark: every method against the retrained oracle, in the shape of the paper's Table 2.

Protocol (the paper's mislabelled-data setting, with subjects): the forget set is 1% of the
training rows, made of whole subjects chosen at random; half of their rows carry a flipped
label that the original model can only reproduce by memorising it. The oracle is retrained
from scratch on everything else with the same recipe as the original.
"""

from __future__ import annotations

import math
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from eul.bench.attacks import AttackConfig, attack_targets, format_attacks, run_attacks
from eul.bench.data_file import DataFile, is_data_file, load_data_file
from eul.bench.envelope import run_record, write_result
from eul.bench.forget_sets import choose_forget
from eul.data.public import load_sst2
from eul.data.records import LABEL_WORDS, DataError, Record, split_records
from eul.data.synthetic import SyntheticConfig, generate
from eul.evaluate.metrics import EvalSets, evaluate_with_scores, membership_roc, priv_leak
from eul.methods import EULConfig, ForgetTask, get_method
from eul.model.memory import measure_peak_mb
from eul.model.text_model import ModelSpec, TextModel
from eul.model.training import TrainConfig, train_full
from eul.runtime.source import UNKNOWN

METHOD_ORDER = ("original", "oracle", "finetune", "reverse_gradient", "eul")
MEMORY_PROBE_STEPS = 30
# The targets' tolerances: utility may fall 1 point below the original, forget metrics and
# the MIA AUC may stray 5 points from the oracle's.
UTILITY_DROP = 0.01
ORACLE_GAP = 0.05
# What the metrics plot draws, in this order (all shares or AUCs, on one 0-1 scale).
PLOTTED = ("test_acc", "retained_acc", "forget_acc", "forget_memorised_acc", "mia_auc")
# Report keys kept in memory for the plots but not written to the JSON: the ROC curves of
# every model would outweigh the rest of a file people read and compare; the PNG keeps them.
# `run` says what ran (benchmark, settings, device) for the result's envelope.
RUN = "run"
IN_MEMORY = ("mia_roc", RUN)


@dataclass(frozen=True)
class BenchConfig:
    """What the benchmark runs; `preset(quick=True)` is the few-minute version."""

    n_subjects: int = 1400
    sst2_rows: int = 10000
    train_epochs: int = 15
    quick: bool = False
    # None: the synthetic reviews; a folder: SST-2 (train.tsv); a file: `data_file` options
    data: str | None = None
    data_file: DataFile | None = None
    seed: int = 0
    forget_share: float = 0.01
    flip_share: float = 0.5
    variants: bool = False
    # original, oracle and EUL attacked (layer removal, int8, 4-bit, relearning): attacks.py
    attacks: bool = True
    spec: ModelSpec = field(default_factory=ModelSpec)
    eul: EULConfig = field(default_factory=EULConfig)

    @classmethod
    def preset(cls, quick: bool = False, **overrides: object) -> BenchConfig:
        sizes = {"n_subjects": 400, "sst2_rows": 3000, "train_epochs": 12} if quick else {}
        return cls(quick=quick, **{**sizes, **overrides})

    @property
    def train(self) -> TrainConfig:
        return TrainConfig(epochs=self.train_epochs, seed=self.seed)


@dataclass
class Prepared:
    train: list[Record]
    heldout: list[Record]
    test: list[Record]
    forget: list[Record]
    source: str

    @property
    def retained(self) -> list[Record]:
        forget_ids = {r.record_id for r in self.forget}
        return [r for r in self.train if r.record_id not in forget_ids]


def load_bench_records(config: BenchConfig) -> tuple[list[Record], str]:
    if config.data is None:
        synthetic = SyntheticConfig(n_subjects=config.n_subjects, seed=config.seed)
        return generate(synthetic)[1], f"synthetic reviews ({config.n_subjects} subjects)"
    if is_data_file(config.data):
        return load_data_file(
            config.data_file or DataFile(config.data), "classification", config.seed,
            config.sst2_rows,
        )  # fmt: skip
    folder = Path(config.data)
    if not folder.is_dir():
        raise DataError(f"no data folder at {folder}: pass an SST-2 folder holding train.tsv")
    # Like the probe: sentences of 4+ words (SST-2 also holds every sub-phrase as a row).
    records = [r for r in load_sst2(folder, seed=config.seed) if len(r.text.split()) >= 4]
    records = records[: config.sst2_rows]
    return records, f"SST-2 train.tsv, {len(records)} sentences of 4+ words, synthetic subject ids"


def prepare(config: BenchConfig) -> Prepared:
    records, source = load_bench_records(config)
    train, heldout, test = split_records(records, seed=config.seed)
    train, forget = choose_forget(train, config.forget_share, config.flip_share, config.seed)
    return Prepared(train, heldout, test, forget, source)


def _timed(work: Callable[[], object]) -> float:
    started = time.perf_counter()
    work()
    return time.perf_counter() - started


@dataclass(frozen=True)
class Reference:
    """The original model and the oracle, measured: what every method is compared with."""

    original: TextModel
    oracle: TextModel
    base_s: float
    oracle_losses: list[float]
    rows: dict[str, dict[str, float | None]]
    mia_roc: dict[str, dict]
    oracle_peak_mb: float


def run_bench(
    config: BenchConfig,
    progress: bool = True,
    log: Callable[[str], None] = print,
    device: str | torch.device = "auto",
) -> dict:
    """Run every method on `device` and return the JSON-ready result (its `run` key, kept in
    memory only, says what ran for the result's envelope)."""
    data = prepare(config)
    retained = data.retained
    task = ForgetTask(forget=data.forget, retained=retained, heldout=data.heldout, name="bench")
    sets = EvalSets(test=data.test, retained=retained, forget=data.forget, unseen=data.heldout)
    log(
        f"data: {data.source}; train {len(data.train)}, forget {len(data.forget)} "
        f"({sum(r.memorised for r in data.forget)} memorised), test {len(data.test)}, "
        f"held-out {len(data.heldout)}"
    )
    reference = _reference(config, data, task, sets, progress, log, device)
    results = dict(reference.rows)
    mia_roc = dict(reference.mia_roc)
    for name, method in method_runs(config):
        results[name], scores, model = _method_row(method, reference, task, sets, progress)
        if name == "eul":
            mia_roc["eul"] = membership_roc(**scores)
            eul_model = model
        log(f"{name} done in {results[name]['update_s']:.1f} s")

    task_only = get_method("eul", config=replace(config.eul, objective="task_only"))
    memory = {
        "oracle": reference.oracle_peak_mb,
        "layers_task_only": _peak(task_only, reference.original, task),
        "eul": results["eul"]["peak_mem_mb"],
    }
    report = _report(config, data, reference, results, mia_roc, memory)
    report["gate_check"] = _gate_check(config, data, reference, eul_model, sets)
    if config.attacks:
        models = {"original": reference.original, "oracle": reference.oracle, "eul": eul_model}
        report["attacks"] = run_attacks(models, sets, AttackConfig(seed=config.seed), log)
        report["attack_targets"] = attack_targets(report["attacks"])
    return report


def _gate_check(
    config: BenchConfig, data: Prepared, reference: Reference, eul: TextModel, sets: EvalSets
) -> dict[str, dict]:
    """The nightly gates on the original, the oracle, EUL and an over-forgotten model."""
    from eul.bench.gate_check import gate_models, over_forgotten

    over = over_forgotten(reference.original, data.forget, data.retained, config.seed)
    models = {"original": reference.original, "oracle": reference.oracle, "eul": eul}
    return gate_models({**models, "over_forgotten": over}, sets, data.retained)


def _reference(
    config: BenchConfig,
    data: Prepared,
    task: ForgetTask,
    sets: EvalSets,
    progress: bool,
    log: Callable[[str], None],
    device: str | torch.device,
) -> Reference:
    """Train the original on everything, retrain the oracle without the forget set, and
    measure both (the oracle's forget losses are the KS test's reference)."""
    original = TextModel.create([r.text for r in data.train] + list(LABEL_WORDS), config.spec)
    original.to(device)  # copies and the oracle follow it there
    base_s = _timed(lambda: train_full(original, data.train, config.train, "original", progress))
    log(f"original trained in {base_s:.1f} s")

    oracle_method = get_method("retrain", train=config.train)
    oracle = oracle_method.run(original, task, progress)
    log(f"oracle retrained in {oracle.update_s:.1f} s")

    oracle_metrics, oracle_losses, oracle_scores = evaluate_with_scores(oracle.model, sets)
    original_metrics, _, original_scores = evaluate_with_scores(
        original, sets, oracle_forget_losses=oracle_losses
    )
    mia_roc = {
        "original": membership_roc(**original_scores),
        "oracle": membership_roc(**oracle_scores),
    }
    oracle_metrics["ks_p"] = 1.0
    oracle_peak = _peak(oracle_method, original, task)
    rows = {
        "original": {
            **original_metrics,
            "update_s": None,
            "trainable_share": None,
            "peak_mem_mb": oracle_peak,
        },
        "oracle": {
            **oracle_metrics,
            "update_s": oracle.update_s,
            "trainable_share": 1.0,
            "peak_mem_mb": oracle_peak,
        },
    }
    return Reference(original, oracle.model, base_s, oracle_losses, rows, mia_roc, oracle_peak)


def method_runs(config: BenchConfig) -> list[tuple[str, object]]:
    """The methods measured against the oracle, by name: the baselines, EUL, and with
    `config.variants` EUL's variants."""
    runs: list[tuple[str, object]] = [
        (
            "finetune",
            get_method("finetune", train=TrainConfig(epochs=2, lr=2e-4, seed=config.seed)),
        ),
        ("reverse_gradient", get_method("reverse_gradient", seed=config.seed)),
        ("eul", get_method("eul", config=config.eul)),
    ]
    if config.variants:
        # The paper's objective with its own weights (alpha 0.8), no gate; then NPO in place
        # of unlikelihood; then the paper's alpha with the unlikelihood term.
        paper = replace(config.eul, objective="paper", reference="none", alpha=0.8)
        runs.append(("eul_paper", get_method("eul", config=paper)))
        runs.append(("eul_npo", get_method("eul", config=replace(config.eul, objective="npo"))))
        runs.append(("eul_alpha_0.8", get_method("eul", config=replace(config.eul, alpha=0.8))))
        # The paper's layer: both projections trained (width 32, about the same share of
        # trainable parameters as the default shared basis of width 64).
        trained = replace(config.eul.layer, basis="trained", width=32)
        runs.append(
            ("eul_trained_basis", get_method("eul", config=replace(config.eul, layer=trained)))
        )
    return runs


def _method_row(
    method: object, reference: Reference, task: ForgetTask, sets: EvalSets, progress: bool
) -> tuple[dict[str, float | None], dict, TextModel]:
    """One method run on a copy of the original: its metrics and costs, the membership
    scores its MIA ROC is drawn from, and the model (which the attacks work on)."""
    original = reference.original
    result = method.run(original.copy(), task, progress)
    metrics, _, scores = evaluate_with_scores(
        result.model, sets, oracle_forget_losses=reference.oracle_losses
    )
    row = {
        **metrics,
        "update_s": result.update_s,
        "trainable_share": result.trainable_share,
        "peak_mem_mb": _peak(method, original, task),
        "epochs_run": len(result.history) or None,
    }
    return row, scores, result.model


def _report(
    config: BenchConfig,
    data: Prepared,
    reference: Reference,
    results: dict[str, dict],
    mia_roc: dict[str, dict],
    memory: dict[str, float],
) -> dict:
    """The JSON-ready result: methods, variants, memory, targets and the setup."""
    original = reference.original
    oracle_auc = results["oracle"]["mia_auc"]
    results = {
        k: {**v, "privleak": priv_leak(v["mia_auc"], oracle_auc)} for k, v in results.items()
    }
    methods = {k: v for k, v in results.items() if k in METHOD_ORDER}
    variants = {k: v for k, v in results.items() if k not in METHOD_ORDER}
    return {
        "methods": methods,
        "variants": variants,
        "memory": {**memory, "eul_over_task_only": memory["eul"] / memory["layers_task_only"]},
        "targets": check_targets(methods, memory),
        "mia_roc": mia_roc,
        "setup": {
            "data": data.source,
            "train_rows": len(data.train),
            "forget_rows": len(data.forget),
            "forget_memorised_rows": sum(r.memorised for r in data.forget),
            "test_rows": len(data.test),
            "heldout_rows": len(data.heldout),
            "model": asdict(config.spec),
            "base_train_s": reference.base_s,
            "base_parameters": sum(p.numel() for p in original.model.parameters()),
            "eul": asdict(config.eul),
            "quick": config.quick,
            "seed": config.seed,
            "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, "
            + original.device.type,
        },
        RUN: run_record("classification", asdict(config), original.device.type),
    }


def _peak(method: object, original: TextModel, task: ForgetTask) -> float:
    """Peak tensor memory of a few representative steps of `method` (weights included)."""
    model = original.copy()
    _, peak = measure_peak_mb(
        lambda: method.run(model, task, progress=False, max_steps=MEMORY_PROBE_STEPS), model.model
    )
    return peak


def check_targets(methods: dict, memory: dict) -> list[dict[str, object]]:
    """The issue's targets, each with the measured value and whether it is met."""
    eul, oracle, original = methods["eul"], methods["oracle"], methods["original"]
    rows = [
        (
            "update time <= 1/10 of retrain",
            eul["update_s"] / oracle["update_s"],
            lambda v: v <= 0.1,
        ),
        (
            "test acc >= original - 1 pt",
            eul["test_acc"] - original["test_acc"],
            lambda v: v >= -UTILITY_DROP,
        ),
        (
            "retained acc >= original - 1 pt",
            eul["retained_acc"] - original["retained_acc"],
            lambda v: v >= -UTILITY_DROP,
        ),
        (
            "forget acc within 5 pts of oracle",
            eul["forget_acc"] - oracle["forget_acc"],
            lambda v: abs(v) <= ORACLE_GAP,
        ),
        (
            "memorised acc within 5 pts of oracle",
            eul["forget_memorised_acc"] - oracle["forget_memorised_acc"],
            lambda v: abs(v) <= ORACLE_GAP,
        ),
        (
            "MIA AUC within 0.05 of oracle",
            eul["mia_auc"] - oracle["mia_auc"],
            lambda v: abs(v) <= ORACLE_GAP,
        ),
        (
            "peak memory <= 1.25x task-only layers",
            memory["eul"] / memory["layers_task_only"],
            lambda v: v <= 1.25,
        ),
    ]
    return [{"target": t, "value": round(v, 4), "met": bool(ok(v))} for t, v, ok in rows]


def target_bands(methods: dict) -> dict[str, tuple[float | None, float | None]]:
    """Where EUL's value of each metric must fall to meet its target, as (low, high) on the
    metric's own scale: the lines the metrics plot draws."""
    oracle, original = methods["oracle"], methods["original"]
    bands: dict[str, tuple[float | None, float | None]] = {}
    for key in ("test_acc", "retained_acc"):
        bands[key] = (original[key] - UTILITY_DROP, None)
    for key in ("forget_acc", "forget_memorised_acc", "mia_auc"):
        if oracle.get(key) is not None and not _nan(oracle[key]):
            bands[key] = (oracle[key] - ORACLE_GAP, oracle[key] + ORACLE_GAP)
    return bands


def draw_report(report: dict, path: str | Path) -> list[Path]:
    """The benchmark's figures beside its JSON at `path`: every method's metrics with EUL's
    targets, and the MIA ROC curves of the original, EUL and the oracle (when in memory)."""
    from eul.evaluate.plots import plot_bench

    return plot_bench(
        report,
        path,
        PLOTTED,
        target_bands(report["methods"]),
        title="every method against the oracle (dashed: EUL's targets)",
        roc_title="membership inference: forget rows against held-out rows",
    )


COLUMNS = (
    ("test_acc", "test", "{:.3f}"),
    ("retained_acc", "retained", "{:.3f}"),
    ("forget_acc", "forget", "{:.3f}"),
    ("forget_memorised_acc", "memorised", "{:.3f}"),
    ("mia_auc", "MIA AUC", "{:.3f}"),
    ("privleak", "PrivLeak", "{:+.3f}"),
    ("ks_p", "KS p", "{:.3g}"),
    ("update_s", "update s", "{:.1f}"),
    ("trainable_share", "trainable", "{:.2%}"),
    ("peak_mem_mb", "peak MB", "{:.0f}"),
)


def format_table(report: dict) -> str:
    """The methods as a Markdown table, with each metric's distance to the oracle."""
    rows = {**report["methods"], **report.get("variants", {})}
    oracle = report["methods"]["oracle"]
    header = ["method"] + [title for _, title, _ in COLUMNS] + ["|Δ forget|", "|Δ MIA|"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, row in rows.items():
        cells = [name]
        for key, _, fmt in COLUMNS:
            value = row.get(key)
            cells.append("-" if value is None or _nan(value) else fmt.format(value))
        cells.append(f"{abs(row['forget_acc'] - oracle['forget_acc']):.3f}")
        cells.append(f"{abs(row['mia_auc'] - oracle['mia_auc']):.3f}")
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    for target in report["targets"]:
        mark = "met" if target["met"] else "MISSED"
        lines.append(f"- {target['target']}: {target['value']} ({mark})")
    if "gate_check" in report:
        from eul.bench.gate_check import format_gate_check

        lines += ["", "The nightly gates, each model against the original as production:", ""]
        lines.append(format_gate_check(report["gate_check"]))
    if "attacks" in report:
        lines += ["", format_attacks(report)]
    return "\n".join(lines)


def _nan(value: object) -> bool:
    return isinstance(value, float) and math.isnan(value)


def save_report(report: dict, path: str | Path) -> list[Path]:
    """The benchmark's JSON, Markdown table and figures; returns every file written."""
    return save_report_as(report, format_table(report), path, draw_report)


def save_report_as(
    report: dict,
    table: str,
    path: str | Path,
    draw: Callable[[dict, Path], list[Path]] | None = None,
) -> list[Path]:
    """The report as JSON at `path` in the result envelope (its figures: the report less the
    IN_MEMORY keys; what ran: its `run` key), its table as Markdown beside it, and the
    figures `draw` makes of it; returns every file written."""
    path = Path(path)
    run = report.get(RUN) or {}
    figures = {k: v for k, v in report.items() if k not in IN_MEMORY}
    benchmark = run.get("benchmark", UNKNOWN)
    written = write_result(
        path, benchmark, figures, table, run.get("settings"), run.get("device", "cpu")
    )
    return [*written, *(draw(report, path) if draw else [])]
