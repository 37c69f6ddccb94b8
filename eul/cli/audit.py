"""`eul audit`: the requests the production model honours, those pending or overdue, at
both levels (suppressed at / deadline, erased at / erasure deadline), the deletion log's
chain check and its check against the anchors of its head and the registry; exit status 1
when something is wrong."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any

from eul.cli.args import EXIT_FAILURE, CliError, RunError, existing_dir
from eul.cli.common import add_project_options

if TYPE_CHECKING:
    from datetime import datetime

    from eul.pipeline.context import Context


def _moment(text: str | None) -> datetime | None:
    """A timezone-aware datetime from ISO text (UTC when no offset is given), or None."""
    from datetime import datetime, timezone

    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise CliError(f"--at takes an ISO date or time such as 2026-12-31, got {text!r}") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def _project(project: str, params: str) -> Context:
    """The project `--project` names (eul.pipeline.context.Context), its inputs checked first."""
    from eul.pipeline.context import load_context

    root = existing_dir(project, "--project", "give the project folder (with params.yaml)")
    if params != "params.yaml" and not (root / params).is_file():
        raise CliError(f"--params: no {params} in {root}; check the file name")
    return load_context(root, params)


def audit_project(
    project: str,
    params: str = "params.yaml",
    log_url: str | None = None,
    at: str | None = None,
    as_json: bool = False,
) -> int:
    """Print the audit of `project` (Markdown, or JSON); 0 when all is well, else 1.
    `eul demo` runs it too, with the defaults of `eul audit --project DIR`."""
    from eul.cli.doctor import mlflow_problem
    from eul.pipeline.audit import audit, format_markdown
    from eul.stores.log.store import Ledger

    moment = _moment(at)
    ctx = _project(project, params)
    problem = mlflow_problem(ctx.settings.tracking_uri)
    if problem:
        raise RunError("; ".join(problem))
    with Ledger(log_url or ctx.log_url, params_path=ctx.params_path) as ledger:
        report = audit(ledger, ctx, now=moment)
    if as_json:
        print(json.dumps(report, indent=2))
    else:
        print(format_markdown(report), end="")
    return 0 if report["ok"] else EXIT_FAILURE


def cmd_audit(args: argparse.Namespace) -> int:
    return audit_project(args.project, args.params, args.log_url, args.at, args.json)


def register(subparsers: Any) -> None:
    """Add `eul audit` to the `eul` command line."""
    aud = subparsers.add_parser(
        "audit",
        help="requests the production model honours; exit 1 if any is overdue",
        description="For the production version in the MLflow registry: the requests it "
        "honours (version, deployment, purge hashes), those pending or overdue, each with "
        "its level (pending, suppressed, erased), when it was suppressed and erased, and both "
        "deadlines; the deletion log's chain check; and the log against the anchors of its "
        "head (registered versions' tags, the anchors file, the DVC remotes) and every "
        "deployment against the registry. Exit status 1 when a request is overdue for "
        "suppression or for erasure, deployed in the log but not honoured by production or "
        "by the version it names, the chain is broken, or the log was cut short or rewritten "
        "after an anchor.",
    )
    add_project_options(aud)
    aud.add_argument(
        "--log-url", help="SQLAlchemy URL of the log (default: as `eul requests` finds it)"
    )
    aud.add_argument(
        "--at", help="judge deadlines at this ISO date or time instead of now (e.g. 2026-12-31)"
    )
    aud.add_argument("--json", action="store_true", help="print the report as JSON")
    aud.set_defaults(func=cmd_audit, needs_ml=False)
