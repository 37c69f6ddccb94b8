"""The reliability table: faults injected into the pipeline and whether it survived them,
what came of the requests, and how hostile input was handled.

    python -m benchmarks.reliability            # every scenario (about half an hour on 2 cores)
    python -m benchmarks.reliability --quick    # the log's faults and the bad input (seconds)
    python -m benchmarks.reliability --only drill-kills --only nan

Each scenario (`benchmarks.fault_scenarios`) runs on a fresh copy of a tiny project built
once from this checkout, against a Prefect server of its own: it injects its fault (a
SIGKILL at each drill point and at times during training, fusion and purge; MLflow's
server or the S3 endpoint stopped and restarted mid batch; a full disk under MLflow's
artifacts; training that goes to NaN; a corrupted layer file; two batches racing; 200
requests in one batch; several processes submitting at once; a log writer killed mid
transaction), checks the invariants where the fault left the batch and after the reruns
that finish it (`benchmarks.fault_harness.check`), and counts the requests submitted,
processed, lost and duplicated. The hostile ids and request files of
`benchmarks.hostile_inputs` are tried too. Writes benchmarks/results/reliability.json (the
result envelope) and the table as reliability.md beside it; exits 1 when a fault was not
survived, a request was lost or duplicated, or a bad input was not handled.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks import RESULTS
from benchmarks import fault_scenarios as scenarios
from eul.bench.envelope import write_result

# name -> scenario on the built project (needs the project and a Prefect server)
BATCH_SCENARIOS: dict[str, Callable[[scenarios.Setup], scenarios.Row]] = {
    "drill-kills": scenarios.kills_at_drill_points,
    "work-kills": scenarios.kills_during_work,
    "mlflow-outage": scenarios.mlflow_server_outage,
    "s3-outage": scenarios.s3_outage,
    "full-disk": scenarios.full_disk,
    "nan": scenarios.diverging_training,
    "corrupt-layer": scenarios.corrupted_layer,
    "race": scenarios.racing_batches,
    "many-requests": scenarios.many_requests,
}
# name -> scenario of the log alone (seconds; the quick table's)
LOG_SCENARIOS: dict[str, Callable[[Path], scenarios.Row]] = {
    "submitters": scenarios.concurrent_submitters,
    "killed-writer": scenarios.killed_log_writer,
}
NAMES = (*BATCH_SCENARIOS, *LOG_SCENARIOS, "bad-input")


def earlier_rows(path: Path | None) -> dict[str, dict[str, Any]]:
    """The rows `pytest -m reliability` left in `path` ($EUL_RELIABILITY_ROWS), by scenario
    (the last one of each)."""
    import json

    if path is None or not path.is_file():
        return {}
    rows = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            rows[row.pop("scenario")] = row
    return rows


def run(
    names: list[str],
    scratch: Path,
    seed: int,
    slow_inputs: bool,
    earlier: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The chosen scenarios' rows (those in `earlier` taken from there, not run again) and
    the bad input's outcomes."""
    from benchmarks import fault_harness as h
    from benchmarks.hostile_inputs import try_all

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    earlier = earlier or {}
    rows: list[scenarios.Row] = []
    for name in names:
        if name in earlier:
            rows.append(scenarios.Row(**earlier[name], scenario=name))
            rows[-1].note = (rows[-1].note + " (run by pytest -m reliability)").strip()
        elif name in LOG_SCENARIOS:
            print(f"-- {name}", flush=True)
            rows.append(LOG_SCENARIOS[name](scratch / name))
            rows[-1].scenario = name
    batch = [n for n in names if n in BATCH_SCENARIOS and n not in earlier]
    build_s = None
    if batch:
        started = time.monotonic()
        template = h.build_project(scratch / "template" / "project")
        build_s = round(time.monotonic() - started, 1)
        with h.prefect_server(scratch / "prefect-home") as api:
            setup = scenarios.Setup(template, scratch, api, seed)
            for name in batch:
                print(f"-- {name}", flush=True)
                rows.append(BATCH_SCENARIOS[name](setup))
                rows[-1].scenario = name
                print(f"   {rows[-1].survived}/{rows[-1].injected} survived", flush=True)
    rows.sort(key=lambda r: NAMES.index(r.scenario))
    inputs = []
    if "bad-input" in names:
        print("-- bad input", flush=True)
        (scratch / "bad-input").mkdir(parents=True)
        inputs = [i.to_json() for i in try_all(scratch / "bad-input", slow=slow_inputs)]
    return {
        "rows": [r.to_json() for r in rows],
        "inputs": inputs,
        "totals": totals(rows, inputs),
        "project_build_s": build_s,
    }


def totals(rows: list[scenarios.Row], inputs: list[dict[str, Any]]) -> dict[str, int]:
    keys = ("injected", "survived", "submitted", "processed", "lost", "duplicated")
    found = {k: sum(getattr(r, k) for r in rows) for k in keys}
    found["bad_inputs"] = len(inputs)
    found["bad_inputs_handled"] = sum(1 for i in inputs if i["handled"])
    return found


def passed(result: dict[str, Any]) -> bool:
    """Every fault survived, no request lost or duplicated, every bad input handled."""
    t = result["totals"]
    for row in result["rows"]:
        if row["lost"] or row["duplicated"] or row["injected"] != row["survived"]:
            return False
    return t["bad_inputs"] == t["bad_inputs_handled"]


def format_table(result: dict[str, Any]) -> str:
    t = result["totals"]
    lines = [
        f"Faults injected {t['injected']}, survived {t['survived']}. Requests submitted "
        f"{t['submitted']}, processed {t['processed']}, lost {t['lost']}, duplicated "
        f"{t['duplicated']}. Bad inputs tried {t['bad_inputs']}, handled "
        f"{t['bad_inputs_handled']}.",
        "",
        "| fault | how | injected | survived | submitted | processed | lost | duplicated "
        "| batch runs | s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['fault']} | {r['mechanism']} | {r['injected']} | {r['survived']} | "
            f"{r['submitted']} | {r['processed']} | {r['lost']} | {r['duplicated']} | "
            f"{r['runs']} | {r['seconds']:.0f} |"
        )
    notes = [(r["fault"], r["note"], r["problems"]) for r in result["rows"]]
    if any(note or problems for _, note, problems in notes):
        lines += ["", "Notes and problems:", ""]
        for fault, note, problems in notes:
            if note:
                lines.append(f"- {fault}: {note.strip().rstrip(';')}")
            for problem in problems[:8]:
                lines.append(f"- {fault}: PROBLEM {problem}")
    if result["inputs"]:
        kinds: dict[str, list[dict[str, Any]]] = {}
        for item in result["inputs"]:
            kinds.setdefault(item["kind"], []).append(item)
        lines += ["", "| bad input | tried | handled |", "|---|---|---|"]
        for kind, items in kinds.items():
            lines.append(f"| {kind} | {len(items)} | {sum(i['handled'] for i in items)} |")
        for item in result["inputs"]:
            if not item["handled"]:
                lines.append(f"- NOT HANDLED {item['kind']} {item['input']!r}: {item['note']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.reliability",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--out",
        help="write the JSON here and the table as .md beside it (default: "
        "benchmarks/results/reliability.json; reliability-quick.json with --quick)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="only the log's faults and the bad input (seconds; what `make test` runs)",
    )
    parser.add_argument(
        "--only", action="append", choices=NAMES, help="run this scenario (repeatable)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the random kill times")
    parser.add_argument("--keep", help="work in this folder and keep it (default: a temporary one)")
    parser.add_argument(
        "--rows",
        help="take the rows of the scenarios `pytest -m reliability` already ran from this "
        "file ($EUL_RELIABILITY_ROWS of that run) instead of running them again",
    )
    args = parser.parse_args(argv)
    if args.only:
        names = list(args.only)
    elif args.quick:
        names = [*LOG_SCENARIOS, "bad-input"]
    else:
        names = list(NAMES)
    earlier = earlier_rows(Path(args.rows) if args.rows else None)
    started = time.monotonic()
    if args.keep:
        scratch = Path(args.keep).resolve()
        scratch.mkdir(parents=True, exist_ok=True)
        result = run(names, scratch, args.seed, not args.quick, earlier)
    else:
        with tempfile.TemporaryDirectory(prefix="eul-reliability-") as tmp:
            result = run(names, Path(tmp), args.seed, not args.quick, earlier)
    result["wall_s"] = round(time.monotonic() - started, 1)
    result["machine"] = {"cpus": os.cpu_count(), "uid": os.geteuid()}
    table = format_table(result)
    print(table)
    default = "reliability-quick.json" if args.quick else "reliability.json"
    out = Path(args.out) if args.out else RESULTS / default
    settings = {"scenarios": names, "seed": args.seed, "quick": args.quick}
    write_result(out, "reliability", result, table, settings)
    return 0 if passed(result) else 1


if __name__ == "__main__":
    sys.exit(main())
