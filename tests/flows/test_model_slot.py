"""The `eul-model` global concurrency limit every flow holds: created with one slot where the
Prefect server has none, so that holding it is never a silent no-op; refused when disabled."""

from __future__ import annotations

import os

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
