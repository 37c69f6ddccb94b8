"""Anchors of the deletion log's head: written to a file and to DVC remotes (a real S3
server), read back, and checked against a real log, intact, cut short and rewritten."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from conftest import cut_last_entry

from eul.pipeline.anchors import (
    ANCHOR_FOLDER,
    Anchor,
    AnchorStores,
    append_anchor_file,
    check_anchors,
    head_anchor,
    read_anchor_file,
    read_remote_anchors,
    version_anchors,
    write_remote_anchor,
)
from eul.pipeline.integrity import deployment_findings
from eul.stores.log.chain import entry_hash
from eul.stores.log.schema import GENESIS_HASH
from eul.stores.log.store import Ledger

# A purge's evidence of one removed row, in the purge step's form.
EVIDENCE = {
    "data_dvc_md5_before": "cd" * 16 + ".dir",
    "data_dvc_md5_after": "ab" * 16 + ".dir",
    "rows_removed": 1,
    "row_hmac": ["hmac-sha256:" + "c" * 64],
    "remotes_swept": ["storage"],
    "purge_log": "data/purge-log.jsonl",
    "purged_at": "2026-12-01T00:00:00+00:00",
}


def _deploy(log: Ledger, request_id: str, version: int) -> None:
    """Unlearned, fused and deployed in a version cut at the log's head."""
    log.mark(request_id, "unlearned")
    log.mark(request_id, "fused", model_version=version)
    seq, digest = log.head()
    log.mark(request_id, "deployed", model_version=version, log_seq=seq, log_hash=digest)


@pytest.fixture
def db(tmp_path) -> Path:
    return tmp_path / "log.sqlite"


@pytest.fixture
def log(db, tmp_path):
    """Two requests deployed in version 1; the second also purged (the log's last entry)."""
    with Ledger(f"sqlite:///{db}", params_path=tmp_path / "params.yaml") as ledger:
        ledger.submit(subject_id="s1", request_id="req-a")
        ledger.submit(subject_id="s2", request_id="req-b")
        ledger.validate({"s1": ["r1"], "s2": ["r2"]})
        _deploy(ledger, "req-a", 1)
        _deploy(ledger, "req-b", 1)
        ledger.mark("req-b", "purged", evidence=EVIDENCE)
        yield ledger


def _rewrite_without(db: Path, request_id: str) -> None:
    """Rebuild the whole chain without one request's entries, every hash recomputed and the
    head and state rows to match: a consistent forgery that `verify()` accepts."""
    with sqlite3.connect(db) as con:
        rows = con.execute(
            "SELECT request_id, status, at, details FROM ledger_entries ORDER BY seq"
        ).fetchall()
        con.execute("DELETE FROM ledger_entries")
        con.execute("DELETE FROM ledger_requests WHERE request_id = ?", (request_id,))
        prev, seq = GENESIS_HASH, 0
        for rid, status, at, details in rows:
            if rid == request_id:
                continue
            seq += 1
            digest = entry_hash(seq, rid, status, at, json.loads(details), prev)
            con.execute(
                "INSERT INTO ledger_entries VALUES (?, ?, ?, ?, ?, ?, ?)",
                (seq, rid, status, at, details, prev, digest),
            )
            con.execute("UPDATE ledger_requests SET last_seq = ? WHERE request_id = ?", (seq, rid))
            con.execute(
                "UPDATE ledger_requests SET first_seq = ? WHERE request_id = ? AND ? = 'received'",
                (seq, rid, status),
            )
            prev = digest
        con.execute("UPDATE ledger_head SET seq = ?, hash = ?", (seq, prev))
    con.close()


def test_an_intact_log_agrees_with_every_anchor(log):
    # given anchors of the head at two points of the log's life
    before = head_anchor(log, "batch-1")
    log.submit(subject_id="s3", request_id="req-c")
    after = head_anchor(log, "batch-2")
    # then the log contradicts neither, and an empty log's anchor is no claim at all
    assert check_anchors(log, [before, after, Anchor(0, GENESIS_HASH)]) == []
    assert before.seq < after.seq and before.batch == "batch-1" and before.at


def test_cutting_the_last_purged_entry_after_an_anchor_is_found(log, db, tmp_path):
    # given a version anchor (cut before the purge) and the report's anchor after the purge
    deployed = log.get("req-b").history[-2]
    version = Anchor(deployed.seq, deployed.hash, source="version 1")
    report = head_anchor(log, "batch-1")
    report = Anchor(report.seq, report.hash, report.at, report.batch, "anchors file line 1")
    # when the last purged entry is deleted and the head and state row reset to match
    cut_last_entry(db, subject_id="s2")
    # then the log's own check passes and the request looks deployed only
    assert log.verify().ok
    assert log.get("req-b").state.status == "deployed"
    # but the anchor written after the purge shows the cut, and where the log is still good
    [finding] = check_anchors(log, [version, report])
    assert finding.kind == "anchor" and finding.seq == report.seq
    assert f"the log ends at entry {report.seq - 1}" in finding.message
    assert f"truncated or rewritten after seq {version.seq}" in finding.message
    assert finding.message.startswith("anchors file line 1 recorded entry")


def test_a_rewritten_chain_without_one_request_is_found(log, db):
    # given the head anchored, then the chain rebuilt without req-a and every hash redone
    anchor = head_anchor(log, "batch-1")
    first = log.entry_at(1)
    _rewrite_without(db, "req-a")
    assert log.verify().ok
    assert [s.request_id for s in log.list()] == ["req-b"]
    # then both the head's anchor and one of its first entry contradict the log
    early = Anchor(1, first.hash, source="version 1")
    findings = check_anchors(log, [early, Anchor(anchor.seq, anchor.hash, source="remote s3")])
    assert [f.source for f in findings] == ["version 1", "remote s3"]
    assert "the log's entry 1 has hash" in findings[0].message
    assert "truncated or rewritten after seq 0" in findings[1].message


def test_versions_tags_are_anchors_and_unreadable_ones_are_findings():
    digest = "d" * 64
    anchors, findings = version_anchors(
        {
            2: {"log_seq": "7", "log_hash": digest},
            3: {"eul.kind": "hand-made"},
            4: {"log_seq": "seven", "log_hash": digest},
        }
    )
    assert anchors == [Anchor(7, digest, source="version 2")]
    assert [f.source for f in findings] == ["version 4"]


def test_a_deployment_must_name_a_registered_version_that_covers_it(log):
    states, entries = log.list(), log.entries(("deployed",))
    # a registry whose version 1 covers both requests: nothing to find
    assert deployment_findings(states, entries, {1: ["req-a", "req-b"]}) == []
    # version 1 gone from the registry: both deployments are findings
    gone = deployment_findings(states, entries, {2: ["req-a", "req-b"]})
    assert [f.request_id for f in gone] == ["req-a", "req-b"]
    assert "deployed in version 1" in gone[0].message
    assert "which the registry does not hold" in gone[0].message
    # version 1 does not cover req-b
    [short] = deployment_findings(states, entries, {1: ["req-a"]})
    assert short.request_id == "req-b" and "does not cover it" in short.message


def test_the_anchors_file_is_appended_to_and_an_edited_line_is_a_finding(log, tmp_path):
    path = tmp_path / "state" / "log-anchors.jsonl"
    anchor = head_anchor(log, "batch-1")
    # the same head twice is written once; a new head is appended
    assert append_anchor_file(path, anchor) is True
    assert append_anchor_file(path, anchor) is False
    log.submit(subject_id="s3", request_id="req-c")
    assert append_anchor_file(path, head_anchor(log, "batch-2")) is True
    found, problems = read_anchor_file(path)
    assert [(a.seq, a.batch, a.source) for a in found] == [
        (anchor.seq, "batch-1", "anchors file line 1"),
        (anchor.seq + 1, "batch-2", "anchors file line 2"),
    ]
    assert problems == []
    # each line holds seq, hash, time and batch only
    assert set(json.loads(path.read_text().splitlines()[0])) == {"log_seq", "log_hash", "at",
                                                                  "batch"}  # fmt: skip
    # a line edited by hand is a finding
    path.write_text(path.read_text() + '{"log_seq": "x"}\n')
    _, problems = read_anchor_file(path)
    assert [p.message for p in problems] == [
        "log-anchors.jsonl line 3 is not a head record (log_seq is not a whole number >= 0)"
    ]


def test_anchors_go_to_a_real_s3_remote_and_survive_its_sweep(log, dvc_project, s3_server):
    from eul.stores.dvc import dvcstore

    # given a project whose DVC remote is on S3
    root = dvc_project
    dvcstore.add_s3_remote(root, "s3", f"s3://{s3_server.bucket}/anchors", s3_server.endpoint,
                           access_key_id=s3_server.key,
                           secret_access_key=s3_server.secret)  # fmt: skip
    anchor = head_anchor(log, "batch-1")
    # when the anchor is written to the file and the remote
    stores = AnchorStores(root / "state" / "log-anchors.jsonl", root, ("s3",))
    record = stores.write(anchor)
    assert record["written"] == {"anchors file": True, "remote s3": True}
    # then the server holds one small object named by seq, with seq, hash, time and batch
    [stored] = (s3_server.bucket_dir / "anchors" / ANCHOR_FOLDER).iterdir()
    assert stored.name == f"{anchor.seq:012d}-{anchor.hash[:16]}.json"
    assert json.loads(stored.read_text()) == anchor.record()
    # and written again, it is not overwritten
    assert write_remote_anchor(root, "s3", anchor) is False
    # and it reads back through S3, the file's and the remote's agreeing with the log
    found, problems = read_remote_anchors(root, "s3")
    assert found == [Anchor(anchor.seq, anchor.hash, anchor.at, "batch-1", "remote s3")]
    assert problems == []
    both, problems = stores.read()
    assert len(both) == 2 and problems == [] and check_anchors(log, both) == []
    # and the purge's sweep of the remote (`dvc gc --cloud`) leaves it there
    dvcstore.gc_workspace(root, "s3")
    assert stored.is_file()
    # and an object edited on the server is a finding
    stored.write_text(json.dumps({**anchor.record(), "log_seq": anchor.seq + 1}))
    _, problems = read_remote_anchors(root, "s3")
    assert [p.message for p in problems] == [
        f"remote s3: {ANCHOR_FOLDER}/{stored.name} does not match the head it records"
    ]
