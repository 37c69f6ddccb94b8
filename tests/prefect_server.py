"""A real Prefect server for the tests that deploy or run flows against one (not the in-process
test harness): `prefect server start` on a free loopback port, with a home of its own and its
database in that home (SQLite) or on PostgreSQL."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from eul.runtime.servers import free_port, start_prefect_server, stop


@contextmanager
def running_prefect_server(
    home: Path, database_url: str | None = None, timeout_s: float = 90
) -> Iterator[dict[str, str]]:
    """A Prefect server whose home (and SQLite database) is `home`, or whose database is
    `database_url` (``postgresql+asyncpg://...``); yields the environment for clients (CLI
    calls, workers) and stops the server by its PID. Its log is `home`.log."""
    port = free_port()
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "PREFECT_WORKER_QUERY_SECONDS": "2",
    }
    if database_url is not None:
        env["PREFECT_API_DATABASE_CONNECTION_URL"] = database_url
    with home.with_suffix(".log").open("w") as log:
        server = start_prefect_server(env, log, port, timeout_s=timeout_s)
        try:
            yield env
        finally:
            stop(server)
