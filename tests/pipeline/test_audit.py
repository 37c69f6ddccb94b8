"""The audit report from a real deletion log and a production version's covered ids."""

from __future__ import annotations

from datetime import timedelta

import pytest

from eul.pipeline.audit import build_report, format_markdown, table_rows
from eul.stores.log.schema import utcnow
from eul.stores.log.store import Ledger

EVIDENCE = {
    "data_dvc_md5_before": "cd" * 16 + ".dir",
    "data_dvc_md5_after": "ab" * 16 + ".dir",
    "rows_removed": 2,
    "row_hmac": ["hmac-sha256:" + "c" * 64, "hmac-sha256:" + "d" * 64],
    "remotes_swept": ["storage"],
    "purge_log": "data/purge-log.jsonl",
    "purged_at": "2026-12-01T00:00:00+00:00",
}


def _anchor(log: Ledger) -> dict:
    """The log's head as the entry a deployed version was cut at (its log_seq and log_hash)."""
    seq, digest = log.head()
    return {"log_seq": seq, "log_hash": digest}


@pytest.fixture
def ledger(tmp_path):
    """A log with one request in each situation the audit tells apart."""
    with Ledger(
        f"sqlite:///{tmp_path / 'log.sqlite'}", params_path=tmp_path / "params.yaml"
    ) as log:
        for rid, subject in (("honoured", "s1"), ("waiting", "s2"), ("late", "s3"),
                             ("bogus", "s9"), ("rolled-back", "s4")):  # fmt: skip
            log.submit(subject_id=subject, request_id=rid, deadline_days=30)
        log.validate({"s1": ["r1", "r2"], "s2": ["r3"], "s3": ["r4"], "s4": ["r5"]})
        for rid in ("honoured", "waiting", "rolled-back"):
            log.mark(rid, "unlearned")
            log.mark(rid, "fused", model_version=3)
        for rid in ("honoured", "rolled-back"):
            log.mark(rid, "deployed", model_version=3, **_anchor(log))
        log.mark("honoured", "purged", evidence=EVIDENCE)
        yield log


def _report(log: Ledger, covered: list[str], days_ahead: int = 0, erasure_days: int = 30) -> dict:
    return build_report(
        log.list(),
        log.entries(("deployed", "purged", "erased")),
        4,
        {"log_seq": "12", "gates_passed": "true", "production_since": "2026-11-29T00:00:00"},
        covered,
        {"ok": True, "entries": 20},
        now=utcnow() + timedelta(days=days_ahead),
        erasure_days=erasure_days,
    )


def test_honoured_requests_carry_their_version_and_purge_hashes(ledger):
    # given production version 4 that covers the purged request
    report = _report(ledger, ["honoured", "rolled-back"])
    # then the request is honoured, with the version it was deployed in and the purge evidence
    [row] = [r for r in report["honoured"] if r["request_id"] == "honoured"]
    assert row["status"] == "purged" and row["deployed_in"] == 3
    assert row["purge_evidence"] == EVIDENCE
    # and requests not yet deployed are pending, the rejected one is neither
    assert [p["request_id"] for p in report["pending"]] == ["waiting", "late"]
    assert report["counts"]["rejected"] == 1
    assert report["ok"] is True and report["overdue"] == []
    assert report["production"]["version"] == 4 and report["production"]["log_seq"] == "12"


def test_requests_past_their_deadline_make_the_audit_fail(ledger):
    # when the audit is taken 31 days after submission
    report = _report(ledger, ["honoured", "rolled-back"], days_ahead=31)
    # then every pending request is overdue and the audit is not OK
    assert report["overdue"] == ["waiting", "late"]
    assert report["ok"] is False
    assert "**Overdue: waiting, late**" in format_markdown(report)
    states = {r["request_id"]: r["state"] for r in table_rows(report)}
    assert states == {"honoured": "honoured", "rolled-back": "honoured", "waiting": "OVERDUE",
                      "late": "OVERDUE"}  # fmt: skip


def test_a_deployed_request_the_production_version_does_not_cover_is_a_problem(ledger):
    # given a production alias moved back to a version that predates one deployment
    report = _report(ledger, ["honoured"])
    # then that request is reported as not honoured, and the audit fails
    assert [r["request_id"] for r in report["not_honoured"]] == ["rolled-back"]
    assert report["ok"] is False
    assert "not honoured by production: rolled-back" in format_markdown(report)


def test_a_broken_chain_or_an_unknown_covered_id_fails_the_audit(ledger):
    broken = build_report(ledger.list(), [], 4, {}, ["honoured", "rolled-back"],
                          {"ok": False, "broken_seq": 5}, now=utcnow())  # fmt: skip
    assert broken["ok"] is False
    assert "hash chain BROKEN at entry 5" in format_markdown(broken)
    unknown = _report(ledger, ["honoured", "rolled-back", "ghost"])
    assert unknown["covered_but_not_in_log"] == ["ghost"] and unknown["ok"] is False


def test_an_anchor_the_log_contradicts_fails_the_audit(ledger):
    # given the check of the log against its anchors and the registry
    agreed = {"ok": True, "anchors": 3, "stores": {"versions": 2, "anchors file": 1},
              "findings": []}  # fmt: skip
    cut = {**agreed, "ok": False, "findings": [
        {"kind": "anchor", "message": "anchors file line 1 recorded entry 14 with hash "
         "0123456789ab, but the log ends at entry 13: the log was truncated or rewritten "
         "after seq 12", "seq": 14}]}  # fmt: skip
    # then an agreeing check leaves the audit OK and says what was checked
    ok = build_report(ledger.list(), [], 4, {}, ["honoured", "rolled-back"], {"ok": True},
                      now=utcnow(), integrity=agreed)  # fmt: skip
    assert ok["ok"] is True and ok["integrity"] == agreed
    assert "Anchors of the log's head: 3 checked (anchors file 1, versions 2); the log " \
        "agrees with each" in format_markdown(ok)  # fmt: skip
    # and a contradicted anchor fails it, with the finding in the report
    bad = build_report(ledger.list(), [], 4, {}, ["honoured", "rolled-back"], {"ok": True},
                       now=utcnow(), integrity=cut)  # fmt: skip
    assert bad["ok"] is False
    markdown = format_markdown(bad)
    assert "3 checked (anchors file 1, versions 2); 1 problem(s):**" in markdown
    assert "- anchors file line 1 recorded entry 14" in markdown


def test_no_production_version_yet(ledger):
    report = build_report(ledger.list(), [], None, {}, [], {"ok": True}, now=utcnow())
    assert report["honoured"] == []
    assert "No production version yet" in format_markdown(report)
    # the log's deployed requests are then not honoured by anything deployed
    assert {r["request_id"] for r in report["not_honoured"]} == {"honoured", "rolled-back"}


def test_both_levels_are_shown_with_their_dates(ledger):
    # given the purged request erased by compaction version 5
    ledger.mark("honoured", "erased", evidence={"compaction_version": 5, "versions_erased": [3]})
    report = _report(ledger, ["honoured", "rolled-back"], erasure_days=60)
    rows = {r["request_id"]: r for r in report["honoured"]}
    erased, suppressed = rows["honoured"], rows["rolled-back"]
    history = {e.status: e for e in ledger.get("honoured").history}
    # then the erased one shows when it was suppressed and erased, against both deadlines
    assert erased["level"] == "erased" and erased["erased_at"] == history["erased"].at
    assert erased["suppressed_at"] == history["deployed"].at
    assert erased["erase_evidence"]["compaction_version"] == 5
    state = ledger.get("honoured").state
    assert erased["deadline"] == state.deadline
    assert erased["erasure_deadline"] == state.erasure_deadline(60)
    # and the deployed one is suppressed only, with no erasure yet
    assert suppressed["level"] == "suppressed" and "erased_at" not in suppressed
    assert [p["level"] for p in report["pending"]] == ["pending", "pending"]
    assert report["ok"] is True and report["erasure_overdue"] == []
    table = format_markdown(report)
    assert "| erased at | erasure deadline |" in table
    assert f"| {history['erased'].at[:16]} |" in table


def test_a_request_suppressed_but_not_erased_by_its_erasure_deadline_fails_the_audit(ledger):
    # given every pending request deployed, so nothing is overdue for suppression
    for rid in ("waiting", "late"):
        if ledger.get(rid).state.status == "validated":
            ledger.mark(rid, "unlearned")
            ledger.mark(rid, "fused")
        ledger.mark(rid, "deployed", model_version=4, **_anchor(ledger))
    ledger.mark("honoured", "erased", evidence={"compaction_version": 5})
    covered = ["honoured", "rolled-back", "waiting", "late"]
    # when the audit is taken after the suppression deadline, before the erasure deadline
    before = _report(ledger, covered, days_ahead=31, erasure_days=40)
    assert before["overdue"] == [] and before["erasure_overdue"] == []
    assert before["ok"] is True
    # then after the erasure deadline, the suppressed-only requests are overdue for erasure
    after = _report(ledger, covered, days_ahead=41, erasure_days=40)
    assert after["overdue"] == []
    assert after["erasure_overdue"] == ["waiting", "late", "rolled-back"]
    assert after["ok"] is False
    assert "**Overdue for erasure: waiting, late, rolled-back**" in format_markdown(after)
    cells = {r["request_id"]: r["erasure_deadline"] for r in table_rows(after)}
    assert cells["waiting"].startswith("OVERDUE") and cells["honoured"] == ""
