"""Time the nightly deletion batch on the embedded default and split its wall time by phase.

    python -m benchmarks.pipeline --out benchmarks/results/pipeline-bench.json

(the default `--out`, from the repository root; with --side-by-side the default is
benchmarks/results/pipeline-bench-side-by-side.json: JSON in the result envelope, and the
table as .md beside it).

Builds the project once from this checkout (`eul data init`, `dvc repro`: the default data
and the DVC `train` stage's model, as params.yaml has them), or reuses one given with
--project. Then, on a fresh copy of it, submits --requests deletion requests (whole subjects
of the training split), starts a local Prefect server, and runs the
`nightly-deletion-batch` flow against it in this process, timing every phase.

Phases are grouped into the work the batch exists for (training the layers, fusing,
evaluating), the deletion log, and the overhead of the tools around it: MLflow (downloading
production, logging runs, registering, aliases, the audit's reads), DVC (the `partition`
stage and the purge: data, cache and remote) and Prefect (everything else: task and flow
orchestration, the time between tasks). The machine should be otherwise idle: a second
CPU-heavy process on 2 cores slows training several times over.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import RESULTS
from eul.bench.envelope import write_result
from eul.runtime.environment import tool_variables
from eul.runtime.servers import free_port, start_prefect_server, stop

REPO = Path(__file__).resolve().parents[1]
LAYER = (
    "layer_load",
    "layer_train",
    "layer_statistics",
    "layer_evaluate",
    "layer_mlflow",
    "layer_other",
)


def _env() -> dict[str, str]:
    return {**os.environ, **tool_variables(REPO)}


def build_project(dest: Path) -> Path:
    """The repository's tracked files in a fresh git repository, every DVC stage run."""
    files = subprocess.run(
        ["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.split()
    for name in files:
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, dest / name)
    env = _env()
    for cmd in (
        ["git", "init", "-q"],
        ["git", "add", "-A"],
        ["git", "-c", "user.email=bench@localhost", "-c", "user.name=bench", "commit", "-qm", "b"],
        [sys.executable, "-m", "eul.cli.main", "--quiet", "data", "init"],
        [str(Path(sys.executable).parent / "dvc"), "repro"],
    ):
        subprocess.run(cmd, cwd=dest, env=env, check=True, capture_output=True)
    return dest


def _start_server(home: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    log = (home.parent / "prefect-server.log").open("w")
    server = start_prefect_server({**_env(), "PREFECT_HOME": str(home)}, log, port)
    return server, f"http://127.0.0.1:{port}/api"


def choose_subjects(project: Path, n: int, seed: int = 0) -> list[str]:
    """n subjects of the training split, drawn by seed."""
    rows = (project / "data/prepared/train.jsonl").read_text().splitlines()
    subjects = sorted({json.loads(line)["subject_id"] for line in rows if line.strip()})
    return random.Random(seed).sample(subjects, n)


def breakdown(summary: dict[str, Any], wall: float) -> dict[str, float]:
    """Wall time split into work, log, MLflow, DVC and Prefect (the rest).

    Training tasks may run side by side: their own times then add up to more than the
    training phase's wall time, and are scaled down to it in proportion.
    """
    outer = summary["seconds"]
    inner = summary["inner_seconds"]
    layer_total = sum(inner.get(k, 0.0) for k in LAYER)
    scale = min(1.0, outer.get("train", 0.0) / layer_total) if layer_total else 0.0
    layer_mlflow = scale * inner.get("layer_mlflow", 0.0)
    work = scale * layer_total - layer_mlflow + inner.get("fuse", 0.0) + inner.get("evaluate", 0.0)
    work += inner.get("retrain", 0.0)
    mlflow = (
        layer_mlflow
        + inner.get("register", 0.0)
        + inner.get("promote", 0.0)
        + outer.get("production", 0.0)
        + outer.get("report", 0.0)
    )
    dvc = outer.get("partition", 0.0) + inner.get("purge", 0.0)
    log = outer.get("snapshot", 0.0)
    return {
        "work": work,
        "log": log,
        "mlflow": mlflow,
        "dvc": dvc,
        "prefect": wall - work - log - mlflow - dvc,
    }


def run(
    project: Path, requests: int, workers: int | None, scratch: Path, side_by_side: bool = False
) -> dict[str, Any]:
    """One nightly batch of `requests` requests on a fresh copy of `project`; with
    `side_by_side`, the layers train in parallel against production alone instead of
    stacked."""
    import torch
    import yaml

    copy = scratch / "project"
    shutil.copytree(project, copy, symlinks=True, ignore=shutil.ignore_patterns("state"))
    params = yaml.safe_load((copy / "params.yaml").read_text())
    if workers is not None:
        params.setdefault("pipeline", {})["train_workers"] = workers
    params.setdefault("pipeline", {})["stack_layers"] = not side_by_side
    (copy / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    from eul.stores.log.store import Ledger

    subjects = choose_subjects(copy, requests)
    with Ledger(
        f"sqlite:///{copy / 'state/deletion-log.sqlite'}", params_path=copy / "params.yaml"
    ) as ledger:
        for i, subject in enumerate(subjects):
            ledger.submit(subject_id=subject, request_id=f"bench-{i + 1}")
    # The MLflow database exists already, as on every night after the first: creating its
    # schema (seconds) is not part of a batch.
    import mlflow

    mlflow.MlflowClient(f"sqlite:///{copy / 'state/mlflow.db'}").search_experiments()
    server, api = _start_server(scratch / "prefect-home")
    os.environ.update(_env())
    os.environ["PREFECT_API_URL"] = api
    torch.set_num_threads(1)
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))  # flows/ and tasks/ sit next to eul/
    try:
        from flows.nightly import nightly_deletion_batch

        started = time.perf_counter()
        summary = nightly_deletion_batch(project_dir=str(copy))
        wall = time.perf_counter() - started
        from prefect.logging.handlers import APILogWorker

        APILogWorker.drain_all(timeout=5)  # the run's last logs reach the server first
    finally:
        stop(server)
    rows = {}  # from the log's `unlearned` entries: the purge deletes the layer folders
    with Ledger(f"sqlite:///{copy / 'state/deletion-log.sqlite'}") as ledger:
        for i in range(requests):
            history = ledger.get(f"bench-{i + 1}").history
            rows |= {f"bench-{i + 1}": e.details.get("rows") for e in history
                     if e.status == "unlearned"}  # fmt: skip
    parts = breakdown(summary, wall)
    overhead = parts["mlflow"] + parts["dvc"] + parts["prefect"]
    return {
        "requests": requests,
        "request_rows": rows,
        "stack_layers": not side_by_side,
        "train_workers": params["pipeline"].get("train_workers", 2),
        "wall_s": wall,
        "outcome": summary["outcome"],
        "gates": summary.get("gates"),
        "metrics": summary.get("metrics"),
        "production_metrics": summary.get("production_metrics"),
        "phases_s": summary["seconds"],
        "inner_s": summary["inner_seconds"],
        "breakdown_s": parts,
        "overhead_s": overhead,
        "overhead_share": overhead / wall,
        "targets": {"wall_under_600_s": wall < 600, "overhead_under_20pct": overhead < 0.2 * wall},
    }


def format_table(result: dict[str, Any]) -> str:
    """The phases and the breakdown as Markdown."""
    wall = result["wall_s"]
    how = "stacked" if result["stack_layers"] else "side by side"
    lines = [
        f"Nightly batch of {result['requests']} requests, layers {how}: {wall:.1f} s wall "
        f"({result['outcome']}); overhead (MLflow + DVC + Prefect) "
        f"{result['overhead_s']:.1f} s = {result['overhead_share']:.1%} of the wall time.",
        "",
        "| phase (task wall) | s |",
        "|---|---|",
    ]
    lines += [f"| {k} | {v:.1f} |" for k, v in result["phases_s"].items()]
    lines += ["", "| share of the wall time | s | % |", "|---|---|---|"]
    for name, value in result["breakdown_s"].items():
        lines.append(f"| {name} | {value:.1f} | {value / wall:.1%} |")
    lines += ["", "| metric | production | candidate |", "|---|---|---|"]
    production = result.get("production_metrics") or {}
    for name, value in (result.get("metrics") or {}).items():
        if isinstance(value, float) and name in production:
            lines.append(f"| {name} | {production[name]:.3f} | {value:.3f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.pipeline", description=__doc__)
    parser.add_argument(
        "--out",
        help="write the JSON here, and the table as .md beside it (default: "
        "benchmarks/results/pipeline-bench.json, or pipeline-bench-side-by-side.json)",
    )
    parser.add_argument("--project", help="a project already built (default: build one)")
    parser.add_argument("--requests", type=int, default=5)
    parser.add_argument("--train-workers", type=int, help="override pipeline.train_workers")
    parser.add_argument(
        "--side-by-side",
        action="store_true",
        help="train the layers in parallel against production (pipeline.stack_layers false)",
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="eul-pipeline-bench-") as tmp:
        scratch = Path(tmp)
        project = Path(args.project).resolve() if args.project else None
        build_s = None
        if project is None:
            started = time.perf_counter()
            project = build_project(scratch / "built")
            build_s = time.perf_counter() - started
        result = run(project, args.requests, args.train_workers, scratch / "run", args.side_by_side)
    result["project_build_s"] = build_s
    load = os.getloadavg()
    result["machine"] = {"cpus": os.cpu_count(), "load_avg_1_5_15": [round(x, 2) for x in load]}
    table = format_table(result)
    print(table)
    name = "pipeline-bench-side-by-side.json" if args.side_by_side else "pipeline-bench.json"
    settings = {
        "requests": args.requests,
        "train_workers": args.train_workers,
        "side_by_side": args.side_by_side,
        "project": args.project,
    }
    write_result(args.out or RESULTS / name, "pipeline", result, table, settings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
