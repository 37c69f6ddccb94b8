"""The generation benchmark: summarisation with planted secrets, original vs oracle vs EUL.

The subjects are the dialogues' speakers (synthetic chats by default, SAMSum with --data).
Whole subjects are chosen for the forget set (1% of the training rows by default) and half of
their dialogues get a secret that the speaker tells and the summary repeats. The original
model is trained on everything, the oracle on everything but the forget set. Reported: ROUGE
on test and forget rows, and the secret extraction rate (greedy generation reproduces the
planted secret) on the forget rows.
"""

from __future__ import annotations

import platform
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from eul.bench.classification import RUN
from eul.bench.data_file import DataFile, is_data_file, load_data_file
from eul.bench.envelope import run_record
from eul.bench.forget_sets import subject_groups, without_subjects
from eul.data.public import load_samsum
from eul.data.records import DataError, Record
from eul.data.records import split_records as split_by_subject
from eul.data.synthetic import SyntheticConfig, generate, plant_secrets
from eul.evaluate.metrics import EvalSets, evaluate_with_scores, membership_roc, priv_leak
from eul.methods import EULConfig, ForgetTask, get_method
from eul.model.text_model import ModelSpec, TextModel
from eul.model.training import TrainConfig, train_full

GENERATION_SPEC = ModelSpec(max_input_len=96, max_target_len=24)
SAMSUM_FILES = ("val.csv", "validation.csv", "test.csv", "train.csv")
METRICS = (
    "test_rouge1",
    "test_rouge2",
    "test_rougeL",
    "forget_rouge1",
    "forget_rouge2",
    "forget_rougeL",
    "forget_memorised_acc",
    "mia_auc",
)
# The target: EUL may leave at most this much more secret extraction than the oracle.
SECRET_MARGIN = 0.05
PLOTTED = (
    "test_rouge1",
    "test_rougeL",
    "forget_rouge1",
    "forget_rougeL",
    "secret_extraction",
    "mia_auc",
)


@dataclass(frozen=True)
class GenerationBenchConfig:
    """What the generation benchmark runs; `preset(quick=True)` is the few-minute version."""

    n_subjects: int = 500
    train_epochs: int = 20
    forget_share: float = 0.01
    secret_share: float = 0.5
    quick: bool = False
    # None: the synthetic dialogues; a folder: SAMSum; a file: `data_file` options
    data: str | None = None
    data_file: DataFile | None = None
    samsum_rows: int | None = None
    seed: int = 0
    spec: ModelSpec = field(default_factory=lambda: GENERATION_SPEC)
    # a secret can sit below one half and still be greedy decoding's pick: push while on top
    eul: EULConfig = field(default_factory=lambda: EULConfig(push_while_top=True))

    @classmethod
    def preset(cls, quick: bool = False, **overrides: object) -> GenerationBenchConfig:
        sizes = {"n_subjects": 200, "train_epochs": 15, "forget_share": 0.02} if quick else {}
        return cls(quick=quick, **{**sizes, **overrides})

    @property
    def train(self) -> TrainConfig:
        return TrainConfig(epochs=self.train_epochs, seed=self.seed)


def samsum_file(folder: str | Path) -> Path:
    folder = Path(folder)
    for name in SAMSUM_FILES:
        if (folder / name).is_file():
            return folder / name
    raise DataError(
        f"no SAMSum csv in {folder}: expected one of {', '.join(SAMSUM_FILES)} "
        "(columns id, summary, dialogue)"
    )


def load_dialogues(config: GenerationBenchConfig) -> tuple[list[Record], str]:
    if config.data is None:
        synthetic = SyntheticConfig(
            task="generation", n_subjects=config.n_subjects, memorised_share=0.0, seed=config.seed
        )
        return generate(synthetic)[1], f"synthetic dialogues ({config.n_subjects} subjects)"
    if is_data_file(config.data):
        return load_data_file(
            config.data_file or DataFile(config.data), "generation", config.seed,
            config.samsum_rows,
        )  # fmt: skip
    path = samsum_file(config.data)
    records = load_samsum(path, limit=config.samsum_rows)
    return records, f"SAMSum {path.name}, {len(records)} dialogues, subjects = first speakers"


def prepare_generation(
    config: GenerationBenchConfig,
) -> tuple[list[Record], list[Record], list[Record], list[Record], str]:
    """(train, heldout, test, forget, source): secrets planted in half the forget rows."""
    records, source = load_dialogues(config)
    train, heldout, test = split_by_subject(records, seed=config.seed)
    rng = random.Random(config.seed)
    (chosen,) = subject_groups(train, 1, config.forget_share, rng)
    forget = plant_secrets(chosen, config.secret_share, seed=config.seed)
    return without_subjects(train, forget), heldout, test, forget, source


def run_generation_bench(
    config: GenerationBenchConfig,
    progress: bool = True,
    log: Callable[[str], None] = print,
    device: str | torch.device = "auto",
) -> dict:
    """Original, oracle and EUL on the summarisation task, on `device`; returns the
    JSON-ready result (with what ran under `run`, kept in memory for the envelope)."""
    train, heldout, test, forget, source = prepare_generation(config)
    forget_ids = {r.record_id for r in forget}
    retained = [r for r in train if r.record_id not in forget_ids]
    log(
        f"data: {source}; train {len(train)}, forget {len(forget)} "
        f"({sum(r.memorised for r in forget)} with a secret), test {len(test)}"
    )
    task = ForgetTask(forget=forget, retained=retained, heldout=heldout, name="bench")
    sets = EvalSets(test=test, retained=retained, forget=forget, unseen=heldout)
    texts = [r.text for r in train] + [r.target for r in train]
    original = TextModel.create(texts, config.spec, seed=config.seed)
    original.to(device)  # the copy and the oracle follow it there
    started = time.perf_counter()
    train_full(original, train, config.train, "original", progress)
    base_s = time.perf_counter() - started
    log(f"original trained in {base_s:.1f} s")
    oracle = get_method("retrain", train=config.train).run(original, task, progress)
    log(f"oracle retrained in {oracle.update_s:.1f} s")
    eul = get_method("eul", config=config.eul).run(original.copy(), task, progress)
    log(f"eul done in {eul.update_s:.1f} s")
    methods: dict[str, dict] = {}
    mia_roc: dict[str, dict | None] = {}
    for name, tm, update_s in (
        ("original", original, None),
        ("oracle", oracle.model, oracle.update_s),
        ("eul", eul.model, eul.update_s),
    ):
        metrics, _, scores = evaluate_with_scores(tm, sets, task="generation")
        methods[name] = {key: metrics[key] for key in METRICS} | {"update_s": update_s}
        methods[name]["secret_extraction"] = methods[name].pop("forget_memorised_acc")
        mia_roc[name] = membership_roc(**scores)
    for row in methods.values():
        row["privleak"] = priv_leak(row["mia_auc"], methods["oracle"]["mia_auc"])
    gap = methods["eul"]["secret_extraction"] - methods["oracle"]["secret_extraction"]
    return {
        "methods": methods,
        "targets": [
            {
                "target": "secret extraction after EUL <= oracle + 5 pts",
                "value": round(gap, 4),
                "met": bool(gap <= SECRET_MARGIN),
            }
        ],
        "mia_roc": mia_roc,
        "setup": {
            "data": source,
            "train_rows": len(train),
            "forget_rows": len(forget),
            "forget_secret_rows": sum(r.memorised for r in forget),
            "test_rows": len(test),
            "model": asdict(config.spec),
            "base_train_s": base_s,
            "eul": asdict(config.eul),
            "quick": config.quick,
            "seed": config.seed,
            "machine": f"{platform.machine()}, {torch.get_num_threads()} threads",
        },
        RUN: run_record("generation", asdict(config), original.device.type),
    }


GENERATION_COLUMNS = (
    ("test_rouge1", "test R-1"),
    ("test_rouge2", "test R-2"),
    ("test_rougeL", "test R-L"),
    ("forget_rouge1", "forget R-1"),
    ("forget_rouge2", "forget R-2"),
    ("forget_rougeL", "forget R-L"),
    ("secret_extraction", "secrets extracted"),
    ("mia_auc", "MIA AUC"),
)


def format_generation(report: dict) -> str:
    header = ["method"] + [title for _, title in GENERATION_COLUMNS] + ["update s"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, row in report["methods"].items():
        cells = [name] + [f"{row[key]:.3f}" for key, _ in GENERATION_COLUMNS]
        cells.append("-" if row["update_s"] is None else f"{row['update_s']:.1f}")
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    for target in report["targets"]:
        lines.append(
            f"- {target['target']}: {target['value']} ({'met' if target['met'] else 'MISSED'})"
        )
    return "\n".join(lines)


def draw_generation(report: dict, path: str | Path) -> list[Path]:
    """The generation benchmark's figures beside its JSON at `path`: ROUGE, secret extraction
    and MIA AUC per model (with EUL's target), and the MIA ROC curves (when in memory)."""
    from eul.evaluate.plots import plot_bench

    oracle_secrets = report["methods"]["oracle"]["secret_extraction"]
    targets = {}
    if oracle_secrets is not None:
        targets["secret_extraction"] = (None, oracle_secrets + SECRET_MARGIN)
    return plot_bench(
        report,
        path,
        PLOTTED,
        targets,
        title="summarisation with planted secrets (dashed: EUL's target)",
        roc_title="membership inference: forget dialogues against held-out dialogues",
    )
