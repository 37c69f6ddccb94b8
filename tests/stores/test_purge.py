"""Purge on a project that tracks only data.dvc: rows leave the data, the cache and the
remote; the check catches a copy left behind; bad input stops it before anything changes.
(The full pipeline, stages and S3 included, is in test_pipeline.py.)"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from eul.cli.main import main
from eul.data.records import save_records
from eul.data.synthetic import SyntheticConfig, generate
from eul.params import Params
from eul.runtime.evidence import evidence_key, keyed, keyed_row, row_sha256
from eul.stores.dvc import dvcstore
from eul.stores.dvc.purge import PurgeError, PurgeRequest, datasets_cache_root, purge
from eul.stores.dvc.purge_ledger import pending_intent, purged_record_ids

PARAMS = Params()


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _files_with(tops: list[Path], needle: bytes) -> list[Path]:
    return [p for top in tops for p in top.rglob("*") if p.is_file() and needle in p.read_bytes()]


@pytest.fixture(scope="module")
def _pushed_project(tmp_path_factory, module_tool_env, new_dvc_project) -> Path:
    root = new_dvc_project(tmp_path_factory.mktemp("purge") / "project")
    _, records = generate(SyntheticConfig(n_subjects=15, seed=4))
    save_records(records, root / "data" / "raw" / "records.jsonl")
    dvcstore.add(root, "data/raw", "data.dvc")
    dvcstore.push(root)
    return root


@pytest.fixture
def project(tmp_path, tool_env, _pushed_project) -> Path:
    """data/raw tracked by data.dvc and pushed to the local remote (a fresh copy per test)."""
    root = tmp_path / "project"
    shutil.copytree(_pushed_project, root, symlinks=True)
    return root


def test_purge_removes_rows_from_data_cache_and_remote(project):
    # given two requests: one by subject, one by record ids
    root = project
    lines = (root / "data/raw/records.jsonl").read_text().splitlines()
    rows = _rows(root / "data/raw/records.jsonl")
    subject = rows[0]["subject_id"]
    by_subject = [r for r in rows if r["subject_id"] == subject]
    by_record = [r for r in rows if r["subject_id"] != subject][:2]
    kept = [r for r in rows if r not in by_subject and r not in by_record]
    old_md5 = dvcstore.tracked_md5(root / "data.dvc")
    requests = [
        PurgeRequest("req-1", subject_id=subject),
        PurgeRequest("req-2", record_ids=tuple(r["record_id"] for r in by_record) + ("r999",)),
    ]
    # when they are purged
    evidence = purge(requests, root, PARAMS)
    # then the raw data keeps every other row, in order, and data.dvc has a new version
    assert _rows(root / "data/raw/records.jsonl") == kept
    assert evidence["new_md5"] == dvcstore.tracked_md5(root / "data.dvc") != old_md5
    assert evidence["rows_removed"] == len(by_subject) + 2
    assert evidence["requests"][1]["missing_record_ids"] == ["r999"]
    # and no stored byte holds a purged row, while kept rows are still in cache and remote
    stores = [root / ".dvc", root / ".dvc-remote", root / "data"]
    for row in by_subject + by_record:
        assert _files_with(stores, row["text"].encode()) == []
    for store in (root / ".dvc/cache", root / ".dvc-remote"):
        assert _files_with([store], kept[0]["text"].encode())
    assert not (root / ".dvc-remote" / dvcstore.object_relpath(old_md5)).exists()
    # and the ledger lists the purged record ids
    assert purged_record_ids(root / PARAMS.purge.ledger) == {
        r["record_id"] for r in by_subject + by_record
    }
    # and keeps the subject and each removed row only as keyed digests, under the project's key
    key = evidence_key(root)
    intent, entry = _rows(root / PARAMS.purge.ledger)
    removed = [ln for ln in lines if json.loads(ln) in by_subject]
    # written first as an intent with the same evidence, then completed
    assert (intent["stage"], entry["stage"]) == ("intent", "done")
    assert intent["purge_id"] == entry["purge_id"] and intent["requests"] == entry["requests"]
    assert entry["requests"][0]["subject_hmac"] == keyed(key, subject)
    assert entry["requests"][0]["row_hmac"] == [keyed_row(key, ln) for ln in removed]
    assert entry["requests"][1]["subject_hmac"] is None
    text = (root / PARAMS.purge.ledger).read_text()
    assert f'"{subject}"' not in text and "row_sha256" not in text
    assert not any(row_sha256(ln) in text for ln in removed)


def test_the_check_catches_a_copy_that_the_purge_does_not_rebuild(project):
    # given a second tracked copy of the raw data that no rebuild stage covers
    root = project
    shutil.copytree(root / "data/raw", root / "backup")
    dvcstore.add(root, "backup")
    record_id = _rows(root / "data/raw/records.jsonl")[0]["record_id"]
    # when a row is purged, then the purge refuses to report success
    with pytest.raises(PurgeError, match="still holds"):
        purge([PurgeRequest("req-1", record_ids=(record_id,))], root, PARAMS)
    # and the ledger records the failed check
    last = json.loads((root / PARAMS.purge.ledger).read_text().splitlines()[-1])
    assert last["clean"] is False


def test_an_interrupted_purge_keeps_its_record_ids_and_a_rerun_finishes_it(project):
    # given a second remote that cannot be written (its folder is a file)
    root = project
    (root / "not-a-folder").write_text("x")
    dvcstore.add_local_remote(root, "broken", "not-a-folder")
    row = _rows(root / "data/raw/records.jsonl")[2]
    request = PurgeRequest("req-1", record_ids=(row["record_id"],))
    # when the purge fails on that remote
    with pytest.raises(PurgeError, match="broken"):
        purge([request], root, PARAMS)
    # then the ledger already holds the removed record id, marked not clean, still pending
    entry = json.loads((root / PARAMS.purge.ledger).read_text().splitlines()[-1])
    assert entry["clean"] is False and entry["stage"] == "failed"
    assert purged_record_ids(root / PARAMS.purge.ledger) == {row["record_id"]}
    assert pending_intent(root / PARAMS.purge.ledger)["purge_id"] == entry["purge_id"]
    # when the purge is run again on the working remote, then it finishes that purge clean,
    # removing nothing more, with the first attempt's evidence and data versions
    evidence = purge([request], root, PARAMS, remotes=["local"])
    assert evidence["clean"] is True and evidence["purge_id"] == entry["purge_id"]
    assert evidence["requests"] == entry["requests"] and evidence["rows_removed"] == 1
    assert evidence["old_md5"] == entry["old_md5"] != evidence["new_md5"] == entry["new_md5"]
    assert pending_intent(root / PARAMS.purge.ledger) is None
    assert _files_with([root / ".dvc", root / ".dvc-remote"], row["text"].encode()) == []


class Killed(BaseException):
    """A kill at a purge's drill point: nothing after it runs, no record is written."""


def _kill_at(point: str):
    def checkpoint(name: str) -> None:
        if name == point:
            raise Killed(name)

    return checkpoint


# `make test` runs the point between the rewrite and `dvc add`; `make reliability` all four.
@pytest.mark.parametrize(
    "point",
    [p if p == "after-raw-rewrite" else pytest.param(p, marks=pytest.mark.reliability)
     for p in ("after-purge-intent", "after-raw-rewrite", "after-dvc-add",
               "before-purge-record")],
)  # fmt: skip
def test_a_purge_killed_at_each_point_is_finished_by_the_next_with_its_evidence(project, point):
    # given a subject's rows to purge
    root = project
    raw = root / "data/raw/records.jsonl"
    lines = raw.read_text().splitlines()
    subject = _rows(raw)[0]["subject_id"]
    removed = [ln for ln in lines if json.loads(ln)["subject_id"] == subject]
    old_md5 = dvcstore.tracked_md5(root / "data.dvc")
    request = PurgeRequest("req-1", subject_id=subject)
    # when the purge is killed at the point
    with pytest.raises(Killed):
        purge([request], root, PARAMS, checkpoint=_kill_at(point))
    # then its intent is in the ledger already: the keyed rows and their count
    ledger = root / PARAMS.purge.ledger
    intent = pending_intent(ledger)
    expected = [keyed_row(evidence_key(root), ln) for ln in removed]
    assert intent["requests"][0]["row_hmac"] == expected
    assert intent["rows_removed"] == len(removed) and intent["old_md5"] == old_md5
    # and a workspace left between the rewrite and `dvc add` is never answered "dvc pull"
    if point == "after-raw-rewrite":
        assert dvcstore.file_md5(raw) == intent["kept_md5"]
        assert dvcstore.tracked_md5(root / "data.dvc") == old_md5
    # when the purge runs again
    evidence = purge([request], root, PARAMS)
    # then it finished the same purge, with the first attempt's evidence
    assert evidence["clean"] is True and evidence["purge_id"] == intent["purge_id"]
    assert evidence["requests"] == intent["requests"]
    assert evidence["rows_removed"] == len(removed) and evidence["old_md5"] == old_md5
    new_md5 = dvcstore.tracked_md5(root / "data.dvc")
    assert evidence["new_md5"] == new_md5 == dvcstore.dir_md5(root / "data/raw") != old_md5
    assert pending_intent(ledger) is None
    # and no stored byte holds a purged row: data, cache and remote
    for line in removed:
        text = json.loads(line)["text"].encode()
        assert _files_with([root / ".dvc", root / ".dvc-remote", root / "data"], text) == []
    assert not (root / ".dvc-remote" / dvcstore.object_relpath(old_md5)).exists()


def test_data_changed_while_a_purge_is_pending_is_never_answered_dvc_pull(project):
    # given a purge killed after rewriting the raw data, then another edit of that file
    root = project
    raw = root / "data/raw/records.jsonl"
    row = _rows(raw)[1]
    request = PurgeRequest("req-1", record_ids=(row["record_id"],))
    with pytest.raises(Killed):
        purge([request], root, PARAMS, checkpoint=_kill_at("after-raw-rewrite"))
    raw.write_text(raw.read_text() + '{"record_id": "r-new", "subject_id": "s-new"}\n')
    # when the purge runs again, then it refuses, and its advice warns against `dvc pull`
    with pytest.raises(PurgeError) as err:
        purge([request], root, PARAMS)
    message = str(err.value)
    assert "pending purge" in message and "do not `dvc pull`" in message
    assert "run `dvc pull`" not in message
    # and once the edit is undone, the purge finishes
    raw.write_text("".join(ln + "\n" for ln in raw.read_text().splitlines()[:-1]))
    assert purge([request], root, PARAMS)["clean"] is True


def test_a_purge_run_again_after_it_finished_keeps_the_removal_evidence(project):
    # given a purge that finished (its caller stopped before recording it elsewhere)
    root = project
    subject = _rows(root / "data/raw/records.jsonl")[0]["subject_id"]
    request = PurgeRequest("req-1", subject_id=subject)
    first = purge([request], root, PARAMS)
    # when it runs again, it removes nothing, and the request keeps the first one's evidence
    again = purge([request], root, PARAMS)
    assert again["rows_removed"] == 0 and again["clean"] is True
    (entry,) = again["requests"]
    assert entry["row_hmac"] == first["requests"][0]["row_hmac"] and entry["rows_removed"]
    assert entry["earlier"]["purge_id"] == first["purge_id"]
    assert (entry["earlier"]["old_md5"], entry["earlier"]["new_md5"]) == (
        first["old_md5"], first["new_md5"])  # fmt: skip


def test_purge_refuses_data_that_differs_from_data_dvc(project):
    # given raw data edited after the last `dvc add`
    root = project
    path = root / "data/raw/records.jsonl"
    path.write_text(path.read_text() + '{"record_id": "r-new", "subject_id": "s-new"}\n')
    before = (root / "data.dvc").read_text()
    # then the purge stops before changing anything
    with pytest.raises(PurgeError, match="differs from data.dvc"):
        purge([PurgeRequest("req-1", record_ids=("r-new",))], root, PARAMS)
    assert (root / "data.dvc").read_text() == before
    assert "r-new" in path.read_text()


def test_purge_refuses_an_unknown_remote(project):
    with pytest.raises(PurgeError, match="no remote named nowhere"):
        purge([PurgeRequest("req-1", record_ids=("r000000",))], project, PARAMS, ["nowhere"])


def test_cli_purges_by_record_and_reports_hashes_not_text(project, monkeypatch, capsys):
    # given a record to purge, named on the command line
    root = project
    row = _rows(root / "data/raw/records.jsonl")[5]
    monkeypatch.chdir(root)
    # when the CLI purges it
    code = main(["data", "purge", "--request", f"req-9={row['record_id']}"])
    out = capsys.readouterr().out
    # then it reports the versions and counts but never the row
    assert code == 0
    assert "req-9: 1 rows" in out and "data.dvc" in out
    assert row["text"] not in out
    # and a malformed request is refused in one line, exit 2
    code = main(["data", "purge", "--request", "req-9"])
    assert code == 2
    assert "REQUEST_ID=RECORD_ID" in capsys.readouterr().err


def test_purge_deletes_the_copies_an_older_version_left_in_the_datasets_cache(
    project, tmp_path, monkeypatch
):
    # given a datasets cache holding what older versions left there: the library's own Arrow
    # copy of the raw file (purged row included) and its copy of some other file
    import datasets

    cache = tmp_path / "hf-datasets"
    monkeypatch.setenv("HF_DATASETS_CACHE", str(cache))
    assert datasets_cache_root() == cache
    root = project
    raw = root / "data/raw/records.jsonl"
    rows = _rows(raw)
    subject = rows[0]["subject_id"]
    purged_text = next(r["text"] for r in rows if r["subject_id"] == subject)
    other_file = tmp_path / "other.csv"
    other_file.write_text("record_id,text\nx1,an unrelated cached table\n")
    for builder, path in (("json", raw), ("csv", other_file)):
        datasets.load_dataset(builder, data_files=str(path), split="train", cache_dir=str(cache))
    assert _files_with([cache / "json"], purged_text.encode())
    other = [p for p in (cache / "csv").iterdir() if p.is_dir()]
    # when the subject is purged
    evidence = purge([PurgeRequest("req-1", subject_id=subject)], root, PARAMS)
    # then the copy holding the purged row is gone, the other cached copy stays
    assert [p for p in (cache / "json").iterdir() if p.is_dir()] == []
    assert other and all(p.is_dir() for p in other)
    assert evidence["datasets_cache"] == {"folders_scanned": 2, "folders_removed": 1}
    assert _files_with([cache], purged_text.encode()) == []


KILLED_PURGE = """
import os, signal, sys
from eul.params import Params
from eul.stores.dvc import dvcstore
from eul.stores.dvc import purge as purging

def killed(*args, **kwargs):  # the rows are rewritten; the process dies as the sweep starts
    os.kill(os.getpid(), signal.SIGKILL)

purging._sweep = killed
purging.purge([purging.PurgeRequest("req-1", record_ids=(sys.argv[2],))], sys.argv[1], Params())
"""


def test_a_purge_killed_after_removing_rows_leaves_their_evidence_for_the_rerun(project):
    import os
    import signal
    import subprocess
    import sys

    from eul.stores.dvc.purge_ledger import pending_intent

    # given a purge SIGKILLed after it rewrote the data (no `finally` of it runs)
    root = project
    row = _rows(root / "data/raw/records.jsonl")[3]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    killed = subprocess.run([sys.executable, "-c", KILLED_PURGE, str(root), row["record_id"]],
                            env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert row["record_id"] not in {r["record_id"] for r in _rows(root / "data/raw/records.jsonl")}
    # then the ledger holds what it removes, keyed, as an intent written before the rows went
    (entry,) = _rows(root / PARAMS.purge.ledger)
    assert entry["stage"] == "intent" and pending_intent(root / PARAMS.purge.ledger) == entry
    (removal,) = entry["requests"]
    assert removal["rows_removed"] == 1 and removal["record_ids"] == [row["record_id"]]
    assert len(removal["row_hmac"]) == 1
    # and the rerun finishes that purge with its evidence: one `done` record of the same purge
    evidence = purge([PurgeRequest("req-1", record_ids=(row["record_id"],))], root, PARAMS)
    assert evidence["clean"] is True and evidence["purge_id"] == entry["purge_id"]
    (again,) = [r for r in evidence["requests"] if r["request_id"] == "req-1"]
    assert again["row_hmac"] == removal["row_hmac"]
    records = _rows(root / PARAMS.purge.ledger)  # the rerun's own intent, then `done`
    assert [r["stage"] for r in records] == ["intent", "intent", "done"]
    assert {r["purge_id"] for r in records} == {entry["purge_id"]}
    assert pending_intent(root / PARAMS.purge.ledger) is None
