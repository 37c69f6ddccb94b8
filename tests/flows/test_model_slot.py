"""The `eul-model` global concurrency limit every flow holds: created with one slot where the
Prefect server has none, so that holding it is never a silent no-op; refused when disabled."""

from __future__ import annotations

import os
import time

import pytest

for _name, _value in (
    ("DO_NOT_TRACK", "1"),
    ("PREFECT_SERVER_ANALYTICS_ENABLED", "false"),
    ("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "60"),
):
    os.environ.setdefault(_name, _value)

from eul.pipeline.context import MODEL_LIMIT, PipelineError  # noqa: E402


def _client():
    from prefect import get_client

    return get_client(sync_client=True)


def _delete_limit() -> None:
    from prefect.exceptions import ObjectNotFound

    with _client() as client:
        try:
            client.delete_global_concurrency_limit_by_name(MODEL_LIMIT)
        except ObjectNotFound:
            pass


def test_a_missing_model_limit_is_created_with_one_slot_and_held(prefect_harness):
    from prefect.concurrency.sync import concurrency

    from flows.batch import model_slot

    # given a Prefect server without the limit
    _delete_limit()
    # when a flow holds its slot
    with model_slot():
        # then the limit exists, with one slot, taken
        with _client() as client:
            limit = client.read_global_concurrency_limit_by_name(MODEL_LIMIT)
        assert (limit.limit, limit.active, limit.active_slots) == (1, True, 1)
        # and a second flow cannot take one meanwhile
        with pytest.raises(TimeoutError):
            with concurrency(MODEL_LIMIT, occupy=1, timeout_seconds=1, strict=True):
                pass
    # and the slot is free again afterwards, the limit kept
    with model_slot():
        pass
    _delete_limit()


def test_a_disabled_model_limit_is_refused(prefect_harness):
    from prefect.client.schemas.actions import (
        GlobalConcurrencyLimitCreate,
        GlobalConcurrencyLimitUpdate,
    )

    from flows.batch import model_slot

    # given the limit, disabled by an operator
    _delete_limit()
    with _client() as client:
        client.create_global_concurrency_limit(
            GlobalConcurrencyLimitCreate(name=MODEL_LIMIT, limit=1)
        )
        client.update_global_concurrency_limit(
            MODEL_LIMIT, GlobalConcurrencyLimitUpdate(active=False)
        )
    # when a flow would start, then it refuses to run unguarded, saying how to fix it
    with pytest.raises(PipelineError, match=f"prefect gcl enable {MODEL_LIMIT}"):
        with model_slot():
            pass
    _delete_limit()


def test_a_flow_waiting_for_the_slot_says_so_and_how_to_free_a_stale_one(prefect_harness):
    import logging
    import threading

    from flows.batch import model_slot

    # given one flow holding the slot, and a second asking for it meanwhile
    _delete_limit()
    warnings: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            warnings.append(record.getMessage())

    handler = Collect(level=logging.WARNING)
    logging.getLogger("prefect.eul").addHandler(handler)
    order: list[str] = []
    try:
        with model_slot():
            second = threading.Thread(target=_take_slot_after_notices, args=(order,))
            second.start()
            while not warnings:  # the second has waited one notice period
                time.sleep(0.2)
            order.append("first out")
        second.join(60)
    finally:
        logging.getLogger("prefect.eul").removeHandler(handler)
    # then it warned while it waited, naming the limit and the command that frees a stale slot,
    # and took the slot once the first released it
    assert order == ["first out", "second in"]
    assert f"waiting for the {MODEL_LIMIT!r} slot" in warnings[0]
    assert f"prefect gcl update {MODEL_LIMIT} --active-slots 0" in warnings[0]
    _delete_limit()


def _take_slot_after_notices(order: list[str]) -> None:
    from flows.batch import model_slot

    with model_slot(notice_s=1):
        order.append("second in")


@pytest.mark.reliability
def test_a_killed_flows_slot_is_free_again_after_its_short_lease(tmp_path):
    import signal
    import subprocess
    import sys
    from pathlib import Path

    from prefect_server import running_prefect_server

    from flows.batch import MODEL_SLOT_LEASE_S

    # given a flow process holding the `eul-model` slot of a Prefect server (whose sweep of
    # expired leases an ephemeral server lacks), killed without a chance to release it
    held = tmp_path / "held"
    holder = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from flows.batch import model_slot\n"
        "with model_slot():\n"
        "    Path(sys.argv[1]).write_text('held')\n"
        "    time.sleep(600)\n"
    )
    repo = Path(__file__).resolve().parents[2]
    with running_prefect_server(tmp_path / "home") as env:
        process = subprocess.Popen([sys.executable, "-c", holder, str(held)], cwd=repo, env=env)
        try:
            deadline = time.monotonic() + 120
            while not held.exists():
                assert process.poll() is None, "the holder stopped"
                assert time.monotonic() < deadline, "the holder never took the slot"
                time.sleep(0.2)
        finally:
            process.send_signal(signal.SIGKILL)
            process.wait()
        killed_at = time.monotonic()
        # when the next flow asks for the slot (a process of its own, as flows are), then
        # it gets it once the lease runs out: about a minute plus the server's sweep, not
        # Prefect's default five minutes
        taker = "from flows.batch import model_slot\nwith model_slot():\n    pass\n"
        subprocess.run([sys.executable, "-c", taker], cwd=repo, env=env, check=True, timeout=300)
        waited = time.monotonic() - killed_at
    assert waited < MODEL_SLOT_LEASE_S + 60, waited
