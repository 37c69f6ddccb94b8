"""`eul doctor` against real local things: a git + DVC project, params.yaml, an SQLite
deletion log, an SQLite MLflow store with a registered production version, a tiny T5 that
really trained, an S3-compatible server, and broken variants of each that must fail with
the right fix."""

from __future__ import annotations

import json
import socket
import sqlite3
from pathlib import Path

import pytest
import yaml
from conftest import STORE_ENV

from eul.cli.doctor import FAIL, OK, SKIP, WARN, check_dvc, check_prefect, run_doctor
from eul.cli.main import main
from eul.data.records import LABEL_WORDS
from eul.data.synthetic import SyntheticConfig, generate
from eul.layers import LayerConfig
from eul.model.text_model import ModelSpec, TextModel
from eul.model.training import TrainConfig, train_full
from eul.pipeline.context import load_context
from eul.stores.dvc import dvcstore
from eul.stores.registry.runs import ensure_experiment, log_batch_run
from eul.stores.registry.tags import compliance_tags
from eul.stores.registry.versions import PRODUCTION, register_version, set_alias

SPEC = ModelSpec(vocab_size=300, d_model=16, num_layers=1, num_heads=2, d_ff=32)
CLEARED = (
    *STORE_ENV,
    "PREFECT_API_URL",
    "PREFECT_API_KEY",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def by_name(checks) -> dict:
    return {c.name: c for c in checks}


@pytest.fixture(scope="module")
def trained_base(tmp_path_factory) -> Path:
    """A tiny T5 trained for one epoch on synthetic reviews, saved once for the module."""
    folder = tmp_path_factory.mktemp("base") / "model"
    _, records = generate(SyntheticConfig(n_subjects=12, seed=1))
    tm = TextModel.create([r.text for r in records] + list(LABEL_WORDS), SPEC, seed=0)
    train_full(tm, records, TrainConfig(epochs=1, batch_size=16), progress=False)
    tm.save(folder)
    return folder


@pytest.fixture
def clean_env(monkeypatch, tmp_path) -> None:
    """No store named by the environment, and no AWS configuration from the home folder."""
    for name in CLEARED:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture
def project(dvc_project, trained_base, clean_env) -> Path:
    """A git + DVC project with params.yaml, a base model, a log with one request and an
    MLflow store with its experiment."""
    import shutil

    root = dvc_project
    params = {"train": {"out": "models/base"}, "registry": {"model_name": "doctor-model"}}
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    shutil.copytree(trained_base, root / "models/base")
    ctx = load_context(root)
    with ctx.ledger() as ledger:
        ledger.submit(subject_id="s0001", request_id="req-1")
    ensure_experiment(ctx.settings)
    return root


def test_a_healthy_project_passes_every_check(project, capsys) -> None:
    # when the doctor looks at a project where everything is in place
    seen = []
    checks = run_doctor(project, report=seen.append)
    found = by_name(checks)
    # then nothing fails, each check was reported as soon as it was known, in order
    assert [c for c in checks if c.status == FAIL] == []
    assert seen == checks
    assert list(found)[:3] == ["params", "deletion log", "mlflow"]
    assert "1 entry, hash chain verifies" in found["deletion log"].detail
    assert "no production version yet" in found["mlflow"].detail
    assert found["dvc"].status == OK and found["remote local"].status == OK
    assert found["base model"].status == OK and "t5" in found["base model"].detail
    assert found["production model"].status == SKIP
    # and the command prints one line per check and exits 0
    assert main(["doctor", "--project", str(project), "--no-models"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("OK    params") and lines[-1].startswith("all ")


def test_a_failure_drill_left_set_is_a_warning_with_its_fix(project, capsys) -> None:
    # given a project whose params.yaml sets a failure drill
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["pipeline"] = {"drill_fail_at": "after-register"}
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    # when the doctor looks at it
    found = by_name(run_doctor(project, models=False))
    # then it warns, in one line with the fix, and fails nothing because of it
    drill = found["failure drill"]
    assert drill.status == WARN and not drill.failed
    assert "'after-register'" in drill.detail and "drill_fail_at: null" in drill.hint
    assert "\n" not in drill.line()
    assert [c for c in found.values() if c.status == FAIL] == []
    # and a kill drill in the environment is one too
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EUL_DRILL_KILL", "1")
        kill = by_name(run_doctor(project, models=False))["failure drill"]
    assert kill.status == WARN and "EUL_DRILL_KILL is set" in kill.detail
    # and a project without a drill has no such line
    del params["pipeline"]
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    assert "failure drill" not in by_name(run_doctor(project, models=False))


def test_the_production_version_is_loaded_from_the_registry(project, tmp_path) -> None:
    # given a registered version (base + one request's layer) with the production alias
    ctx = load_context(project)
    tm = TextModel.load(project / "models/base")
    tm.unlearning_layers().add_layer("req-1", LayerConfig(width=4))
    layer = tm.unlearning_layers().save_layer("req-1", tmp_path / "layer")
    gates = {"mia_auc": {"value": 0.5, "max": 0.6, "passed": True}}
    run_id = log_batch_run(ctx.settings, "b1", ["req-1"], {"test_acc": 0.8})
    tags = compliance_tags(["req-1"], 1, "hash-1", gates, data_dvc_md5="md5-a")
    version = register_version(ctx.settings, run_id, project / "models/base", layer, tags, "v1")
    set_alias(ctx.settings, PRODUCTION, version)
    # when the doctor runs
    found = by_name(run_doctor(project))
    # then it found production and loaded it with its layer switched on
    assert f"production is version {version}" in found["mlflow"].detail
    production = found["production model"]
    assert production.status == OK, production
    assert "req-1" in production.detail and "1 requests honoured" in production.detail


def test_unknown_params_key_fails_with_the_key_and_the_fix(project, capsys) -> None:
    # given a misspelt knob in params.yaml
    (project / "params.yaml").write_text("pipeline:\n  auto_promte: true\n")
    # when the doctor runs
    code = main(["doctor", "--project", str(project), "--json"])
    report = json.loads(capsys.readouterr().out)
    found = {c["name"]: c for c in report["checks"]}
    # then params fails, naming the key and the fix, and what needs params is skipped
    assert code == 1 and report["ok"] is False
    assert found["params"]["status"] == FAIL
    assert "pipeline.auto_promte: unknown key" in found["params"]["detail"]
    assert "params.yaml lists every known key" in found["params"]["hint"]
    for name in ("deletion log", "mlflow", "base model", "production model"):
        assert found[name]["status"] == SKIP
    assert found["dvc"]["status"] == OK  # checks that need no params still run


def test_a_tampered_log_fails_its_chain_check(project) -> None:
    # given a log entry changed behind the ledger's back
    with sqlite3.connect(project / "state/deletion-log.sqlite") as db:
        db.execute("UPDATE ledger_entries SET details = '{}' WHERE seq = 1")
    # then the doctor says where the chain breaks and what to do
    check = by_name(run_doctor(project, models=False))["deletion log"]
    assert check.status == FAIL
    assert "chain broken at entry 1" in check.detail
    assert "restore it from a backup" in check.hint


def test_stores_that_do_not_answer_fail_fast_with_their_fix(project, monkeypatch) -> None:
    # given MLflow and Prefect servers that are down, and a log file that is not a database
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{closed_port()}")
    monkeypatch.setenv("PREFECT_API_URL", f"http://127.0.0.1:{closed_port()}/api")
    (project / "state/garbage.sqlite").write_bytes(b"not a database" * 10)
    monkeypatch.setenv("EUL_LOG_URL", f"sqlite:///{project / 'state/garbage.sqlite'}")
    # when the doctor runs
    found = by_name(run_doctor(project))
    # then each fails with its fix, and production is not asked of a store that is down
    assert found["mlflow"].status == FAIL and "does not answer" in found["mlflow"].detail
    assert "MLFLOW_TRACKING_URI" in found["mlflow"].hint
    assert found["prefect"].status == FAIL and "prefect server start" in found["prefect"].hint
    assert found["deletion log"].status == FAIL
    assert "not a database" in found["deletion log"].detail
    assert found["production model"].status == SKIP


def test_a_folder_without_dvc_or_base_model_says_what_to_run(tmp_path, clean_env) -> None:
    found = by_name(run_doctor(tmp_path))
    assert found["params"].status == OK  # no params.yaml: the defaults apply
    assert found["dvc"].status == FAIL and "dvc init" in found["dvc"].hint
    assert found["base model"].status == FAIL and "dvc repro train" in found["base model"].hint
    # the log and MLflow files do not exist yet and the doctor does not create them
    assert found["deletion log"].status == OK and not (tmp_path / "state").exists()


def test_s3_remote_credentials_are_checked_and_never_shown(
    project, s3_server, monkeypatch, capsys
) -> None:
    # given an S3 remote on a real S3-compatible server, and no credentials anywhere
    url = f"s3://{s3_server.bucket}/doctor"
    dvcstore.add_s3_remote(project, "s3", url, endpoint_url=s3_server.endpoint)
    remote = by_name(check_dvc(project))["remote s3"]
    assert remote.status == FAIL and "credentials not set" in remote.detail
    assert "AWS_SECRET_ACCESS_KEY" in remote.hint
    # when the keys are in the environment, it answers
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.secret)
    remote = by_name(check_dvc(project))["remote s3"]
    assert remote.status == OK and "credentials set" in remote.detail
    # and with a wrong secret the server refuses
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.secret[::-1])
    remote = by_name(check_dvc(project))["remote s3"]
    assert remote.status == FAIL and "refused" in remote.detail
    # and no output of the command holds a key, whichever way it prints
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.secret)
    for extra in ([], ["--json"]):
        main(["doctor", "--project", str(project), "--no-models", *extra])
        printed = capsys.readouterr()
        assert s3_server.secret not in printed.out + printed.err
        assert s3_server.key not in printed.out + printed.err


@pytest.mark.slow
def test_the_prefect_api_of_a_running_server_answers(prefect_harness, clean_env) -> None:
    check = check_prefect()
    assert check.status == OK and "answers" in check.detail
