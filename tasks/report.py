"""The report task: the audit of the production model and what this run did, written to the
working folder; `publish_report` then shows it on the flow run (Prefect artifacts: markdown
and a table), from the flow itself so that the artifacts belong to the flow run."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from eul.evaluate.plots import plots_markdown
from eul.pipeline.anchors import write_anchor
from eul.pipeline.audit import anchor_markdown, audit, batch_markdown, format_markdown, table_rows
from eul.pipeline.context import Context
from eul.pipeline.files import write_json
from eul.stores.registry.versions import version_artifact_links, version_links


@dataclass(frozen=True)
class Report:
    """What a run reports: the audit (ids and hashes only), its markdown, the request table."""

    audit: dict[str, Any]
    markdown: str
    rows: list[dict[str, Any]]


@task(name="report", retries=1, retry_delay_seconds=5, cache_policy=NO_CACHE)
def report(ctx: Context, summary: dict[str, Any], key: str) -> Report:
    """The run's summary and the audit, as markdown with links to the registered version,
    its batch run and plots (pages where MLflow is a server, plain paths otherwise); written
    to the working folder. Last, the log's head (after the purge's and erasure's marks) is
    anchored in the anchors file and on the DVC remotes.
    """
    with ctx.ledger() as ledger:
        found = audit(ledger, ctx)
        anchor = write_anchor(ctx, ledger, str(summary.get("batch_id") or key))
    version = summary.get("version")
    plots = [] if version is None else version_artifact_links(ctx.settings, int(version))
    links = {} if version is None else version_links(ctx.settings, int(version))
    markdown = (
        batch_markdown(summary, links)
        + anchor_markdown(anchor)
        + plots_markdown(plots)
        + "\n"
        + format_markdown(found)
    )
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    folder = ctx.workdir / "reports"
    write_json(
        folder / f"{key}-{stamp}.json",
        {"summary": summary, "plots": plots, "audit": found, "anchor": anchor},
    )
    (folder / f"{key}-{stamp}.md").write_text(markdown)
    return Report(found, markdown, table_rows(found))


def publish_report(written: Report, key: str) -> None:
    """The report as the flow run's artifacts. `key` names them (lowercase letters, digits
    and dashes), one per flow, so the Prefect UI keeps each flow's reports as one history."""
    create_markdown_artifact(
        markdown=written.markdown,
        key=f"{key}-report",
        description="What this run did, and the audit",
    )
    if written.rows:
        create_table_artifact(
            table=written.rows, key=f"{key}-requests", description="Every request and its state"
        )
