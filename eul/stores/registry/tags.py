"""What a registered version records: compliance tags tying it to the deletion log, and the
description a reviewer reads.

Its tags name the covered request ids, the log sequence number and hash, the data version
and the gate results. Pure functions: no MLflow here.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

# model_versions.description is VARCHAR(5000) in MLflow's SQL schema.
DESCRIPTION_LIMIT = 5000
# The gates as one machine-readable JSON document (a reviewer reads the `eul.gate.*` tags).
GATES_JSON_TAG = "gates_json"


def rounded(value: Any, digits: int = 4) -> Any:
    """`value` (nested) with every float rounded: the machine-readable blob stays readable."""
    if isinstance(value, Mapping):
        return {k: rounded(v, digits) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [rounded(v, digits) for v in value]
    if isinstance(value, float) and not math.isnan(value):
        return round(value, digits)
    return value


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
    was cut at; data_dvc_md5: the data version; gates: {name: {"passed": bool, ...}} as JSON
    with 4 digits (`gates_json`), and gates_passed "true"/"false".
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
        GATES_JSON_TAG: json.dumps(rounded(gates), sort_keys=True, default=float),
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


def gates_from_tags(tags: Mapping[str, str]) -> dict[str, Any]:
    """A version's gates as JSON (`gates_json`; `gates` on versions registered before it)."""
    return json.loads(tags.get(GATES_JSON_TAG) or tags.get("gates") or "{}")


def covered_request_ids(tags: Mapping[str, str]) -> list[str]:
    """The request ids a version honours, from its (resolved) tags."""
    value = tags.get("covered_request_ids", "")
    return [i for i in value.split(",") if i]
