"""What several `eul` commands share: the data, forget, device, params and project options,
and the loaders that read them. Command modules import these; none imports another command
module, so the command line has no import circle."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from eul.cli.args import CliError, existing_file

if TYPE_CHECKING:
    import torch

    from eul.data.readers import ColumnMap
    from eul.data.records import Record
    from eul.params import Params


def id_list(values: Sequence[str] | None, file: str | None) -> list[str]:
    """Ids given as repeatable, comma-separated options, plus those of `file` (one a line)."""
    ids = [v.strip() for value in values or [] for v in value.split(",") if v.strip()]
    if file:
        path = existing_file(file, "--ids-file", "give a file with one record id per line")
        ids += [line.strip() for line in path.read_text().splitlines() if line.strip()]
    return ids


def load_data(path: str, args: argparse.Namespace, option: str = "--data") -> list[Record]:
    """The records of `path`, read with the column options of `add_data_options`."""
    from eul.data.readers import load_records

    existing_file(path, option, "give a .jsonl, .csv, .tsv or .parquet file of records")
    return load_records(path, task=args.task, columns=column_map(args))


def column_map(args: argparse.Namespace) -> ColumnMap | None:
    """The columns the options of `add_column_options` name (None: the default layout)."""
    from eul.data.readers import ColumnMap

    names = ("text_col", "label_col", "target_col", "id_col", "subject_col")
    if not any(getattr(args, k, None) for k in names):
        return None
    generation = args.task == "generation"
    return ColumnMap(
        text=args.text_col or "text",
        target=(args.target_col or "target") if generation else None,
        label=None if generation else (args.label_col or "label"),
        record_id=args.id_col or "record_id",
        subject_id=args.subject_col or "subject_id",
    )


def add_data_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data columns (defaults match files written by `eul data generate`)")
    g.add_argument(
        "--task",
        choices=("classification", "generation"),
        default="classification",
        help="classification: text -> label word; generation: text -> target text",
    )
    add_column_options(g)


def add_column_options(g: Any) -> None:
    """--text-col, --label-col, --target-col, --id-col, --subject-col on a parser or group."""
    g.add_argument("--text-col", help="column with the input text (default: text)")
    g.add_argument("--label-col", help="column with the label, classification (default: label)")
    g.add_argument("--target-col", help="column with the target text, generation (default: target)")
    g.add_argument(
        "--id-col", help="column with record ids (default: record_id; assigned if absent)"
    )
    g.add_argument("--subject-col", help="column with subject ids (default: subject_id)")


def add_forget_options(p: argparse.ArgumentParser) -> None:
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


def forget_split(records: list[Record], args: argparse.Namespace) -> tuple[list, list]:
    """(forget, retained) of `records` for the options of `add_forget_options`."""
    from eul.data.records import select_forget

    return select_forget(records, id_list(args.subject, None), id_list(args.record, args.ids_file))


def parse_statuses(text: str, option: str) -> list[str]:
    """Comma-separated log statuses, each one the log knows."""
    from eul.stores.log.schema import STATUSES

    statuses = [s.strip() for s in text.split(",") if s.strip()]
    unknown = [s for s in statuses if s not in STATUSES]
    if not statuses or unknown:
        shown = repr(unknown[0]) if unknown else "nothing"
        raise CliError(f"{option} got {shown}; use one or more of {', '.join(STATUSES)}")
    return statuses


def add_device_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--device",
        default="auto",
        help="where to train and evaluate: auto (a GPU if there is one), cpu, cuda, cuda:N, "
        "mps (default: %(default)s)",
    )


def torch_device(args: argparse.Namespace) -> torch.device:
    """The torch device of --device, checked before any work starts."""
    from eul.model.device import resolve_device

    try:
        return resolve_device(args.device)
    except ValueError as err:
        raise CliError(f"--device: {err}") from None


def add_params_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--params",
        default="params.yaml",
        help="the params file (default: params.yaml; when absent, the built-in defaults)",
    )


def read_params(args: argparse.Namespace) -> Params:
    """The params file of --params; the built-in defaults when params.yaml is absent."""
    from eul.params import load_params

    path = Path(args.params)
    if not path.is_file() and args.params == "params.yaml":
        return load_params(None)
    return load_params(path)


def add_project_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--project", default=".", help="the project folder (default: here)")
    p.add_argument(
        "--params",
        default="params.yaml",
        help="params file inside the project (default: "
        "params.yaml; when absent, the built-in defaults)",
    )
