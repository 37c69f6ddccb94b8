"""What a registered version records: compliance tags tying it to the deletion log, and the
description a reviewer reads.

Its tags name the covered request ids, the log sequence number and hash, the data version
and the gate results. Pure functions: no MLflow here.
"""

from __future__ import annotations

import hashlib
import json
import math
import numbers
from collections.abc import Mapping, Sequence
from typing import Any

# model_versions.description is VARCHAR(5000) in MLflow's SQL schema.
DESCRIPTION_LIMIT = 5000
LISTED_IDS = 50


def _gates_passed(gates: Mapping[str, Mapping[str, Any]]) -> bool:
    """All gates passed; no gate at all counts as not passed (nothing was checked)."""
    for name, gate in gates.items():
        if not isinstance(gate.get("passed"), bool):
            raise ValueError(f"gate {name!r} has no boolean 'passed'")
    return bool(gates) and all(gate["passed"] for gate in gates.values())


def ids_digest(request_ids: Sequence[str]) -> str:
    """sha256 of the sorted ids, one a line: checks a list against a version without the list."""
    return hashlib.sha256("\n".join(sorted(request_ids)).encode("utf-8")).hexdigest()


def compliance_tags(
    covered_request_ids: Sequence[str],
    log_seq: int,
    log_hash: str,
    gates: Mapping[str, Mapping[str, Any]],
    data_dvc_md5: str | None = None,
) -> dict[str, str]:
    """The tags tying a version to the deletion log.

    covered_request_ids: every request the version honours (not only this batch's), sorted,
    comma-separated, with their count and sha256; log_seq/log_hash: the log entry the batch
    was cut at; data_dvc_md5: the data version; gates: {name: {"passed": bool, ...}} as JSON,
    and gates_passed "true"/"false".
    """
    ids = sorted(set(covered_request_ids))
    with_comma = [i for i in ids if "," in i]
    if with_comma:
        raise ValueError(f"request ids may not contain commas: {with_comma[0]!r}")
    tags = {
        "covered_request_ids": ",".join(ids),
        "covered_request_count": str(len(ids)),
        "covered_request_ids_sha256": ids_digest(ids),
        "log_seq": str(int(log_seq)),
        "log_hash": log_hash,
        "gates": json.dumps(gates, sort_keys=True, default=float),
        "gates_passed": "true" if _gates_passed(gates) else "false",
    }
    if data_dvc_md5 is not None:
        tags["data_dvc_md5"] = data_dvc_md5
    return tags


TRAINED_WITHOUT_TAG = "eul.trained_without"


def trained_without_tags(request_ids: Sequence[str]) -> dict[str, str]:
    """The tags of a compaction: the requests whose rows its weights were trained without
    (every request left out of the retrain, and those purged from the data before it),
    with their count and sha256. Ids only: the erase step reads them back."""
    ids = sorted(set(request_ids))
    with_comma = [i for i in ids if "," in i]
    if with_comma:
        raise ValueError(f"request ids may not contain commas: {with_comma[0]!r}")
    return {
        TRAINED_WITHOUT_TAG: ",".join(ids),
        "eul.trained_without_count": str(len(ids)),
        "eul.trained_without_sha256": ids_digest(ids),
    }


def trained_without_ids(tags: Mapping[str, str]) -> list[str]:
    """The requests a compaction version's weights were trained without, from its tags."""
    return [i for i in tags.get(TRAINED_WITHOUT_TAG, "").split(",") if i]


def covered_request_ids(tags: Mapping[str, str]) -> list[str]:
    """The request ids a version honours, from its (resolved) tags."""
    value = tags.get("covered_request_ids", "")
    return [i for i in value.split(",") if i]


def _number(value: Any) -> str:
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return "nan" if math.isnan(value) else f"{float(value):.4f}"
    return str(value)


def version_description(
    request_ids: Sequence[str],
    metrics: Mapping[str, float],
    *,
    covered_count: int | None = None,
    production_metrics: Mapping[str, float] | None = None,
    production_version: int | None = None,
    gates: Mapping[str, Mapping[str, Any]] | None = None,
    log_seq: int | None = None,
) -> str:
    """Markdown for a reviewer: what this version forgets, its gates, metrics vs production.

    `request_ids` are the requests new in this batch; the full list is in the tags.
    """
    ids = list(request_ids)
    lines = [f"Forgets {len(ids)} new deletion request(s)"]
    if covered_count is not None:
        lines[0] += f", {covered_count} in all"
    if log_seq is not None:
        lines[0] += f", deletion log cut at sequence {log_seq}"
    lines[0] += "."
    shown = ", ".join(ids[:LISTED_IDS])
    more = f" and {len(ids) - LISTED_IDS} more" if len(ids) > LISTED_IDS else ""
    lines += ["", f"New requests: {shown or 'none'}{more} (all ids: tag covered_request_ids)."]
    if gates is not None:
        verdict = "PASSED" if _gates_passed(gates) else "FAILED"
        lines += ["", f"Gates: {verdict}", ""]
        for name, gate in gates.items():
            detail = ", ".join(f"{k} {_number(v)}" for k, v in gate.items() if k != "passed")
            mark = "pass" if gate["passed"] else "FAIL"
            lines.append(f"- {name}: {mark}" + (f" ({detail})" if detail else ""))
    against = "production"
    if production_version is not None:
        against += f" (version {production_version})"
    lines += ["", f"| metric | this version | {against} | change |", "|---|---|---|---|"]
    previous = production_metrics or {}
    for key, value in metrics.items():
        old = previous.get(key)
        change = _number(value - old) if old is not None else ""
        old_text = _number(old) if old is not None else "-"
        lines.append(f"| {key} | {_number(value)} | {old_text} | {change} |")
    text = "\n".join(lines)
    if len(text) > DESCRIPTION_LIMIT:
        cut = "\n... (cut to MLflow's description limit; see the batch run)"
        text = text[: DESCRIPTION_LIMIT - len(cut)] + cut
    return text
