"""Partition: per-request forget sets, the retained set and a hash-only manifest."""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path

import pytest

from eul.cli.main import main
from eul.data.records import save_records
from eul.data.synthetic import SyntheticConfig, generate
from eul.runtime.evidence import evidence_key, keyed
from eul.stores.dvc.partition import (
    PartitionError,
    canonical_bytes,
    load_snapshot,
    parse_snapshot,
    partition,
    read_rows,
)


@pytest.fixture
def key(tmp_path) -> bytes:
    """The evidence key of the test's project folder."""
    return evidence_key(tmp_path)


@pytest.fixture
def data_file(tmp_path) -> Path:
    _, records = generate(SyntheticConfig(n_subjects=30, seed=5))
    path = tmp_path / "records.jsonl"
    save_records(records, path)
    return path


def _request(request_id, subject_id=None, record_ids=(), status="validated"):
    return {
        "request_id": request_id,
        "subject_id": subject_id,
        "record_ids": list(record_ids),
        "status": status,
        "submitted_at": "2026-11-01T10:00:00+00:00",
        "deadline": "2026-12-01T10:00:00+00:00",
    }


def _snapshot(requests) -> dict:
    return {"log_seq": 7, "log_hash": "ab" * 32, "taken_at": "2026-11-02T00:00:00+00:00",
            "requests": requests}  # fmt: skip


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture
def snapshot_obj(data_file) -> dict:
    rows = _rows(data_file)
    s1 = rows[0]["subject_id"]
    s1_rows = [r["record_id"] for r in rows if r["subject_id"] == s1]
    others = [r["record_id"] for r in rows if r["subject_id"] != s1]
    return _snapshot(
        [
            _request("req-1", subject_id=s1),
            _request("req-2", record_ids=[others[3], others[10], "r999999"]),
            _request("req-3", record_ids=[s1_rows[0], others[3]]),  # overlaps req-1 and req-2
            _request("req-4", record_ids=[others[20]], status="received"),
        ]
    )


def test_forget_files_hold_exactly_the_named_rows_and_retained_the_rest(
    tmp_path, data_file, snapshot_obj, key
):
    # given a data file and a snapshot with subject, record and overlapping requests
    rows = _rows(data_file)
    lines = data_file.read_text().splitlines()
    s1 = snapshot_obj["requests"][0]["subject_id"]
    out = tmp_path / "part"
    # when it is partitioned
    manifest = partition(parse_snapshot(snapshot_obj), data_file, out, key=key)
    # then each forget file holds its request's rows, stored bytes unchanged, in data order
    forget1 = (out / "forget" / "req-1.jsonl").read_text().splitlines()
    assert forget1 == [ln for ln, r in zip(lines, rows, strict=True) if r["subject_id"] == s1]
    forget2 = _rows(out / "forget" / "req-2.jsonl")
    assert [r["record_id"] for r in forget2] == sorted(
        snapshot_obj["requests"][1]["record_ids"][:2]
    )
    assert len(_rows(out / "forget" / "req-3.jsonl")) == 2
    # the request that is not validated is skipped, not acted on
    assert not (out / "forget" / "req-4.jsonl").exists()
    assert manifest["skipped"] == [{"request_id": "req-4", "status": "received"}]
    # and retained is every other row, in order, so nothing is lost or doubled
    named = {r["record_id"] for f in (out / "forget").glob("*.jsonl") for r in _rows(f)}
    retained = (out / "retained.jsonl").read_text().splitlines()
    assert retained == [
        ln for ln, r in zip(lines, rows, strict=True) if r["record_id"] not in named
    ]
    assert len(retained) + len(named) == len(rows)
    assert manifest["rows_forgotten"] == len(named)


def test_manifest_ties_to_the_log_with_keyed_digests_and_no_text_or_subject(
    tmp_path, data_file, snapshot_obj, key
):
    # given a partition
    out = tmp_path / "part"
    partition(parse_snapshot(snapshot_obj), data_file, out, key=key)
    manifest = json.loads((out / "manifest.json").read_text())
    # then it names the log state it came from
    assert (manifest["log_seq"], manifest["log_hash"]) == (7, "ab" * 32)
    by_id = {e["request_id"]: e for e in manifest["requests"]}
    # and keys each forgotten row: the HMAC, under the project's key, of its canonical SHA-256
    forget2 = _rows(out / "forget" / "req-2.jsonl")
    assert by_id["req-2"]["rows"] == 2
    shas = [hashlib.sha256(canonical_bytes(r)).hexdigest() for r in forget2]
    assert by_id["req-2"]["row_hmac"] == [
        "hmac-sha256:" + hmac.new(key, sha.encode(), hashlib.sha256).hexdigest() for sha in shas
    ]
    assert by_id["req-2"]["missing_record_ids"] == ["r999999"]
    # and the subject only keyed
    s1 = snapshot_obj["requests"][0]["subject_id"]
    assert by_id["req-1"]["subject_hmac"] == keyed(key, s1)
    assert by_id["req-2"]["subject_hmac"] is None
    # but holds none of the text of any row, no subject id and no unkeyed row hash
    text = (out / "manifest.json").read_text()
    forgotten = [r for f in (out / "forget").glob("*.jsonl") for r in _rows(f)]
    assert forgotten and not any(r["text"] in text for r in forgotten)
    assert f'"{s1}"' not in text and "subject_id" not in text and "row_sha256" not in text
    assert not any(hashlib.sha256(canonical_bytes(r)).hexdigest() in text for r in forgotten)


def test_partition_is_deterministic_and_clears_stale_forget_files(
    tmp_path, data_file, snapshot_obj, key
):
    # given the same snapshot partitioned twice
    snapshot = parse_snapshot(snapshot_obj)
    partition(snapshot, data_file, tmp_path / "a", key=key)
    partition(snapshot, data_file, tmp_path / "b", key=key)
    # then every output file is byte-identical
    files_a = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.*"))
    files_b = sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*.*"))
    assert files_a == files_b
    for rel in files_a:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes()
    # when a later snapshot no longer holds req-1, then its forget file is gone too
    later = dict(snapshot_obj, requests=snapshot_obj["requests"][1:])
    partition(parse_snapshot(later), data_file, tmp_path / "a", key=key)
    assert not (tmp_path / "a" / "forget" / "req-1.jsonl").exists()


def test_canonical_bytes_ignore_key_order_and_spacing():
    assert canonical_bytes({"b": 1, "a": "é"}) == canonical_bytes({"a": "é", "b": 1})
    assert canonical_bytes({"a": "é"}) == '{"a":"é"}'.encode()


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda s: s.pop("log_hash"), "missing key 'log_hash'"),
        (lambda s: s.update(log_seq="7"), "'log_seq' must be int"),
        (lambda s: s.update(log_seq=True), "'log_seq' must be int"),
        (lambda s: s["requests"][0].update(request_id=" "), "1 to 200 characters"),
        (lambda s: s["requests"].append(dict(s["requests"][0])), "appears twice"),
        (lambda s: s["requests"][0].update(subject_id=None, record_ids=[]), "names no subject"),
        (lambda s: s["requests"][0].update(record_ids="r1"), "'record_ids' must be list"),
        (lambda s: s["requests"][0].pop("deadline"), "missing key 'deadline'"),
    ],
)
def test_bad_snapshots_are_refused_with_the_reason(change, expected):
    # given a valid snapshot with one thing wrong
    snap = _snapshot([_request("req-1", subject_id="s0001")])
    change(snap)
    # then parsing names the problem
    with pytest.raises(PartitionError, match=expected):
        parse_snapshot(snap)


def test_request_ids_with_path_characters_get_a_safe_file_name(tmp_path, data_file, key):
    # given a log id holding '/' and ':' (the log allows them)
    rows = _rows(data_file)
    snap = _snapshot([_request("tickets/2026:7", record_ids=[rows[0]["record_id"]])])
    # when it is partitioned
    manifest = partition(parse_snapshot(snap), data_file, tmp_path / "out", key=key)
    # then its forget file stays inside forget/, named by the encoded id
    (entry,) = manifest["requests"]
    assert entry["file"] == "forget/tickets%2F2026%3A7.jsonl"
    assert _rows(tmp_path / "out" / entry["file"]) == [rows[0]]
    assert [p.name for p in (tmp_path / "out").rglob("*.jsonl") if p.parent.name == "forget"] == [
        "tickets%2F2026%3A7.jsonl"
    ]


def test_unknown_snapshot_keys_are_ignored():
    snap = _snapshot([dict(_request("req-1", subject_id="s0001"), reason="gdpr art. 17")])
    snap["chain"] = "x"
    assert parse_snapshot(snap).requests[0].request_id == "req-1"


def test_duplicate_record_ids_in_data_are_refused(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"record_id": "r1", "subject_id": "s1"}\n{"record_id": "r1"}\n')
    with pytest.raises(PartitionError, match="r1 appears twice"):
        read_rows(path)


def test_cli_partitions_and_reports_bad_input_in_one_line(
    tmp_path, data_file, snapshot_obj, capsys, monkeypatch
):
    # given a snapshot file in a project folder (the working folder, as dvc runs the stage)
    monkeypatch.chdir(tmp_path)
    snap = tmp_path / "snap.json"
    snap.write_text(json.dumps(snapshot_obj))
    # when the CLI partitions
    code = main(["data", "partition", "--snapshot", str(snap), "--data", str(data_file),
                 "--out", str(tmp_path / "out")])  # fmt: skip
    # then it succeeds and writes the manifest, keyed with the project's key
    assert code == 0
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["log_seq"] == 7
    s1 = snapshot_obj["requests"][0]["subject_id"]
    assert manifest["requests"][0]["subject_hmac"] == keyed(evidence_key(tmp_path), s1)
    assert load_snapshot(snap).log_seq == 7
    # when the snapshot is not JSON, then exit 2 with one line
    snap.write_text("{not json")
    capsys.readouterr()
    code = main(["data", "partition", "--snapshot", str(snap), "--data", str(data_file),
                 "--out", str(tmp_path / "out")])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("eul: error:") and "not valid JSON" in err
    assert err.count("\n") == 1


def test_partition_bench_reports_rows_and_time(tmp_path):
    # given a small benchmark run
    from benchmarks.partition import run_partition_bench

    result = run_partition_bench([(2000, 20)], tmp_path, repeats=1)
    # then it states what it measured
    (row,) = result["runs"]
    assert row["rows"] == 2000 and row["requests"] == 20
    assert 0 < row["rows_forgotten"] < 2000
    assert row["seconds"] > 0
