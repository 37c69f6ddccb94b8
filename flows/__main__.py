"""Run one flow here, in this process, and print its result as one JSON line:

    python -m flows nightly --project-dir D --params-file P [--no-auto-promote]
    python -m flows promote --project-dir D --params-file P --reviewer NAME [--version N]

The flow talks to the Prefect server PREFECT_API_URL names. A flow that fails prints
{"error": ..., "type": ...} instead and exits 1. `eul demo` runs its flows this way, in the
demo folder, which holds its own copy of flows/ and tasks/.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from eul.runtime.urls import redacted


def run_nightly(args: argparse.Namespace) -> dict[str, Any]:
    from flows.nightly import nightly_deletion_batch

    return nightly_deletion_batch(
        project_dir=args.project_dir,
        params_file=args.params_file,
        auto_promote=args.auto_promote,
    )


def run_promote(args: argparse.Namespace) -> dict[str, Any]:
    from flows.promote import promote_version

    return promote_version(
        reviewer=args.reviewer,
        version=args.version,
        override_reason=args.override_reason,
        project_dir=args.project_dir,
        params_file=args.params_file,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m flows",
        description="Run one flow in this process; print its result as one JSON line.",
    )
    sub = parser.add_subparsers(dest="flow", metavar="FLOW", required=True)
    nightly = sub.add_parser("nightly", help="the nightly-deletion-batch flow")
    nightly.add_argument(
        "--auto-promote",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="promote a passing candidate (default: pipeline.auto_promote in params.yaml)",
    )
    nightly.set_defaults(run=run_nightly)
    promote = sub.add_parser("promote", help="the promote flow: a reviewer's decision")
    promote.add_argument("--reviewer", required=True, help="who decides")
    promote.add_argument("--version", type=int, help="version to promote (default: candidate)")
    promote.add_argument("--override-reason", help="why a version that failed its gates goes")
    promote.set_defaults(run=run_promote)
    for flow in (nightly, promote):
        flow.add_argument("--project-dir", default=".", help="the project (default: here)")
        flow.add_argument(
            "--params-file", default="params.yaml", help="inside the project (default: params.yaml)"
        )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result = args.run(args)
    except Exception as err:
        error = {
            "error": redacted(str(err).strip()) or type(err).__name__,
            "type": type(err).__name__,
        }
        print(json.dumps(error), flush=True)
        return 1
    print(json.dumps(result, default=str), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
