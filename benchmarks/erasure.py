"""What each store holds of a batch of deletion requests before their purge, after it and after
their erasure, and what the purge and the erasure cost against the batch.

    python -m benchmarks.erasure --out benchmarks/results/erasure-bench.json

Builds the project once from this checkout (as `benchmarks.pipeline` does), submits
--requests requests for whole subjects of the training split, and runs, against a local
Prefect server, the nightly batch (promoted, not purged), then the purge step, then the
`compact` flow (forced, promoted: the erase step runs after it). Before the purge, after it
and after the erasure, the leak scan (`eul.pipeline.leaks.scan_leaks`) reads every store with
the requests' rows as raw bytes (held by this benchmark only: the project's stores hold them
only until the purge), their keyed row digests and their request ids, and reports per store
the files and bytes it read and the hits. Two counts the scan cannot see are added: the
registered versions whose weights were trained on the rows and still have their model
artifacts, and whether `models/base` (trained on them) is still in the DVC cache or remote.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from benchmarks import RESULTS
from benchmarks.pipeline import REPO, _env, _start_server, build_project, choose_subjects
from eul.bench.envelope import write_result
from eul.runtime.servers import stop

POINTS = ("before purge", "after purge", "after erasure")


def _set_params(project: Path, **pipeline: Any) -> None:
    path = project / "params.yaml"
    params = yaml.safe_load(path.read_text())
    params.setdefault("pipeline", {}).update(pipeline)
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def _request_rows(project: Path, subjects: list[str]) -> list[str]:
    """The raw rows of the chosen subjects, as stored (the needles of the scan)."""
    params = yaml.safe_load((project / "params.yaml").read_text())
    data = params.get("data", {})
    path = project / data.get("raw", "data/raw") / data.get("records_file", "records.jsonl")
    wanted = set(subjects)
    return [
        line
        for line in path.read_text(encoding="utf-8").splitlines()
        if line.strip() and json.loads(line).get("subject_id") in wanted
    ]


def _needles(lines: list[str]) -> list[bytes]:
    """Each stored row, and each of its long text fields as JSON escapes it."""
    needles = []
    for line in lines:
        needles.append(line.encode("utf-8"))
        for value in json.loads(line).values():
            if isinstance(value, str) and len(value) >= 24:
                needles.append(json.dumps(value, ensure_ascii=False)[1:-1].encode("utf-8"))
    return list(dict.fromkeys(needles))


def _weights(ctx: Any, erased_from: int | None) -> dict[str, int]:
    """Registered versions whose weights were trained on the rows and still have artifacts
    (every version before the compaction, `erased_from`), and models/base in the DVC cache."""
    from eul.stores.registry.erasure import is_erased, version_records

    records = version_records(ctx.settings)
    older = [v for v in records if erased_from is None or v < erased_from]
    live = [v for v in older if not is_erased(records[v])]
    lock = (
        yaml.safe_load((ctx.root / "dvc.lock").read_text())
        if (ctx.root / "dvc.lock").is_file()
        else {}
    )
    outs = (lock.get("stages") or {}).get("train", {}).get("outs", [])
    base = [o["md5"] for o in outs if o.get("path") == "models/base" and o.get("md5")]
    cache = ctx.root / ".dvc" / "cache" / "files" / "md5"
    remote = ctx.root / ".dvc-remote" / "files" / "md5"
    oids = set(base)
    for md5 in base:
        listing = cache / md5[:2] / md5[2:]
        if listing.is_file():  # the .dir object lists the folder's files
            oids.update(entry["md5"] for entry in json.loads(listing.read_text()))

    def held(folder: Path) -> int:
        return sum((folder / oid[:2] / oid[2:]).is_file() for oid in oids)

    return {
        "versions_with_weights": len(live),
        "models_base_objects_cache": held(cache),
        "models_base_objects_remote": held(remote),
    }


def _scan(ctx: Any, ids: list[str], needles: list[bytes], rows: list[str]) -> dict[str, Any]:
    from eul.pipeline.leaks import scan_leaks
    from eul.runtime.evidence import evidence_key, keyed_row

    key = evidence_key(ctx.root)
    started = time.perf_counter()
    report = scan_leaks(ctx, ids, needles=needles, keyed_rows=[keyed_row(key, r) for r in rows])
    result = report.to_dict()
    result["scan_s"] = time.perf_counter() - started
    return result


def run(project: Path, requests: int, scratch: Path) -> dict[str, Any]:
    import shutil

    import torch

    from eul.pipeline.context import load_context
    from eul.stores.log.store import Ledger

    copy = scratch / "project"
    shutil.copytree(project, copy, symlinks=True, ignore=shutil.ignore_patterns("state"))
    _set_params(copy, purge=False, auto_promote=True)
    subjects = choose_subjects(copy, requests)
    ids = [f"erase-{i + 1}" for i in range(requests)]
    rows = _request_rows(copy, subjects)
    needles = _needles(rows)
    ctx = load_context(copy)
    from eul.stores.dvc import dvcstore

    for name in dvcstore.remotes(copy):  # the remote holds the data and the base, as in use
        dvcstore.push(copy, name)
    with Ledger(ctx.log_url, params_path=ctx.params_path) as ledger:
        for rid, subject in zip(ids, subjects, strict=True):
            ledger.submit(subject_id=subject, request_id=rid)
    server, api = _start_server(scratch / "prefect-home")
    os.environ.update(_env())
    os.environ["PREFECT_API_URL"] = api
    os.environ["PREFECT_HOME"] = str(scratch / "prefect-home")
    torch.set_num_threads(1)
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    points: dict[str, Any] = {}
    seconds: dict[str, float] = {}
    try:
        from flows.compact import compact
        from flows.nightly import nightly_deletion_batch

        started = time.perf_counter()
        nightly_deletion_batch(project_dir=str(copy))
        seconds["batch"] = time.perf_counter() - started
        points[POINTS[0]] = {**_scan(ctx, ids, needles, rows), "weights": _weights(ctx, None)}

        _set_params(copy, purge=True)
        from eul.pipeline.purge_step import purge_deployed

        ctx = load_context(copy)
        started = time.perf_counter()
        purge_deployed(ctx)
        seconds["purge"] = time.perf_counter() - started
        points[POINTS[1]] = {**_scan(ctx, ids, needles, rows), "weights": _weights(ctx, None)}

        started = time.perf_counter()
        summary = compact(project_dir=str(copy), force=True, auto_promote=True)
        seconds["compaction_and_erasure"] = time.perf_counter() - started
        seconds.update({f"compact:{k}": v for k, v in (summary.get("seconds") or {}).items()})
        from eul.stores.registry.versions import PRODUCTION, get_alias_version

        production = get_alias_version(ctx.settings, PRODUCTION)
        points[POINTS[2]] = {
            **_scan(ctx, ids, needles, rows),
            "weights": _weights(ctx, production),
        }
        with ctx.ledger() as ledger:
            statuses = {s.request_id: s.status for s in ledger.list()}
    finally:
        stop(server)
    return {
        "requests": requests,
        "request_rows": len(rows),
        "seconds": seconds,
        "points": points,
        "statuses": statuses,
    }


def format_table(result: dict[str, Any]) -> str:
    """Per store: files and bytes read, and hits (text / keyed rows / request files)."""
    points = result["points"]
    stores = [s["store"] for s in points[POINTS[0]]["stores"]]
    lines = [
        f"{result['requests']} requests ({result['request_rows']} rows): what each store holds "
        "of them. Cells: files, MB read; hits as text / keyed rows / request files.",
        "",
        "| store | " + " | ".join(POINTS) + " |",
        "|---|" + "---|" * len(POINTS),
    ]
    for name in stores:
        cells = []
        for point in POINTS:
            store = next(s for s in points[point]["stores"] if s["store"] == name)
            cells.append(
                f"{store['files_scanned']} f, {store['bytes_scanned'] / 1e6:.2f} MB; "
                f"{len(store['text_hits'])} / {len(store['keyed_hits'])} / "
                f"{len(store['request_file_hits'])}"
            )
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    for key, label in (
        ("versions_with_weights", "registered versions with weights trained on the rows"),
        ("models_base_objects_cache", "models/base objects in the DVC cache"),
        ("models_base_objects_remote", "models/base objects on the DVC remote"),
    ):
        lines.append(
            f"| {label} | " + " | ".join(str(points[p]["weights"][key]) for p in POINTS) + " |"
        )
    lines.append("| total hits | " + " | ".join(str(points[p]["hits"]) for p in POINTS) + " |")
    secs = result["seconds"]
    batch = secs.get("batch", 0.0)
    lines += ["", "| step | wall s | share of the batch |", "|---|---|---|"]
    for name in ("batch", "purge", "compaction_and_erasure", "compact:erase"):
        if name in secs:
            lines.append(f"| {name} | {secs[name]:.1f} | {secs[name] / batch:.2f} |")
    scans = [points[p]["scan_s"] for p in POINTS]
    lines.append(
        f"| one leak scan (mean of 3) | {sum(scans) / 3:.1f} | {sum(scans) / 3 / batch:.2f} |"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.erasure", description=__doc__)
    parser.add_argument(
        "--out",
        help="write the JSON here and the table as .md beside it "
        "(default: benchmarks/results/erasure-bench.json)",
    )
    parser.add_argument("--project", help="a project already built (default: build one)")
    parser.add_argument("--requests", type=int, default=3)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="erasure-bench-") as tmp:
        scratch = Path(tmp)
        project = Path(args.project).resolve() if args.project else build_project(scratch / "built")
        result = run(project, args.requests, scratch / "run")
    result["machine"] = {"cpus": os.cpu_count(), "load_avg_1_5_15": list(os.getloadavg())}
    table = format_table(result)
    print(table)
    settings = {"requests": args.requests, "project": args.project}
    write_result(args.out or RESULTS / "erasure-bench.json", "erasure", result, table, settings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
