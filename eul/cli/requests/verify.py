"""`eul requests verify` (with `--registry`, against the anchors of the log's head and the
registry too) and `migrate-evidence`, the one-time keying of older evidence."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from eul.cli.requests.common import (
    EXIT_BROKEN,
    UsageError,
    add_log_options,
    open_ledger,
    print_json,
)

# -- verify -------------------------------------------------------------------------------


def _registry_check(args: argparse.Namespace, ledger: Any) -> dict[str, Any]:
    """The log against the anchors of its head and the registry of the project that holds
    --params (`eul.pipeline.integrity.integrity_check`)."""
    from eul.cli.args import RunError
    from eul.cli.doctor import mlflow_problem
    from eul.pipeline.context import load_context
    from eul.pipeline.integrity import integrity_check

    params = Path(args.params)
    ctx = load_context(params.parent, params.name)
    problem = mlflow_problem(ctx.settings.tracking_uri)
    if problem:
        raise RunError("; ".join(problem))
    return integrity_check(ledger, ctx)


def cmd_verify(args: argparse.Namespace) -> int:
    with open_ledger(args) as ledger:
        report = ledger.verify()
        registry = _registry_check(args, ledger) if args.registry else None
    ok = report.ok and (registry is None or registry["ok"])
    if args.json:
        print_json(report.to_dict() | ({"registry": registry} if registry is not None else {}))
        return 0 if ok else EXIT_BROKEN
    if report.ok:
        print(
            f"chain OK: {report.entries} entries, head entry {report.head_seq}, "
            f"hash {report.head_hash}"
        )
    else:
        print(
            f"chain BROKEN at entry {report.broken_seq}: {report.reason} "
            f"({report.entries} entries before it check out)"
        )
    if registry is not None:
        from eul.pipeline.audit import integrity_lines

        print("\n".join(line for line in integrity_lines(registry, strong="") if line))
    return 0 if ok else EXIT_BROKEN


# -- migrate-evidence ---------------------------------------------------------------------

DEFAULT_PURGE_LEDGER = "data/purge-log.jsonl"


def _purge_ledger_path(args: argparse.Namespace, root: Path) -> Path:
    """--purge-ledger, else `purge.ledger` in the params file, else the default; relative
    paths from the project root (the params file's folder)."""
    if args.purge_ledger:
        return Path(args.purge_ledger)
    configured = DEFAULT_PURGE_LEDGER
    params = Path(args.params)
    if params.is_file():
        import yaml

        try:
            loaded = yaml.safe_load(params.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as err:
            raise UsageError(f"--params: {params} is not valid YAML; fix it") from err
        section = loaded.get("purge") if isinstance(loaded, dict) else None
        if isinstance(section, dict) and section.get("ledger"):
            configured = str(section["ledger"])
    return root / configured


def cmd_migrate_evidence(args: argparse.Namespace) -> None:
    from eul.stores.log.migrate import migrate_purge_ledger

    with open_ledger(args) as ledger:
        report = ledger.migrate_evidence()
        verified = ledger.verify()
        lines = migrate_purge_ledger(
            _purge_ledger_path(args, ledger.project_root), ledger.evidence_key
        )
    counts = {**report.to_dict(), "purge_ledger_lines_rewritten": lines, "chain_ok": verified.ok}
    if args.json:
        print_json(counts)
        return
    if not report.changed and not lines:
        print(
            f"nothing to migrate: the log ({verified.entries} entries) and the purge ledger "
            "keep only keyed evidence already"
        )
        return
    print(
        f"migrated: {report.entries_rewritten} entries rewritten, {report.entries_rehashed} "
        f"rehashed from entry {report.first_changed_seq or '-'}; {report.states_rewritten} "
        f"request states keyed; {lines} purge-ledger lines keyed"
    )
    chain = "OK" if verified.ok else f"BROKEN at entry {verified.broken_seq}"
    print(f"chain {chain}: {verified.entries} entries, head hash {verified.head_hash}")
    if report.entries_rehashed:
        print(
            "model versions registered before now name their log entry's old hash: run a "
            "new batch rather than promote one of them (the audit reports their anchors, and "
            "any in the anchors file or on the remotes, as no longer matching the log)"
        )


def declare_verify(sub: Any) -> None:
    """`eul requests verify`."""
    verify = sub.add_parser(
        "verify",
        help="check the hash chain (exit 1 if broken)",
        description="Walk the hash chain from the first entry and report the first broken "
        "link (an entry changed, removed or out of order). Exit status 1 if broken. With "
        "--registry, also check the log against the anchors of its head (registered "
        "versions' tags, the anchors file, the DVC remotes), which shows entries cut from "
        "the end or a rewritten chain, and every deployment against the registry.",
    )
    verify.add_argument(
        "--registry",
        action="store_true",
        help="also check the anchors and deployments of the project --params is in "
        "(MLflow, log.anchors, the DVC remotes)",
    )
    add_log_options(verify)
    verify.set_defaults(func=cmd_verify, needs_ml=False)


def declare_migrate_evidence(sub: Any) -> None:
    """`eul requests migrate-evidence`."""
    migrate = sub.add_parser(
        "migrate-evidence",
        help="once, after upgrading: key what an older log kept in the clear",
        description="Rewrite, in place, what an older version kept in the clear: entries' "
        "subject ids become subject_hmac, row_sha256 lists become row_hmac (exact, without "
        "the rows), rejection reasons no longer name a subject, purged and rejected requests' "
        "state rows keep only the keyed subject, and the purge ledger's lines likewise; then "
        "rehash the chain from the first changed entry so `verify` passes. Uses the project's "
        "evidence key ($EUL_EVIDENCE_KEY or state/evidence.key). Refused on a broken chain; "
        "a second run changes nothing. Prints counts, never values.",
    )
    migrate.add_argument(
        "--purge-ledger",
        help="the purge ledger to rewrite (default: purge.ledger in params.yaml, else "
        f"{DEFAULT_PURGE_LEDGER}, from the project root)",
    )
    add_log_options(migrate)
    migrate.set_defaults(func=cmd_migrate_evidence, needs_ml=False)
