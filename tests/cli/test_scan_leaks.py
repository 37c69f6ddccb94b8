"""`eul data scan-leaks`: the deletion log's purged requests, looked for in every store of a
project; exit 1 while a copy or a request's file is left, 0 once they are gone."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import pytest
from sqlalchemy import update

from eul.cli.main import main
from eul.pipeline.files import layer_key
from eul.runtime.evidence import evidence_key, keyed, row_sha256
from eul.stores.log.chain import Chain
from eul.stores.log.schema import iso, requests_table, utcnow
from eul.stores.log.store import Ledger

OLD = {"record_id": "r1", "subject_id": "s1", "text": "an old purge kept plain hashes of me"}
NEW = {"record_id": "r2", "subject_id": "s2", "text": "a newer purge keeps keyed hashes of me"}
KEPT = {"record_id": "r3", "subject_id": "s3", "text": "a kept row stays where it is"}


def _purged(ledger: Ledger, subject: str, record: str, evidence: dict) -> str:
    rid = ledger.submit(subject_id=subject).request_id
    ledger.validate({subject: [record]})
    ledger.mark(rid, "unlearned", layer=f"layers/{rid}")
    ledger.mark(rid, "fused", layer="layers/_fused")
    seq, digest = ledger.head()  # the log entry the deployed version was cut at
    ledger.mark(rid, "deployed", model_version="1", log_seq=seq, log_hash=digest)
    if "row_hmac" not in evidence:  # as an older version wrote it: through the chain
        with ledger.db.write() as conn:
            chain = Chain(conn)
            entry = chain.append(rid, "purged", iso(utcnow()), {"evidence": evidence})
            chain.close()
            conn.execute(
                update(requests_table)
                .where(requests_table.c.request_id == rid)
                .values(status="purged", last_seq=entry.seq, updated_at=entry.at)
            )
        return rid
    ledger.mark(rid, "purged", evidence={
        "rows_removed": len(evidence["row_hmac"]), "data_dvc_md5_before": "a" * 32,
        "data_dvc_md5_after": "b" * 32, "remotes_swept": [], "purge_log": "data/purge-log.jsonl",
        "purged_at": "2026-12-01T00:00:00+00:00", **evidence,
    })  # fmt: skip
    return rid


@pytest.fixture
def project(tmp_path, monkeypatch) -> tuple[Path, list[str]]:
    """A project whose log holds two purged requests: one with the older `row_sha256`
    evidence, one with `row_hmac`; their rows are left in data/prepared and state/."""
    root = tmp_path / "project"
    (root / "state").mkdir(parents=True)
    for name in ("prefect", "datasets", "tmp"):
        (tmp_path / name).mkdir()
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "prefect"))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "datasets"))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    key = evidence_key(root)
    old_line, new_line = json.dumps(OLD), json.dumps(NEW)
    with Ledger(f"sqlite:///{root / 'state/deletion-log.sqlite'}") as ledger:
        ids = [
            _purged(ledger, "s1", "r1", {"row_sha256": [row_sha256(old_line)]}),
            _purged(ledger, "s2", "r2", {"row_hmac": [keyed(key, row_sha256(new_line))]}),
        ]
    prepared = root / "data/prepared/train.jsonl"
    prepared.parent.mkdir(parents=True)
    prepared.write_text(f"{json.dumps(KEPT)}\n{old_line}\n")
    (root / "state/pipeline/layers" / layer_key(ids[0])).mkdir(parents=True)
    (root / "state/pipeline/layers" / layer_key(ids[0]) / "layer.json").write_text("{}")
    (root / "state/copy.jsonl").write_text(new_line + "\n")
    monkeypatch.chdir(tmp_path)
    return root, ids


def test_left_copies_fail_the_scan_and_their_removal_passes_it(project, capsys):
    root, ids = project
    # when the project still holds both rows and one request's layer
    code = main(["data", "scan-leaks", "--project", str(root)])
    out = capsys.readouterr().out
    # then the scan names where, never what, and exits 1
    assert code == 1
    assert "data: keyed row: data/prepared/train.jsonl" in out
    assert "state: keyed row: state/copy.jsonl" in out
    assert f"workdir: request file: state/pipeline/layers/{layer_key(ids[0])}" in out
    assert "NOT CLEAN: 3 hits" in out
    for row in (OLD, NEW):
        assert row["text"] not in out
    # when they are removed
    (root / "data/prepared/train.jsonl").write_text(json.dumps(KEPT) + "\n")
    (root / "state/copy.jsonl").unlink()
    shutil.rmtree(root / "state/pipeline/layers")
    code = main(["data", "scan-leaks", "--project", str(root), "--json"])
    report = json.loads(capsys.readouterr().out)
    # then it is clean, and says what it looked for
    assert code == 0
    assert report["clean"] and report["hits"] == 0
    assert sorted(report["request_ids"]) == sorted(ids)
    assert report["keyed_rows"] == 2
    data = next(s for s in report["stores"] if s["store"] == "data")
    assert data["files_scanned"] == 1


def test_json_report_lists_the_hits(project, capsys):
    root, _ = project
    code = main(["data", "scan-leaks", "--project", str(root), "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 1
    state = next(s for s in report["stores"] if s["store"] == "state")
    assert state["keyed_hits"] == ["state/copy.jsonl"]
    assert report["hits"] == 3


def test_a_missing_project_is_bad_input(tmp_path, capsys):
    code = main(["data", "scan-leaks", "--project", str(tmp_path / "nowhere")])
    assert code == 2
    assert "--project" in capsys.readouterr().err
