"""Partition benchmark: time to partition N rows for R pending requests.

    python -m benchmarks.partition --out benchmarks/results/partition-bench.json

(the default `--out`, from the repository root: JSON in the result envelope, and the table
as .md beside it).

The target is 1,000 requests against 100,000 rows in under 30 s. Half the requests name a
subject (all of that person's rows), half name one to five record ids. The time covers the
whole `partition` call: reading the data, matching, writing the forget files, the retained
set and the manifest with its row hashes.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks import RESULTS
from eul.bench.envelope import write_result
from eul.data.records import save_records
from eul.data.synthetic import SyntheticConfig, generate
from eul.data.words import FIRST_NAMES, LAST_NAMES
from eul.runtime.evidence import evidence_key
from eul.stores.dvc.partition import parse_snapshot, partition

DEFAULT_RUNS = ((10_000, 100), (100_000, 1_000), (100_000, 3_000))
TARGET_S = 30.0
_ROWS_PER_SUBJECT = (26, 30)


def _data(n_rows: int, path: Path) -> list[tuple[str, str]]:
    """Write n_rows synthetic rows to path; return their (record_id, subject_id)."""
    mean = sum(_ROWS_PER_SUBJECT) / 2
    n_subjects = min(len(FIRST_NAMES) * len(LAST_NAMES), int(n_rows / mean * 1.05) + 1)
    config = SyntheticConfig(n_subjects=n_subjects, records_per_subject=_ROWS_PER_SUBJECT)
    _, records = generate(config)
    if len(records) < n_rows:
        raise ValueError(f"the generator gives at most {len(records)} rows")
    records = records[:n_rows]
    save_records(records, path)
    return [(r.record_id, r.subject_id) for r in records]


def _snapshot(ids: list[tuple[str, str]], n_requests: int, seed: int = 0) -> dict[str, Any]:
    rng = random.Random(seed)
    subjects = sorted({s for _, s in ids})
    by_subject = rng.sample(subjects, min(n_requests // 2, len(subjects) // 2))
    taken = set(by_subject)
    free = [rid for rid, s in ids if s not in taken]
    requests = []
    for i in range(n_requests):
        if i < len(by_subject):
            subject, records = by_subject[i], []
        else:
            subject, records = None, rng.sample(free, rng.randint(1, 5))
        requests.append(
            {
                "request_id": f"req-{i:06d}",
                "subject_id": subject,
                "record_ids": records,
                "status": "validated",
                "submitted_at": "2026-11-01T00:00:00+00:00",
                "deadline": "2026-12-01T00:00:00+00:00",
            }
        )
    return {"log_seq": n_requests, "log_hash": "0" * 64, "taken_at": "2026-11-02T00:00:00+00:00",
            "requests": requests}  # fmt: skip


def run_partition_bench(
    runs: Sequence[tuple[int, int]], workdir: Path, repeats: int = 3
) -> dict[str, Any]:
    """Time `partition` for each (rows, requests); the median of `repeats` runs is reported."""
    results = []
    key = evidence_key(workdir)  # the benchmark's own project folder
    for n_rows, n_requests in runs:
        data = workdir / f"data-{n_rows}.jsonl"
        ids = _data(n_rows, data)
        snapshot = parse_snapshot(_snapshot(ids, n_requests))
        times, manifest = [], {}
        for repeat in range(repeats):
            out = workdir / f"out-{n_rows}-{n_requests}-{repeat}"
            started = time.perf_counter()
            manifest = partition(snapshot, data, out, key=key)
            times.append(time.perf_counter() - started)
        seconds = statistics.median(times)
        results.append(
            {
                "rows": n_rows,
                "requests": n_requests,
                "rows_forgotten": manifest["rows_forgotten"],
                "rows_retained": manifest["rows_retained"],
                "seconds": round(seconds, 3),
                "seconds_min": round(min(times), 3),
                "rows_per_s": round(n_rows / seconds),
                "repeats": repeats,
            }
        )
    return {
        "target": f"1,000 requests on 100,000 rows in under {TARGET_S:.0f} s",
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_average_1min": round(os.getloadavg()[0], 2),
        },
        "runs": results,
    }


def format_table(result: dict[str, Any]) -> str:
    header = f"{'rows':>9} {'requests':>9} {'forgotten':>10} {'retained':>9} {'median s':>9}"
    lines = [header, "-" * len(header)]
    for r in result["runs"]:
        lines.append(
            f"{r['rows']:>9,} {r['requests']:>9,} {r['rows_forgotten']:>10,} "
            f"{r['rows_retained']:>9,} {r['seconds']:>9.2f}"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.partition", description=__doc__)
    parser.add_argument(
        "--out",
        default=str(RESULTS / "partition-bench.json"),
        help="write the JSON result here, and the table as .md beside it "
        "(default: benchmarks/results/partition-bench.json)",
    )
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="eul-partition-bench-") as tmp:
        result = run_partition_bench(DEFAULT_RUNS, Path(tmp), repeats=args.repeats)
    table = format_table(result)
    print(table)
    settings = {"runs": [list(run) for run in DEFAULT_RUNS], "repeats": args.repeats}
    # the table is aligned text: fenced, so that Markdown keeps its columns
    write_result(args.out, "partition", result, f"```\n{table}\n```", settings)
    print(f"\nwritten to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
