"""Marks with the evidence the deletion log requires, for tests that walk requests through
its lifecycle: a deployed version's anchor (the log entry it was cut at) and a purge's
evidence in the purge step's form."""

from __future__ import annotations

from typing import Any

from eul.stores.log.store import Ledger


def anchor(ledger: Ledger) -> dict[str, Any]:
    """The log's head as the entry a version was cut at (its log_seq and log_hash tags)."""
    seq, digest = ledger.head()
    return {"log_seq": seq, "log_hash": digest}


def purge_evidence(rows: int, salt: int = 0) -> dict[str, Any]:
    """Evidence of `rows` removed rows, in the form the purge step writes."""
    return {
        "data_dvc_md5_before": "a" * 32 + ".dir",
        "data_dvc_md5_after": "b" * 32 + ".dir",
        "rows_removed": rows,
        "row_hmac": [f"hmac-sha256:{salt:032x}{i:032x}" for i in range(rows)],
        "remotes_swept": ["storage"],
        "purge_log": "data/purge-log.jsonl",
        "purged_at": "2026-12-01T00:00:00+00:00",
    }


def deploy(ledger: Ledger, request_id: str, version: str | int = "1") -> None:
    """A validated request unlearned, fused and deployed in a version cut at the log's head."""
    ledger.mark(request_id, "unlearned")
    ledger.mark(request_id, "fused", model_version=version)
    ledger.mark(request_id, "deployed", model_version=version, **anchor(ledger))


def purge(ledger: Ledger, request_id: str) -> None:
    """A deployed request purged, with one removed row per record id it matched."""
    matched = ledger.get(request_id).state.matched_ids or []
    ledger.mark(request_id, "purged", evidence=purge_evidence(len(matched)))
