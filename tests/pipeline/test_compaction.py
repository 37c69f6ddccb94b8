"""When a compaction is due for an erasure deadline, from a real deletion log."""

from __future__ import annotations

from datetime import timedelta

import pytest

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


def test_a_request_over_the_share_limit_gets_no_layer_and_makes_a_compaction_due(
    flow_project,
):
    import dataclasses
    import json

    from eul.pipeline.compaction import compaction_status, oversized_requests
    from eul.pipeline.context import load_context
    from eul.pipeline.intake import snapshot_log
    from eul.pipeline.outcome import RunSummary
    from eul.pipeline.production import current_production

    # given a limit per request between the smallest and the largest subject's share of the
    # training rows, and a request for each of those two subjects
    ctx = load_context(flow_project)
    train = [json.loads(x) for x in ctx.prepared("train.jsonl").read_text().splitlines()]
    counts: dict[str, int] = {}
    for row in train:
        counts[row["subject_id"]] = counts.get(row["subject_id"], 0) + 1
    big, small = max(counts, key=counts.get), min(counts, key=counts.get)
    assert counts[big] > counts[small]
    share = (counts[big] + counts[small]) / 2 / len(train)
    limits = ctx.params.compaction.model_copy(update={"max_request_share": share})
    ctx = dataclasses.replace(ctx, params=ctx.params.model_copy(update={"compaction": limits}))
    with ctx.ledger() as ledger:
        ledger.submit(subject_id=big, request_id="req-big")
        ledger.submit(subject_id=small, request_id="req-small")
    # when the batch takes its snapshot
    production = current_production(ctx)
    snapshot = snapshot_log(ctx, production)
    # then the large request is left out of the batch, with its share, and said so
    assert snapshot.pending == ["req-small"]
    assert snapshot.to_compaction == {"req-big": pytest.approx(counts[big] / len(train))}
    run = RunSummary("nightly-deletion-batch", "nightly")
    run.batch_started(production, snapshot, snapshot.pending, None)
    assert run.summary["to_compaction"] == ["req-big"]
    assert run.summary["to_compaction_note"].startswith("routed to compaction, no layer: req-big")
    assert "compaction.max_request_share" in run.summary["to_compaction_note"]
    # and it stays in the snapshot the partition reads (its rows leave the retained set)
    written = json.loads((flow_project / ctx.params.partition.snapshot).read_text())
    assert "req-big" in [r["request_id"] for r in written["requests"]]
    # and a compaction is due for it, naming the limit
    status = compaction_status(ctx, production)
    assert status.due and status.oversized == ["req-big"]
    assert any("max_request_share" in reason for reason in status.reasons)
    # while at the default limit (20%) nothing is routed
    with ctx.ledger() as ledger:
        states = ledger.list()
    ids = {r["record_id"] for r in train}
    assert oversized_requests(states, ids, 0.2) == {}
