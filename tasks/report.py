"""The report task: the audit of the production model and what this run did, published as
Prefect artifacts (markdown and a table) and written to the working folder."""

from __future__ import annotations

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
from eul.stores.registry.versions import version_artifact_links


@task(name="report", retries=1, retry_delay_seconds=5, cache_policy=NO_CACHE)
def report(ctx: Context, summary: dict[str, Any], key: str) -> dict[str, Any]:
    """Publish the run's summary and the audit; return the audit (ids and hashes only).

    `key` names the artifacts (lowercase letters, digits and dashes), one per flow, so the
    Prefect UI keeps each flow's reports as one history. The markdown links the plots that
    the batch run of the registered version holds in MLflow. Last, the log's head (after the
    purge's and erasure's marks) is anchored in the anchors file and on the DVC remotes.
    """
    with ctx.ledger() as ledger:
        found = audit(ledger, ctx)
        anchor = write_anchor(ctx, ledger, str(summary.get("batch_id") or key))
    version = summary.get("version")
    plots = [] if version is None else version_artifact_links(ctx.settings, int(version))
    markdown = (
        batch_markdown(summary)
        + anchor_markdown(anchor)
        + plots_markdown(plots)
        + "\n"
        + format_markdown(found)
    )
    create_markdown_artifact(
        markdown=markdown, key=f"{key}-report", description="What this run did, and the audit"
    )
    rows = table_rows(found)
    if rows:
        create_table_artifact(
            table=rows, key=f"{key}-requests", description="Every request and its state"
        )
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    folder = ctx.workdir / "reports"
    write_json(
        folder / f"{key}-{stamp}.json",
        {"summary": summary, "plots": plots, "audit": found, "anchor": anchor},
    )
    (folder / f"{key}-{stamp}.md").write_text(markdown)
    return found
