"""`eul demo`'s summary: what happened, from the log and the registry as they are now, the
gates and metrics of the production version, and where to look (UIs, files written).

Only ids, counts, hashes and metrics are printed: never the text of a row being forgotten.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from eul.cli.demo_prefect import prefect_database_url
from eul.cli.demo_project import PREFECT_DIR, REQUESTS_FILE, shown
from eul.pipeline.context import Context, load_context
from eul.pipeline.gates import gate_details
from eul.stores.registry.tags import gates_from_tags

PENDING = ("received", "validated", "unlearned", "fused")
SHOWN_METRICS = ("test_acc", "retained_acc", "forget_acc", "forget_memorised_acc", "mia_auc")


def local_path(uri: str) -> Path | None:
    """The file behind a `sqlite:///` or `file://` URI, or a plain path; None for a server."""
    from urllib.parse import unquote, urlparse

    if uri.startswith("sqlite:///"):
        return Path(uri.removeprefix("sqlite:///"))
    if uri.startswith("file:"):
        return Path(unquote(urlparse(uri).path))
    return None if "://" in uri else Path(uri)


@dataclass(frozen=True)
class Summary:
    """What one demo run did (seconds by step, flows run, the audit's exit status), told
    with the state it left; `echo` prints one line."""

    root: Path
    echo: Callable[[str], None]
    seconds: dict[str, float]
    ran_flows: list[str]
    audit_code: int | None

    def show(self, seconds: float) -> None:
        """What happened, from the log and the registry as they are now, and where to look."""
        from eul.stores.registry.tags import covered_request_ids
        from eul.stores.registry.versions import PRODUCTION, get_alias_version, version_tags

        ctx = load_context(self.root)
        with ctx.ledger() as ledger:
            states = ledger.list()
        by_status: dict[str, list[str]] = {}
        for state in states:
            by_status.setdefault(state.status, []).append(state.request_id)
        notes = {s.request_id: s.note for s in states if s.status == "rejected"}
        version = get_alias_version(ctx.settings, PRODUCTION)
        tags = version_tags(ctx.settings, version) if version is not None else {}
        covered = covered_request_ids(tags)
        echo = self.echo
        echo(f"\n== summary: {seconds:.0f} s in all")
        echo("seconds by step: " + ", ".join(f"{k} {v:.0f}" for k, v in self.seconds.items()))
        echo(f"requests received: {len(states)} ({', '.join(s.request_id for s in states)})")
        rejected = [f"{rid} ({notes[rid]})" for rid in by_status.get("rejected", [])]
        echo(f"  rejected: {', '.join(rejected) or 'none'}")
        echo(f"  deployed (honoured by production): {', '.join(covered) or 'none'}")
        echo(f"  purged: {', '.join(by_status.get('purged', [])) or 'none'}")
        waiting = [rid for status in PENDING for rid in by_status.get(status, [])]
        echo(f"  pending: {', '.join(waiting) or 'none'}")
        if version is None:
            echo("production model: none yet (the base model of `dvc repro` serves)")
        else:
            echo(f"production model: {ctx.settings.model_name} version {version}")
            for key in ("covered_request_ids", "log_seq", "data_dvc_md5", "eul.kind",
                        "eul.batch_id", "eul.promoted_by", "gates_passed"):  # fmt: skip
                if key in tags:
                    echo(f"  {key}: {tags[key]}")
            self.show_gates(tags)
            self.show_metrics(ctx, tags)
        echo(f"flows run this time: {', '.join(self.ran_flows) or 'none (no work was pending)'}")
        verdict = {0: "OK", 1: "PROBLEMS (see above)"}.get(self.audit_code, "not run")
        echo(f"audit: {verdict} (exit status {self.audit_code})")
        self.show_where(ctx)

    def show_gates(self, tags: dict[str, str]) -> None:
        gates = gates_from_tags(tags)
        self.echo("gates:")
        for name, gate in gates.items():
            verdict = "passed" if gate.get("passed") else "FAILED"
            self.echo(f"  {name}: {verdict} ({gate_details(gate)})")

    def show_metrics(self, ctx: Context, tags: dict[str, str]) -> None:
        """Before (the model the batch replaced) and after (the production version), on the
        same rows: forget rows against test rows."""
        path = ctx.workdir / "batches" / tags.get("eul.batch_id", "") / "evaluation.json"
        if not path.is_file():
            self.echo(f"metrics: {shown(path)} is missing")
            return
        evaluation = json.loads(path.read_text())["evaluation"]
        before, after = evaluation["production"], evaluation["candidate"]
        rows = evaluation["rows"]
        self.echo(
            f"metrics before -> after ({rows['forget']} forget rows, {rows['test']} test, "
            f"{rows['retained']} retained, {rows['unseen']} held-out for membership inference):"
        )
        for name in SHOWN_METRICS:
            old, new = before.get(name), after.get(name)
            if isinstance(old, float) and isinstance(new, float):
                self.echo(f"  {name:<22} {old:.3f} -> {new:.3f}")

    def show_where(self, ctx: Context) -> None:
        bin_dir = Path(sys.executable).parent
        home = self.root / PREFECT_DIR
        echo = self.echo
        echo("where to look:")
        mlflow = bin_dir / "mlflow"
        echo(f"  MLflow UI:   {mlflow} ui --backend-store-uri {ctx.settings.shown_uri}")
        if home.is_dir():
            echo(
                f"  Prefect UI:  PREFECT_HOME={home} PREFECT_API_DATABASE_CONNECTION_URL="
                f"{prefect_database_url(home)} {bin_dir / 'prefect'} server start"
            )
        echo(f"  the log:     {bin_dir / 'eul'} requests list --log-url {ctx.log_url}")
        params = ctx.params
        files = [
            (self.root / params.data.raw, "raw data (tracked by data.dvc)"),
            (self.root / params.prepare.out, "train/heldout/test split, tokenizer"),
            (self.root / params.train.out, "base model"),
            (self.root / REQUESTS_FILE, "the demo's deletion requests"),
            (local_path(ctx.log_url), "deletion log (hash-chained)"),
            (ctx.workdir / "layers", "one unlearning layer per request"),
            (ctx.workdir / "batches", "fused layer, fusion state, evaluation.json per batch"),
            (ctx.workdir / "reports", "each flow run's report and audit"),
            (local_path(ctx.settings.tracking_uri), "MLflow runs, registry"),
            (local_path(ctx.settings.artifact_location), "MLflow artifacts"),
            (self.root / params.purge.ledger, "purge evidence (row hashes)"),
            (self.root / ".dvc-remote", "DVC remote (purged objects swept)"),
            (home / "prefect.db", "Prefect flow runs, task runs, artifacts"),
        ]
        echo("files written:")
        for path, what in files:
            if path is not None and path.exists():
                echo(f"  {shown(path)}{'/' if path.is_dir() else ''}  {what}")
