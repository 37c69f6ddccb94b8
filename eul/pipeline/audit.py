"""The audit: which deletion requests the production model honours, with evidence, and which
are pending or overdue, at both levels of compliance.

A request is honoured (*suppressed*) when the production version's tags cover it
(`covered_request_ids`); its evidence is the version it was deployed in (the log's `deployed`
entry) and, once its rows are gone, the purge hashes (the log's `purged` entry). It is
*erased* once the log's `erased` entry names the compaction trained without its rows (and
what was deleted). Each level has its deadline: `deadline` (suppression) and the erasure
deadline (`log.erasure_days` after submission). The report is a problem when a request is
overdue at either level, when the log says a request was deployed but the production version
does not cover it (e.g. the alias was moved back by hand), or when the log's chain is broken.
It is a problem too when the log contradicts an anchor of its head (a registered version's
tags, the anchors file, a DVC remote: `eul.pipeline.anchors`), which shows a log cut short
or rewritten; or when a request deployed or later names a version the registry does not
hold, or one that does not cover it.

Only ids, statuses, times, versions and hashes appear: the log holds nothing else.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from eul.pipeline.integrity import integrity_check
from eul.stores.log.config import DEFAULT_ERASURE_DAYS
from eul.stores.log.schema import DONE_STATUSES, SUPPRESSED_STATUSES, Entry, RequestState, utcnow
from eul.stores.log.store import Ledger
from eul.stores.registry.review import gate_row

if TYPE_CHECKING:
    from eul.pipeline.context import Context

PRODUCTION_TAGS = (
    "covered_request_count",
    "covered_request_ids_sha256",
    "log_seq",
    "log_hash",
    "data_dvc_md5",
    "gates_passed",
    "eul.kind",
    "eul.batch_id",
    "production_since",
    "eul.promoted_by",
    "eul.override_reason",
)


def build_report(
    states: Sequence[RequestState],
    entries: Sequence[Entry],
    production_version: int | None,
    production_tags: Mapping[str, str],
    covered: Sequence[str],
    chain: Mapping[str, Any],
    now: datetime | None = None,
    erasure_days: int = DEFAULT_ERASURE_DAYS,
    integrity: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The audit from plain values: the log's requests and their `deployed`/`purged`/
    `erased` entries, the production version, its tags and covered ids, the chain check,
    the days a request may take to be erased (`log.erasure_days`) and the anchor and
    registry check (`integrity_check`; not checked when None)."""
    now = now or utcnow()
    marks: dict[str, dict[str, Entry]] = {"deployed": {}, "purged": {}, "erased": {}}
    for entry in entries:
        if entry.status in marks:
            marks[entry.status][entry.request_id] = entry
    deployed, purged, erased = marks["deployed"], marks["purged"], marks["erased"]
    covered_ids = set(covered)
    honoured, pending, not_honoured = [], [], []
    erasure_overdue = []
    counts: dict[str, int] = {}
    for state in states:
        rid = state.request_id
        counts[state.status] = counts.get(state.status, 0) + 1
        late = state.is_erasure_overdue(erasure_days, now)
        if late:
            erasure_overdue.append(rid)
        levels = {
            "level": state.level,
            "deadline": state.deadline,
            "erasure_deadline": state.erasure_deadline(erasure_days),
            "erasure_overdue": late,
        }
        if rid in covered_ids:
            row: dict[str, Any] = {"request_id": rid, "status": state.status, **levels}
            if rid in deployed:
                entry = deployed[rid]
                row["deployed_in"] = entry.details.get("model_version")
                row["deployed_at"] = entry.at
                row["suppressed_at"] = entry.at
            if rid in purged:
                entry = purged[rid]
                evidence = entry.details.get("evidence") or {}
                row["purged_at"] = entry.at
                row["purge_evidence"] = evidence
                row["purge_entry_hash"] = entry.hash
            if rid in erased:
                entry = erased[rid]
                row["erased_at"] = entry.at
                row["erase_evidence"] = entry.details.get("evidence") or {}
                row["erase_entry_hash"] = entry.hash
            honoured.append(row)
        elif state.status in SUPPRESSED_STATUSES:
            not_honoured.append(
                {
                    "request_id": state.request_id,
                    "status": state.status,
                    "note": f"the log says {state.status} but production "
                    f"(version {production_version}) does not cover it",
                }
            )
        elif state.status not in DONE_STATUSES:
            pending.append(
                {
                    "request_id": state.request_id,
                    "status": state.status,
                    "submitted_at": state.submitted_at,
                    **levels,
                    "overdue": state.is_overdue(now),
                }
            )
    overdue = [p["request_id"] for p in pending if p["overdue"]]
    known = {s.request_id for s in states}
    missing = sorted(covered_ids - known)
    ok = (
        bool(chain.get("ok"))
        and not overdue
        and not erasure_overdue
        and not not_honoured
        and not missing
        and not (integrity or {}).get("findings")
    )
    return {
        "generated_at": now.isoformat(timespec="seconds"),
        "ok": ok,
        "production": {
            "version": production_version,
            **{k: production_tags[k] for k in PRODUCTION_TAGS if k in production_tags},
        },
        "log": dict(chain),
        "counts": counts,
        "honoured": honoured,
        "pending": pending,
        "overdue": overdue,
        "erasure_days": erasure_days,
        "erasure_overdue": erasure_overdue,
        "not_honoured": not_honoured,
        "covered_but_not_in_log": missing,
        "integrity": dict(integrity) if integrity is not None else None,
    }


def audit(ledger: Ledger, ctx: Context, now: datetime | None = None) -> dict[str, Any]:
    """The audit of the production version in the project's registry against `ledger`,
    with the check of the log's anchors and deployments (`integrity_check`)."""
    from eul.stores.registry.tags import covered_request_ids
    from eul.stores.registry.versions import PRODUCTION, get_alias_version, version_tags

    settings = ctx.settings
    version = get_alias_version(settings, PRODUCTION)
    tags = version_tags(settings, version) if version is not None else {}
    report = ledger.verify()
    chain = {
        "ok": report.ok,
        "entries": report.entries,
        "head_seq": report.head_seq,
        "head_hash": report.head_hash,
    }
    if not report.ok:
        chain.update(broken_seq=report.broken_seq, reason=report.reason)
    states = ledger.list()
    entries = ledger.entries(("deployed", "purged", "erased"))
    return build_report(
        states,
        entries,
        version,
        tags,
        covered_request_ids(tags),
        chain,
        now,
        erasure_days=ledger.erasure_days,
        integrity=integrity_check(ledger, ctx, states, entries),
    )


def table_rows(report: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per request of the report, for a table (Prefect artifact, CSV)."""
    rows = []
    for row in report["honoured"]:
        evidence = row.get("purge_evidence") or {}
        rows.append(
            {
                "request_id": row["request_id"],
                "state": "honoured",
                "status": row["status"],
                "level": row.get("level", ""),
                "version": row.get("deployed_in", ""),
                "suppressed_at": (row.get("suppressed_at") or "")[:16],
                "deadline": "",
                "erased_at": (row.get("erased_at") or "")[:16],
                "erasure_deadline": _erasure_cell(row),
                "purge_data_md5": evidence.get("data_dvc_md5_after", ""),
                "rows_purged": evidence.get("rows_removed", ""),
            }
        )
    for row in report["pending"]:
        rows.append(
            {
                "request_id": row["request_id"],
                "state": "OVERDUE" if row["overdue"] else "pending",
                "status": row["status"],
                "level": row.get("level", "pending"),
                "version": "",
                "suppressed_at": "",
                "deadline": row["deadline"][:16],
                "erased_at": "",
                "erasure_deadline": _erasure_cell(row),
                "purge_data_md5": "",
                "rows_purged": "",
            }
        )
    for row in report["not_honoured"]:
        rows.append(
            {
                "request_id": row["request_id"],
                "state": "NOT HONOURED",
                "status": row["status"],
                "level": "",
                "version": "",
                "suppressed_at": "",
                "deadline": "",
                "erased_at": "",
                "erasure_deadline": "",
                "purge_data_md5": "",
                "rows_purged": "",
            }
        )
    return rows


def _erasure_cell(row: Mapping[str, Any]) -> str:
    """The erasure deadline to minutes; OVERDUE once it has passed without an erasure."""
    if row.get("level") == "erased" or "erasure_deadline" not in row:
        return ""
    text = str(row["erasure_deadline"])[:16]
    return f"OVERDUE {text}" if row.get("erasure_overdue") else text


def format_markdown(report: Mapping[str, Any], limit: int = 50) -> str:
    """The report for people (the `eul audit` table and the flows' Prefect artifact)."""
    production = report["production"]
    version = production.get("version")
    verdict = "OK" if report["ok"] else "PROBLEMS"
    lines = [f"# Deletion audit: {verdict}", ""]
    if version is None:
        lines.append("No production version yet: no request is honoured by a deployed model.")
    else:
        lines.append(
            f"Production: version {version} (since {production.get('production_since', '?')}), "
            f"honours {len(report['honoured'])} request(s); deletion log cut at entry "
            f"{production.get('log_seq', '?')}, data.dvc {production.get('data_dvc_md5', '?')}, "
            f"gates passed: {production.get('gates_passed', '?')}."
        )
    log = report["log"]
    chain = "verified" if log.get("ok") else f"BROKEN at entry {log.get('broken_seq')}"
    lines.append(f"Deletion log: {log.get('entries', 0)} entries, hash chain {chain}.")
    lines += integrity_lines(report.get("integrity"), limit)
    counts = ", ".join(f"{k} {v}" for k, v in sorted(report["counts"].items())) or "none"
    lines += [f"Requests by status: {counts}.", ""]
    if report["overdue"]:
        lines.append(f"**Overdue: {', '.join(report['overdue'][:limit])}**")
    late = report.get("erasure_overdue") or []
    if late:
        lines.append(f"**Overdue for erasure: {', '.join(late[:limit])}**")
    if report["not_honoured"]:
        ids = ", ".join(r["request_id"] for r in report["not_honoured"][:limit])
        lines.append(f"**Deployed in the log but not honoured by production: {ids}**")
    if report["covered_but_not_in_log"]:
        ids = ", ".join(report["covered_but_not_in_log"][:limit])
        lines.append(f"**Covered by production but unknown to the log: {ids}**")
    rows = table_rows(report)
    if rows:
        if lines[-1]:
            lines.append("")
        lines += [
            "| request | state | status | version | level | suppressed at | deadline "
            "| erased at | erasure deadline | purged data.dvc | rows purged |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for row in rows[:limit]:
            lines.append(
                f"| {row['request_id']} | {row['state']} | {row['status']} | {row['version']} "
                f"| {row['level']} | {row['suppressed_at']} | {row['deadline']} "
                f"| {row['erased_at']} | {row['erasure_deadline']} | {row['purge_data_md5']} "
                f"| {row['rows_purged']} |"
            )
        if len(rows) > limit:
            lines.append(f"| ... {len(rows) - limit} more (see --json) | | | | | | | | | | |")
    return "\n".join(lines) + "\n"


def integrity_lines(
    integrity: Mapping[str, Any] | None, limit: int = 50, strong: str = "**"
) -> list[str]:
    """The anchor and registry check for people: one line when all agree, else each
    finding (`strong` marks the problem line: Markdown bold, or nothing for a terminal)."""
    if integrity is None:
        return []
    stores = ", ".join(f"{k} {v}" for k, v in sorted(integrity["stores"].items())) or "none yet"
    head = f"Anchors of the log's head: {integrity['anchors']} checked ({stores})"
    findings = integrity["findings"]
    if not findings:
        return [f"{head}; the log agrees with each, and every deployment with the registry."]
    lines = [f"{strong}{head}; {len(findings)} problem(s):{strong}"]
    lines += [f"- {f['message']}" for f in findings[:limit]]
    if len(findings) > limit:
        lines.append(f"- ... {len(findings) - limit} more (see --json)")
    return [*lines, ""]


def anchor_markdown(anchor: Mapping[str, Any]) -> str:
    """The head a batch report anchored, and where (`eul.pipeline.anchors.write_anchor`)."""
    stores = anchor.get("stores") or []
    if not stores:
        return "The log is empty: no head to anchor.\n"
    return (
        f"Log head anchored: entry {anchor['log_seq']} (hash {str(anchor['log_hash'])[:12]}) "
        f"in {', '.join(stores)}.\n"
    )


def _version_words(version: Any) -> str:
    return "the base model (no version yet)" if version is None else f"version {version}"


def batch_markdown(summary: Mapping[str, Any], links: Mapping[str, str] | None = None) -> str:
    """What one flow run did, for its Prefect artifact: requests, version, gates, purge, and
    where to look (`links`: the MLflow version and run pages, or plain paths)."""
    lines = [f"# {summary.get('flow', 'batch')}: {summary.get('outcome', '')}", ""]
    new = summary.get("new_requests") or []
    lines.append(
        f"Production before: {_version_words(summary.get('production_before'))}; "
        f"requests in this batch: {len(new)}"
        + (f" ({', '.join(new[:20])}{' ...' if len(new) > 20 else ''})" if new else "")
        + "."
    )
    if summary.get("validated") or summary.get("rejected"):
        lines.append(
            f"Validated now: {len(summary.get('validated') or [])}, rejected now: "
            f"{len(summary.get('rejected') or [])}."
        )
    reasons = summary.get("rejected_reasons") or {}
    for request_id in summary.get("rejected") or []:
        lines.append(f"- rejected {request_id}: {reasons.get(request_id) or 'no reason given'}")
    if summary.get("reconciled"):
        done = ", ".join(summary["reconciled"])
        lines.append(f"Already honoured by production, marked deployed: {done}.")
    if summary.get("version") is not None:
        reused = " (registered by an earlier run of this batch)" if summary.get("reused") else ""
        lines.append(f"Registered version {summary['version']}{reused}.")
        gates = summary.get("gates") or {}
        if gates:
            lines += ["", "| gate | value | held to | verdict |", "|---|---|---|---|"]
            for name, gate in gates.items():
                value, held_to, verdict = gate_row(name, gate)
                lines.append(f"| {name} | {value} | {held_to} | {verdict} |")
            lines.append("")
        for reason in summary.get("gate_reasons") or []:
            lines.append(f"- not promoted: {reason}")
    lines.append(
        f"Production after: {_version_words(summary.get('production_after'))}"
        + ("; promoted by this run." if summary.get("promoted") else ".")
    )
    if links:
        lines += ["", "## Where to look", ""]
        for what, where in links.items():
            shown = f"[{where}]({where})" if where.startswith(("http://", "https://")) else where
            lines.append(f"- {what}: {shown}")
        lines.append("")
    purged = summary.get("purged") or []
    lines.append(f"Purged from data, DVC cache and remotes: {len(purged)} request(s).")
    if "erased" in summary:
        erasure = summary.get("erasure") or {}
        lines.append(
            f"Erased (weights trained without their rows, older artifacts deleted): "
            f"{len(summary['erased'])} request(s); compaction version "
            f"{erasure.get('compaction_version')}, older versions erased: "
            f"{len(erasure.get('versions_erased') or [])}."
        )
    seconds = summary.get("seconds") or {}
    if seconds:
        shown = ", ".join(f"{k} {v:.1f} s" for k, v in seconds.items())
        lines.append(f"Time: {shown}.")
    return "\n".join(lines) + "\n"
