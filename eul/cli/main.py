"""The `eul` command line: data, base model, unlearning, evaluation, benchmark, audit, doctor.

Bad input ends with one line on stderr that names the fix and exit status 2; a store that
does not answer, or work that fails, ends the same way with exit status 1 (`eul.cli.args`).
Set EUL_DEBUG=1 to see the full traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from eul.cli.args import (
    EXIT_BAD_INPUT,
    EXIT_FAILURE,
    CliError,
    EulParser,
    RunError,
    existing_dir,
    existing_file,
    layer_dir,
    model_dir,
    non_negative_float,
    positive_float,
    positive_int,
    share,
    writable_path,
)
from eul.runtime.quiet import quiet_libraries

if TYPE_CHECKING:
    import torch

    from eul.cli.doctor import Check
    from eul.pipeline.context import Context

__all__ = ["EXIT_BAD_INPUT", "EXIT_FAILURE", "CliError", "RunError", "build_parser", "main"]

# -- helpers ------------------------------------------------------------------------------


def _ids(values: Sequence[str] | None, file: str | None) -> list[str]:
    ids = [v.strip() for value in values or [] for v in value.split(",") if v.strip()]
    if file:
        path = existing_file(file, "--ids-file", "give a file with one record id per line")
        ids += [line.strip() for line in path.read_text().splitlines() if line.strip()]
    return ids


def _load(path: str, args: argparse.Namespace, option: str = "--data") -> list:
    from eul.data.records import ColumnMap, load_records

    existing_file(path, option, "give a .jsonl, .csv, .tsv or .parquet file of records")

    columns = None
    if any(getattr(args, k, None) for k in ("text_col", "label_col", "target_col")):
        generation = args.task == "generation"
        columns = ColumnMap(
            text=args.text_col or "text",
            target=(args.target_col or "target") if generation else None,
            label=None if generation else (args.label_col or "label"),
            record_id=args.id_col or "record_id",
            subject_id=args.subject_col or "subject_id",
        )
    return load_records(path, task=args.task, columns=columns)


def _add_data_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data columns (defaults match files written by `eul data generate`)")
    g.add_argument(
        "--task",
        choices=("classification", "generation"),
        default="classification",
        help="classification: text -> label word; generation: text -> target text",
    )
    g.add_argument("--text-col", help="column with the input text (default: text)")
    g.add_argument("--label-col", help="column with the label, classification (default: label)")
    g.add_argument("--target-col", help="column with the target text, generation (default: target)")
    g.add_argument(
        "--id-col", help="column with record ids (default: record_id; assigned if absent)"
    )
    g.add_argument("--subject-col", help="column with subject ids (default: subject_id)")


def _add_forget_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("what to forget (at least one)")
    g.add_argument(
        "--subject",
        action="append",
        help="subject id whose records to forget (repeatable, or comma-separated)",
    )
    g.add_argument(
        "--record", action="append", help="record id to forget (repeatable, or comma-separated)"
    )
    g.add_argument("--ids-file", help="file with one record id per line")


def _statuses(text: str, option: str) -> list[str]:
    """Comma-separated log statuses, each one the log knows."""
    from eul.stores.log.ledger import STATUSES

    statuses = [s.strip() for s in text.split(",") if s.strip()]
    unknown = [s for s in statuses if s not in STATUSES]
    if not statuses or unknown:
        shown = repr(unknown[0]) if unknown else "nothing"
        raise CliError(f"{option} got {shown}; use one or more of {', '.join(STATUSES)}")
    return statuses


def _forget_split(records: list, args: argparse.Namespace) -> tuple[list, list]:
    from eul.data.records import select_forget

    return select_forget(records, _ids(args.subject, None), _ids(args.record, args.ids_file))


def _add_device_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--device",
        default="auto",
        help="where to train and evaluate: auto (a GPU if there is one), cpu, cuda, cuda:N, "
        "mps (default: %(default)s)",
    )


def _device(args: argparse.Namespace) -> torch.device:
    """The torch device of --device, checked before any work starts."""
    from eul.model.text_model import resolve_device

    try:
        return resolve_device(args.device)
    except ValueError as err:
        raise CliError(f"--device: {err}") from None


def _print_metrics(metrics: dict) -> None:
    width = max(len(k) for k in metrics)
    for key, value in metrics.items():
        shown = f"{value:.4f}" if isinstance(value, float) else str(value)
        print(f"  {key:<{width}}  {shown}")


# -- commands -----------------------------------------------------------------------------


def cmd_generate(args: argparse.Namespace) -> None:
    from eul.data.records import SyntheticConfig, generate, save_records, split_records

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


def _params(args: argparse.Namespace):
    from eul.params import load_params

    path = Path(args.params)
    if not path.is_file() and args.params == "params.yaml":
        return load_params(None)
    return load_params(path)


def cmd_data_init(args: argparse.Namespace) -> None:
    from eul.pipeline.stages import init_data
    from eul.stores.dvc import dvcstore

    params = _params(args)
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


def cmd_stage_prepare(args: argparse.Namespace) -> None:
    from eul.pipeline.stages import prepare, raw_records_path

    params = _params(args)
    raw = raw_records_path(params, ".")
    if not raw.is_file():
        raise CliError(
            f"no raw data at {raw}; run `eul data init` (the embedded data set) or `dvc pull`"
        )
    counts = prepare(params, ".")
    print(
        f"split by subject into {params.prepare.out}/: train {counts['train']}, "
        f"heldout {counts['heldout']}, test {counts['test']}; tokenizer trained on train"
    )


def cmd_stage_train(args: argparse.Namespace) -> None:
    from eul.pipeline.stages import train_base

    params = _params(args)
    train_file = Path(params.prepare.out) / "train.jsonl"
    if not train_file.is_file():
        raise CliError(
            f"no prepared data at {train_file}; run `eul stage prepare` (or `dvc repro prepare`)"
        )
    stats = train_base(params, ".", progress=not args.quiet)
    print(
        f"trained the base model ({stats['parameters']:,} parameters) on {stats['records']} "
        f"records for {params.train.epochs} epochs, final loss {stats['final_loss']:.4f}; "
        f"saved to {params.train.out}"
    )


def cmd_data_partition(args: argparse.Namespace) -> None:
    from eul.stores.dvc.partition import load_snapshot, partition

    existing_file(args.snapshot, "--snapshot", "write one with `eul requests snapshot`")
    existing_file(args.data, "--data", "give the .jsonl records the snapshot refers to")
    status = ",".join(_statuses(args.status, "--status"))
    writable_path(args.out, "--out", folder=True)
    snapshot = load_snapshot(args.snapshot)
    manifest = partition(snapshot, args.data, args.out, status=status)
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

    params = _params(args)
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


def cmd_train(args: argparse.Namespace) -> None:
    from eul.data.records import LABEL_WORDS
    from eul.model.text_model import ModelSpec, TextModel, TrainConfig, train_full

    device = _device(args)
    if args.init:
        model_dir(args.init, "--init")
    elif args.d_model % args.heads:
        raise CliError(
            f"--d-model {args.d_model} is not a multiple of --heads {args.heads}; "
            "each head gets d_model / heads dimensions"
        )
    writable_path(args.out, "--out", folder=True)
    records = _load(args.data, args)
    if args.init:
        tm = TextModel.load(args.init)
    else:
        spec = ModelSpec(
            family=args.family,
            d_model=args.d_model,
            num_layers=args.layers,
            num_heads=args.heads,
            d_ff=args.d_ff,
            vocab_size=args.vocab,
            max_input_len=args.max_input_len or (160 if args.task == "generation" else 64),
            max_target_len=args.max_target_len or (48 if args.task == "generation" else 8),
        )
        texts = [r.text for r in records] + [r.target for r in records] + list(LABEL_WORDS)
        tm = TextModel.create(texts, spec, seed=args.seed)
    config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed)
    tm.to(device)
    stats = train_full(tm, records, config, desc="train base model", progress=not args.quiet)
    tm.save(args.out)
    n_params = sum(p.numel() for p in tm.model.parameters())
    print(
        f"trained a {tm.model.config.model_type} model ({n_params:,} parameters) on "
        f"{len(records)} records for {config.epochs} epochs, final loss "
        f"{stats['final_loss']:.4f}; saved to {args.out}"
    )


def cmd_unlearn(args: argparse.Namespace) -> None:
    import time

    from eul.data.records import DataError
    from eul.fusion.fuse import save_request_statistics
    from eul.layers import LayerConfig
    from eul.methods import EULConfig, ForgetTask, get_method
    from eul.model.text_model import TextModel

    device = _device(args)
    model_dir(args.model)
    writable_path(args.out, "--out", folder=True)
    records = _load(args.data, args)
    forget, retained = _forget_split(records, args)
    heldout = _load(args.heldout, args, "--heldout") if args.heldout else []
    if not retained:
        raise DataError("nothing would be retained: the request names every record")
    tm = TextModel.load(args.model).to(device)
    config = EULConfig(
        objective=args.objective,
        reference=args.reference,
        epochs=args.epochs,
        lr=args.lr,
        retained_sample=args.retained_sample,
        layer=LayerConfig(width=args.width, basis=args.basis),
        seed=args.seed,
    )
    name = args.name or Path(args.out).name
    task = ForgetTask(forget=forget, retained=retained, heldout=heldout, name=name)
    started = time.perf_counter()
    result = get_method("eul", config=config).run(tm, task, progress=not args.quiet)
    folder = tm.unlearning_layers().save_layer(name, args.out)
    save_request_statistics(tm, name, forget, folder)
    history = {
        "forget_records": len(forget),
        "reference": config.reference,
        "update_s": result.update_s,
        "history": result.history,
    }
    (folder / "training.json").write_text(json.dumps(history, indent=2))
    print(
        f"unlearned {len(forget)} records in {time.perf_counter() - started:.1f} s "
        f"({len(result.history)} epochs, {result.trainable_share:.2%} of parameters trained); "
        f"layer saved to {folder}"
    )


def cmd_evaluate(args: argparse.Namespace) -> None:
    from eul.evaluate.metrics import EvalSets, evaluate, write_json
    from eul.model.text_model import TextModel

    device = _device(args)
    model_dir(args.model)
    if args.oracle:
        model_dir(args.oracle, "--oracle")
    for folder in args.layer or []:
        layer_dir(folder)
    if args.out:
        writable_path(args.out, "--out")
    records = _load(args.data, args)
    forget, retained = _forget_split(records, args)
    test = _load(args.test, args, "--test")
    unseen = _load(args.heldout, args, "--heldout") if args.heldout else test
    sets = EvalSets(test=test, retained=retained, forget=forget, unseen=unseen)
    oracle_losses = None
    if args.oracle:
        oracle = TextModel.load(args.oracle).to(device)
        _, oracle_losses = evaluate(oracle, sets, task=args.task)
    tm = TextModel.load(args.model).to(device)
    if args.layer:
        layers = tm.unlearning_layers()
        layers.set_active([layers.load_layer(folder) for folder in args.layer])
    metrics, _ = evaluate(tm, sets, task=args.task, oracle_forget_losses=oracle_losses)
    shown = f"{args.model}" + (f" + {len(args.layer)} layer(s)" if args.layer else "")
    print(f"evaluation of {shown} ({len(forget)} forget records):")
    _print_metrics(metrics)
    if args.out:
        from eul.bench.classification import clean_for_json

        write_json(clean_for_json(metrics), args.out)
        print(f"written to {args.out}")


def _print_written(paths: list[Path]) -> None:
    """The files a benchmark wrote, one a line: its JSON, its table, its figures."""
    print("\nwritten:")
    for path in paths:
        print(f"  {path}")


def cmd_bench(args: argparse.Namespace) -> None:
    from eul.bench.classification import BenchConfig, format_table, run_bench, save_report

    device = _device(args)
    if args.out:
        writable_path(args.out, "--out")
    if args.fusion_scale:
        from eul.bench.classification import clean_for_json
        from eul.bench.fusion_scale import draw_fusion_scale, format_fusion_scale, run_fusion_scale
        from eul.evaluate.metrics import write_json

        rows = run_fusion_scale(seed=args.seed)
        print(format_fusion_scale(rows))
        if args.out:
            report = {"fusion_scale": rows}
            write_json(clean_for_json(report), args.out)
            _print_written([Path(args.out), *draw_fusion_scale(report, Path(args.out))])
        return

    if args.task == "generation":
        _bench_generation(args, device)
        return
    config = BenchConfig.preset(
        quick=args.quick, data=args.data, seed=args.seed, variants=args.variants
    )
    if args.data and not Path(args.data).is_dir():
        raise CliError(
            f"no SST-2 folder at {args.data}: it must hold train.tsv (GLUE SST-2); "
            "omit --data to use the embedded synthetic data set"
        )
    if args.sequential:
        _bench_sequential(args, config, device)
        return
    report = run_bench(config, progress=not args.quiet, device=device)
    print()
    print(format_table(report))
    if args.out:
        _print_written(save_report(report, args.out))


def _bench_sequential(args: argparse.Namespace, bench: object, device: torch.device) -> None:
    from eul.bench.classification import save_report_as
    from eul.bench.sequential import (
        SequentialConfig,
        draw_sequential,
        format_sequential,
        protocol_bench,
        run_sequential,
    )

    config = SequentialConfig(
        bench=protocol_bench(bench),
        fusion=args.fusion,
        anchor_weight=args.anchor_weight,
        variants=args.variants,
    )
    result = run_sequential(config, progress=not args.quiet, device=device)
    table = format_sequential(result)
    print()
    print(table)
    if args.out:
        report = {"sequential": result["steps"], "setup": result["setup"]}
        _print_written(save_report_as(report, table, args.out, draw_sequential))


def _bench_generation(args: argparse.Namespace, device: torch.device) -> None:
    from eul.bench.classification import save_report_as
    from eul.bench.generation import (
        GenerationBenchConfig,
        draw_generation,
        format_generation,
        run_generation_bench,
        samsum_file,
    )

    if args.data:
        if not Path(args.data).is_dir():
            raise CliError(
                f"no SAMSum folder at {args.data}: it must hold val.csv (id, summary, dialogue); "
                "omit --data to use the embedded synthetic dialogues"
            )
        samsum_file(args.data)
    config = GenerationBenchConfig.preset(quick=args.quick, data=args.data, seed=args.seed)
    report = run_generation_bench(config, progress=not args.quiet, device=device)
    table = format_generation(report)
    print()
    print(table)
    if args.out:
        _print_written(save_report_as(report, table, args.out, draw_generation))


# -- parser -------------------------------------------------------------------------------


def _moment(text: str | None):
    """A timezone-aware datetime from ISO text (UTC when no offset is given), or None."""
    from datetime import datetime, timezone

    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise CliError(f"--at takes an ISO date or time such as 2026-12-31, got {text!r}") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def _project(args: argparse.Namespace) -> Context:
    """The project `--project` names (eul.pipeline.steps.Context), its inputs checked first."""
    from eul.pipeline.context import load_context

    root = existing_dir(args.project, "--project", "give the project folder (with params.yaml)")
    if args.params != "params.yaml" and not (root / args.params).is_file():
        raise CliError(f"--params: no {args.params} in {root}; check the file name")
    return load_context(root, args.params)


def cmd_audit(args: argparse.Namespace) -> int:
    from eul.pipeline.audit import audit, format_markdown
    from eul.pipeline.probes import mlflow_problem
    from eul.stores.log.ledger import Ledger

    moment = _moment(args.at)
    ctx = _project(args)
    problem = mlflow_problem(ctx.settings.tracking_uri)
    if problem:
        raise RunError("; ".join(problem))
    with Ledger(args.log_url or ctx.log_url, params_path=ctx.params_path) as ledger:
        report = audit(ledger, ctx.settings, now=moment)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(format_markdown(report), end="")
    return 0 if report["ok"] else EXIT_FAILURE


def cmd_doctor(args: argparse.Namespace) -> int:
    from eul.cli.doctor import run_doctor

    existing_dir(args.project, "--project", "give the project folder (with params.yaml)")
    width = 18

    def show(check: Check) -> None:
        if not args.json:
            print(check.line(width), flush=True)

    checks = run_doctor(args.project, args.params, report=show, models=not args.no_models)
    failed = [c for c in checks if c.failed]
    if args.json:
        print(json.dumps({"ok": not failed, "checks": [c.to_dict() for c in checks]}, indent=2))
    elif failed:
        print(f"\n{len(failed)} of {len(checks)} checks failed")
    else:
        print(f"\nall {len(checks)} checks passed")
    return EXIT_FAILURE if failed else 0


# The top-level help lists the commands by job; a command missing here is listed under
# "Other" (and a test fails), so a new command cannot vanish from `eul --help`.
COMMAND_GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Deletion requests", ("requests",)),
    ("Data (DVC)", ("data", "stage")),
    ("Models and unlearning", ("train", "unlearn", "evaluate")),
    ("Pipeline and compliance", ("audit",)),
    ("Benchmarks", ("bench",)),
    ("Set-up", ("demo", "doctor")),
)

FLOWS_NOTE = (
    "(the batch itself runs as Prefect flows: `python -m flows.serve`, then\n"
    " `prefect deployment run 'nightly-deletion-batch/nightly'`; see the README)"
)


def _subcommands(parser: argparse.ArgumentParser) -> list[tuple[str, str, argparse.ArgumentParser]]:
    """(name, one-line help, parser) of each subcommand of `parser`, in the order added."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return [
                (choice.dest, choice.help or "", action.choices[choice.dest])
                for choice in action._choices_actions
            ]
    return []


def command_overview(parser: argparse.ArgumentParser) -> str:
    """The commands grouped by job, one line each (sub-actions spelled out)."""
    commands = {name: (text, sub) for name, text, sub in _subcommands(parser)}
    grouped = [(title, [n for n in names if n in commands]) for title, names in COMMAND_GROUPS]
    known = {n for _, names in grouped for n in names}
    grouped.append(("Other", [n for n in commands if n not in known]))
    rows: list[tuple[str, list[tuple[str, str]]]] = []
    for title, names in grouped:
        lines = []
        for name in names:
            text, sub = commands[name]
            children = _subcommands(sub)
            lines += [(f"{name} {child}", help_) for child, help_, _ in children] or [(name, text)]
        if lines:
            rows.append((title, lines))
    width = max(len(command) for _, lines in rows for command, _ in lines)
    parts = []
    for title, lines in rows:
        parts.append(f"{title}:")
        parts += [f"  {command:<{width}}  {text}" for command, text in lines]
        if title == "Pipeline and compliance":
            parts += ["  " + line for line in FLOWS_NOTE.splitlines()]
        parts.append("")
    return "\n".join(parts).rstrip()


def cmd_demo(args: argparse.Namespace) -> int:
    from eul.cli.demo import DemoError, run_demo
    from eul.pipeline.context import PipelineError

    try:
        return run_demo(args.dir, args.params)
    except (DemoError, PipelineError) as err:
        raise CliError(str(err)) from None


def build_parser() -> argparse.ArgumentParser:
    # The EULConfig defaults, read from their mirror in eul.params so that building the
    # parser does not import torch.
    from eul.params import UnlearnParams
    from eul.stores.log.ledger import STATUSES

    parser = EulParser(
        prog="eul",
        usage="eul [--quiet] COMMAND [ACTION] [OPTIONS]",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Forget data in a deployed text-to-text model with Efficient Unlearning "
        "Layers,\nand measure it against a model retrained without that data.",
        epilog="Run `eul COMMAND --help` for a command's options and their defaults.\n"
        "New here? `eul doctor` checks the set-up; `make demo` runs the whole loop.\n"
        "Exit status: 0 done, 1 a check or a store failed, 2 bad input.",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    sub = parser.add_subparsers(
        dest="command", metavar="COMMAND", required=True, help=argparse.SUPPRESS, prog="eul"
    )

    data = sub.add_parser(
        "data",
        help="make, version and purge the data set",
        description="The data set: generate the synthetic one, write the embedded raw data on "
        "a fresh clone, partition forget sets, purge forgotten rows, add an S3 remote.",
    )
    data_sub = data.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    gen = data_sub.add_parser(
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

    init = data_sub.add_parser(
        "init",
        help="write the embedded raw data set (data/raw) where it is missing",
        description="Regenerate the embedded synthetic raw data set from params.yaml, minus "
        "the rows in the purge ledger, so that it matches data.dvc on a fresh clone; also "
        "write an empty log snapshot where none exists.",
    )
    _add_params_option(init)
    init.set_defaults(func=cmd_data_init, needs_ml=False)

    part = data_sub.add_parser(
        "partition",
        help="split data into per-request forget sets and the retained set",
        description="Read a deletion-log snapshot and a .jsonl data file; write "
        "forget/<request_id>.jsonl, retained.jsonl and manifest.json (hashes only) to --out.",
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

    pur = data_sub.add_parser(
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
    _add_params_option(pur)
    pur.set_defaults(func=cmd_data_purge, needs_ml=False)

    rem = data_sub.add_parser(
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

    stage = sub.add_parser(
        "stage",
        help="run a step of dvc.yaml (configured by params.yaml)",
        description="The steps `dvc repro` runs: prepare (split by subject, tokenizer) and "
        "train (the base model).",
    )
    stage_sub = stage.add_subparsers(dest="stage_command", metavar="STAGE", required=True)
    prep = stage_sub.add_parser(
        "prepare",
        help="split the raw data by subject; train the tokenizer",
        description="Split data/raw by subject into train, heldout and test "
        "(params.yaml `prepare`) and train the tokenizer on train.",
    )
    _add_params_option(prep)
    prep.set_defaults(func=cmd_stage_prepare)
    st_train = stage_sub.add_parser(
        "train",
        help="train the base model",
        description="Train the base model on the prepared train split (params.yaml `model` "
        "and `train`); saved to `train.out`.",
    )
    _add_params_option(st_train)
    st_train.set_defaults(func=cmd_stage_train)

    train = sub.add_parser(
        "train",
        help="train the base model (or continue a checkpoint with --init)",
        description="Train a small model from scratch (tokenizer trained on the data), or "
        "continue training a Hugging Face checkpoint folder given with --init.",
    )
    train.add_argument("--data", required=True, help="training records (.jsonl/.csv/.tsv/.parquet)")
    train.add_argument("--out", required=True, help="folder to save the model to")
    train.add_argument("--init", help="start from this checkpoint folder instead of a new model")
    train.add_argument(
        "--family", choices=("t5", "gpt2"), default="t5", help="encoder-decoder or decoder-only"
    )
    train.add_argument("--d-model", type=positive_int, default=128, help="hidden size")
    train.add_argument("--layers", type=positive_int, default=2, help="blocks per stack")
    train.add_argument(
        "--heads", type=positive_int, default=4, help="attention heads (must divide --d-model)"
    )
    train.add_argument("--d-ff", type=positive_int, default=512, help="feed-forward size")
    train.add_argument("--vocab", type=positive_int, default=4000, help="tokenizer vocabulary")
    train.add_argument(
        "--max-input-len", type=positive_int, help="tokens (default: 64; 160 for generation)"
    )
    train.add_argument(
        "--max-target-len", type=positive_int, help="tokens (default: 8; 48 for generation)"
    )
    train.add_argument("--epochs", type=positive_int, default=12, help="passes over the data")
    train.add_argument("--batch-size", type=positive_int, default=64, help="records per step")
    train.add_argument("--lr", type=positive_float, default=1e-3, help="peak learning rate")
    train.add_argument("--seed", type=int, default=0, help="random seed")
    _add_device_option(train)
    _add_data_options(train)
    train.set_defaults(func=cmd_train)

    unlearn = sub.add_parser(
        "unlearn",
        help="train one unlearning layer for one forget request",
        description="Train an unlearning layer that makes the model forget the named "
        "records; the base model is not changed. Saves the layer (safetensors) to --out.",
    )
    unlearn.add_argument("--model", required=True, help="base model folder")
    unlearn.add_argument("--data", required=True, help="the records the model was trained on")
    unlearn.add_argument("--out", required=True, help="folder to save the layer to")
    unlearn.add_argument("--heldout", help="records never trained on (used for references)")
    unlearn.add_argument("--name", help="layer name (default: the --out folder's name)")
    unlearn.add_argument(
        "--objective",
        default="unlikelihood",
        choices=("paper", "unlikelihood", "npo"),
        help="the forgetting loss",
    )
    unlearn.add_argument(
        "--reference",
        default="threshold",
        choices=("threshold", "probe", "none"),
        help="how far each forget row is pushed: below p 0.5 "
        "(threshold), to what a probe fitted on the retained rows gives its label (probe; "
        "labelled data only), or without limit (none)",
    )
    defaults = UnlearnParams()
    unlearn.add_argument("--epochs", type=positive_int, default=defaults.epochs, help="most epochs")
    unlearn.add_argument(
        "--lr", type=positive_float, default=defaults.lr, help="learning rate of the layer"
    )
    unlearn.add_argument(
        "--retained-sample",
        type=positive_int,
        default=defaults.retained_sample,
        help="retained rows sampled to keep the model's behaviour",
    )
    unlearn.add_argument(
        "--width",
        type=positive_int,
        default=defaults.layer.width,
        help="bottleneck width of the layer",
    )
    unlearn.add_argument(
        "--basis",
        choices=("shared", "trained"),
        default=defaults.layer.basis,
        help="shared: a fixed down projection common to all requests, so layers fuse exactly "
        "(default); trained: both projections trained, as in the paper",
    )
    unlearn.add_argument("--seed", type=int, default=0, help="random seed")
    _add_device_option(unlearn)
    _add_forget_options(unlearn)
    _add_data_options(unlearn)
    unlearn.set_defaults(func=cmd_unlearn)

    ev = sub.add_parser(
        "evaluate",
        help="measure a model (with layers) on test, retained and forget data",
        description="Accuracy (ROUGE for generation), memorised-content accuracy, "
        "membership-inference AUC and, with --oracle, the KS forget quality.",
    )
    ev.add_argument("--model", required=True, help="base model folder")
    ev.add_argument(
        "--layer", action="append", help="unlearning layer folder to apply (repeatable)"
    )
    ev.add_argument("--data", required=True, help="the records the model was trained on")
    ev.add_argument("--test", required=True, help="test records")
    ev.add_argument("--heldout", help="unseen records for membership inference (default: --test)")
    ev.add_argument("--oracle", help="a model retrained without the forget records, for KS")
    ev.add_argument("--out", help="write the metrics as JSON here")
    _add_device_option(ev)
    _add_forget_options(ev)
    _add_data_options(ev)
    ev.set_defaults(func=cmd_evaluate)

    bench = sub.add_parser(
        "bench",
        help="benchmark EUL against the oracle (retraining) and baselines",
        description="Original, oracle (retrain), fine-tune, reverse gradient and EUL on the "
        "embedded synthetic data (or SST-2 with --data), forget set 1%% of rows. "
        "--sequential: three requests in turn, served by one retrained layer, stacked layers, "
        "fused layers and the oracle. --task generation: summarisation with planted secrets "
        "(synthetic dialogues, or SAMSum with --data). --fusion-scale: cost of fusing many "
        "requests.",
    )
    bench.add_argument(
        "--task",
        choices=("classification", "generation"),
        default="classification",
        help="classification (reviews, SST-2) or generation (dialogue summaries, SAMSum)",
    )
    bench.add_argument("--quick", action="store_true", help="smaller run (a few minutes)")
    bench.add_argument(
        "--data",
        help="an SST-2 folder with train.tsv (classification) or a SAMSum folder with val.csv "
        "(generation), e.g. ../shared/data/sst2 or ../shared/data/samsum (default: the "
        "embedded synthetic data)",
    )
    bench.add_argument("--out", help="write the JSON report here (and a .md table beside it)")
    bench.add_argument(
        "--variants",
        action="store_true",
        help="also run EUL objective variants (with --sequential: other fusion forms, and the "
        "paper's trained-basis layers with the linear closed form)",
    )
    bench.add_argument(
        "--sequential",
        action="store_true",
        help="instead: three deletion requests in turn (sequential, stacked, fused, oracle)",
    )
    bench.add_argument(
        "--fusion",
        choices=("sum", "fit"),
        default="sum",
        help="with --sequential: fuse to the stack's sum (exact) or the paper's per-layer fit",
    )
    bench.add_argument(
        "--anchor-weight",
        type=non_negative_float,
        default=0.0,
        help="with --sequential: weight of the retained anchor in the fusion (0: none)",
    )
    bench.add_argument(
        "--fusion-scale",
        action="store_true",
        help="instead: time and memory of fusing 1, 10, 100 and 1,000 requests' statistics",
    )
    bench.add_argument("--seed", type=int, default=0, help="random seed")
    _add_device_option(bench)
    bench.set_defaults(func=cmd_bench)

    aud = sub.add_parser(
        "audit",
        help="requests the production model honours; exit 1 if any is overdue",
        description="For the production version in the MLflow registry: the requests it "
        "honours (version, deployment, purge hashes), those pending or overdue, and the "
        "deletion log's chain check. Exit status 1 when a request is overdue, deployed in the "
        "log but not honoured by production, or the chain is broken.",
    )
    _add_project_options(aud)
    aud.add_argument(
        "--log-url", help="SQLAlchemy URL of the log (default: as `eul requests` finds it)"
    )
    aud.add_argument(
        "--at", help="judge deadlines at this ISO date or time instead of now (e.g. 2026-12-31)"
    )
    aud.add_argument("--json", action="store_true", help="print the report as JSON")
    aud.set_defaults(func=cmd_audit, needs_ml=False)

    doc = sub.add_parser(
        "doctor",
        help="check the set-up: params.yaml, log, MLflow, Prefect, DVC remotes, models",
        description="One line per check, OK, FAIL (with the fix) or SKIP: params.yaml loads "
        "with known keys; the deletion log opens and its hash chain verifies; the MLflow "
        "tracking store answers; the Prefect API answers (when PREFECT_API_URL is set); the "
        "DVC repository and each remote are reachable, with credentials for S3 (shown as set "
        "or not, never printed); the base model and the production version load. Exit "
        "status 1 when any check fails.",
    )
    _add_project_options(doc)
    doc.add_argument(
        "--no-models", action="store_true", help="skip loading the base and production models"
    )
    doc.add_argument("--json", action="store_true", help="print the checks as JSON")
    doc.set_defaults(func=cmd_doctor)

    demo = sub.add_parser(
        "demo",
        help="the whole pipeline end to end in a folder of its own (what `make demo` runs)",
        description="Make a project folder, generate the embedded data set, `dvc repro` (base "
        "model), submit deletion requests (one bad), run the nightly batch, promote, purge and "
        "audit; then say what happened and where to look. A second run reuses what is there.",
    )
    demo.add_argument("--dir", default="demo", help="the demo's folder (default: %(default)s)")
    demo.add_argument(
        "--params", help="params file copied into a new demo folder (default: the checkout's)"
    )
    demo.set_defaults(func=cmd_demo)

    from eul.cli.requests import register

    register(sub)
    parser.description += "\n\n" + command_overview(parser)
    return parser


def _add_params_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--params",
        default="params.yaml",
        help="the params file (default: params.yaml; when absent, the built-in defaults)",
    )


def _add_project_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--project", default=".", help="the project folder (default: here)")
    p.add_argument(
        "--params",
        default="params.yaml",
        help="params file inside the project (default: "
        "params.yaml; when absent, the built-in defaults)",
    )


def _failure_types() -> tuple[type[BaseException], ...]:
    """Errors of the stores and of the work itself: exit status 1, one line."""
    from eul.pipeline.context import PipelineError
    from eul.stores.dvc.dvcstore import DvcError
    from eul.stores.dvc.purge import PurgeError
    from eul.stores.log.ledger import LedgerUnavailable
    from eul.stores.registry.registry import RegistryError

    types: list[type[BaseException]] = [
        RunError,
        LedgerUnavailable,
        DvcError,
        PipelineError,
        PurgeError,
        RegistryError,
        ConnectionError,
        TimeoutError,
    ]
    if "mlflow" in sys.modules:
        from mlflow.exceptions import MlflowException

        types.append(MlflowException)
    if "sqlalchemy" in sys.modules:
        from sqlalchemy.exc import SQLAlchemyError

        types.append(SQLAlchemyError)
    return tuple(types)


def _message(err: BaseException) -> str:
    """The error as one line that ends with what to do."""
    if isinstance(err, KeyError) and err.args:
        text = str(err.args[0])
    elif isinstance(err, OSError) and err.filename is not None:
        text = f"{err.strerror or type(err).__name__}: {err.filename}; check the path"
    else:
        text = str(err)
    text = text.strip()
    return text.splitlines()[0].strip() if text else type(err).__name__


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    if argv is None:
        argv = sys.argv[1:]
    if not argv:
        parser.print_help()
        return EXIT_BAD_INPUT
    args = parser.parse_args(argv)
    if getattr(args, "needs_ml", True):
        quiet_libraries()
    from eul.data.records import DataError

    try:
        code = args.func(args)
    except KeyboardInterrupt:
        print("eul: interrupted", file=sys.stderr)
        return 130
    except Exception as err:
        failure = _failure_types()
        usage = (CliError, DataError, ValueError, KeyError, OSError)
        if not isinstance(err, failure + usage):
            raise
        print(f"eul: error: {_message(err)}", file=sys.stderr)
        if os.environ.get("EUL_DEBUG"):
            traceback.print_exc()
        if isinstance(err, CliError):
            return err.exit_code
        return EXIT_FAILURE if isinstance(err, failure) else EXIT_BAD_INPUT
    return code or 0


if __name__ == "__main__":
    sys.exit(main())
