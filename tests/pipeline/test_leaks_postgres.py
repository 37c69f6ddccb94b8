"""The leak scan reads a Prefect server's database on PostgreSQL, named as the server takes
it (``postgresql+asyncpg://``), through the synchronous driver eul installs (psycopg2)."""

from __future__ import annotations

import pytest
from postgres import with_driver
from sqlalchemy import create_engine, text
from test_leaks import LINE, _scan

from eul.pipeline.leak_reading import sync_database_url
from eul.runtime.urls import shown_url


def test_async_drivers_are_read_with_the_installed_synchronous_ones():
    assert sync_database_url("postgresql+asyncpg://u:pw@db/prefect") == (
        "postgresql+psycopg2://u:pw@db/prefect"
    )
    assert sync_database_url("sqlite+aiosqlite:////h/prefect.db") == "sqlite:////h/prefect.db"
    assert sync_database_url("postgresql+psycopg2://db/x") == "postgresql+psycopg2://db/x"


# Two tables that refer to each other, as Prefect's flow_run and flow_run_state do.
SCHEMA = """
CREATE TABLE flow_run (id serial PRIMARY KEY, parameters text, state_id int);
CREATE TABLE flow_run_state (id serial PRIMARY KEY, flow_run_id int REFERENCES flow_run);
ALTER TABLE flow_run ADD FOREIGN KEY (state_id) REFERENCES flow_run_state;
"""


@pytest.mark.filterwarnings("error::sqlalchemy.exc.SAWarning")
def test_a_prefect_database_on_postgresql_is_read_value_by_value(
    tmp_path, monkeypatch, postgres_url
):
    # given Prefect's database on PostgreSQL holding the purged row in a text column
    engine = create_engine(with_driver(postgres_url, "postgresql+psycopg2"))
    with engine.begin() as conn:
        conn.exec_driver_sql(SCHEMA)
        conn.execute(text("INSERT INTO flow_run (parameters) VALUES (:p)"), {"p": LINE})
    engine.dispose()
    prefect_url = with_driver(postgres_url, "postgresql+asyncpg")
    monkeypatch.setenv("PREFECT_SERVER_DATABASE_CONNECTION_URL", prefect_url)
    root = tmp_path / "project"
    (root / "state").mkdir(parents=True)
    places = {"temp": tmp_path / "t", "prefect": tmp_path / "p", "datasets": tmp_path / "d"}
    # when the project is scanned
    report = _scan(root, places, monkeypatch).store("prefect-db")
    # then the database was read (no error, tables in a cycle too) and the row found by its
    # text and its keyed hash
    assert report.error is None
    assert report.text_hits == (f"{shown_url(prefect_url)}#flow_run.parameters",)
    assert report.keyed_hits == report.text_hits
