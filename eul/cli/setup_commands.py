"""`eul doctor` and `eul demo`: is this project set up to run, and the whole pipeline end
to end in a folder of its own. The work itself lives in `eul.cli.doctor` and `eul.cli.demo`,
imported only when the command runs."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any

from eul.cli.args import EXIT_FAILURE, CliError, existing_dir
from eul.cli.common import add_project_options

if TYPE_CHECKING:
    from eul.cli.doctor import Check


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


def cmd_demo(args: argparse.Namespace) -> int:
    from eul.cli.demo import DemoError, run_demo
    from eul.pipeline.context import PipelineError

    try:
        return run_demo(args.dir, args.params)
    except (DemoError, PipelineError) as err:
        raise CliError(str(err)) from None


def register(subparsers: Any) -> None:
    """Add `eul doctor` and `eul demo` to the `eul` command line."""
    doc = subparsers.add_parser(
        "doctor",
        help="check the set-up: params.yaml, log, MLflow, Prefect, DVC remotes, models",
        description="One line per check, OK, FAIL (with the fix) or SKIP: params.yaml loads "
        "with known keys; the deletion log opens and its hash chain verifies; the MLflow "
        "tracking store answers; the Prefect API answers (when PREFECT_API_URL is set); the "
        "DVC repository and each remote are reachable, with credentials for S3 (shown as set "
        "or not, never printed); the base model and the production version load. Exit "
        "status 1 when any check fails.",
    )
    add_project_options(doc)
    doc.add_argument(
        "--no-models", action="store_true", help="skip loading the base and production models"
    )
    doc.add_argument("--json", action="store_true", help="print the checks as JSON")
    doc.set_defaults(func=cmd_doctor)

    demo = subparsers.add_parser(
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
