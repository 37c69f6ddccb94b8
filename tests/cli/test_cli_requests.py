"""`eul requests`: the deletion log from the command line, run in process."""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime, timedelta

import pytest

import eul.stores.log.store
from eul.cli.main import build_parser, main
from eul.data.records import Record, save_records
from eul.stores.log.store import Ledger

RECORDS = [
    Record("r1", "s1", "A secret sentence Alice wrote.", "positive", 1),
    Record("r2", "s1", "Another one of Alice's rows.", "negative", 0),
    Record("r3", "s2", "Bob's only row.", "positive", 1),
]


@pytest.fixture
def log(tmp_path, monkeypatch) -> list[str]:
    """The --log-url arguments of a fresh log; run from an empty folder without params.yaml."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("EUL_LOG_URL", raising=False)
    return ["--log-url", f"sqlite:///{tmp_path / 'log.sqlite'}"]


@pytest.fixture
def data(tmp_path) -> str:
    path = tmp_path / "train.jsonl"
    save_records(RECORDS, path)
    return str(path)


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def one_line_error(capsys, *argv: str) -> str:
    code, _, err = run(capsys, *argv)
    assert code == 2
    assert len(err.strip().splitlines()) == 1
    assert err.startswith("eul: error: ")
    return err


@pytest.mark.parametrize(
    "argv",
    [
        ["requests"],
        ["requests", "submit"],
        ["requests", "validate"],
        ["requests", "list"],
        ["requests", "show"],
        ["requests", "verify"],
        ["requests", "snapshot"],
        ["requests", "migrate-evidence"],
    ],
)
def test_every_requests_command_has_help(argv, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args([*argv, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "usage: eul requests" in out
    if len(argv) > 1:
        assert "--log-url" in out and "--json" in out


def test_submit_is_idempotent_with_a_request_id(capsys, log) -> None:
    code, out, _ = run(capsys, "requests", "submit", "--subject", "s1", "--request-id", "k1", *log)
    assert code == 0
    assert out.startswith("submitted k1: subject s1, deadline ")
    code, out, _ = run(capsys, "requests", "submit", "--subject", "s2", "--request-id", "k1", *log)
    assert code == 0
    assert "k1 was already submitted" in out and "nothing changed" in out
    code, out, _ = run(capsys, "requests", "list", "--json", *log)
    assert [s["request_id"] for s in json.loads(out)] == ["k1"]
    assert json.loads(out)[0]["subject_id"] == "s1"


def test_submit_json_and_deadline_days(capsys, log) -> None:
    code, out, _ = run(
        capsys, "requests", "submit", "--record-ids", "r2, r1", "--deadline-days", "10", "--json",
        *log,
    )  # fmt: skip
    [result] = json.loads(out)
    assert code == 0 and result["created"] is True
    assert result["record_ids"] == ["r1", "r2"] and result["subject_id"] is None
    assert result["request_id"].startswith("req-")
    span = datetime.fromisoformat(result["deadline"]) - datetime.fromisoformat(
        result["submitted_at"]
    )
    assert span == timedelta(days=10)


def test_submit_from_a_file_in_every_line_format(capsys, log, tmp_path) -> None:
    requests = tmp_path / "requests.txt"
    requests.write_text(
        "# one request per line\n"
        "subject:s1\n"
        '{"subject_id": "s2", "request_id": "from-json", "deadline_days": 3}\n'
        '{"record_ids": ["r3"]}\n'
        "\n"
        "r1,r2\n"
        '{"subject_id": "s2", "request_id": "from-json"}\n'
    )
    code, out, _ = run(capsys, "requests", "submit", "--file", str(requests), "--json", *log)
    results = json.loads(out)
    assert code == 0
    assert [r["created"] for r in results] == [True, True, True, True, False]
    assert [(r["subject_id"], r["record_ids"]) for r in results[:4]] == [
        ("s1", []),
        ("s2", []),
        (None, ["r3"]),
        (None, ["r1", "r2"]),
    ]
    # Submitting the file again adds only the lines without a request id
    code, out, _ = run(capsys, "requests", "submit", "--file", str(requests), *log)
    assert out.splitlines()[-1] == "3 new of 5 requests"
    assert "from-json was already submitted" in out


@pytest.mark.parametrize(
    "content, expected",
    [
        ('subject:s1\n{"bogus": 1}\n', "requests.txt line 2: unknown field(s) bogus"),
        ("subject:s1\n{not json\n", "requests.txt line 2: not valid JSON"),
        ("subject:has space\n", "requests.txt line 1: bad subject id"),
        ("# nothing here\n", "holds no requests"),
    ],
)
def test_bad_request_files_give_one_line_naming_the_line(
    capsys, log, tmp_path, content, expected
) -> None:
    path = tmp_path / "requests.txt"
    path.write_text(content)
    err = one_line_error(capsys, "requests", "submit", "--file", str(path), *log)
    assert expected in err
    assert len(Ledger(log[1]).list()) == 0  # all or nothing


def test_bad_submit_arguments_give_one_line_errors(capsys, log, tmp_path) -> None:
    err = one_line_error(capsys, "requests", "submit", "--subject", "bad id", *log)
    assert "bad subject id 'bad '... (6 characters)" in err
    err = one_line_error(capsys, "requests", "submit", "--record-ids", ",", *log)
    assert "give ids separated by commas" in err
    (tmp_path / "f.txt").write_text("subject:s1\n")
    err = one_line_error(capsys, "requests", "submit", "--file", "f.txt", "--request-id", "k", *log)
    assert "put a request_id on each line" in err
    err = one_line_error(capsys, "requests", "submit", "--file", "missing.txt", *log)
    assert "no request file at missing.txt" in err
    err = one_line_error(capsys, "requests", "show", "req-nope", *log)
    assert "no request 'req-nope' in the log" in err
    err = one_line_error(capsys, "requests", "list", "--log-url", "::nonsense::")
    assert "bad log URL" in err
    with pytest.raises(SystemExit) as exit_info:  # neither --subject nor --record-ids
        main(["requests", "submit", *log])
    assert exit_info.value.code == 2


def test_validate_lists_rejections_with_reasons(capsys, log, data) -> None:
    # Given a request that matches and two that do not
    run(capsys, "requests", "submit", "--subject", "s1", "--request-id", "ok-1", *log)
    run(capsys, "requests", "submit", "--subject", "s404", "--request-id", "bad-1", *log)
    run(capsys, "requests", "submit", "--record-ids", "r8,r9", "--request-id", "bad-2", *log)
    # When they are validated against the data file
    code, out, _ = run(capsys, "requests", "validate", "--data", data, *log)
    # Then the summary counts them and names every rejection's reason
    assert code == 0
    assert out.startswith("validated 1, rejected 2 of 3 received requests")
    assert "bad-1     no records for the subject" in out and "s404" not in out
    assert "bad-2     unknown record ids: r8, r9" in out
    code, out, _ = run(capsys, "requests", "validate", "--data", data, "--json", *log)
    assert json.loads(out)["validated"] == []
    # And the validated request carries the matched ids and the data file's hash
    code, out, _ = run(capsys, "requests", "show", "ok-1", "--json", *log)
    shown = json.loads(out)
    assert shown["state"]["matched_ids"] == ["r1", "r2"]
    assert shown["history"][-1]["details"]["data_version"].startswith("sha256:")


def test_list_is_an_aligned_table_and_filters(capsys, log, data, monkeypatch) -> None:
    # Given one request submitted 40 days ago and two today
    now = eul.stores.log.store.utcnow
    past = now() - timedelta(days=40)
    monkeypatch.setattr(eul.stores.log.store, "utcnow", lambda: past)
    run(capsys, "requests", "submit", "--subject", "s1", "--request-id", "old-one", *log)
    monkeypatch.setattr(eul.stores.log.store, "utcnow", now)  # (undo() would leave tmp_path)
    run(capsys, "requests", "submit", "--subject", "s2", "--request-id", "new-one", *log)
    run(capsys, "requests", "submit", "--subject", "s404", "--request-id", "nobody", *log)
    run(capsys, "requests", "validate", "--data", data, *log)
    # When listed
    code, out, _ = run(capsys, "requests", "list", *log)
    lines = out.splitlines()
    # Then every column starts at the same place in every row
    header = lines[0]
    assert header.split() == [
        "REQUEST", "STATUS", "TARGET", "SUBMITTED", "DEADLINE", "(UTC)", "NOTE"
    ]  # fmt: skip
    status_col, target_col = header.index("STATUS"), header.index("TARGET")
    for row in lines[1:4]:
        assert row[status_col - 2 : status_col] == "  " and row[status_col] != " "
        assert row[target_col - 2 : target_col] == "  " and row[target_col] != " "
    assert "OVERDUE" in lines[1] and "OVERDUE" not in lines[2]
    assert lines[-1] == "3 requests: 2 validated, 1 rejected"
    # And the filters select
    _, out, _ = run(capsys, "requests", "list", "--overdue", "--json", *log)
    assert [s["request_id"] for s in json.loads(out)] == ["old-one"]
    assert json.loads(out)[0]["overdue"] is True
    _, out, _ = run(capsys, "requests", "list", "--status", "rejected", *log)
    assert "nobody" in out and "old-one" not in out
    _, out, _ = run(capsys, "requests", "list", "--status", "purged", *log)
    assert out.strip() == "no requests match"


def test_show_prints_state_and_history(capsys, log, data) -> None:
    run(capsys, "requests", "submit", "--subject", "s1", "--request-id", "k1", *log)
    run(capsys, "requests", "validate", "--data", data, *log)
    Ledger(log[1]).mark("k1", "unlearned", layer="layers/k1")
    code, out, _ = run(capsys, "requests", "show", "k1", *log)
    assert code == 0
    assert "status      unlearned" in out
    assert "matched     2 records: r1, r2" in out
    history = out.split("\n\n")[1].splitlines()
    assert history[0].split() == ["SEQ", "STATUS", "AT", "(UTC)", "DETAILS", "HASH"]
    assert [line.split()[1] for line in history[1:]] == ["received", "validated", "unlearned"]
    assert "layer=layers/k1" in history[3]


def test_show_tells_the_level_reached_with_both_deadlines(capsys, log, data) -> None:
    run(capsys, "requests", "submit", "--subject", "s1", "--request-id", "k1", *log)
    run(capsys, "requests", "validate", "--data", data, *log)
    _, out, _ = run(capsys, "requests", "show", "k1", *log)
    assert "level       pending" in out and "suppressed  not yet" in out
    ledger = Ledger(log[1])
    ledger.mark("k1", "unlearned")
    ledger.mark("k1", "fused")
    seq, head = ledger.head()  # the log entry the deployed version was cut at
    ledger.mark("k1", "deployed", model_version=1, log_seq=seq, log_hash=head)
    evidence = {
        "rows_removed": 2,
        "row_hmac": ["hmac-sha256:" + c * 64 for c in "ab"],
        "data_dvc_md5_before": "a" * 32,
        "data_dvc_md5_after": "b" * 32,
        "remotes_swept": [],
        "purge_log": "data/purge-log.jsonl",
        "purged_at": "2026-12-01T00:00:00+00:00",
    }
    ledger.mark("k1", "purged", evidence=evidence)
    _, out, _ = run(capsys, "requests", "show", "k1", *log)
    deployed_at = ledger.get("k1").history[4].at
    assert "level       suppressed" in out and f"suppressed  {deployed_at}" in out
    assert "erased      not yet" in out
    ledger.mark("k1", "erased", evidence={"compaction_version": 2})
    _, out, _ = run(capsys, "requests", "show", "k1", "--json", *log)
    levels = json.loads(out)["compliance"]
    state = ledger.get("k1").state
    assert levels["level"] == "erased" and levels["erased_at"] == state.updated_at
    assert levels["deadline"] == state.deadline
    assert levels["erasure_deadline"] == state.erasure_deadline(30)
    assert not levels["erasure_overdue"]


def test_verify_exits_1_and_names_the_broken_entry(capsys, log, tmp_path) -> None:
    for subject in ("s1", "s2", "s3"):
        run(capsys, "requests", "submit", "--subject", subject, *log)
    code, out, _ = run(capsys, "requests", "verify", *log)
    assert code == 0 and out.startswith("chain OK: 3 entries")
    with sqlite3.connect(tmp_path / "log.sqlite") as conn:
        conn.execute("UPDATE ledger_entries SET at = '2020-01-01' WHERE seq = 2")
    code, out, _ = run(capsys, "requests", "verify", *log)
    assert code == 1
    assert out.startswith("chain BROKEN at entry 2: hash does not match")
    code, out, _ = run(capsys, "requests", "verify", "--json", *log)
    assert code == 1 and json.loads(out)["broken_seq"] == 2


def test_verify_with_the_registry_finds_a_purge_cut_from_the_log(
    capsys, log, tmp_path, monkeypatch
) -> None:
    from conftest import cut_last_entry

    from eul.pipeline import integrity
    from eul.pipeline.anchors import write_anchor
    from eul.pipeline.context import load_context

    # given a request deployed in version 1 (its tags: the head it was cut at, what it covers)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    ledger = Ledger(log[1])
    ledger.submit(subject_id="s1", request_id="k1")
    ledger.validate({"s1": ["r1"]})
    ledger.mark("k1", "unlearned")
    ledger.mark("k1", "fused", model_version=1)
    seq, head = ledger.head()
    ledger.mark("k1", "deployed", model_version=1, log_seq=seq, log_hash=head)
    tags = {"log_seq": str(seq), "log_hash": head, "covered_request_ids": "k1"}
    registry = {1: tags}
    monkeypatch.setattr(integrity, "_version_records", lambda settings: registry)
    # and purged, the batch report anchoring the head after the purge
    evidence = {
        "rows_removed": 1,
        "row_hmac": ["hmac-sha256:" + "a" * 64],
        "data_dvc_md5_before": "a" * 32,
        "data_dvc_md5_after": "b" * 32,
        "remotes_swept": [],
        "purge_log": "data/purge-log.jsonl",
        "purged_at": "2026-12-01T00:00:00+00:00",
    }
    ledger.mark("k1", "purged", evidence=evidence)
    write_anchor(load_context(tmp_path), ledger, "nightly-1")
    assert (tmp_path / "state" / "log-anchors.jsonl").is_file()
    # then the log agrees with both anchors and the registry
    code, out, _ = run(capsys, "requests", "verify", "--registry", *log)
    assert code == 0, out
    assert "Anchors of the log's head: 2 checked (anchors file 1, versions 1)" in out
    # when the purged entry is deleted and the head and state row reset to match
    cut_last_entry(tmp_path / "log.sqlite", subject_id="s1")
    # then the chain alone checks out, but against its anchors it does not
    code, out, _ = run(capsys, "requests", "verify", *log)
    assert code == 0 and out.startswith("chain OK")
    code, out, _ = run(capsys, "requests", "verify", "--registry", *log)
    assert code == 1
    assert f"anchors file line 1 recorded entry {seq + 2}" in out
    assert f"the log was truncated or rewritten after seq {seq}" in out
    code, out, _ = run(capsys, "requests", "verify", "--registry", "--json", *log)
    report = json.loads(out)
    assert code == 1 and report["ok"] is True and report["registry"]["ok"] is False
    [finding] = report["registry"]["findings"]
    assert finding["kind"] == "anchor" and finding["seq"] == seq + 2
    # and a deployment naming a version the registry does not hold is a finding too
    registry.clear()
    code, out, _ = run(capsys, "requests", "verify", "--registry", *log)
    assert code == 1
    assert "k1 was deployed in version 1" in out and "which the registry does not hold" in out


def test_snapshot_writes_the_partition_file(capsys, log, data, tmp_path) -> None:
    run(capsys, "requests", "submit", "--subject", "s1", "--request-id", "k1", *log)
    run(capsys, "requests", "validate", "--data", data, *log)
    out_path = tmp_path / "snap" / "requests.json"
    code, out, _ = run(capsys, "requests", "snapshot", "--out", str(out_path), *log)
    snap = json.loads(out_path.read_text())
    assert code == 0 and out.startswith("wrote 1 requests at log entry 2")
    assert set(snap) == {"log_seq", "log_hash", "taken_at", "requests"}
    assert snap["requests"][0]["record_ids"] == ["r1", "r2"]


def test_the_log_url_comes_from_params_yaml_or_the_environment(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("EUL_LOG_URL", raising=False)
    (tmp_path / "params.yaml").write_text("log:\n  url: sqlite:///from-params.sqlite\n")
    run(capsys, "requests", "submit", "--subject", "s1")
    assert (tmp_path / "from-params.sqlite").is_file()
    monkeypatch.setenv("EUL_LOG_URL", f"sqlite:///{tmp_path / 'from-env.sqlite'}")
    run(capsys, "requests", "submit", "--subject", "s1")
    assert (tmp_path / "from-env.sqlite").is_file()
    assert len(Ledger(f"sqlite:///{tmp_path / 'from-params.sqlite'}").list()) == 1


def test_no_output_contains_record_text(capsys, log, data) -> None:
    run(capsys, "requests", "submit", "--subject", "s1", "--request-id", "k1", *log)
    outputs = [run(capsys, "requests", "validate", "--data", data, "--json", *log)[1]]
    for argv in (["list"], ["list", "--json"], ["show", "k1"], ["show", "k1", "--json"]):
        outputs.append(run(capsys, "requests", *argv, *log)[1])
    for record in RECORDS:
        assert not any(record.text in out for out in outputs)


def test_migrate_evidence_keys_an_old_log_and_purge_ledger_once(capsys, log, tmp_path) -> None:
    from eul.runtime.evidence import evidence_key, keyed
    from eul.stores.log.chain import Chain
    from eul.stores.log.schema import iso, requests_table, utcnow

    # Given a log written the old way: a rejected request whose entries name the subject
    at = iso(utcnow())
    reason = "no records for subject Alice.Smith"
    with Ledger(log[1]) as ledger, ledger.db.write() as conn:
        chain = Chain(conn)
        received = {"subject_id": "Alice.Smith", "record_ids": [], "deadline": at}
        first = chain.append("old-1", "received", at, received)
        last = chain.append("old-1", "rejected", at, {"reason": reason})
        chain.flush()
        conn.execute(
            requests_table.insert().values(
                request_id="old-1", subject_id="Alice.Smith", record_ids="[]", status="rejected",
                submitted_at=at, deadline=at, updated_at=at, note=reason,
                first_seq=first.seq, last_seq=last.seq,
            )
        )  # fmt: skip
        chain.close()
    # and a purge ledger (at its default place in the project) with a raw subject and hash
    purge_log = tmp_path / "data" / "purge-log.jsonl"
    purge_log.parent.mkdir()
    line = {"requests": [{"subject_id": "Alice.Smith", "record_ids": ["r1"],
                          "row_sha256": ["ab" * 32]}]}  # fmt: skip
    purge_log.write_text(json.dumps(line) + "\n")
    # When it is migrated
    code, out, _ = run(capsys, "requests", "migrate-evidence", *log)
    # Then it says what changed in counts, never values, and the chain verifies
    assert code == 0
    assert out.startswith("migrated: 2 entries rewritten, 2 rehashed from entry 1; ")
    assert "1 request states keyed; 1 purge-ledger lines keyed" in out
    assert "chain OK: 2 entries" in out
    assert "Alice" not in out and "ab" * 32 not in out
    assert run(capsys, "requests", "verify", *log)[0] == 0
    key = evidence_key(tmp_path)  # the project's key: the folder of params.yaml
    shown = json.loads(run(capsys, "requests", "show", "old-1", "--json", *log)[1])
    assert shown["history"][0]["details"]["subject_hmac"] == keyed(key, "Alice.Smith")
    assert shown["state"]["subject_id"] == keyed(key, "Alice.Smith")
    assert "Alice" not in json.dumps(shown) and "Alice" not in purge_log.read_text()
    # And a second run changes nothing and says so
    code, out, _ = run(capsys, "requests", "migrate-evidence", "--json", *log)
    counts = json.loads(out)
    assert counts["entries_rewritten"] == counts["entries_rehashed"] == 0
    assert counts["states_rewritten"] == counts["purge_ledger_lines_rewritten"] == 0
    code, out, _ = run(capsys, "requests", "migrate-evidence", *log)
    assert out.startswith("nothing to migrate")
