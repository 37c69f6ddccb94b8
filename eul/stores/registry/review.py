"""What a reviewer reads on a version's page: the description (markdown) and the short tags.

A reviewer decides from this page whether the version may go to production, so it says in
words what the JSON says in numbers: which requests are forgotten and how well (each new
request's forget metrics before -> after), every gate with its value, band and verdict
(the over-forgetting side included), the comparison with what is really in production (or
the base model, for a first version), what changed in the data, and where to look next.
Pure functions: no MLflow here, and no row text (ids, counts and aggregates only).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from eul.stores.registry.tags import DESCRIPTION_LIMIT

# Rows of the per-request table before it says "and N more" (the description is 5,000
# characters at most; evaluation.json keeps every request).
LISTED_REQUESTS = 20
LISTED_EARLIER = 30
# The candidate's metrics a reviewer reads first, one tag each.
HEADLINE_METRICS = (
    "test_acc", "retained_acc", "forget_acc", "forget_memorised_acc", "mia_auc",
    "test_rougeL", "forget_rougeL",
)  # fmt: skip
GATE_TAG_PREFIX = "eul.gate."
METRIC_TAG_PREFIX = "eul.metric."


@dataclass(frozen=True)
class ReviewFacts:
    """Everything the version page states, gathered by the release step."""

    kind_line: str
    new_ids: Sequence[str]
    covered: Sequence[str]
    log_seq: int
    candidate: Mapping[str, Any]
    production: Mapping[str, Any]
    production_version: int | None
    gates: Mapping[str, Mapping[str, Any]]
    reasons: Sequence[str] = ()
    # {request id: {"rows": n, "candidate": {...}, "production": {...}}}
    per_request: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    data_before: str | None = None
    data_after: str | None = None
    # {what: where}: the batch run, its plots, the Prefect flow run
    links: Mapping[str, str] = field(default_factory=dict)


def number(value: Any, digits: int = 3) -> str:
    """A figure as a reviewer reads it: rounded, or "not measured" (never "None" or "nan")."""
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return "not measured" if math.isnan(value) else f"{float(value):.{digits}f}"
    return "not measured" if value is None else str(value)


def _change(before: Any, after: Any) -> str:
    if before is None and after is None:
        return "not measured"
    return f"{number(before)} -> {number(after)}"


# -- gates in words ------------------------------------------------------------------------

_OUTSIDE = {
    "above": "FAIL: not forgotten (above the band)",
    "below": "FAIL: over-forgotten (below the band)",
    "missing": "FAIL: not measured",
}


def gate_row(name: str, gate: Mapping[str, Any]) -> tuple[str, str, str]:
    """A gate as (value, what it is held to, verdict in words)."""
    band = gate.get("band")
    limits: list[str] = []
    if band:
        low = number(band["low"]) if band.get("two_sided", True) else "any"
        high, expected = number(band["high"]), number(band["expected"])
        limits.append(f"band {low} to {high} (expected {expected})")
    if name == "utility":
        before, after = gate.get("production_test_acc"), gate.get("candidate_test_acc")
        value = f"test accuracy {_change(before, after)}"
        limits.append(f"drop at most {number(gate.get('max_drop'))}")
    elif name == "forget_vs_test":
        value = f"forget {number(gate.get('forget_acc'))}, test {number(gate.get('test_acc'))}"
        limits.append(f"forget at most test + {number(gate.get('margin'))}")
    else:
        value = number(gate.get("value"))
        if gate.get("max") is not None:
            limits.append(f"at most {number(gate.get('max'))}")
    if gate.get("passed") is True:
        verdict = "pass" + (": inside the band" if band else "")
    elif gate.get("note"):
        verdict = f"FAIL: {gate['note']}"
    elif gate.get("outside") in _OUTSIDE:
        verdict = _OUTSIDE[gate["outside"]]
    else:
        verdict = "FAIL: over the limit"
    return value, "; ".join(limits) or "-", verdict


def gate_tags(gates: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
    """One short tag per gate: {"eul.gate.mia_auc": "pass: 0.291; band 0.212 to 0.408 ..."}."""
    tags = {}
    for name, gate in gates.items():
        value, held_to, verdict = gate_row(name, gate)
        tags[f"{GATE_TAG_PREFIX}{name}"] = f"{verdict}: {value}; {held_to}"[:250]
    return tags


def metric_tags(metrics: Mapping[str, Any]) -> dict[str, str]:
    """One tag per headline metric of the candidate, rounded to 4 digits."""
    return {
        f"{METRIC_TAG_PREFIX}{key}": number(metrics[key], 4)
        for key in HEADLINE_METRICS
        if key in metrics and number(metrics[key]) != "not measured"
    }


# -- the description -----------------------------------------------------------------------


def _forget_columns(per_request: Mapping[str, Mapping[str, Any]]) -> list[str]:
    for entry in per_request.values():
        found = [k for k in entry.get("candidate", {}) if k.startswith("forget_")]
        if found:
            return found
    return []


def _requests_section(facts: ReviewFacts) -> list[str]:
    new = list(facts.new_ids)
    earlier = sorted(set(facts.covered) - set(new))
    lines = [
        "## Requests",
        "",
        f"Forgets {len(new)} new deletion request(s), {len(set(facts.covered))} in all "
        f"(deletion log cut at sequence {facts.log_seq}; every id: tag covered_request_ids).",
        "",
    ]
    columns = _forget_columns(facts.per_request)
    if new:
        header = " | ".join(f"{c} before -> after" for c in columns)
        lines += [f"| new request | rows | {header} |", "|---|---|" + "---|" * len(columns)]
        for request_id in new[:LISTED_REQUESTS]:
            entry = facts.per_request.get(request_id)
            if entry is None:
                lines.append(f"| {request_id} | 0 (no rows in the training data) |"
                             + " not measured |" * len(columns))  # fmt: skip
                continue
            cells = [
                _change(entry.get("production", {}).get(c), entry.get("candidate", {}).get(c))
                for c in columns
            ]
            lines.append(f"| {request_id} | {entry.get('rows', 0)} | " + " | ".join(cells) + " |")
        if len(new) > LISTED_REQUESTS:
            lines.append(f"\n... and {len(new) - LISTED_REQUESTS} more (evaluation.json).")
        lines.append("")
    if earlier:
        shown = ", ".join(earlier[:LISTED_EARLIER])
        more = f" and {len(earlier) - LISTED_EARLIER} more" if len(earlier) > LISTED_EARLIER else ""
        lines += [
            f"Earlier requests, still honoured ({len(earlier)}): {shown}{more}. Their rows "
            "were purged once a version forgetting them was deployed, so they are not "
            "measured again; their figures are on the version that first covered them.",
            "",
        ]
    return lines


def _gates_section(facts: ReviewFacts) -> list[str]:
    passed = bool(facts.gates) and all(g.get("passed") is True for g in facts.gates.values())
    lines = [f"## Gates: {'PASSED' if passed else 'FAILED'}", ""]
    if not facts.gates:
        return [*lines, "No gate was checked.", ""]
    lines += ["| gate | value | held to | verdict |", "|---|---|---|---|"]
    for name, gate in facts.gates.items():
        value, held_to, verdict = gate_row(name, gate)
        lines.append(f"| {name} | {value} | {held_to} | {verdict} |")
    lines.append("")
    mia = facts.gates.get("mia_auc", {})
    value = mia.get("value")
    # said where it matters: under the band, or under chance with no band to say otherwise
    worrying = mia.get("outside") == "below" or (not mia.get("band") and mia.get("passed"))
    if isinstance(value, numbers.Real) and not math.isnan(value) and value < 0.5 and worrying:
        lines += [
            f"A membership AUC under 0.5 means the forget rows look less like training rows "
            f"than unseen rows do: an attacker who flips the score picks them out at "
            f"{number(1 - value)}. The band says how far under 0.5 a model that never saw "
            "rows of their kind goes.",
            "",
        ]
    return lines


def _production_section(facts: ReviewFacts) -> list[str]:
    if facts.production_version is None:
        against = "none: the base model (no earlier version was in production)"
        column = "base model"
    else:
        against = f"version {facts.production_version}"
        column = f"production (v{facts.production_version})"
    lines = [
        "## Against production",
        "",
        f"In production before this version: {against}.",
        "",
        f"| metric | this version | {column} | change |",
        "|---|---|---|---|",
    ]
    for key, value in facts.candidate.items():
        if not isinstance(value, numbers.Real) or isinstance(value, bool):
            continue
        old = facts.production.get(key)
        change = (
            f"{float(value) - float(old):+.3f}"
            if isinstance(old, numbers.Real) and not math.isnan(old) and not math.isnan(value)
            else "-"
        )
        lines.append(f"| {key} | {number(value)} | {number(old)} | {change} |")
    return [*lines, ""]


def _data_section(facts: ReviewFacts) -> list[str]:
    before, after = facts.data_before, facts.data_after
    if after is None:
        text = "The data is not tracked by DVC here (no data.dvc)."
    elif before is None:
        text = f"data.dvc: md5 {after[:12]} (the version in production records none)."
    elif before == after:
        text = f"data.dvc: md5 {after[:12]}, unchanged since the version in production."
    else:
        text = (
            f"data.dvc: md5 {before[:12]} -> {after[:12]}: the data changed since the version "
            "in production was built (rows purged after it was deployed, or new data)."
        )
    return ["## Data", "", text, ""]


def _links_section(facts: ReviewFacts) -> list[str]:
    if not facts.links:
        return []
    lines = ["## Links", ""]
    for what, where in facts.links.items():
        shown = f"[{where}]({where})" if where.startswith(("http://", "https://")) else f"`{where}`"
        lines.append(f"- {what}: {shown}")
    return [*lines, ""]


def review_description(facts: ReviewFacts) -> str:
    """The version's description in markdown, within MLflow's 5,000 characters."""
    lines: list[str] = []
    if facts.reasons:
        lines += [
            "**NOT PROMOTED**: " + "; ".join(facts.reasons) + " (a reviewer may promote it "
            "with the `promote` flow and a reason).",
            "",
        ]
    lines += [facts.kind_line, ""]
    for section in (
        _requests_section, _gates_section, _production_section, _data_section, _links_section,
    ):  # fmt: skip
        lines += section(facts)
    text = "\n".join(lines).rstrip() + "\n"
    if len(text) > DESCRIPTION_LIMIT:
        cut = "\n... (cut to MLflow's description limit; see the batch run's evaluation.json)"
        text = text[: DESCRIPTION_LIMIT - len(cut)] + cut
    return text
