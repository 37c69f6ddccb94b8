"""`eul data`: generate the synthetic data set, write the embedded raw data on a fresh clone,
partition forget sets, purge forgotten rows, scan every store for purged data, add an S3
remote."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from eul.cli.args import (
    EXIT_FAILURE,
    CliError,
    existing_dir,
    existing_file,
    positive_int,
    share,
    writable_path,
)
from eul.cli.common import add_params_option, add_project_options, parse_statuses, read_params

if TYPE_CHECKING:
    from eul.pipeline.leaks import LeakReport

# -- commands -----------------------------------------------------------------------------


def cmd_generate(args: argparse.Namespace) -> None:
    from eul.data.records import save_records, split_records
    from eul.data.synthetic import SyntheticConfig, generate

    out = writable_path(args.out, "--out", folder=True)
    config = SyntheticConfig(
        task=args.task,
        n_subjects=args.subjects,
        memorised_share=args.memorised_share,
        seed=args.seed,
    )
    subjects, records = generate(config)
    train, heldout, test = split_records(records, seed=args.seed)
    out.mkdir(parents=True, exist_ok=True)
    for name, part in (("train", train), ("heldout", heldout), ("test", test)):
        save_records(part, out / f"{name}.jsonl")
    (out / "subjects.jsonl").write_text(
        "".join(json.dumps({"subject_id": s.subject_id, "name": s.name}) + "\n" for s in subjects)
    )
    print(
        f"wrote {len(records)} {args.task} records of {len(subjects)} subjects to {out}/: "
        f"train {len(train)}, heldout {len(heldout)}, test {len(test)} "
        f"({sum(r.memorised for r in records)} memorised rows, all in train)"
    )


def cmd_data_init(args: argparse.Namespace) -> None:
    from eul.pipeline.stages import init_data
    from eul.stores.dvc import dvcstore

    params = read_params(args)
    result = init_data(params, ".")
    if result["written"]:
        print(
            f"wrote {result['rows']} rows to {result['records']} "
            f"({result['purged_rows']} purged rows left out)"
        )
    else:
        print(f"{result['records']} exists; left as it is")
    if result["snapshot_written"]:
        print(f"wrote an empty log snapshot to {result['snapshot']}")
    dvc_file = Path(params.data.dvc_file)
    if dvc_file.is_file():
        tracked = dvcstore.tracked_md5(dvc_file)
        actual = dvcstore.dir_md5(params.data.raw)
        if actual != tracked:
            raise CliError(
                f"{params.data.raw} ({actual}) differs from {dvc_file} ({tracked}): the data "
                "set is not the embedded one; get it with `dvc pull`"
            )
        print(f"{params.data.raw} matches {dvc_file} ({tracked})")


def cmd_data_partition(args: argparse.Namespace) -> None:
    from eul.runtime.evidence import evidence_key
    from eul.stores.dvc.partition import load_snapshot, partition

    existing_file(args.snapshot, "--snapshot", "write one with `eul requests snapshot`")
    existing_file(args.data, "--data", "give the .jsonl records the snapshot refers to")
    status = ",".join(parse_statuses(args.status, "--status"))
    writable_path(args.out, "--out", folder=True)
    snapshot = load_snapshot(args.snapshot)
    # The project is the working folder, as for `eul data purge` (dvc runs the stage there).
    manifest = partition(snapshot, args.data, args.out, status=status, key=evidence_key("."))
    print(
        f"log seq {manifest['log_seq']}: {len(manifest['requests'])} {args.status} requests, "
        f"{manifest['rows_forgotten']} of {manifest['rows_total']} rows to forget, "
        f"{manifest['rows_retained']} retained ({len(manifest['skipped'])} requests skipped); "
        f"written to {args.out}/"
    )


def _purge_requests(args: argparse.Namespace) -> list:
    from eul.stores.dvc.partition import load_snapshot
    from eul.stores.dvc.purge import PurgeRequest, requests_from_snapshot

    requests = []
    if args.snapshot:
        existing_file(args.snapshot, "--snapshot", "write one with `eul requests snapshot`")
        requests += requests_from_snapshot(load_snapshot(args.snapshot), status=args.status)
    for value in args.request or []:
        request_id, _, ids = value.partition("=")
        record_ids = tuple(i.strip() for i in ids.split(",") if i.strip())
        if not request_id or not record_ids:
            raise CliError(f"--request takes REQUEST_ID=RECORD_ID[,RECORD_ID...], got {value!r}")
        requests.append(PurgeRequest(request_id.strip(), record_ids=record_ids))
    for value in args.subject_request or []:
        request_id, _, subject = value.partition("=")
        if not request_id or not subject:
            raise CliError(f"--subject-request takes REQUEST_ID=SUBJECT_ID, got {value!r}")
        requests.append(PurgeRequest(request_id.strip(), subject_id=subject.strip()))
    if not requests:
        raise CliError("nothing to purge: give --snapshot, --request or --subject-request")
    return requests


def cmd_data_purge(args: argparse.Namespace) -> None:
    from eul.stores.dvc import dvcstore
    from eul.stores.dvc.purge import purge

    params = read_params(args)
    requests = _purge_requests(args)
    if args.evidence:
        writable_path(args.evidence, "--evidence")
    if args.remote:
        known = dvcstore.remotes(".") if Path(".dvc").is_dir() else {}
        unknown = [name for name in args.remote if name not in known]
        if unknown:
            names = ", ".join(known) or "none"
            raise CliError(f"--remote {unknown[0]} is not a DVC remote here (known: {names})")
    evidence = purge(requests, ".", params, remotes=args.remote, scan=not args.no_scan)
    if args.evidence:
        Path(args.evidence).write_text(json.dumps(evidence, indent=2) + "\n")
    print(
        f"purged {evidence['rows_removed']} rows of {len(evidence['requests'])} requests: "
        f"{params.data.dvc_file} {evidence['old_md5']} -> {evidence['new_md5']}"
    )
    for request in evidence["requests"]:
        print(f"  {request['request_id']}: {request['rows_removed']} rows")
    swept = ", ".join(r["name"] for r in evidence["remotes"]) or "none"
    print(f"cache and remotes swept ({swept}); evidence appended to {params.purge.ledger}")
    print(f"commit {params.data.dvc_file}, dvc.lock and {params.purge.ledger} to git")


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def format_leak_report(report: LeakReport) -> str:
    """The scan as a table, one store a line, then the paths of the hits (never text)."""
    lines = [f"{'store':<22} {'files':>7} {'bytes':>10} {'text':>5} {'keyed':>6} {'files/req':>9}"]
    for s in report.stores:
        lines.append(
            f"{s.store:<22} {s.files_scanned:>7} {_size(s.bytes_scanned):>10} "
            f"{len(s.text_hits):>5} {len(s.keyed_hits):>6} {len(s.request_file_hits):>9}"
            + (f"  error: {s.error}" if s.error else f"  ({s.note})" if s.note else "")
        )
    for s in report.stores:
        for kind, paths in (
            ("text", s.text_hits),
            ("keyed row", s.keyed_hits),
            ("request file", s.request_file_hits),
        ):
            lines += [f"  {s.store}: {kind}: {path}" for path in paths]
    looked = (
        f"{len(report.request_ids)} purged requests, {report.keyed_rows} keyed rows, "
        f"{report.needles} needles"
    )
    if report.clean:
        verdict = "clean: no store holds a purged row or a purged request's file"
    else:
        verdict = f"NOT CLEAN: {report.hits} hits, {len(report.errors)} stores not read"
    lines.append(f"{looked}: {verdict}")
    return "\n".join(lines) + "\n"


def cmd_data_scan_leaks(args: argparse.Namespace) -> int:
    from eul.pipeline.context import load_context
    from eul.pipeline.leaks import purged_in_log, scan_leaks

    root = existing_dir(args.project, "--project", "give the project folder (with params.yaml)")
    if args.params != "params.yaml" and not (root / args.params).is_file():
        raise CliError(f"--params: no {args.params} in {root}; check the file name")
    ctx = load_context(root, args.params)
    purged = purged_in_log(ctx)
    report = scan_leaks(ctx, purged.request_ids, keyed_rows=purged.keyed_rows)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(format_leak_report(report), end="")
    return 0 if report.clean else EXIT_FAILURE


def cmd_data_remote(args: argparse.Namespace) -> None:
    from eul.stores.dvc import dvcstore

    if not args.url.startswith("s3://"):
        raise CliError(
            f"an S3 remote URL starts with s3://, got {args.url!r}; e.g. s3://bucket/dvc"
        )
    if not Path(".dvc").is_dir():
        raise CliError(
            "this folder is not a DVC project (no .dvc/); run `eul data remote` in the "
            "project's root, or `dvc init` first"
        )
    key_id = secret = None
    if args.store_credentials:
        key_id = os.environ.get("AWS_ACCESS_KEY_ID")
        secret = os.environ.get("AWS_SECRET_ACCESS_KEY")
        if not key_id or not secret:
            raise CliError("--store-credentials needs AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")
    dvcstore.add_s3_remote(
        ".",
        args.name,
        args.url,
        endpoint_url=args.endpoint_url,
        region=args.region,
        access_key_id=key_id,
        secret_access_key=secret,
        default=args.default,
    )
    where = " (credentials in .dvc/config.local)" if key_id else ""
    print(f"remote {args.name} -> {args.url}{where}")


# -- parser -------------------------------------------------------------------------------


def register(subparsers: Any) -> None:
    """Add `eul data ...` to the `eul` command line."""
    data = subparsers.add_parser(
        "data",
        help="make, version and purge the data set",
        description="The data set: generate the synthetic one, write the embedded raw data on "
        "a fresh clone, partition forget sets, purge forgotten rows, add an S3 remote.",
    )
    sub = data.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    _declare_generate(sub)
    _declare_init(sub)
    _declare_partition(sub)
    _declare_purge(sub)
    _declare_scan_leaks(sub)
    _declare_remote(sub)


def _declare_generate(sub: Any) -> None:
    """`eul data generate`."""
    gen = sub.add_parser(
        "generate",
        help="write the synthetic data set (train/heldout/test split by subject)",
        description="Write a synthetic data set, deterministic by seed: reviews with labels "
        "(classification) or dialogues with summaries (generation), a share of them "
        "memorisable (flipped labels, planted secrets).",
    )
    gen.add_argument("--out", required=True, help="folder to write train/heldout/test.jsonl to")
    gen.add_argument(
        "--task",
        choices=("classification", "generation"),
        default="classification",
        help="reviews with labels, or dialogues with summaries",
    )
    gen.add_argument("--subjects", type=positive_int, default=400, help="number of people")
    gen.add_argument(
        "--memorised-share", type=share, default=0.02, help="share of memorisable rows (0 to 1)"
    )
    gen.add_argument("--seed", type=int, default=0, help="random seed; same seed, same data")
    gen.set_defaults(func=cmd_generate)


def _declare_init(sub: Any) -> None:
    """`eul data init`."""
    init = sub.add_parser(
        "init",
        help="write the embedded raw data set (data/raw) where it is missing",
        description="Regenerate the embedded synthetic raw data set from params.yaml, minus "
        "the rows in the purge ledger, so that it matches data.dvc on a fresh clone; also "
        "write an empty log snapshot where none exists.",
    )
    add_params_option(init)
    init.set_defaults(func=cmd_data_init, needs_ml=False)


def _declare_partition(sub: Any) -> None:
    """`eul data partition`."""
    part = sub.add_parser(
        "partition",
        help="split data into per-request forget sets and the retained set",
        description="Read a deletion-log snapshot and a .jsonl data file; write "
        "forget/<request_id>.jsonl, retained.jsonl and manifest.json (keyed digests only) "
        "to --out.",
    )
    part.add_argument(
        "--snapshot", required=True, help="log snapshot JSON (`eul requests snapshot`)"
    )
    part.add_argument("--data", required=True, help=".jsonl records with record_id, subject_id")
    part.add_argument("--out", required=True, help="output folder")
    part.add_argument(
        "--status",
        default="validated",
        help="requests acted on, comma-separated statuses (default: %(default)s)",
    )
    part.set_defaults(func=cmd_data_partition, needs_ml=False)


def _declare_purge(sub: Any) -> None:
    """`eul data purge`."""
    from eul.stores.log.schema import STATUSES

    pur = sub.add_parser(
        "purge",
        help="remove deployed requests' rows from the data, DVC cache and remotes",
        description="Remove the rows of deployed requests from the raw data, record a new "
        "data.dvc, rebuild the stages that copy rows, and delete the old objects from the "
        "cache and every remote; prints hashes, never content.",
    )
    pur.add_argument("--snapshot", help="log snapshot JSON; its requests with --status are purged")
    pur.add_argument(
        "--status", default="deployed", choices=STATUSES, help="with --snapshot: requests purged"
    )
    pur.add_argument(
        "--request", action="append", help="REQUEST_ID=RECORD_ID[,RECORD_ID...] (repeatable)"
    )
    pur.add_argument(
        "--subject-request", action="append", help="REQUEST_ID=SUBJECT_ID (repeatable)"
    )
    pur.add_argument(
        "--remote", action="append", help="remote to sweep (repeatable; default: all remotes)"
    )
    pur.add_argument(
        "--no-scan", action="store_true", help="skip reading every stored object for purged rows"
    )
    pur.add_argument("--evidence", help="also write the evidence JSON here")
    add_params_option(pur)
    pur.set_defaults(func=cmd_data_purge, needs_ml=False)


def _declare_scan_leaks(sub: Any) -> None:
    """`eul data scan-leaks`."""
    scan = sub.add_parser(
        "scan-leaks",
        help="read every store for purged rows and files; exit 1 on any hit",
        description="Read every store the pipeline writes (the data folders, the DVC cache "
        "and every remote, MLflow's database and artifacts, Prefect's database and result "
        "storage, the datasets library's cache, state/, the working folder and eul's "
        "temporary folders) for the requests the deletion log marks purged: any stored line "
        "or JSON object whose keyed hash is a purged row's, and any layer folder, forget "
        "file or MLflow request run of a purged request. Prints counts and paths, never "
        "text. Exit status 1 when anything is found or a store cannot be read, 0 when clean.",
    )
    add_project_options(scan)
    scan.add_argument("--json", action="store_true", help="print the report as JSON")
    scan.set_defaults(func=cmd_data_scan_leaks, needs_ml=False)


def _declare_remote(sub: Any) -> None:
    """`eul data remote`."""
    rem = sub.add_parser(
        "remote",
        help="add an S3 (or S3-compatible) DVC remote",
        description="Add a DVC remote on S3 or any S3-compatible endpoint. Credentials come "
        "from AWS_* variables at push time, or with --store-credentials go to "
        ".dvc/config.local (never committed).",
    )
    rem.add_argument("name", help="the remote's name in .dvc/config")
    rem.add_argument("url", help="s3://bucket/path")
    rem.add_argument("--endpoint-url", help="e.g. http://127.0.0.1:9000 for a local server")
    rem.add_argument("--region", help="the bucket's region (default: the AWS configuration's)")
    rem.add_argument("--default", action="store_true", help="make it the default remote")
    rem.add_argument(
        "--store-credentials",
        action="store_true",
        help="copy AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY into .dvc/config.local",
    )
    rem.set_defaults(func=cmd_data_remote, needs_ml=False)
