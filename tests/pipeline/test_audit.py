"""The audit report from a real deletion log and a production version's covered ids."""

from __future__ import annotations

from datetime import timedelta

import pytest

from eul.pipeline.audit import build_report, format_markdown, table_rows
from eul.stores.log.schema import utcnow
from eul.stores.log.store import Ledger

EVIDENCE = {
    "data_dvc_md5_after": "ab" * 16 + ".dir",
    "rows_removed": 2,
    "row_hmac": ["hmac-sha256:" + "c" * 64],
}


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
            log.mark(rid, "deployed", model_version=3)
        log.mark("honoured", "purged", evidence=EVIDENCE)
        yield log


def _report(log: Ledger, covered: list[str], days_ahead: int = 0) -> dict:
    return build_report(
        log.list(),
        log.entries(("deployed", "purged")),
        4,
        {"log_seq": "12", "gates_passed": "true", "production_since": "2026-11-29T00:00:00"},
        covered,
        {"ok": True, "entries": 20},
        now=utcnow() + timedelta(days=days_ahead),
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


def test_no_production_version_yet(ledger):
    report = build_report(ledger.list(), [], None, {}, [], {"ok": True}, now=utcnow())
    assert report["honoured"] == []
    assert "No production version yet" in format_markdown(report)
    # the log's deployed requests are then not honoured by anything deployed
    assert {r["request_id"] for r in report["not_honoured"]} == {"honoured", "rolled-back"}
