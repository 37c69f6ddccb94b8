"""The purge ledger (`purge.ledger`, data/purge-log.jsonl): one JSON line per record of a
purge, ids and keyed digests only, committed to git with data.dvc.

A purge writes its evidence before it changes anything and completes it after:

- `intent`: before the raw data is rewritten. The keyed digests and record ids of every row
  it removes, the data.dvc md5 before, the DVC objects of that version (to sweep and check
  later) and the md5 the records file will have once rewritten (`kept_md5`), so that a rerun
  after a kill can tell whether the rewrite happened.
- `failed`: it stopped with an error (a remote that did not answer, a check that found a
  copy); the purge stays pending.
- `done`: every step finished and the check found nothing left.

All three carry the same `purge_id`; a purge with an intent and no `done` is pending, and
the next purge finishes it (`eul.stores.dvc.purge`). Lines written before intents existed
carry no `stage`: each is a purge that ended (clean or not).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

INTENT = "intent"
FAILED = "failed"
DONE = "done"


def read_lines(ledger: str | Path) -> list[dict[str, Any]]:
    """Every record of the ledger, oldest first; [] when there is none yet."""
    ledger = Path(ledger)
    if not ledger.is_file():
        return []
    return [json.loads(line) for line in ledger.read_text(encoding="utf-8").splitlines() if line]


def append(ledger: str | Path, record: dict[str, Any]) -> None:
    """Append one record and flush it to disk: an intent must survive a kill right after."""
    ledger = Path(ledger)
    ledger.parent.mkdir(parents=True, exist_ok=True)
    with ledger.open("a", encoding="utf-8") as f:
        f.write(json.dumps(record, sort_keys=True) + "\n")
        f.flush()
        os.fsync(f.fileno())


def pending_intent(ledger: str | Path) -> dict[str, Any] | None:
    """The latest intent of a purge that has no `done` record (killed or failed); None when
    every purge finished."""
    lines = read_lines(ledger)
    done = {r.get("purge_id") for r in lines if r.get("stage") == DONE}
    pending = [r for r in lines if r.get("stage") == INTENT and r["purge_id"] not in done]
    return pending[-1] if pending else None


def purged_record_ids(ledger: str | Path) -> set[str]:
    """Every record id the purge ledger says was (or is being) removed."""
    ids: set[str] = set()
    for record in read_lines(ledger):
        for request in record["requests"]:
            ids.update(request["record_ids"])
    return ids


def earlier_removals(ledger: str | Path) -> dict[str, dict[str, Any]]:
    """request id -> its entry in the latest finished purge that removed its rows, with
    that purge's data versions and time (`earlier`): a purge run again after the rows were
    already removed (one refused after it finished, e.g. by the pipeline's leak scan) finds
    nothing in the data, and takes the evidence of the removal from here."""
    found: dict[str, dict[str, Any]] = {}
    for record in read_lines(ledger):
        if record.get("stage") not in (None, DONE):
            continue
        earlier = {k: record.get(k) for k in ("purge_id", "purged_at", "old_md5", "new_md5")}
        for request in record["requests"]:
            if request.get("rows_removed"):
                found[request["request_id"]] = {
                    **request,
                    "earlier": request.get("earlier") or earlier,
                }
    return found
