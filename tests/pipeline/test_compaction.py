"""When a compaction is due for an erasure deadline, from a real deletion log."""

from __future__ import annotations

from datetime import timedelta

from eul.pipeline.compaction import erasure_due
from eul.stores.log.schema import utcnow
from eul.stores.log.store import Ledger


def _deployed(log: Ledger, rid: str) -> None:
    log.mark(rid, "unlearned")
    log.mark(rid, "fused")
    seq, digest = log.head()  # the log entry the deployed version was cut at
    log.mark(rid, "deployed", model_version=1, log_seq=seq, log_hash=digest)


def test_a_suppressed_request_near_its_erasure_deadline_makes_a_compaction_due(tmp_path):
    # given a deployed request, one purged that production's base was trained without,
    # one in the production stack although trained without, and one still pending
    with Ledger(f"sqlite:///{tmp_path / 'log.sqlite'}") as log:
        for rid, subject in (("shown", "s1"), ("done", "s2"), ("stacked", "s3"), ("new", "s4")):
            log.submit(subject_id=subject, request_id=rid)
        log.validate({"s1": ["r1"], "s2": ["r2"], "s3": ["r3"], "s4": ["r4"]})
        for rid in ("shown", "done", "stacked"):
            _deployed(log, rid)
        evidence = {"rows_removed": 1, "row_hmac": ["hmac-sha256:" + "a" * 64],
                    "data_dvc_md5_before": "a" * 32, "data_dvc_md5_after": "b" * 32,
                    "remotes_swept": [], "purge_log": "data/purge-log.jsonl",
                    "purged_at": "2026-12-01T00:00:00+00:00"}  # fmt: skip
        log.mark("done", "purged", evidence=evidence)
        states = log.list()
    without, stacked = {"done", "stacked"}, {"stacked"}
    now = utcnow()
    # then nothing is due while the erasure deadline (30 days) is further than the lead
    assert erasure_due(states, without, stacked, 30, 5, now) == []
    # and 26 days on, the suppressed requests only a new compaction can erase are due
    later = now + timedelta(days=26)
    assert erasure_due(states, without, stacked, 30, 5, later) == ["shown", "stacked"]
    # and with a longer lead they are due now already, a pending request never
    assert erasure_due(states, without, stacked, 30, 31, now) == ["shown", "stacked"]
    # and an overdue one is due too
    assert erasure_due(states, set(), set(), 30, 0, now + timedelta(days=40)) == [
        "shown",
        "done",
        "stacked",
    ]
