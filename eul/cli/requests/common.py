"""What every `eul requests` action shares: the log's options, opening the log, tables and
JSON for output, and the error for bad input."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from eul.runtime.evidence import is_keyed
from eul.stores.log.config import URL_ENV
from eul.stores.log.store import Ledger

EXIT_BROKEN = 1


class UsageError(ValueError):
    """Bad command-line input; `eul` prints it as one line and exits 2."""


# -- output helpers -----------------------------------------------------------------------


def table(headers: list[str], rows: list[list[str]]) -> str:
    """Left-aligned columns separated by two spaces."""
    widths = [max(len(str(x)) for x in column) for column in zip(headers, *rows, strict=True)]
    lines = [headers, *rows]
    return "\n".join(
        "  ".join(str(cell).ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
        for line in lines
    )


def when(iso: str) -> str:
    """'2026-11-29 19:45' from a stored UTC timestamp."""
    return iso[:16].replace("T", " ")


def shown_target(subject_id: str | None, record_ids: list[str]) -> str:
    if is_keyed(subject_id):  # purged or rejected: the log keeps only the keyed subject
        return "a subject (keyed)"
    if subject_id is not None:
        return f"subject {subject_id}"
    if len(record_ids) == 1:
        return f"record {record_ids[0]}"
    return f"{len(record_ids)} record ids"


def print_json(value: Any) -> None:
    print(json.dumps(value, indent=2))


def open_ledger(args: argparse.Namespace) -> Ledger:
    if args.params != "params.yaml" and not Path(args.params).is_file():
        raise UsageError(f"--params: no file at {args.params}; check the path")
    return Ledger(args.log_url, params_path=args.params)


def add_log_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("the log")
    g.add_argument(
        "--log-url",
        help=f"SQLAlchemy URL of the log (default: ${URL_ENV}, else log.url in params.yaml, "
        "else sqlite:///state/deletion-log.sqlite)",
    )
    g.add_argument(
        "--params",
        default="params.yaml",
        help="params file with a `log` section (default: params.yaml; may be absent)",
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
