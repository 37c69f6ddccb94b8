"""Small deletion requests: one person's 1, 5 or 20 rows, each unlearned on its own.

The classification benchmark forgets one set of 1% of the rows; real requests are smaller.
Here, for each size k, `requests` disjoint requests of k rows are chosen: k rows of one
subject where a subject has that many (a 1-row request leaves the subject's other rows in
training), otherwise whole subjects filled up to k and cut there. round(flip_share * k) rows
of each request carry a flipped label that only memorising reproduces.

The original is trained once on every training row. To save retraining once per request, ONE
oracle is retrained without the rows of all requests together; each request is then unlearned
alone from the original with EUL and measured on its own rows, beside the original and that
oracle on the same rows.
"""

from __future__ import annotations

import platform
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch
from tqdm.auto import tqdm

from eul.bench.classification import (
    ORACLE_GAP,
    UTILITY_DROP,
    BenchConfig,
    load_bench_records,
)
from eul.bench.envelope import run_record
from eul.bench.forget_sets import flip_labels
from eul.bench.seeds import spread
from eul.data.records import LABEL_WORDS, DataError, Record, split_records
from eul.evaluate.metrics import accuracy, forget_metrics, membership_scores, roc_auc
from eul.methods import ForgetTask, get_method
from eul.model.text_model import TextModel
from eul.model.training import train_full

MODELS = ("original", "oracle", "eul")
# The figures measured on each request's rows (test accuracy on the whole test set), with
# how the table heads them.
FIGURES = (
    ("test_acc", "test"),
    ("forget_acc", "forget"),
    ("forget_memorised_acc", "memorised"),
    ("mia_auc", "MIA AUC"),
    ("update_s", "update s"),
)


@dataclass(frozen=True)
class SmallRequestsConfig:
    """The protocol: the benchmark it builds on, the request sizes and how many of each."""

    bench: BenchConfig = field(default_factory=BenchConfig)
    rows: tuple[int, ...] = (5, 20)
    requests: int = 10

    def __post_init__(self) -> None:
        if not self.rows or min(self.rows) < 1:
            raise ValueError(f"rows must be one or more sizes of at least 1, got {self.rows}")
        if len(set(self.rows)) != len(self.rows):
            raise ValueError(f"rows must not repeat a size, got {self.rows}")
        if self.requests < 1:
            raise ValueError(f"requests must be at least 1, got {self.requests}")

    @property
    def flip_share(self) -> float:
        """The share of each request's rows made memorised (flipped labels)."""
        return self.bench.flip_share


@dataclass(frozen=True)
class SmallPrepared:
    """The split data, with the requests' flipped rows in `train`; requests by size."""

    train: list[Record]
    heldout: list[Record]
    test: list[Record]
    requests: dict[int, list[list[Record]]]
    source: str

    @property
    def request_rows(self) -> list[Record]:
        """Every request's rows, all sizes together: what the one oracle never sees."""
        return [r for requests in self.requests.values() for request in requests for r in request]

    def without(self, rows: list[Record]) -> list[Record]:
        """The training rows less `rows`."""
        gone = {r.record_id for r in rows}
        return [r for r in self.train if r.record_id not in gone]


def choose_small_requests(
    train: list[Record], rows: tuple[int, ...], n: int, flip_share: float, seed: int
) -> tuple[list[Record], dict[int, list[list[Record]]]]:
    """For each size k in `rows`, n requests of exactly k ordinary rows, no subject in two
    requests; round(flip_share * k) rows of each flipped.

    Returns the training rows with the flipped rows in place of the originals, and the
    requests by size.
    """
    rng = random.Random(seed)
    by_subject: dict[str, list[Record]] = {}
    for record in train:
        if not record.memorised:
            by_subject.setdefault(record.subject_id, []).append(record)
    unused = sorted(by_subject)
    rng.shuffle(unused)
    requests = {
        k: [flip_labels(_take_rows(k, unused, by_subject, rng), flip_share, rng) for _ in range(n)]
        for k in rows
    }
    flipped = {r.record_id: r for chosen in requests.values() for req in chosen for r in req}
    return [flipped.get(r.record_id, r) for r in train], requests


def _take_rows(
    k: int, unused: list[str], by_subject: dict[str, list[Record]], rng: random.Random
) -> list[Record]:
    """k rows of the first unused subject that has k; failing that, whole unused subjects
    until k rows, the last one cut. The subjects taken are removed from `unused`."""
    single = next((s for s in unused if len(by_subject[s]) >= k), None)
    if single is not None:
        unused.remove(single)
        return rng.sample(by_subject[single], k)
    taken: list[Record] = []
    while len(taken) < k:
        if not unused:
            raise DataError(f"not enough subjects left for another request of {k} rows")
        subject = unused.pop(0)
        taken.extend(rng.sample(by_subject[subject], len(by_subject[subject])))
    return taken[:k]


def prepare_small_requests(config: SmallRequestsConfig) -> SmallPrepared:
    """The data loaded and split as the classification benchmark does, and the requests."""
    bench = config.bench
    records, source = load_bench_records(bench)
    train, heldout, test = split_records(records, seed=bench.seed)
    train, requests = choose_small_requests(
        train, config.rows, config.requests, config.flip_share, bench.seed
    )
    return SmallPrepared(train, heldout, test, requests, source)


@dataclass(frozen=True)
class Measured:
    """What a model's request figures share: its test accuracy and its held-out scores."""

    model: TextModel
    test_acc: float
    heldout_loss: list[float]

    @classmethod
    def of(cls, model: TextModel, test: list[Record], heldout: list[Record]) -> Measured:
        loss = membership_scores(model, heldout)["loss"]
        return cls(model, accuracy(model, test, LABEL_WORDS), loss)

    def figures(self, request: list[Record]) -> dict[str, float]:
        """Forget and memorised accuracy on the request's rows, the MIA AUC of its rows
        against the held-out rows, and the test accuracy."""
        loss = membership_scores(self.model, request)["loss"]
        return {
            "test_acc": self.test_acc,
            **forget_metrics(self.model, request),
            "mia_auc": roc_auc(loss, self.heldout_loss),
        }


def run_small_requests(
    config: SmallRequestsConfig,
    progress: bool = True,
    log: Callable[[str], None] = print,
    device: str | torch.device = "auto",
) -> dict:
    """Run the protocol on `device`; returns the JSON-ready report (its `run` key, kept in
    memory only, says what ran for the result's envelope)."""
    bench = config.bench
    data = prepare_small_requests(config)
    union = data.request_rows
    log(
        f"data: {data.source}; train {len(data.train)}, requests {len(union)} rows "
        f"({sum(r.memorised for r in union)} memorised), test {len(data.test)}, "
        f"held-out {len(data.heldout)}"
    )
    original = TextModel.create([r.text for r in data.train] + list(LABEL_WORDS), bench.spec)
    original.to(device)  # copies and the oracle follow it there
    started = time.perf_counter()
    train_full(original, data.train, bench.train, "original", progress)
    base_s = time.perf_counter() - started
    log(f"original trained in {base_s:.1f} s")

    all_requests = ForgetTask(
        forget=union, retained=data.without(union), heldout=data.heldout, name="all-requests"
    )
    oracle = get_method("retrain", train=bench.train).run(original, all_requests, progress)
    log(f"oracle retrained without all {len(union)} request rows in {oracle.update_s:.1f} s")

    reference = {
        "original": Measured.of(original, data.test, data.heldout),
        "oracle": Measured.of(oracle.model, data.test, data.heldout),
    }
    eul = get_method("eul", config=bench.eul)
    total = sum(len(requests) for requests in data.requests.values())
    bar = tqdm(total=total, desc="small requests", disable=not progress)
    sizes = {}
    for k, requests in data.requests.items():
        per_request = []
        for i, request in enumerate(requests, start=1):
            task = ForgetTask(
                forget=request,
                retained=data.without(request),
                heldout=data.heldout,
                name=f"rows-{k}-{i}",
            )
            result = eul.run(original.copy(), task, progress)
            unlearned = Measured.of(result.model, data.test, data.heldout)
            row = {
                "rows": len(request),
                "memorised_rows": sum(r.memorised for r in request),
                "original": {**reference["original"].figures(request), "update_s": None},
                "oracle": {**reference["oracle"].figures(request), "update_s": oracle.update_s},
                "eul": {
                    **unlearned.figures(request),
                    "update_s": result.update_s,
                    "epochs_run": len(result.history),
                },
            }
            per_request.append(row)
            bar.update(1)
            log(_request_line(k, i, row))
        sizes[str(k)] = summarise_size(per_request, oracle.update_s)
    bar.close()
    return {
        "sizes": sizes,
        "setup": _setup(config, data, base_s, oracle.update_s, original),
        "run": run_record("small_requests", asdict(config), original.device.type),
    }


def _request_line(k: int, i: int, row: dict) -> str:
    eul, oracle = row["eul"], row["oracle"]
    return (
        f"{k} rows, request {i}: eul forget {eul['forget_acc']:.3f} (oracle "
        f"{oracle['forget_acc']:.3f}), MIA {eul['mia_auc']:.3f} (oracle {oracle['mia_auc']:.3f}), "
        f"test {eul['test_acc']:.3f}, {eul['update_s']:.1f} s"
    )


def summarise_size(per_request: list[dict], retrain_s: float) -> dict:
    """One size's requests summed up: each model's figures as their spread over the
    requests, EUL's gaps to the oracle's means, the update time against the retrain, the
    targets, and each request's own figures."""
    models = {
        name: {key: spread([row[name][key] for row in per_request]) for key, _ in FIGURES}
        for name in MODELS
    }
    gaps = {key: _gap(models["eul"][key], models["oracle"][key]) for key, _ in FIGURES[:4]}
    eul_s = models["eul"]["update_s"]["mean"]
    return {
        "requests": len(per_request),
        "rows": per_request[0]["rows"],
        "memorised_rows": per_request[0]["memorised_rows"],
        "models": models,
        "eul_minus_oracle": gaps,
        "update": {
            "eul_mean_s": eul_s,
            "oracle_retrain_s": retrain_s,
            "eul_over_retrain": eul_s / retrain_s,
        },  # fmt: skip
        "targets": check_size_targets(models),
        "per_request": per_request,
    }


def _gap(mine: dict, theirs: dict) -> float | None:
    if mine["mean"] is None or theirs["mean"] is None:
        return None
    return mine["mean"] - theirs["mean"]


def check_size_targets(models: dict[str, dict[str, dict]]) -> list[dict[str, object]]:
    """One size's targets on the means over its requests, each with the value and whether it
    is met (None, with no value, where there is nothing to compare: no flipped rows)."""
    eul, oracle, original = models["eul"], models["oracle"], models["original"]
    rows = [
        ("test acc >= original - 1 pt", _gap(eul["test_acc"], original["test_acc"]),
         lambda v: v >= -UTILITY_DROP),
        ("forget acc within 5 pts of oracle", _gap(eul["forget_acc"], oracle["forget_acc"]),
         lambda v: abs(v) <= ORACLE_GAP),
        ("memorised acc within 5 pts of oracle",
         _gap(eul["forget_memorised_acc"], oracle["forget_memorised_acc"]),
         lambda v: abs(v) <= ORACLE_GAP),
        ("MIA AUC within 0.05 of oracle", _gap(eul["mia_auc"], oracle["mia_auc"]),
         lambda v: abs(v) <= ORACLE_GAP),
    ]  # fmt: skip
    return [
        {"target": t, "value": None if v is None else round(v, 4),
         "met": None if v is None else bool(ok(v))}
        for t, v, ok in rows
    ]  # fmt: skip


def _setup(
    config: SmallRequestsConfig,
    data: SmallPrepared,
    base_s: float,
    retrain_s: float,
    original: TextModel,
) -> dict:
    bench = config.bench
    return {
        "data": data.source,
        "train_rows": len(data.train),
        "test_rows": len(data.test),
        "heldout_rows": len(data.heldout),
        "request_rows": list(config.rows),
        "requests_per_size": config.requests,
        "memorised_share": config.flip_share,
        "oracle": f"one oracle retrained without the {len(data.request_rows)} rows of all "
        f"{len(config.rows) * config.requests} requests together (not one per request, to save "
        "retraining); each request is unlearned alone from the original",
        "base_train_s": base_s,
        "oracle_retrain_s": retrain_s,
        "eul": asdict(bench.eul),
        "quick": bench.quick,
        "seed": bench.seed,
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, "
        + original.device.type,
    }


def _cell(figure: dict, fmt: str = "{:.3f}") -> str:
    if figure["mean"] is None:
        return "-"
    if figure["min"] == figure["max"]:  # one request, or the same figure for every request
        return fmt.format(figure["mean"])
    return f"{fmt.format(figure['mean'])} ± {fmt.format(figure['std'])}"


def format_small_requests(report: dict) -> str:
    """A Markdown table: per size, each model's figures as mean ± standard deviation over
    the requests and EUL's gap to the oracle; then each size's targets."""
    setup = report["setup"]
    header = ["rows", "model", *(title for _, title in FIGURES)]
    lines = [
        f"{setup['requests_per_size']} requests per size, mean ± standard deviation over the "
        "requests (no ±: the same for every request); one oracle retrained without all "
        f"requests' rows ({setup['oracle_retrain_s']:.1f} s)",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for k, size in report["sizes"].items():
        for name in MODELS:
            figures = size["models"][name]
            cells = [k, name]
            cells += [_cell(figures[key], "{:.1f}" if key == "update_s" else "{:.3f}")
                      for key, _ in FIGURES]  # fmt: skip
            lines.append("| " + " | ".join(cells) + " |")
        gaps = size["eul_minus_oracle"]
        cells = [k, "eul - oracle"]
        cells += ["-" if gaps[key] is None else f"{gaps[key]:+.3f}" for key, _ in FIGURES[:4]]
        cells.append(f"{size['update']['eul_over_retrain']:.3f} of retrain")
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    for k, size in report["sizes"].items():
        marks = []
        for target in size["targets"]:
            if target["met"] is None:
                marks.append(f"{target['target']}: - (no flipped rows)")
            else:
                mark = "met" if target["met"] else "MISSED"
                marks.append(f"{target['target']}: {target['value']:+.4f} ({mark})")
        flipped = size["memorised_rows"]
        lines.append(f"- {k}-row requests, {flipped} flipped: " + "; ".join(marks))
    return "\n".join(lines)
