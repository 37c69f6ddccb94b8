"""Marks need real evidence: `deployed` the log entry its version was cut at (present, with
that hash, after the request's validation), `purged` the purge step's evidence with one keyed
row per matched record. And request ids equal but for case are refused."""

from __future__ import annotations

from pathlib import Path

import pytest
from log_evidence import anchor, purge_evidence

from eul.stores.log.schema import GENESIS_HASH, LedgerError
from eul.stores.log.store import Ledger

MATCHED = ["rec-alpha-1", "rec-alpha-2", "rec-alpha-3"]


@pytest.fixture
def ledger(tmp_path: Path):
    with Ledger(
        f"sqlite:///{tmp_path / 'log.sqlite'}",
        params_path=tmp_path / "absent.yaml",
        evidence_key=b"k" * 32,
    ) as opened:
        yield opened


def _fused(ledger: Ledger, request_id: str, subject: str) -> None:
    ledger.submit(subject_id=subject, request_id=request_id)
    ledger.validate({"Alice.Smith": MATCHED, "Bob.Jones": ["rec-bob-1"]})
    ledger.mark(request_id, "unlearned")
    ledger.mark(request_id, "fused", model_version=2)


def _refused(ledger: Ledger, match: str, request_ids: list[str], status: str, **details) -> str:
    head = ledger.head()
    with pytest.raises(LedgerError, match=match) as err:
        ledger.mark_many(request_ids, status, **details)
    assert ledger.head() == head  # nothing written
    message = str(err.value)
    assert "\n" not in message
    for secret in ("Alice.Smith", "Bob.Jones", *MATCHED, "rec-bob-1"):
        assert secret not in message
    return message


# -- deployed -----------------------------------------------------------------------------


def test_deployed_is_anchored_at_an_entry_that_exists_with_its_hash(ledger) -> None:
    _fused(ledger, "req-a", "Alice.Smith")
    seq, digest = ledger.head()
    # an anchor past the end of the log
    _refused(ledger, "log entry it was cut at \\(99\\) is not in the log", ["req-a"],
             "deployed", model_version=2, log_seq=99, log_hash=digest)  # fmt: skip
    # an anchor whose hash is not the entry's
    _refused(ledger, f"log entry {seq} does not have the hash", ["req-a"], "deployed",
             model_version=2, log_seq=seq, log_hash=GENESIS_HASH)  # fmt: skip
    # the right one
    ledger.mark("req-a", "deployed", model_version=2, log_seq=seq, log_hash=digest)
    assert ledger.get("req-a").state.status == "deployed"
    assert ledger.verify().ok


def test_a_request_validated_after_the_versions_anchor_is_not_covered(ledger) -> None:
    # given a version cut when only req-a was validated
    ledger.submit(subject_id="Alice.Smith", request_id="req-a")
    ledger.validate({"Alice.Smith": MATCHED})
    cut = anchor(ledger)
    # and req-b validated afterwards, both fused
    _fused(ledger, "req-b", "Bob.Jones")
    ledger.mark("req-a", "unlearned")
    ledger.mark("req-a", "fused", model_version=2)
    # then that version cannot be deployed for req-b, nor for both at once
    message = _refused(ledger, "cannot mark req-b deployed in model version 2", ["req-a", "req-b"],
                       "deployed", model_version=2, **cut)  # fmt: skip
    assert "validated at entry" in message and f"({cut['log_seq']})" in message
    assert ledger.get("req-a").state.status == "fused"
    # while req-a, pending when the version was cut, is covered
    ledger.mark("req-a", "deployed", model_version=2, **cut)
    assert ledger.verify().ok


@pytest.mark.parametrize(
    "details",
    [
        {"model_version": 2},
        {"model_version": 2, "log_seq": "3", "log_hash": GENESIS_HASH},
        {"model_version": 2, "log_seq": 0, "log_hash": GENESIS_HASH},
        {"model_version": 2, "log_seq": True, "log_hash": GENESIS_HASH},
        {"model_version": 2, "log_seq": 3, "log_hash": "abc"},
        {"model_version": 2, "log_seq": 3, "log_hash": "G" * 64},
    ],
)
def test_deployed_without_a_well_formed_anchor_is_refused(ledger, details) -> None:
    _fused(ledger, "req-a", "Alice.Smith")
    _refused(ledger, "deployed needs log_seq and log_hash", ["req-a"], "deployed", **details)


# -- purged -------------------------------------------------------------------------------


def _deployed(ledger: Ledger) -> None:
    _fused(ledger, "req-a", "Alice.Smith")
    ledger.mark("req-a", "deployed", model_version=2, **anchor(ledger))


def _without(name: str) -> dict:
    evidence = purge_evidence(3)
    del evidence[name]
    return evidence


@pytest.mark.parametrize(
    "evidence, message",
    [
        ({"anything": "x"}, "purged evidence lacks rows_removed, row_hmac"),
        ({}, "purged evidence lacks"),
        ("rows gone", "purged needs evidence"),
        (_without("data_dvc_md5_after"), "lacks data_dvc_md5_after"),
        (_without("purged_at"), "lacks purged_at"),
        ({**purge_evidence(3), "rows_removed": 2}, "rows_removed must be the number of row_hmac"),
        ({**purge_evidence(3), "rows_removed": "3"}, "rows_removed must be the number"),
        ({**purge_evidence(1), "rows_removed": True}, "rows_removed must be the number"),
        ({**purge_evidence(3), "row_hmac": "hmac-sha256:" + "a" * 64}, "row_hmac must be a list"),
        ({**purge_evidence(1), "row_hmac": ["a" * 64]}, "keyed row digests"),
        ({**purge_evidence(1), "row_hmac": ["hmac-sha256:" + "a" * 63]}, "keyed row digests"),
        ({**purge_evidence(1), "row_hmac": ["rec-alpha-1"]}, "keyed row digests"),
        ({**purge_evidence(3), "data_dvc_md5_before": ""}, "data_dvc_md5_before must be"),
        ({**purge_evidence(3), "remotes_swept": "storage"}, "remotes_swept must be a list"),
        (purge_evidence(2), "removes 2 row\\(s\\) but it matched 3 record\\(s\\)"),
        (purge_evidence(0), "removes 0 row\\(s\\) but it matched 3"),
        ({**purge_evidence(1), "rows_already_gone": 1}, "removes 1 row.* 1 already gone"),
        ({**purge_evidence(3), "rows_already_gone": -1}, "rows_already_gone must be a count"),
    ],
)
def test_purged_without_the_purge_steps_evidence_is_refused(ledger, evidence, message) -> None:
    _deployed(ledger)
    _refused(ledger, message, ["req-a"], "purged", evidence=evidence)
    assert ledger.get("req-a").state.status == "deployed"


def test_purged_with_one_keyed_row_per_matched_record_is_recorded(ledger) -> None:
    _deployed(ledger)
    evidence = {**purge_evidence(3), "derivatives": {"layer_files": 2}, "leak_scan": {"hits": 0}}
    ledger.mark("req-a", "purged", evidence=evidence)
    state = ledger.get("req-a").state
    assert state.status == "purged" and state.note == "3 rows removed"
    assert ledger.get("req-a").history[-1].details == {"evidence": evidence}
    assert ledger.verify().ok


@pytest.mark.parametrize(
    "evidence",
    [
        purge_evidence(4),  # a row of the subject added after validation went too
        {**purge_evidence(2), "rows_already_gone": 1},  # one shared row removed earlier
        {**purge_evidence(0), "rows_already_gone": 3},  # all of them, by an earlier purge
    ],
)
def test_purged_accounting_for_every_matched_record_is_recorded(ledger, evidence) -> None:
    _deployed(ledger)
    ledger.mark("req-a", "purged", evidence=evidence)
    assert ledger.get("req-a").state.status == "purged" and ledger.verify().ok


# -- ids equal but for case -----------------------------------------------------------------


def test_a_request_id_equal_to_another_but_for_case_is_refused(ledger) -> None:
    first = ledger.submit(subject_id="Alice.Smith", request_id="Req-A")
    head = ledger.head()
    # the same id again is a retry: nothing changes
    assert ledger.submit(subject_id="Alice.Smith", request_id="Req-A") == first
    # another case of it is refused, naming both
    with pytest.raises(LedgerError, match="'req-a' differs from 'Req-A' only in case"):
        ledger.submit(subject_id="Bob.Jones", request_id="req-a")
    with pytest.raises(LedgerError, match="'REQ-A' differs from 'Req-A'"):
        ledger.submit_many([{"record_ids": ["r1"], "request_id": "ok-1"},
                            {"record_ids": ["r1"], "request_id": "REQ-A"}])  # fmt: skip
    assert ledger.head() == head  # the whole batch was refused
    assert [s.request_id for s in ledger.list()] == ["Req-A"]


def test_ids_equal_but_for_case_in_one_batch_are_refused_across_chunks(ledger) -> None:
    specs = [{"record_ids": ["r1"], "request_id": f"t-{i:04d}"} for i in range(1200)]
    specs.append({"record_ids": ["r1"], "request_id": "t-0007"})  # a retry: fine
    results = ledger.submit_many(specs)
    assert sum(r.created for r in results) == 1200
    with pytest.raises(LedgerError, match="'Batch-X' differs from 'batch-x'"):
        ledger.submit_many(
            [{"record_ids": ["r1"], "request_id": "batch-x"}]
            + [{"record_ids": ["r1"], "request_id": f"u-{i:04d}"} for i in range(600)]
            + [{"record_ids": ["r1"], "request_id": "Batch-X"}]
        )
    with pytest.raises(LedgerError, match="'T-0999' differs from 't-0999'"):
        ledger.submit_many([{"record_ids": ["r1"], "request_id": f"T-{i:04d}"} for i in (999,)])
    assert len(ledger.list()) == 1200


def test_a_subject_id_that_reads_as_a_keyed_digest_is_refused(ledger) -> None:
    with pytest.raises(LedgerError, match="may not start with 'hmac-sha256:'"):
        ledger.submit(subject_id="hmac-sha256:" + "a" * 64)
