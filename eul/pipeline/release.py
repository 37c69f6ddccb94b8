"""The end of a batch: register the candidate version in MLflow, and promote a version to
production once it passes the compliance checks.

A version already registered for the same requests on the same production version (tag
`eul.batch_key`) is not registered again (`eul.pipeline.batch.find_registered`); requests
the production version already honours are marked deployed, not redone.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from eul.pipeline import gates as gate_checks
from eul.pipeline.batch import Plan, batch_folder
from eul.pipeline.context import BATCH_KEY_TAG, Context, PipelineError, fail_point
from eul.pipeline.files import numeric_metrics, write_json
from eul.pipeline.marks import mark_deployed
from eul.pipeline.production import Production, current_production
from eul.pipeline.promotion_lock import promotion_lock
from eul.pipeline.results import Evaluation, Promoted, Registered, Verdict
from eul.runtime.jsonsafe import clean_json
from eul.stores.log.store import Ledger
from eul.stores.registry.erasure import is_erased
from eul.stores.registry.review import ReviewFacts, gate_tags, metric_tags, review_description
from eul.stores.registry.runs import DataVersion, RunStory, log_batch_run, run_links
from eul.stores.registry.tags import compliance_tags, covered_request_ids, trained_without_tags
from eul.stores.registry.versions import (
    CANDIDATE,
    PRODUCTION,
    get_alias_version,
    register_version,
    set_alias,
    set_version_tags,
    version_tags,
)

_KIND_LINES = {
    "nightly": "Nightly deletion batch: one unlearning layer per new request, fused exactly "
    "with the production model's layers.",
    "request": "Urgent deletion request: its unlearning layer fused exactly with the "
    "production model's layers.",
    "compaction": "Compaction: a full retrain on the retained data replaces the stack of "
    "unlearning layers (no layer left to fuse).",
}


def register_candidate(
    ctx: Context,
    production: Production,
    plan: Plan,
    *,
    base_dir: str | Path,
    layer_dir: str | Path,
    state_dir: str | Path,
    evaluation: Evaluation,
    verdict: Verdict,
    extra_params: dict[str, Any] | None = None,
    trained_without: Sequence[str] | None = None,
    links: dict[str, str] | None = None,
    started_at: float | None = None,
) -> Registered:
    """Log the batch run, register base + fused layer as a new version tagged with the log,
    and point `candidate` at it; a version failing its gates is registered all the same,
    with the reasons, for a reviewer. `trained_without`: a compaction's requests whose rows
    its weights never saw (tags `eul.trained_without*`). `links`: where else to look (the
    Prefect flow run), added to the batch run's own on the version page. `started_at`: when
    the batch's work began (Unix seconds), the batch run's start."""
    started = time.perf_counter()
    document = _evaluation_document(ctx, plan, evaluation, verdict)
    story = _batch_story(ctx, plan, verdict, started_at)
    run_id = _log_batch(
        ctx, plan, layer_dir, state_dir, document, evaluation, verdict, extra_params, story
    )
    tags = _version_tags(ctx, plan, evaluation, verdict, trained_without)
    all_links = {**run_links(ctx.settings, run_id), **(links or {})}
    description = _description(plan, production, evaluation, verdict, all_links, tags)
    fail_point(ctx, "before-register")
    version = register_version(ctx.settings, run_id, base_dir, layer_dir, tags, description)
    fail_point(ctx, "after-register-before-alias")
    set_alias(ctx.settings, CANDIDATE, version)
    return Registered(
        version=version,
        gates=verdict.gates,
        passed=verdict.passed,
        reused=False,
        run_id=run_id,
        seconds={"register": time.perf_counter() - started},
    )


def _evaluation_document(
    ctx: Context, plan: Plan, evaluation: Evaluation, verdict: Verdict
) -> dict[str, Any]:
    """The batch folder's evaluation.json (also the batch run's evaluation artifact)."""
    document = clean_json(
        {
            "batch_id": plan.batch_id,
            "kind": plan.kind,
            "new_requests": list(plan.new_ids),
            "evaluation": evaluation.to_json(),
            "gates": verdict.gates,
        }
    )
    write_json(batch_folder(ctx, plan) / "evaluation.json", document)
    return document


def _log_batch(
    ctx: Context,
    plan: Plan,
    layer_dir: str | Path,
    state_dir: str | Path,
    document: dict[str, Any],
    evaluation: Evaluation,
    verdict: Verdict,
    extra_params: dict[str, Any] | None,
    story: RunStory,
) -> str:
    """The batch's MLflow run: metrics of both models, settings, layer, state and plots;
    found by the batch key where an interrupted try of the same batch logged it already."""
    from eul.evaluate.plots import batch_plots

    metrics = {
        **numeric_metrics(evaluation.candidate),
        **numeric_metrics(evaluation.production, "production_"),
        **numeric_metrics(evaluation.rows, "rows_"),
    }
    return log_batch_run(
        ctx.settings,
        plan.folder_name,
        list(plan.new_ids),
        metrics,
        params={
            "kind": plan.kind,
            "production_version": plan.production_version or "none",
            "covered_request_count": len(plan.covered),
            "log_seq": plan.log_seq,
            "gates": ctx.params.gates.model_dump(),
            **(extra_params or {}),
        },
        layer_dir=layer_dir,
        state_dir=state_dir,
        evaluation=document,
        plots=batch_plots(
            evaluation.to_json(), gate_checks.gate_bands(verdict.gates), batch_folder(ctx, plan)
        ),
        key=plan.key,
        kind=plan.kind,
        story=story,
    )


def _batch_story(ctx: Context, plan: Plan, verdict: Verdict, started_at: float | None) -> RunStory:
    """The batch run's description, commit, data input and times."""
    from eul.runtime.source import UNKNOWN, git_commit

    on = (
        f"production version {plan.production_version}"
        if plan.production_version is not None
        else "the base model (no version in production yet)"
    )
    description = (
        f"{_KIND_LINES.get(plan.kind, plan.kind)} {len(plan.new_ids)} new request(s), "
        f"{len(plan.covered)} covered in all, built on {on}; deletion log cut at sequence "
        f"{plan.log_seq}. Gates: {'passed' if verdict.passed else 'failed'}"
        + (f" ({'; '.join(verdict.reasons)})." if verdict.reasons else ".")
    )
    md5 = _data_md5(ctx)
    data = (
        None
        if md5 is None
        else DataVersion(ctx.params.data.dvc_file, md5, ctx.params.data.dvc_file)
    )
    commit = git_commit()
    return RunStory(
        description=description,
        started=started_at,
        ended=time.time(),
        commit=None if commit == UNKNOWN else commit,
        data=data,
    )


def _data_md5(ctx: Context) -> str | None:
    from eul.stores.dvc import dvcstore

    dvc_file = ctx.root / ctx.params.data.dvc_file
    return dvcstore.tracked_md5(dvc_file) if dvc_file.is_file() else None


def _version_tags(
    ctx: Context,
    plan: Plan,
    evaluation: Evaluation,
    verdict: Verdict,
    trained_without: Sequence[str] | None = None,
) -> dict[str, str]:
    """The compliance tags that tie the version to the log and the data, and the batch's;
    one short tag per gate and per headline metric; a compaction's also name the requests
    its weights were trained without."""
    data_md5 = _data_md5(ctx)
    tags = compliance_tags(plan.covered, plan.log_seq, plan.log_hash, verdict.gates, data_md5)
    tags.update(
        {
            BATCH_KEY_TAG: plan.key,
            "eul.batch_id": plan.folder_name,
            "eul.kind": plan.kind,
            "eul.parent_version": str(plan.production_version or "none"),
            "eul.new_request_count": str(len(plan.new_ids)),
        }
    )
    if trained_without is not None:
        tags.update(trained_without_tags(trained_without))
    tags.update(gate_tags(verdict.gates))
    tags.update(metric_tags(evaluation.candidate))
    if verdict.reasons:
        tags["eul.gate_reasons"] = " | ".join(verdict.reasons)
    return tags


def _description(
    plan: Plan,
    production: Production,
    evaluation: Evaluation,
    verdict: Verdict,
    links: dict[str, str],
    tags: dict[str, str],
) -> str:
    """The version page a reviewer decides from (`eul.stores.registry.review`)."""
    facts = ReviewFacts(
        kind_line=_KIND_LINES.get(plan.kind, plan.kind),
        new_ids=list(plan.new_ids),
        covered=list(plan.covered),
        log_seq=plan.log_seq,
        candidate=evaluation.candidate,
        production=evaluation.production,
        production_version=plan.production_version,
        gates=verdict.gates,
        reasons=verdict.reasons,
        per_request=evaluation.per_request,
        data_before=production.tags.get("data_dvc_md5"),
        data_after=tags.get("data_dvc_md5"),
        links=links,
    )
    return review_description(facts)


# -- promotion -------------------------------------------------------------------------------


def promotion_problems(
    tags: dict[str, str],
    production: Production,
    ledger: Ledger,
    override_reason: str | None = None,
) -> list[str]:
    """Why a version may not become production (empty: it may).

    - its gates passed, or a reviewer gives a reason to override them;
    - it honours every request the production version honours (never un-forget);
    - the log entry it was cut at still has the hash it records, and the chain verifies;
    - every request it covers is in the log and none was rejected;
    - its weights were not erased (`eul.erased`).
    """
    problems = []
    if is_erased(tags):
        problems.append(
            f"its weights were erased at {tags.get('eul.erased_at', '?')} (it was trained on "
            "erased requests' rows); promote a newer version"
        )
    if tags.get("gates_passed") != "true" and not override_reason:
        reasons = tags.get("eul.gate_reasons") or "gates not passed"
        problems.append(f"its gates failed ({reasons}); a reviewer must give a reason")
    covered = set(covered_request_ids(tags))
    dropped = sorted(set(production.covered) - covered)
    if dropped:
        problems.append(
            f"it does not honour {len(dropped)} request(s) that production (version "
            f"{production.version}) honours: {', '.join(dropped[:5])}"
        )
    try:
        seq = int(tags.get("log_seq", ""))
    except ValueError:
        seq = -1
    entry = ledger.entry_at(seq) if seq > 0 else None
    if entry is None or entry.hash != tags.get("log_hash"):
        problems.append(f"log entry {seq} is missing or its hash differs from the version's")
    report = ledger.verify()
    if not report.ok:
        problems.append(f"the deletion log's chain is broken at entry {report.broken_seq}")
    states = {s.request_id: s.status for s in ledger.list()}
    unknown = sorted(i for i in covered if i not in states)
    rejected = sorted(i for i in covered if states.get(i) == "rejected")
    if unknown:
        problems.append(f"it covers requests not in the log: {', '.join(unknown[:5])}")
    if rejected:
        problems.append(f"it covers rejected requests: {', '.join(rejected[:5])}")
    return problems


def promote_version(
    ctx: Context,
    version: int,
    *,
    promoted_by: str,
    override_reason: str | None = None,
    expected_production: int | None | str = "any",
) -> Promoted:
    """Check compliance, move `production` to `version`, and mark the requests it covers
    `deployed`, as one compare-and-set: under the promotion lock
    (`eul.pipeline.promotion_lock`), production is read, compared with
    `expected_production` (the version the batch was built on; "any" for a reviewer, whose
    checks are made against production as it is under the lock), and moved. When production
    moved since (another promotion won), nothing changes and the error says to rerun: the
    batch's requests stay pending for the next batch."""
    started = time.perf_counter()
    with promotion_lock(ctx):
        moved = get_alias_version(ctx.settings, PRODUCTION)
        if expected_production != "any" and moved != expected_production:
            raise _moved(version, expected_production, moved)
        production = current_production(ctx)
        if expected_production != "any" and production.version != expected_production:
            raise _moved(version, expected_production, production.version)
        tags = version_tags(ctx.settings, version)
        with ctx.ledger() as ledger:
            problems = promotion_problems(tags, production, ledger, override_reason)
            if problems:
                raise PipelineError(
                    f"version {version} may not be promoted: " + "; ".join(problems)
                )
            audit_tags = {"eul.promoted_by": promoted_by}
            if override_reason:
                audit_tags["eul.override_reason"] = override_reason
            set_version_tags(ctx.settings, version, audit_tags)
            fail_point(ctx, "before-alias")
            set_alias(ctx.settings, PRODUCTION, version)
            fail_point(ctx, "after-alias")
            anchor = {"log_seq": int(tags["log_seq"]), "log_hash": tags["log_hash"]}
            deployed = mark_deployed(ledger, covered_request_ids(tags), version, **anchor)
    return Promoted(
        version=version,
        previous=production.version,
        deployed=deployed,
        seconds={"promote": time.perf_counter() - started},
    )


def _moved(version: int, expected: int | None | str, found: int | None) -> PipelineError:
    return PipelineError(
        f"version {version} was not promoted: production moved from version {expected} to "
        f"{found} while this batch ran (another promotion won); its requests stay pending, "
        "rerun the flow to build on the new version"
    )
