"""`eul bench`: EUL against the oracle (retraining) and the baselines; the sequential
protocol, the generation task and the cost of fusing many requests."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from eul.cli.args import CliError, non_negative_float, positive_int, writable_path
from eul.cli.common import add_column_options, add_device_option, torch_device

if TYPE_CHECKING:
    import torch

# -- commands -----------------------------------------------------------------------------


def _print_written(paths: list[Path]) -> None:
    """The files a benchmark wrote, one a line: its JSON, its table, its figures."""
    print("\nwritten:")
    for path in paths:
        print(f"  {path}")


def cmd_bench(args: argparse.Namespace) -> None:
    from eul.bench.classification import BenchConfig, format_table, run_bench, save_report

    device = torch_device(args)
    if args.out:
        writable_path(args.out, "--out")
    if args.seeds > 1 and args.fusion_scale:
        raise CliError(
            "--seeds runs the benchmarks that train models (one request, --sequential, "
            "--task generation); drop --fusion-scale"
        )
    _check_small_requests(args)
    if (args.counts or args.workers) and not args.scale:
        raise CliError("--counts and --workers go with --scale")
    if args.scale:
        _bench_scale(args)
        return
    if args.size:
        _bench_size(args)
        return
    if args.fusion_scale:
        from eul.bench.fusion_scale import format_fusion_scale, run_fusion_scale, save_fusion_scale

        rows = run_fusion_scale(seed=args.seed)
        print(format_fusion_scale(rows))
        if args.out:
            _print_written(save_fusion_scale({"fusion_scale": rows}, args.out, seed=args.seed))
        return

    if args.task == "generation":
        _bench_generation(args, device)
        return
    overrides = _data_overrides(args, "flip_share")
    config = BenchConfig.preset(
        quick=args.quick,
        seed=args.seed,
        variants=args.variants,
        attacks=not args.no_attacks,
        **overrides,
    )
    if args.data and not Path(args.data).exists():
        raise CliError(
            f"no data at {args.data}: give a file of records (.csv, .tsv, .jsonl, .json, "
            ".parquet) or an SST-2 folder holding train.tsv; omit --data to use the embedded "
            "synthetic data set"
        )
    if args.sequential:
        _bench_sequential(args, config, device)
        return
    if args.seeds > 1:
        _bench_seeds(args, config, device)
        return
    if args.small_requests:
        _bench_small_requests(args, config, device)
        return
    report = run_bench(config, progress=not args.quiet, device=device)
    print()
    print(format_table(report))
    if args.out:
        _print_written(save_report(report, args.out))


def _bench_seeds(
    args: argparse.Namespace, config: Any, device: torch.device, generation: bool = False
) -> None:
    """The benchmark at seeds --seed, --seed + 1, ...: each a new base model and forget set."""
    from dataclasses import replace

    from eul.bench.classification import run_bench, save_report_as
    from eul.bench.generation import run_generation_bench
    from eul.bench.seeds import FIGURES, GENERATION_FIGURES, format_seeds, run_seeds

    run = run_generation_bench if generation else run_bench

    def one(seed: int) -> dict:
        print(f"\n== seed {seed}", flush=True)
        return run(replace(config, seed=seed), progress=not args.quiet, device=device)

    result = run_seeds(one, list(range(args.seed, args.seed + args.seeds)))
    table = format_seeds(result, GENERATION_FIGURES if generation else FIGURES)
    print()
    print(table)
    if args.out:
        _print_written(save_report_as(result, table, args.out))


def _bench_scale(args: argparse.Namespace) -> None:
    """`--scale`: batches of growing size, stacked and side by side, on the CPU."""
    from eul.bench.envelope import write_result
    from eul.bench.scale import ScaleConfig, format_scale, plot_scale, run_scale

    if args.seeds > 1 or args.fusion_scale or args.sequential or args.size:
        raise CliError("--scale runs its own measurement; drop --seeds, --fusion-scale, "
                       "--sequential, --size")  # fmt: skip
    config = ScaleConfig(seed=args.seed)
    if args.counts:
        config = ScaleConfig(counts=tuple(args.counts), workers=config.workers, seed=args.seed)
    if args.workers:
        config = ScaleConfig(counts=config.counts, workers=tuple(args.workers), seed=args.seed)
    result = run_scale(config, log=(lambda _: None) if args.quiet else print)
    table = format_scale(result)
    print(table)
    if args.out:
        paths = write_result(args.out, "scale", result, table, result["settings"])
        paths.append(plot_scale(result, Path(args.out).with_suffix(".png")))
        _print_written(paths)


def _bench_size(args: argparse.Namespace) -> None:
    """`--size`: the embedded model and the chosen size, one request each, on the CPU."""
    from eul.bench.envelope import write_result
    from eul.bench.model_size import SizeConfig, format_model_size, run_model_size

    if args.seeds > 1 or args.fusion_scale or args.sequential:
        raise CliError(
            "--size runs its own measurement; drop --seeds, --fusion-scale, --sequential"
        )
    sizes = ["tiny"] if args.size == "tiny" else ["tiny", args.size]
    rows = [run_model_size(SizeConfig(size=size, seed=args.seed)) for size in sizes]
    table = format_model_size(rows)
    print(table)
    if args.out:
        settings = {"sizes": sizes, "seed": args.seed}
        _print_written(write_result(args.out, "model_size", {"sizes": rows}, table, settings))


def _check_small_requests(args: argparse.Namespace) -> None:
    """--small-requests is its own classification protocol: refuse what it cannot combine
    with, and its options without it."""
    if not args.small_requests:
        if args.request_rows is not None or args.requests is not None:
            raise CliError("--request-rows and --requests go with --small-requests")
        return
    others = {
        "--sequential": args.sequential,
        "--fusion-scale": args.fusion_scale,
        "--task generation": args.task == "generation",
        "--seeds": args.seeds > 1,
        "--variants": args.variants,
    }
    given = [name for name, on in others.items() if on]
    if given:
        raise CliError(
            "--small-requests runs its own classification protocol (EUL, the original and one "
            f"oracle on small requests); drop {', '.join(given)}"
        )


def _request_sizes(text: str) -> tuple[int, ...]:
    """--request-rows: distinct sizes of at least 1, comma-separated ("1,5,20")."""
    try:
        sizes = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"takes whole numbers separated by commas, e.g. 5,20; got {text!r}"
        ) from None
    if min(sizes) < 1 or len(set(sizes)) != len(sizes):
        raise argparse.ArgumentTypeError(f"takes distinct sizes of at least 1, got {text!r}")
    return sizes


def _bench_small_requests(args: argparse.Namespace, bench: Any, device: torch.device) -> None:
    """Requests of --request-rows rows, --requests of each size, each unlearned alone."""
    from eul.bench.classification import save_report_as
    from eul.bench.small_requests import (
        SmallRequestsConfig,
        format_small_requests,
        run_small_requests,
    )

    given = {"rows": args.request_rows, "requests": args.requests}
    config = SmallRequestsConfig(bench=bench, **{k: v for k, v in given.items() if v is not None})
    report = run_small_requests(config, progress=not args.quiet, device=device)
    table = format_small_requests(report)
    print()
    print(table)
    if args.out:
        _print_written(save_report_as(report, table, args.out))


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
    if args.seeds > 1:
        _sequential_seeds(args, config, device)
        return
    result = run_sequential(config, progress=not args.quiet, device=device)
    table = format_sequential(result)
    print()
    print(table)
    if args.out:
        report = {"sequential": result["steps"], "setup": result["setup"], "run": result["run"]}
        _print_written(save_report_as(report, table, args.out, draw_sequential))


def _sequential_seeds(args: argparse.Namespace, config: Any, device: torch.device) -> None:
    """The sequential protocol at seeds --seed, --seed + 1, ...: each way of serving after
    the last request, as mean and spread."""
    from dataclasses import replace

    from eul.bench.classification import save_report_as
    from eul.bench.seeds import format_seeds, run_seeds
    from eul.bench.sequential import after_last_step, run_sequential

    def one(seed: int) -> dict:
        print(f"\n== seed {seed}", flush=True)
        seeded = replace(config, bench=replace(config.bench, seed=seed))
        return after_last_step(run_sequential(seeded, progress=not args.quiet, device=device))

    result = run_seeds(one, list(range(args.seed, args.seed + args.seeds)))
    table = format_seeds(result)
    print()
    print(table)
    if args.out:
        _print_written(save_report_as(result, table, args.out))


def _bench_generation(args: argparse.Namespace, device: torch.device) -> None:
    from eul.bench.classification import save_report_as
    from eul.bench.generation import (
        GenerationBenchConfig,
        draw_generation,
        format_generation,
        run_generation_bench,
        samsum_file,
    )

    if args.data and not Path(args.data).is_file():
        if not Path(args.data).is_dir():
            raise CliError(
                f"no data at {args.data}: give a file of records (--text-col, --target-col) "
                "or a SAMSum folder holding val.csv (id, summary, dialogue); omit --data to use "
                "the embedded synthetic dialogues"
            )
        samsum_file(args.data)
    overrides = _data_overrides(args, "secret_share")
    config = GenerationBenchConfig.preset(quick=args.quick, seed=args.seed, **overrides)
    if args.seeds > 1:
        _bench_seeds(args, config, device, generation=True)
        return
    report = run_generation_bench(config, progress=not args.quiet, device=device)
    table = format_generation(report)
    print()
    print(table)
    if args.out:
        _print_written(save_report_as(report, table, args.out, draw_generation))


def _data_overrides(args: argparse.Namespace, memorised_field: str) -> dict[str, Any]:
    """The benchmark settings --data and its options give: the file's columns and subjects,
    and the share of the forget set made memorised (flipped labels, planted secrets)."""
    from eul.bench.data_file import DataFile, is_data_file
    from eul.cli.common import column_map

    overrides: dict[str, Any] = {"data": args.data}
    if is_data_file(args.data):
        columns = column_map(args)
        overrides["data_file"] = DataFile(args.data, columns, args.records_per_subject)
    elif args.records_per_subject is not None or column_map(args) is not None:
        raise CliError(
            "--records-per-subject and the column options read a --data file; the embedded "
            "data and the SST-2 and SAMSum folders have fixed layouts"
        )
    if args.memorised_share is not None:
        if not 0 <= args.memorised_share <= 1:
            raise CliError(f"--memorised-share must be in 0..1, got {args.memorised_share}")
        overrides[memorised_field] = args.memorised_share
    return overrides


# -- parser -------------------------------------------------------------------------------


def register(subparsers: Any) -> None:
    """Add `eul bench` to the `eul` command line."""
    bench = subparsers.add_parser(
        "bench",
        help="benchmark EUL against the oracle (retraining) and baselines",
        description="Original, oracle (retrain), fine-tune, reverse gradient and EUL on the "
        "embedded synthetic data (or SST-2 with --data), forget set 1% of rows. "
        "--sequential: three requests in turn, served by one retrained layer, stacked layers, "
        "fused layers and the oracle. --task generation: summarisation with planted secrets "
        "(synthetic dialogues, or SAMSum with --data). --fusion-scale: cost of fusing many "
        "requests. --small-requests: many requests of a few rows, each unlearned alone. "
        "Unless --no-attacks, the one-request classification benchmark also "
        "attacks the original, the oracle and EUL: layer removal (the base alone, as anyone "
        "holding the base weights can serve it), int8 and 4-bit weight quantisation (a "
        "compressed served model) and 20 fine-tuning steps on retained rows or on unseen "
        "rows like the forgotten ones (relearning by whoever holds the weights), each held "
        "to the oracle under the same attack.",
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
        help="a file of records (.csv, .tsv, .jsonl, .json, .parquet; columns below), an SST-2 "
        "folder with train.tsv (classification) or a SAMSum folder with val.csv (generation), "
        "e.g. ../shared/data/sst2 or ../shared/data/samsum (default: the embedded synthetic "
        "data)",
    )
    data = bench.add_argument_group("a --data file (defaults: text, label, target, ...)")
    add_column_options(data)
    data.add_argument(
        "--records-per-subject",
        type=positive_int,
        help="group the file's rows, shuffled, into synthetic subjects of this many rows "
        "(default: its subject column, or 5 where it has none)",
    )
    data.add_argument(
        "--memorised-share",
        type=non_negative_float,
        help="share of the forget set made memorised: labels flipped (classification) or "
        "secrets planted (generation) (default: 0.5)",
    )
    bench.add_argument("--out", help="write the JSON report here (and a .md table beside it)")
    bench.add_argument(
        "--variants",
        action="store_true",
        help="also run EUL objective variants (with --sequential: other fusion forms, and the "
        "paper's trained-basis layers with the linear closed form)",
    )
    bench.add_argument(
        "--no-attacks",
        action="store_true",
        help="classification: skip the attacks on the original, the oracle and EUL (layer "
        "removal, int8 and 4-bit quantisation, relearning on retained or similar unseen rows)",
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
    bench.add_argument(
        "--scale",
        action="store_true",
        help="instead: batches of 1, 10, 100 and 1,000 requests on the tiny model, stacked and "
        "side by side with 1, 2 and 4 worker processes: wall time, memory, files per request, "
        "fusion and forward time, the fused model's test, forget and MIA figures",
    )
    bench.add_argument(
        "--counts",
        type=positive_int,
        nargs="+",
        default=None,
        help="with --scale: the batch sizes (default 1 10 100 1000)",
    )
    bench.add_argument(
        "--workers",
        type=positive_int,
        nargs="+",
        default=None,
        help="with --scale: the numbers of worker processes side by side (default 1 2 4)",
    )
    bench.add_argument(
        "--size",
        choices=("tiny", "small", "base"),
        default=None,
        help="instead: one request end to end on a model of this size (random weights; base: "
        "t5-base's 220M parameters): seconds per EUL step, peak memory, file sizes, beside "
        "the embedded model's",
    )
    _add_small_requests_options(bench)
    bench.add_argument("--seed", type=int, default=0, help="random seed (the first, with --seeds)")
    bench.add_argument(
        "--seeds",
        type=positive_int,
        default=1,
        help="run the benchmark (one request, --sequential or --task generation) at this "
        "many seeds (--seed, --seed + 1, ...: each a new base model and forget set) and report "
        "every figure's mean and spread (--sequential: after the last request)",
    )
    add_device_option(bench)
    bench.set_defaults(func=cmd_bench)


def _add_small_requests_options(bench: argparse.ArgumentParser) -> None:
    small = bench.add_argument_group("small requests (classification)")
    small.add_argument(
        "--small-requests",
        action="store_true",
        help="instead: many small deletion requests (one person's few rows), each unlearned "
        "alone by EUL from the original and measured on its own rows against the original and "
        "one oracle retrained without all requests' rows; each figure's mean and spread per "
        "size. Works with --data and --quick; --memorised-share sets each request's share of "
        "flipped labels",
    )
    small.add_argument(
        "--request-rows",
        type=_request_sizes,
        metavar="K,K,...",
        help="with --small-requests: the request sizes in rows, comma-separated (default: "
        "5,20); a request is rows of one subject that has that many, else whole subjects cut "
        "at the size",
    )
    small.add_argument(
        "--requests",
        type=positive_int,
        metavar="N",
        help="with --small-requests: how many requests of each size, all disjoint (default: 10)",
    )
