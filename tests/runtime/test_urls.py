"""URLs shown in messages never carry a password."""

from eul.pipeline.probes import mlflow_problem
from eul.runtime.servers import free_port
from eul.runtime.urls import redacted, shown_url
from eul.stores.registry.settings import TrackingSettings


def test_the_password_of_a_url_is_hidden_and_the_rest_kept():
    url = "postgresql+psycopg://mlflow:s3cr%40t@db.example.org:5432/mlflow"
    assert shown_url(url) == "postgresql+psycopg://mlflow:***@db.example.org:5432/mlflow"
    assert shown_url("sqlite:///state/mlflow.db") == "sqlite:///state/mlflow.db"
    assert shown_url("https://ghp_token123@host/x") == "https://***@host/x"


def test_an_unreachable_tracking_server_is_reported_without_its_password():
    uri = f"http://alice:hunter2-secret@127.0.0.1:{free_port()}"
    problem, _ = mlflow_problem(uri, timeout=1.0)
    assert "hunter2-secret" not in problem and "alice:***@127.0.0.1" in problem
    assert "hunter2" not in TrackingSettings(tracking_uri=uri).shown_uri


def test_text_loses_every_url_password_and_known_key(monkeypatch, tmp_path):
    # Given S3 keys in the environment and in DVC's config.local
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAEXAMPLEKEYID")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG")
    (tmp_path / ".dvc").mkdir()
    (tmp_path / ".dvc" / "config.local").write_text(
        "['remote \"s3\"']\n    secret_access_key = local-only-secret\n"
    )
    text = (
        "upload to s3://bucket failed for AKIAEXAMPLEKEYID (wJalrXUtnFEMI/K7MDENG); "
        "log at postgresql://eul:pg-pass@db:5432/log, local key local-only-secret"
    )
    # When the text is redacted
    shown = redacted(text, root=tmp_path)
    # Then no credential is left and the rest reads the same
    for secret in ("AKIAEXAMPLEKEYID", "wJalrXUtnFEMI/K7MDENG", "pg-pass", "local-only-secret"):
        assert secret not in shown
    assert shown.startswith("upload to s3://bucket failed for *** (***)")
    assert "postgresql://eul:***@db:5432/log" in shown
    # And without a project root, config.local is not read
    assert "local-only-secret" in redacted(text)


def test_a_failed_command_prints_its_error_without_keys(monkeypatch, capsys):
    from eul.cli.errors import run_reported
    from eul.pipeline.context import PipelineError

    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "topsecretvalue99")

    def command() -> int:
        raise PipelineError("the remote refused key topsecretvalue99 at http://u:pw9@h/x")

    assert run_reported(command) == 1
    err = capsys.readouterr().err
    assert "topsecretvalue99" not in err and "pw9" not in err
    assert "eul: error: the remote refused key *** at http://u:***@h/x" in err
