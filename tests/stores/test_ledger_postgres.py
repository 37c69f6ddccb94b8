"""The deletion log on PostgreSQL: ids equal but for case refused through the lower()
lookup (and its index), and verify() recomputing the current-state rows there too."""

from __future__ import annotations

import uuid

import pytest
from log_evidence import deploy, purge

from eul.stores.log.schema import LedgerError
from eul.stores.log.store import Ledger

psycopg2 = pytest.importorskip("psycopg2")

SERVER = {"host": "127.0.0.1", "port": 5432, "user": "postgres", "connect_timeout": 3}


def _admin():
    conn = psycopg2.connect(dbname="postgres", **SERVER)
    conn.autocommit = True
    return conn


@pytest.fixture
def pg_url():
    try:
        admin = _admin()
    except psycopg2.OperationalError:
        pytest.skip("no PostgreSQL at 127.0.0.1:5432 (user postgres)")
    name = f"eul_log_{uuid.uuid4().hex[:10]}"
    with admin.cursor() as cur:
        cur.execute(f"CREATE DATABASE {name}")
    try:
        yield f"postgresql+psycopg2://postgres@127.0.0.1:5432/{name}"
    finally:
        with admin.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.close()


def test_case_collisions_and_state_tampering_are_caught_on_postgresql(pg_url, tmp_path):
    with Ledger(pg_url, params_path=tmp_path / "x.yaml", evidence_key=b"k" * 32) as ledger:
        ledger.submit(subject_id="Alice.Smith", request_id="Req-A")
        ledger.submit(record_ids=["r9"], request_id="req-ids")
        with pytest.raises(LedgerError, match="'req-a' differs from 'Req-A' only in case"):
            ledger.submit(record_ids=["r1"], request_id="req-a")
        ledger.validate({"Alice.Smith": ["r1", "r2"], "x": ["r9"]})
        deploy(ledger, "Req-A")
        purge(ledger, "Req-A")
        assert ledger.verify().ok
        # the lookup has its index
        with ledger.engine.connect() as conn:
            indexes = conn.exec_driver_sql(
                "SELECT indexdef FROM pg_indexes WHERE tablename = 'ledger_requests'"
            ).all()
        assert any("lower((request_id)" in d for (d,) in indexes)
        with ledger.engine.begin() as conn:
            conn.exec_driver_sql(
                "UPDATE ledger_requests SET matched_ids = '[]' WHERE request_id = 'req-ids'"
            )
        report = ledger.verify()
    assert not report.ok
    assert "disagrees with the entries for req-ids: matched_ids" in report.reason
