"""The `eul` command line: data, base model, unlearning, evaluation, benchmark, audit, doctor.

Each command group declares its commands in a module of its own (`register(subparsers)`):
`eul.cli.requests`, `.data`, `.stage`, `.models` (train, unlearn, evaluate), `.bench`,
`.audit` and `.setup_commands` (doctor, demo); this module assembles them under one parser.
Bad input ends with one line on stderr that names the fix and exit status 2; a store that
does not answer, or work that fails, ends the same way with exit status 1 (`eul.cli.errors`).
Set EUL_DEBUG=1 to see the full traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from eul.cli import audit, bench, data, models, requests, setup_commands, stage
from eul.cli.args import EXIT_BAD_INPUT, EXIT_FAILURE, CliError, EulParser, RunError
from eul.cli.errors import run_reported
from eul.runtime.quiet import quiet_libraries

__all__ = ["EXIT_BAD_INPUT", "EXIT_FAILURE", "CliError", "RunError", "build_parser", "main"]

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


def build_parser() -> argparse.ArgumentParser:
    """The whole `eul` parser; building it imports no torch (nor Prefect, nor MLflow)."""
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
    # the order of `eul --help` and of its overview
    for group in (data, stage, models, bench, audit, setup_commands, requests):
        group.register(sub)
    parser.description += "\n\n" + command_overview(parser)
    return parser


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
    return run_reported(lambda: args.func(args))


if __name__ == "__main__":
    sys.exit(main())
