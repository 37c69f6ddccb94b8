"""How long the MLflow bookkeeping of one nightly batch takes, on SQLite and file artifacts.

Times each registry call on the default tiny model (an untrained `ModelSpec()` T5; the
registry cost depends on file sizes, not on training), in a fresh temporary store. The
first call in a process also pays for importing MLflow and creating its database schema:
those one-time costs are reported apart from the per-call medians.

    python -m benchmarks.registry --out results/registry-bench.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

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


def run(repeats: int = 5, n_subjects: int = 60) -> dict:
    """Time every registry call `repeats` times after one untimed warm-up round."""
    started = time.perf_counter()
    once: dict[str, float] = {}
    with _timer(once, "import_mlflow"):
        import mlflow  # noqa: F401

    import transformers

    from eul.data.records import LABEL_WORDS
    from eul.data.synthetic import SyntheticConfig, generate
    from eul.fusion.statistics import capture_statistics
    from eul.layers import LayerConfig
    from eul.methods import EULConfig
    from eul.model.text_model import ModelSpec, TextModel
    from eul.stores.registry.registry import (
        CANDIDATE,
        PRODUCTION,
        TrackingSettings,
        compliance_tags,
        ensure_experiment,
        load_production,
        log_batch_run,
        log_request_run,
        register_version,
        set_alias,
    )

    transformers.utils.logging.disable_progress_bar()
    spec = ModelSpec()
    _, records = generate(SyntheticConfig(n_subjects=n_subjects, seed=0))
    forget = records[:8]
    metrics = {"test_acc": 0.8, "retained_acc": 0.9, "forget_acc": 0.6, "mia_auc": 0.5}
    gates = {"mia_auc": {"value": 0.5, "max": 0.6, "passed": True}}
    with tempfile.TemporaryDirectory(prefix="eul-registry-bench-") as tmp:
        root = Path(tmp)
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
        with _timer(once, "schema_creation_and_experiment"):
            ensure_experiment(settings)

        times: dict[str, list[float]] = {op: [] for op in OPERATIONS}
        for round_ in range(repeats + 1):
            lap: dict[str, float] = {}
            request_id = f"req-{round_}"
            with _timer(lap, "log_request_run"):
                log_request_run(
                    settings,
                    request_id,
                    root / "layer",
                    metrics,
                    layer_config=LayerConfig(),
                    eul_config=EULConfig(),
                    params={"forget_records": len(forget)},
                )
            with _timer(lap, "log_batch_run"):
                batch_run = log_batch_run(settings, f"batch-{round_}", [request_id], metrics)
            tags = compliance_tags([request_id], round_, "hash", gates)
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
        once["open_existing_store_in_new_process"] = _open_existing(settings.tracking_uri)
        model_mb = _folder_mb(root / "base")
        layer_mb = _folder_mb(root / "layer")

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
    parser.add_argument("--out", type=Path, help="write the figures as JSON here")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    result = run(args.repeats)
    print(table(result))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
