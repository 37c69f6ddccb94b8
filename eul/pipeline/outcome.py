"""A flow run's bookkeeping: the summary it returns and reports, and the seconds it spent.

The flows (`flows/`) call the steps through their Prefect tasks and hand each result to a
`RunSummary`, which knows which keys the summary gets and in what order; the flows then read
like the process they run. Phases the flow times are `clock` seconds; the seconds the steps
measure inside themselves (per layer, fuse, evaluate, ...) add up in `inner`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from eul.pipeline.batch import Plan
from eul.pipeline.compaction import routing_note
from eul.pipeline.context import Clock, Context
from eul.pipeline.gates import failure_reasons
from eul.pipeline.production import Production
from eul.pipeline.results import (
    CompactionStatus,
    ErasureReport,
    Evaluation,
    LayerResult,
    Promoted,
    PurgeReport,
    Registered,
    Snapshot,
)


class _Timed(Protocol):
    @property
    def seconds(self) -> dict[str, float]: ...


def add_seconds(total: dict[str, float], part: _Timed | None) -> None:
    """Add a step's own seconds (per phase) into `total`."""
    for name, value in (part.seconds if part is not None else {}).items():
        total[name] = total.get(name, 0.0) + float(value)


def should_promote(ctx: Context, registered: Registered, auto_promote: bool | None) -> bool:
    """A passing candidate is promoted when auto-promotion is on (the flow's parameter, or
    `pipeline.auto_promote` when it is None)."""
    wanted = ctx.params.pipeline.auto_promote if auto_promote is None else auto_promote
    return registered.passed and wanted


class RunSummary:
    """The summary of one flow run, filled in step by step (ids, counts, metrics, seconds:
    never record text)."""

    def __init__(self, flow: str, kind: str) -> None:
        self.clock = Clock()
        self.inner: dict[str, float] = {}
        self.summary: dict[str, Any] = {"flow": flow, "kind": kind}

    # -- how the run started ---------------------------------------------------------------

    def batch_started(
        self,
        production: Production,
        snapshot: Snapshot,
        request_ids: Sequence[str],
        only: Sequence[str] | None,
    ) -> None:
        """A batch of pending requests (all of them, or only those in `only`)."""
        self.summary.update(
            production_before=production.version,
            log_seq=snapshot.log_seq,
            validated=snapshot.validated,
            rejected=snapshot.rejected,
            rejected_reasons=snapshot.rejected_reasons,
            reconciled=snapshot.reconciled,
            new_requests=list(request_ids),
        )
        if only is not None:
            self.summary["not_pending"] = sorted(set(only) - set(snapshot.pending))
        if snapshot.to_compaction:
            self.summary["to_compaction"] = sorted(snapshot.to_compaction)
            self.summary["to_compaction_note"] = routing_note(snapshot.to_compaction)

    def compaction_started(self, production: Production, status: CompactionStatus) -> None:
        self.summary.update(
            production_before=production.version,
            compaction=status.to_json(),
            new_requests=[],
        )

    def reviewer_promoted(self, before: Production, promoted: Promoted, reviewer: str) -> None:
        """The `promote` flow: a reviewer moved the alias."""
        version = promoted.version
        self.summary.update(
            version=version,
            production_before=before.version,
            production_after=version,
            promoted=True,
            new_requests=promoted.deployed,
            outcome=f"version {version} promoted to production by reviewer {reviewer}",
        )

    # -- the batch's work ------------------------------------------------------------------

    def add(self, *parts: _Timed | None) -> None:
        for part in parts:
            add_seconds(self.inner, part)

    def planned(self, plan: Plan) -> None:
        self.summary["batch_id"] = plan.folder_name

    def trained(self, results: Sequence[LayerResult]) -> None:
        self.add(*results)
        self.summary["trained"] = sum(1 for r in results if not r.skipped and r.layer_dir)
        self.summary["reused_layers"] = sum(1 for r in results if r.skipped)

    def built(self, *parts: _Timed, evaluation: Evaluation) -> None:
        """The candidate is built, evaluated and registered: their seconds and metrics."""
        self.add(*parts)
        self.summary["metrics"] = evaluation.candidate
        self.summary["production_metrics"] = evaluation.production

    def nothing_due(self, outcome: str) -> None:
        self.summary["outcome"] = outcome

    # -- the tail every flow shares --------------------------------------------------------

    def finishing(self, production: Production) -> None:
        self.summary.setdefault("production_after", production.version)
        self.summary.setdefault("promoted", False)

    def registered(self, registered: Registered) -> None:
        self.summary.update(
            version=registered.version,
            reused=registered.reused,
            gates=registered.gates,
            gates_passed=registered.passed,
            gate_reasons=failure_reasons(registered.gates),
        )

    def promoted(self, registered: Registered, promoted: Promoted) -> None:
        self.add(promoted)
        self.summary.update(promoted=True, production_after=promoted.version)
        self.summary["outcome"] = f"version {registered.version} promoted to production"

    def not_promoted(self, registered: Registered) -> None:
        if registered.passed:
            self.summary["outcome"] = f"version {registered.version} awaits a reviewer"
        else:
            self.summary["outcome"] = f"version {registered.version} failed its gates"

    def purged(self, report: PurgeReport) -> None:
        self.add(report)
        self.summary["purged"] = report.purged
        self.summary.setdefault("outcome", "nothing to do")

    def erased(self, report: ErasureReport) -> None:
        self.add(report)
        self.summary["erased"] = report.erased
        self.summary["erasure"] = {
            "compaction_version": report.compaction_version,
            "versions_erased": report.versions,
            "dvc_objects_deleted": report.dvc_objects,
            "workdir_folders_deleted": report.folders,
            "note": report.note,
        }

    def for_report(self) -> dict[str, Any]:
        """What the report publishes: the summary so far, with the phases' seconds."""
        return {**self.summary, "seconds": dict(self.clock.seconds)}

    def closed(self, audit: dict[str, Any]) -> dict[str, Any]:
        """The run's summary, once the report is out: the audit's verdict and every second."""
        self.summary["audit_ok"] = audit["ok"]
        self.summary["overdue"] = audit["overdue"]
        self.summary["erasure_overdue"] = audit.get("erasure_overdue", [])
        self.summary["seconds"] = dict(self.clock.seconds)
        self.summary["inner_seconds"] = self.inner
        return self.summary
