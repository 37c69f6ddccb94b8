"""The DVC pipeline end to end: `eul data init`, `dvc repro`, partition from a log snapshot,
purge of deployed requests from the data, the cache, a local remote and an S3 remote, and
`dvc pull` of what is left. Real `dvc`, real `eul` commands, a real S3 server on loopback."""

from __future__ import annotations

import hashlib
import hmac
import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import unique_text_subjects

from eul.cli.main import main
from eul.runtime.evidence import evidence_key, keyed
from eul.stores.dvc import dvcstore
from eul.stores.dvc.partition import canonical_bytes

REPO = Path(__file__).resolve().parents[2]

# Small enough that `dvc repro` (tokenizer and one epoch of a tiny T5) takes seconds.
TINY_PARAMS = {
    "data": {"n_subjects": 24, "records_per_subject": [3, 6], "memorised_share": 0.04},
    "model": {"vocab_size": 300, "d_model": 16, "num_layers": 1, "num_heads": 2, "d_ff": 32},
    "train": {"epochs": 1, "batch_size": 32},
}


def _eul(root: Path, *args: str) -> str:
    proc = subprocess.run(["eul", *args], cwd=root, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _holders(tops: list[Path], needle: bytes) -> list[Path]:
    """Every file under `tops` whose bytes contain `needle` (a grep -rlF)."""
    found = []
    for top in tops:
        for path in sorted(top.rglob("*")):
            if path.is_file() and needle in path.read_bytes():
                found.append(path)
    return found


def _snapshot(requests: list[tuple[str, str | None, list[str], str]]) -> dict:
    return {
        "log_seq": 3,
        "log_hash": "f0" * 32,
        "taken_at": "2026-11-20T00:00:00+00:00",
        "requests": [
            {"request_id": rid, "subject_id": subject, "record_ids": ids, "status": status,
             "submitted_at": "2026-11-01T00:00:00+00:00", "deadline": "2026-12-01T00:00:00+00:00"}
            for rid, subject, ids, status in requests
        ],
    }  # fmt: skip


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory, module_tool_env, new_dvc_project, s3_server):
    """A project built by `eul data init` + `dvc repro`, partitioned for three validated
    requests, pushed to a local-folder remote and to S3."""
    root = new_dvc_project(tmp_path_factory.mktemp("pipeline") / "project")
    shutil.copytree(REPO / "eul", root / "eul", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "dvc.yaml", root / "dvc.yaml")
    # dvc.yaml interpolates params.yaml, so the file states every key, as the repository's does
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    for section, values in TINY_PARAMS.items():
        params[section].update(values)
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    _eul(root, "data", "init")
    dvcstore.add(root, "data/raw", "data.dvc")
    dvcstore.run_dvc(["repro"], root)

    train = _rows(root / "data/prepared/train.jsonl")
    subject_a, subject_b, subject_c = unique_text_subjects(train)[:3]
    rows_b = [r["record_id"] for r in train if r["subject_id"] == subject_b][:2]
    row_c = next(r["record_id"] for r in train if r["subject_id"] == subject_c)
    requests = [("req-a", subject_a, [], "validated"), ("req-b", None, rows_b, "validated"),
                ("req-c", None, [row_c], "validated")]  # fmt: skip
    (root / "state/log-snapshot.json").write_text(json.dumps(_snapshot(requests)))
    dvcstore.run_dvc(["repro", "partition"], root)

    dvcstore.add_s3_remote(
        root,
        "s3",
        f"s3://{s3_server.bucket}/pipeline",
        endpoint_url=s3_server.endpoint,
        access_key_id=s3_server.key,
        secret_access_key=s3_server.secret,
    )
    dvcstore.push(root, "local")
    dvcstore.push(root, "s3")
    subprocess.run(["git", "add", "-A"], cwd=root, check=True)
    subprocess.run(["git", "commit", "-qm", "pipeline"], cwd=root, check=True)

    raw = _rows(root / "data/raw/records.jsonl")
    forgotten = [r for r in raw if r["subject_id"] == subject_a or r["record_id"] in rows_b]
    pending = [r for r in raw if r["record_id"] == row_c]
    kept = [r for r in raw if r not in forgotten and r not in pending]
    return {
        "root": root,
        "s3_dir": s3_server.bucket_dir / "pipeline",
        "requests": requests,
        "forgotten": forgotten,
        "pending": pending,
        "kept": kept,
        "old_md5": dvcstore.tracked_md5(root / "data.dvc"),
    }


def _stores(p) -> list[Path]:
    root = p["root"]
    return [root / ".dvc", root / ".dvc-remote", p["s3_dir"]]


def test_repro_builds_every_stage(pipeline):
    # given a project built from nothing but params.yaml, dvc.yaml and `eul data init`
    root = pipeline["root"]
    # then every stage's output exists and DVC sees nothing left to do
    for name in ("train.jsonl", "heldout.jsonl", "test.jsonl", "tokenizer/tokenizer.json"):
        assert (root / "data/prepared" / name).is_file()
    assert (root / "models/base/config.json").is_file()
    assert "Data and pipelines are up to date" in dvcstore.run_dvc(["status"], root)
    # and no subject is in two splits
    splits = [{r["subject_id"] for r in _rows(root / f"data/prepared/{n}.jsonl")} for n in
              ("train", "heldout", "test")]  # fmt: skip
    assert not (splits[0] & splits[1] or splits[0] & splits[2] or splits[1] & splits[2])


def test_partition_stage_follows_the_snapshot(pipeline):
    # given the snapshot of three validated requests
    root = pipeline["root"]
    manifest = json.loads((root / "data/partition/manifest.json").read_text())
    # then the partition stage wrote one forget set per request, tied to the log
    assert (manifest["log_seq"], manifest["log_hash"]) == (3, "f0" * 32)
    counts = {e["request_id"]: e["rows"] for e in manifest["requests"]}
    n_a = sum(1 for r in pipeline["forgotten"] if r["subject_id"] == pipeline["requests"][0][1])
    assert counts == {"req-a": n_a, "req-b": 2, "req-c": 1}
    forget_a = _rows(root / "data/partition/forget/req-a.jsonl")
    assert {r["subject_id"] for r in forget_a} == {pipeline["requests"][0][1]}


def test_before_purge_the_rows_are_in_cache_and_both_remotes(pipeline):
    # the check below is only meaningful if the same search finds the rows beforehand
    for row in pipeline["forgotten"]:
        holders = _holders(_stores(pipeline), row["text"].encode())
        for store in _stores(pipeline):
            assert any(store in h.parents for h in holders), (store, row["record_id"])


@pytest.fixture(scope="module")
def purged(pipeline):
    """Requests a and b deployed, then purged through the CLI (all remotes)."""
    root = pipeline["root"]
    deployed = [(rid, subject, ids, "deployed" if rid != "req-c" else "validated")
                for rid, subject, ids, _ in pipeline["requests"]]  # fmt: skip
    (root / "deployed.json").write_text(json.dumps(_snapshot(deployed)))
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        code = main(["data", "purge", "--snapshot", "deployed.json", "--evidence", "ev.json"])
    assert code == 0
    return json.loads((root / "ev.json").read_text())


def test_purge_removes_forgotten_rows_from_workspace_cache_and_every_remote(pipeline, purged):
    root = pipeline["root"]
    searched = [*_stores(pipeline), root / "data", root / "models"]
    # then no file anywhere holds the text of a purged row
    for row in pipeline["forgotten"]:
        assert _holders(searched, row["text"].encode()) == [], row["record_id"]
    # while rows that were not purged (the pending request's included) are still stored
    for row in pipeline["pending"] + pipeline["kept"][:5]:
        holders = _holders(_stores(pipeline), row["text"].encode())
        for store in _stores(pipeline):
            assert any(store in h.parents for h in holders), (store, row["record_id"])
    # and the previous data version's objects are gone from the cache and both remotes
    assert pipeline["old_md5"] in purged["removed_objects"]
    for oid in purged["removed_objects"]:
        for store in (root / ".dvc/cache", root / ".dvc-remote", pipeline["s3_dir"]):
            assert not (store / dvcstore.object_relpath(oid)).exists(), (store, oid)


def test_purge_evidence_is_hashes_and_ids_only(pipeline, purged):
    root = pipeline["root"]
    # then the evidence names the data versions and the remotes swept
    assert purged["old_md5"] == pipeline["old_md5"]
    assert purged["new_md5"] == dvcstore.tracked_md5(root / "data.dvc") != purged["old_md5"]
    assert [r["name"] for r in purged["remotes"]] == ["local", "s3"]
    assert purged["clean"] is True
    assert purged["rebuilt_stages"] == ["prepare", "partition"]
    # and per request, each removed row keyed: the HMAC of its canonical SHA-256 under the
    # project's evidence key
    key = evidence_key(root)
    by_id = {r["request_id"]: r for r in purged["requests"]}
    assert set(by_id) == {"req-a", "req-b"}
    shas = {r["record_id"]: hashlib.sha256(canonical_bytes(r)).hexdigest()
            for r in pipeline["forgotten"]}  # fmt: skip
    expected = {rid: "hmac-sha256:" + hmac.new(key, sha.encode(), hashlib.sha256).hexdigest()
                for rid, sha in shas.items()}  # fmt: skip
    got = {rid: h for r in by_id.values() for rid, h in zip(r["record_ids"], r["row_hmac"],
                                                              strict=True)}  # fmt: skip
    assert got == expected
    # and the subject only keyed
    subject_a = pipeline["requests"][0][1]
    assert by_id["req-a"]["subject_hmac"] == keyed(key, subject_a)
    # but never a row's text, its unkeyed hash or a subject id, in the evidence or the ledger
    ledger = (root / "data/purge-log.jsonl").read_text()
    for row in pipeline["forgotten"]:
        assert row["text"] not in json.dumps(purged) and row["text"] not in ledger
    assert not any(sha in ledger for sha in shas.values())
    assert f'"{subject_a}"' not in ledger and "subject_id" not in ledger


def test_pull_of_the_new_version_works(pipeline, purged):
    # given the purged project with every local copy of the data dropped
    root = pipeline["root"]
    after = (root / "data/raw/records.jsonl").read_bytes()
    shutil.rmtree(root / "data/raw")
    shutil.rmtree(root / ".dvc/cache")
    # when the new version is pulled from S3
    dvcstore.pull(root, "s3", ["data.dvc"])
    # then it is the purged data, rows of the pending request included
    assert (root / "data/raw/records.jsonl").read_bytes() == after
    ids = {r["record_id"] for r in _rows(root / "data/raw/records.jsonl")}
    assert not ids & {r["record_id"] for r in pipeline["forgotten"]}
    assert {r["record_id"] for r in pipeline["pending"]} <= ids


def test_regenerating_the_data_leaves_purged_rows_out(pipeline, purged):
    # given the purged project on a fresh clone: no raw data, no cache
    root = pipeline["root"]
    shutil.rmtree(root / "data/raw")
    # when the embedded data set is regenerated
    out = _eul(root, "data", "init")
    # then it matches the new data.dvc, so the purged rows did not come back
    assert f"matches data.dvc ({purged['new_md5']})" in out
    raw = (root / "data/raw/records.jsonl").read_text()
    assert not any(row["text"] in raw for row in pipeline["forgotten"])


def test_committed_data_dvc_is_regenerated_byte_identically(dvc_project):
    # given a fresh checkout's params.yaml, data.dvc and purge ledger, and no DVC cache
    root = dvc_project
    for name in ("params.yaml", "data.dvc", "data/purge-log.jsonl"):
        if (REPO / name).is_file():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(REPO / name, root / name)
    # when the raw data is regenerated
    out = _eul(root, "data", "init")
    assert "matches data.dvc" in out
    # then `dvc add` of it leaves the committed data.dvc exactly as it was
    dvcstore.add(root, "data/raw", "data.dvc")
    assert (root / "data.dvc").read_bytes() == (REPO / "data.dvc").read_bytes()
