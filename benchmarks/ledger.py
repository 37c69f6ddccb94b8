"""Benchmark of the deletion log at scale: submit, validate, list and show 10,000 requests.

Runs on an embedded SQLite log against a synthetic index of 100,000 records (ids only, no
model), so it measures the log alone. ``python -m benchmarks.ledger --out
benchmarks/results/ledger-bench.json`` (the default), from the repository root, prints a
markdown table and writes JSON in the result envelope (and a .md beside it).
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import sqlalchemy

from benchmarks import RESULTS
from eul.bench.envelope import write_result
from eul.data.records import Record
from eul.stores.log.schema import utcnow
from eul.stores.log.store import Ledger


def synthetic_index(n_records: int, records_per_subject: int = 5) -> list[Record]:
    """Records ``r0000000``... owned by subjects ``s000000``...; no text is needed."""
    return [
        Record(f"r{i:07d}", f"s{i // records_per_subject:06d}", "", "") for i in range(n_records)
    ]


def synthetic_requests(
    n_requests: int, n_records: int, records_per_subject: int = 5, seed: int = 0
) -> list[dict[str, Any]]:
    """85% whole subjects, 10% explicit record ids, 5% unknown subjects (to be rejected)."""
    rng = random.Random(seed)
    n_subjects = n_records // records_per_subject
    subjects = rng.sample(range(n_subjects), k=min(n_subjects, n_requests))
    requests: list[dict[str, Any]] = []
    for i in range(n_requests):
        kind = rng.random()
        if kind < 0.85:
            requests.append({"subject_id": f"s{subjects[i % len(subjects)]:06d}"})
        elif kind < 0.95:
            ids = rng.sample(range(n_records), k=rng.randint(1, 5))
            requests.append({"record_ids": [f"r{r:07d}" for r in ids]})
        else:
            requests.append({"subject_id": f"unknown{i:06d}"})
        requests[-1]["request_id"] = f"bench-{i:06d}"
    return requests


def _timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    result = fn()
    return time.perf_counter() - started, result


def _median_time(fn: Callable[[], Any], repeats: int) -> float:
    return statistics.median(_timed(fn)[0] for _ in range(repeats))


def run_ledger_bench(
    n_requests: int = 10_000,
    n_records: int = 100_000,
    seed: int = 0,
    folder: str | Path | None = None,
) -> dict[str, Any]:
    """Time each log operation at ``n_requests`` requests; returns a JSON-ready report."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(folder or tmp)
        root.mkdir(parents=True, exist_ok=True)
        for stale in root.glob("ledger-bench-*.sqlite*"):
            stale.unlink()
        return _run(n_requests, n_records, seed, root)


def _run(n_requests: int, n_records: int, seed: int, root: Path) -> dict[str, Any]:
    records = synthetic_index(n_records)
    requests = synthetic_requests(n_requests, n_records, seed=seed)
    params = root / "absent-params.yaml"
    rows: list[dict[str, Any]] = []

    def row(operation: str, n: int, seconds: float, note: str = "") -> None:
        rows.append(
            {
                "operation": operation,
                "n": n,
                "seconds": seconds,
                "per_item_ms": 1000 * seconds / n if n else None,
                "note": note,
            }
        )

    # The realistic path: every request its own call and transaction (an fsync each).
    log = Ledger(f"sqlite:///{root / 'ledger-bench-single.sqlite'}", params_path=params)
    seconds, _ = _timed(lambda: [log.submit(**r) for r in requests])
    row("submit, one call per request", n_requests, seconds, "one committed transaction each")

    batch = Ledger(f"sqlite:///{root / 'ledger-bench-batch.sqlite'}", params_path=params)
    seconds, _ = _timed(lambda: batch.submit_many(requests))
    row("submit_many, one batch", n_requests, seconds, "one transaction")
    seconds, again = _timed(lambda: batch.submit_many(requests))
    if any(r.created for r in again):
        raise RuntimeError("a repeated submission created a request")
    row("submit_many again (idempotent no-op)", n_requests, seconds, "nothing written")
    batch.close()

    seconds, report = _timed(lambda: log.validate(records))
    row(
        "validate",
        n_requests,
        seconds,
        f"{len(report.validated):,} validated, {len(report.rejected):,} rejected, "
        f"against {n_records:,} records",
    )
    listed = log.list()
    row("list (all)", len(listed), _median_time(log.list, 5), "median of 5")
    rejected = log.list(status="rejected")
    row(
        "list --status rejected",
        len(rejected),
        _median_time(lambda: log.list(status="rejected"), 5),
        "median of 5",
    )
    later = utcnow() + timedelta(days=31)
    overdue = log.overdue(now=later)
    row("overdue (31 days on)", len(overdue), _median_time(lambda: log.overdue(now=later), 5))
    rng = random.Random(seed)
    sample = [rng.choice(listed).request_id for _ in range(200)]
    shown = statistics.median(_timed(lambda rid=rid: log.get(rid))[0] for rid in sample)
    row("show (get one request)", 1, shown, "median of 200 random requests")
    seconds, snap = _timed(log.snapshot)
    row("snapshot (validated)", len(snap["requests"]), seconds)
    seconds, verified = _timed(log.verify)
    if not verified.ok:
        raise RuntimeError(f"the benchmark log does not verify: {verified.reason}")
    row("verify (walk the chain)", verified.entries, seconds, "entries")
    log.close()  # the last connection checkpoints the WAL into the database file
    size_mb = sum(p.stat().st_size for p in root.glob("ledger-bench-single.sqlite*")) / 1e6
    return {
        "config": {"requests": n_requests, "records": n_records, "seed": seed},
        "environment": {
            "python": platform.python_version(),
            "sqlite": sqlite3.sqlite_version,
            "sqlalchemy": sqlalchemy.__version__,
            "cpus": os.cpu_count(),
            "machine": platform.machine(),
        },
        "log_mb": size_mb,
        "results": rows,
    }


def format_ledger_bench(report: dict[str, Any]) -> str:
    """The report as a markdown table."""
    config = report["config"]
    lines = [
        f"Deletion log at {config['requests']:,} requests against {config['records']:,} records "
        f"(SQLite {report['environment']['sqlite']}, {report['environment']['cpus']} CPUs; "
        f"log file {report['log_mb']:.1f} MB), measured with "
        "`python -m benchmarks.ledger --out benchmarks/results/ledger-bench.json`. Each single "
        "submit commits and syncs to disk; most of its time is that sync.",
        "",
        "| operation | items | total s | per item ms | note |",
        "|---|---:|---:|---:|---|",
    ]
    for r in report["results"]:
        per_item = f"{r['per_item_ms']:.3f}" if r["per_item_ms"] is not None else ""
        lines.append(
            f"| {r['operation']} | {r['n']:,} | {r['seconds']:.3f} | {per_item} | {r['note']} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.ledger",
        description="Time submit, validate, list and show of the deletion log at scale.",
    )
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--folder", help="keep the benchmark logs here (default: a temp folder)")
    parser.add_argument(
        "--out",
        default=str(RESULTS / "ledger-bench.json"),
        help="write the JSON result here, and a .md table beside it "
        "(default: benchmarks/results/ledger-bench.json)",
    )
    args = parser.parse_args(argv)
    report = run_ledger_bench(args.requests, args.records, args.seed, args.folder)
    table = format_ledger_bench(report)
    print(table)
    settings = {"requests": args.requests, "records": args.records, "seed": args.seed}
    out, table_path = write_result(args.out, "ledger", report, table, settings)
    print(f"\nwritten to {out} (and {table_path})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
