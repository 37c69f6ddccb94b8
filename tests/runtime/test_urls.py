"""URLs shown in messages never carry a password."""

from eul.pipeline.probes import mlflow_problem
from eul.runtime.servers import free_port
from eul.runtime.urls import shown_url
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
