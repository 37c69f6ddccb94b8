"""`promote`: a reviewer's decision. The version (default: the `candidate` alias) becomes
production only if it passes the compliance checks: gates passed (or the reviewer gives a
reason to override them), every request production honours still honoured, and the log
entry it was cut at unchanged. Its requests are then marked deployed and purged; when the
version is a compaction, what was trained on the rows it was trained without is deleted and
those requests marked erased."""

from __future__ import annotations

from typing import Any

from prefect import flow

from eul.pipeline.checks import check_promotion, check_version
from eul.pipeline.context import PipelineError
from eul.pipeline.outcome import RunSummary
from eul.stores.registry.versions import CANDIDATE, get_alias_version, version_tags
from flows.batch import finish, model_slot, open_project
from tasks.pipeline import production_model, promote

NAME = "promote"


@flow(name=NAME)
def promote_version(
    reviewer: str,
    version: int | None = None,
    override_reason: str | None = None,
    project_dir: str = ".",
    params_file: str = "params.yaml",
) -> dict[str, Any]:
    """Move `production` to `version` (or the candidate) for `reviewer`; a version that
    failed its gates needs `override_reason`, which is recorded on the version."""
    check_promotion(reviewer, version, override_reason)
    ctx = open_project(project_dir, params_file)
    with model_slot():
        run = RunSummary(NAME, "promote")
        if version is None:
            version = get_alias_version(ctx.settings, CANDIDATE)
            if version is None:
                raise PipelineError("no version has the `candidate` alias; name a version")
        check_version(ctx, version)
        with run.clock("promote"):
            before = production_model(ctx)
            promoted = promote(ctx, version, f"reviewer {reviewer}", override_reason)
        run.reviewer_promoted(before, promoted, reviewer)
        is_compaction = version_tags(ctx.settings, version).get("eul.kind") == "compaction"
        return finish(ctx, run, before, None, False, "", NAME, erase=is_compaction)
