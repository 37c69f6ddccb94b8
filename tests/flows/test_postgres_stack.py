"""The production set-up on PostgreSQL: a Prefect server whose database is PostgreSQL
(asyncpg), whose `eul-model` slot two clients take in turn, and one nightly batch with the
deletion log and MLflow on PostgreSQL too (psycopg2), reporting to that server. One server
serves the module: it takes some twenty seconds to start and migrate its database."""

from __future__ import annotations

import contextvars
import json
import threading
import time

import pytest
from conftest import unique_text_subjects
from postgres import with_driver
from prefect_server import running_prefect_server

from eul.pipeline.context import MODEL_LIMIT, load_context
from eul.stores.registry.tags import covered_request_ids
from eul.stores.registry.versions import PRODUCTION, get_alias_version, version_tags

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy"),
]


@pytest.fixture(scope="module")
def prefect_on_postgres(tmp_path_factory, postgres_server):
    """A Prefect server on a PostgreSQL database of its own, with the `eul-model` global
    concurrency limit (1) created as operations.md says; yields (API URL, database URL)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with postgres_server.database() as url:
        database = with_driver(url, "postgresql+asyncpg")
        home = tmp_path_factory.mktemp("prefect") / "home"
        with running_prefect_server(home, database, timeout_s=180) as env:
            api = env["PREFECT_API_URL"]
            with temporary_settings(updates={PREFECT_API_URL: api}):
                with get_client(sync_client=True) as client:
                    limit = GlobalConcurrencyLimitCreate(name=MODEL_LIMIT, limit=1)
                    client.create_global_concurrency_limit(limit)
            yield api, database


@pytest.fixture
def prefect_api(prefect_on_postgres):
    """Prefect calls of the test (flows, clients) go to the server on PostgreSQL."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    api, database = prefect_on_postgres
    _drain_prefect_services()
    with temporary_settings(updates={PREFECT_API_URL: api}):
        try:
            yield api, database
        finally:
            _drain_prefect_services()


def _drain_prefect_services() -> None:
    """Stop Prefect's background services: each keeps the client of the server it started
    with, and the session's other server (the test harness) may have started them. Their
    next use starts them again with the settings of the moment. Queued logs and events are
    sent first, as Prefect's test harness does before it stops its own server."""
    from prefect.concurrency.services import (
        ConcurrencySlotAcquisitionService,
        ConcurrencySlotAcquisitionWithLeaseService,
    )
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    for service in (
        APILogWorker,
        EventsWorker,
        ConcurrencySlotAcquisitionService,
        ConcurrencySlotAcquisitionWithLeaseService,
    ):
        service.drain_all()


def _model_limit():
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.read_global_concurrency_limit_by_name(MODEL_LIMIT)


def test_two_clients_take_the_model_slot_in_turn(prefect_api):
    from prefect.concurrency.sync import concurrency

    # given one client holding the `eul-model` slot, and a second asking for it meanwhile
    events: list[str] = []
    first_in, second_asks = threading.Event(), threading.Event()

    def first() -> None:
        with concurrency(MODEL_LIMIT, occupy=1, timeout_seconds=60, strict=True):
            events.append("first in")
            first_in.set()
            second_asks.wait(60)
            time.sleep(1)  # the second asks while this one holds the slot
            events.append("first out")

    def second() -> None:
        first_in.wait(60)
        events.append("second asks")
        second_asks.set()
        with concurrency(MODEL_LIMIT, occupy=1, timeout_seconds=60, strict=True):
            events.append("second in")

    # (each thread runs in a copy of this context: the settings naming the server)
    clients = [
        threading.Thread(target=contextvars.copy_context().run, args=(work,))
        for work in (first, second)
    ]
    for client in clients:
        client.start()
    for client in clients:
        client.join(120)
    # then the second got the slot only once the first released it, and both released it
    assert events == ["first in", "second asks", "first out", "second in"]
    limit = _model_limit()
    assert (limit.limit, limit.active_slots) == (1, 0)


def test_a_nightly_batch_with_the_log_mlflow_and_prefect_on_postgresql(
    flow_project, prefect_api, postgres_server, monkeypatch
):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName

    from flows.nightly import NAME as NIGHTLY
    from flows.nightly import nightly_deletion_batch

    _, prefect_database = prefect_api
    with postgres_server.database() as log_db, postgres_server.database() as mlflow_db:
        # given the project's log and MLflow on PostgreSQL databases of their own, and the
        # server's database named as a worker's environment does (the purge scans it)
        monkeypatch.setenv("EUL_LOG_URL", with_driver(log_db, "postgresql+psycopg2"))
        monkeypatch.setenv("MLFLOW_TRACKING_URI", with_driver(mlflow_db, "postgresql+psycopg2"))
        monkeypatch.setenv("PREFECT_API_DATABASE_CONNECTION_URL", prefect_database)
        ctx = load_context(flow_project)
        assert ctx.log_url.startswith("postgresql+psycopg2://")
        rows = (flow_project / "data/prepared/train.jsonl").read_text().splitlines()
        a, b = unique_text_subjects([json.loads(line) for line in rows])[:2]
        with ctx.ledger() as ledger:
            for request_id, subject in (("req-a", a), ("req-b", b), ("req-nobody", "s9999")):
                ledger.submit(subject_id=subject, request_id=request_id)
        # when the nightly batch runs, reporting to the server on PostgreSQL (the slots it
        # holds are read meanwhile)
        held, done = [], threading.Event()

        def watch_the_slot() -> None:
            while not done.wait(0.2):
                held.append(_model_limit().active_slots)

        watcher = threading.Thread(target=contextvars.copy_context().run, args=(watch_the_slot,))
        watcher.start()
        try:
            summary = nightly_deletion_batch(project_dir=str(flow_project))
        finally:
            done.set()
            watcher.join(30)
        # then the requests were deployed and purged, and the log verifies
        assert summary["outcome"] == "version 1 promoted to production"
        with ctx.ledger() as ledger:
            assert {s.request_id: s.status for s in ledger.list()} == {
                "req-a": "purged",
                "req-b": "purged",
                "req-nobody": "rejected",
            }
            assert ledger.verify().ok
            tags = version_tags(ctx.settings, 1)
            assert ledger.entry_at(int(tags["log_seq"])).hash == tags["log_hash"]
        # and MLflow on PostgreSQL holds production version 1, covering both requests
        assert get_alias_version(ctx.settings, PRODUCTION) == 1
        assert covered_request_ids(tags) == ["req-a", "req-b"]
        # and the server recorded the flow run as completed; the batch held its `eul-model`
        # slot there while it ran, and released it
        with get_client(sync_client=True) as client:
            runs = client.read_flow_runs(
                flow_filter=FlowFilter(name=FlowFilterName(any_=[NIGHTLY]))
            )
        assert [r.state.type.value for r in runs] == ["COMPLETED"]
        assert max(held) == 1 and _model_limit().active_slots == 0
