"""`eul stage`: the steps `dvc repro` runs (dvc.yaml, configured by params.yaml)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from eul.cli.args import CliError
from eul.cli.common import add_params_option, read_params


def cmd_stage_prepare(args: argparse.Namespace) -> None:
    from eul.pipeline.stages import prepare, raw_records_path

    params = read_params(args)
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

    params = read_params(args)
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


def register(subparsers: Any) -> None:
    """Add `eul stage prepare|train` to the `eul` command line."""
    stage = subparsers.add_parser(
        "stage",
        help="run a step of dvc.yaml (configured by params.yaml)",
        description="The steps `dvc repro` runs: prepare (split by subject, tokenizer) and "
        "train (the base model).",
    )
    sub = stage.add_subparsers(dest="stage_command", metavar="STAGE", required=True)
    prep = sub.add_parser(
        "prepare",
        help="split the raw data by subject; train the tokenizer",
        description="Split data/raw by subject into train, heldout and test "
        "(params.yaml `prepare`) and train the tokenizer on train.",
    )
    add_params_option(prep)
    prep.set_defaults(func=cmd_stage_prepare)
    st_train = sub.add_parser(
        "train",
        help="train the base model",
        description="Train the base model on the prepared train split (params.yaml `model` "
        "and `train`); saved to `train.out`.",
    )
    add_params_option(st_train)
    st_train.set_defaults(func=cmd_stage_train)
