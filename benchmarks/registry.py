"""How long the MLflow bookkeeping of one nightly batch takes, on SQLite and file artifacts.

Times each registry call on the default tiny model (an untrained `ModelSpec()` T5; the
registry cost depends on file sizes, not on training), in a fresh temporary store. The
first call in a process also pays for importing MLflow and creating its database schema:
those one-time costs are reported apart from the per-call medians.

    python -m benchmarks.registry --out benchmarks/results/registry-bench.json

(the default `--out`, from the repository root: JSON in the result envelope, and the table
as .md beside it).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from benchmarks import RESULTS
from eul.bench.envelope import write_result

if TYPE_CHECKING:  # MLflow's import is timed: nothing here may import it (or torch) first
    from eul.model.text_model import ModelSpec
    from eul.stores.registry.settings import TrackingSettings

OPERATIONS = (
    "log_request_run",
    "log_batch_run",
    "register_version",
    "set_alias",
    "load_production",
)


@contextmanager
def _timer(into: dict[str, float], name: str) -> Iterator[None]:
    start = time.perf_counter()
    yield
    into[name] = time.perf_counter() - start


def _open_existing(tracking_uri: str) -> float:
    """Seconds a fresh process needs to import MLflow and make a first query on the store."""
    code = (
        "import time; t = time.perf_counter(); import mlflow; "
        f"mlflow.MlflowClient({tracking_uri!r}).search_experiments(); "
        "print(time.perf_counter() - t)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def _folder_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 1e6


N_SUBJECTS = 60
METRICS = {"test_acc": 0.8, "retained_acc": 0.9, "forget_acc": 0.6, "mia_auc": 0.5}
GATES = {"mia_auc": {"value": 0.5, "max": 0.6, "passed": True}}


@dataclass(frozen=True)
class Store:
    """A fresh temporary store with a base model and one layer (with its statistics) on disk."""

    root: Path
    settings: TrackingSettings
    forget_records: int


@dataclass(frozen=True)
class Timings:
    """Seconds per call: the first round (a process's first calls), then each timed round."""

    first_calls: dict[str, float]
    times: dict[str, list[float]]


def run(repeats: int = 5, n_subjects: int = N_SUBJECTS) -> dict:
    """Time every registry call `repeats` times after one untimed warm-up round."""
    started = time.perf_counter()
    once: dict[str, float] = {}
    with _timer(once, "import_mlflow"):
        import mlflow  # noqa: F401

    import transformers

    from eul.model.text_model import ModelSpec
    from eul.stores.registry.runs import ensure_experiment

    transformers.utils.logging.disable_progress_bar()
    spec = ModelSpec()
    with tempfile.TemporaryDirectory(prefix="eul-registry-bench-") as tmp:
        store = _fill_store(Path(tmp), spec, n_subjects)
        with _timer(once, "schema_creation_and_experiment"):
            ensure_experiment(store.settings)
        timings = _time_calls(store, repeats)
        once["open_existing_store_in_new_process"] = _open_existing(store.settings.tracking_uri)
        model_mb = _folder_mb(store.root / "base")
        layer_mb = _folder_mb(store.root / "layer")
    return _figures(spec, model_mb, layer_mb, repeats, once, timings, started)


def _fill_store(root: Path, spec: ModelSpec, n_subjects: int) -> Store:
    """The untrained base model and one layer with its statistics, saved under `root`."""
    from eul.data.records import LABEL_WORDS
    from eul.data.synthetic import SyntheticConfig, generate
    from eul.fusion.statistics import capture_statistics
    from eul.layers import LayerConfig
    from eul.model.text_model import TextModel
    from eul.stores.registry.settings import TrackingSettings

    _, records = generate(SyntheticConfig(n_subjects=n_subjects, seed=0))
    forget = records[:8]
    tm = TextModel.create([r.text for r in records] + list(LABEL_WORDS), spec, seed=0)
    tm.save(root / "base")
    layers = tm.unlearning_layers()
    layers.add_layer("req", LayerConfig())
    layers.save_layer("req", root / "layer")
    capture_statistics(tm, "req", forget).save(root / "layer")
    settings = TrackingSettings(
        tracking_uri=f"sqlite:///{root}/mlflow.db",
        artifact_location=str(root / "artifacts"),
    )
    return Store(root, settings, len(forget))


def _time_calls(store: Store, repeats: int) -> Timings:
    """One warm-up round, then `repeats` timed rounds of every call of a nightly batch."""
    from eul.layers import LayerConfig
    from eul.methods import EULConfig
    from eul.stores.registry.loading import load_production
    from eul.stores.registry.runs import log_batch_run, log_request_run
    from eul.stores.registry.tags import compliance_tags
    from eul.stores.registry.versions import CANDIDATE, PRODUCTION, register_version, set_alias

    root, settings = store.root, store.settings
    times: dict[str, list[float]] = {op: [] for op in OPERATIONS}
    first_calls: dict[str, float] = {}
    for round_ in range(repeats + 1):
        lap: dict[str, float] = {}
        request_id = f"req-{round_}"
        with _timer(lap, "log_request_run"):
            log_request_run(
                settings,
                request_id,
                root / "layer",
                METRICS,
                layer_config=LayerConfig(),
                eul_config=EULConfig(),
                params={"forget_records": store.forget_records},
            )
        with _timer(lap, "log_batch_run"):
            batch_run = log_batch_run(settings, f"batch-{round_}", [request_id], METRICS)
        tags = compliance_tags([request_id], round_, "hash", GATES)
        with _timer(lap, "register_version"):
            version = register_version(
                settings, batch_run, root / "base", root / "layer", tags, "bench"
            )
        with _timer(lap, "set_alias"):
            set_alias(settings, CANDIDATE, version)
            set_alias(settings, PRODUCTION, version)
        lap["set_alias"] /= 2
        with _timer(lap, "load_production"):
            load_production(settings)
        if round_ == 0:  # the first calls in a process import more of MLflow
            first_calls = lap
        else:
            for op in OPERATIONS:
                times[op].append(lap[op])
    return Timings(first_calls, times)


def _figures(
    spec: ModelSpec,
    model_mb: float,
    layer_mb: float,
    repeats: int,
    once: dict[str, float],
    timings: Timings,
    started: float,
) -> dict:
    """The JSON-ready result: per-call medians and ranges, one-time costs, per-batch sums."""
    times, first_calls = timings.times, timings.first_calls
    medians = {op: statistics.median(values) for op, values in times.items()}
    per_batch = {
        f"{k}_requests": k * medians["log_request_run"]
        + medians["log_batch_run"]
        + medians["register_version"]
        + 2 * medians["set_alias"]
        for k in (1, 10)
    }
    return {
        "what": "seconds per MLflow registry call, SQLite tracking store, file artifacts",
        "spec": asdict(spec),
        "base_model_mb": round(model_mb, 2),
        "layer_folder_mb": round(layer_mb, 3),
        "repeats": repeats,
        "one_time_s": {k: round(v, 3) for k, v in once.items()},
        "first_call_in_process_s": {op: round(first_calls[op], 3) for op in OPERATIONS},
        "per_call_s": {
            op: {
                "median": round(medians[op], 3),
                "min": round(min(values), 3),
                "max": round(max(values), 3),
            }
            for op, values in times.items()
        },
        "per_batch_s": {k: round(v, 3) for k, v in per_batch.items()},
        "per_batch_note": (
            "k * log_request_run + log_batch_run + register_version + 2 * set_alias "
            "(candidate, production); load_production is the serving side, not the batch"
        ),
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "load_average_1m": round(os.getloadavg()[0], 2),
        },
        "wall_s": round(time.perf_counter() - started, 1),
    }


def table(result: dict) -> str:
    lines = ["| call | median s | min s | max s |", "|---|---|---|---|"]
    for op, t in result["per_call_s"].items():
        lines.append(f"| {op} | {t['median']:.3f} | {t['min']:.3f} | {t['max']:.3f} |")
    once = result["one_time_s"]
    first = result["first_call_in_process_s"]
    lines += [
        "",
        "first call in a process: "
        + ", ".join(f"{op} {seconds:.2f} s" for op, seconds in first.items()),
        f"one time: import mlflow {once['import_mlflow']:.2f} s; new database schema + "
        f"experiment {once['schema_creation_and_experiment']:.2f} s (first night only); "
        f"existing store from a new process {once['open_existing_store_in_new_process']:.2f} s",
        "per batch: "
        + ", ".join(f"{k.replace('_', ' ')} {v:.2f} s" for k, v in result["per_batch_s"].items()),
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out",
        type=Path,
        default=RESULTS / "registry-bench.json",
        help="write the figures as JSON here, and the table as .md beside it "
        "(default: benchmarks/results/registry-bench.json)",
    )
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    result = run(args.repeats)
    text = table(result)
    print(text)
    settings = {"repeats": args.repeats, "n_subjects": N_SUBJECTS}
    write_result(args.out, "registry", result, text, settings)


if __name__ == "__main__":
    main()
