"""`eul demo`'s Prefect: a server on a SQLite database inside the demo folder, started only
when a flow has to run, so that `prefect server start` (the command the summary prints)
shows the runs later; and the flows, run as `python -m flows` in the demo folder (which
holds its own copy of flows/ and tasks/), against that server."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from eul.cli.demo_project import PREFECT_DIR, DemoError
from eul.runtime.environment import tool_variables
from eul.runtime.servers import free_port


def prefect_database_url(home: Path) -> str:
    return f"sqlite+aiosqlite:///{home / 'prefect.db'}"


@contextmanager
def local_prefect(home: Path) -> Iterator[str]:
    """A Prefect server on the SQLite database in `home`, for the flows run inside the
    block; yields its API URL. Made the way Prefect's own test harness makes its
    server, except that the database stays, for `prefect server start` to show later."""
    import prefect.context
    import prefect.settings
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker
    from prefect.server.api.server import SubprocessASGIServer

    home.mkdir(parents=True, exist_ok=True)
    database = {
        prefect.settings.PREFECT_HOME: str(home),
        prefect.settings.PREFECT_SERVER_DATABASE_CONNECTION_URL: prefect_database_url(home),
        prefect.settings.PREFECT_SERVER_ANALYTICS_ENABLED: False,
    }
    with prefect.settings.temporary_settings(updates=database):
        server = SubprocessASGIServer(port=free_port())
        server.start(timeout=120)
        try:
            with (
                prefect.settings.temporary_settings(
                    updates={prefect.settings.PREFECT_API_URL: server.api_url}
                ),
                # threads without a settings context of their own (Prefect's log and event
                # workers) read the process-global one: point it at this server too
                prefect.context._temporary_global_settings_context(
                    prefect.context.get_settings_context()
                ),
            ):
                yield server.api_url
                # the runs' last logs and events reach the server before it stops
                with contextlib.suppress(RuntimeError):
                    APILogWorker.instance().drain()
                EventsWorker.drain_all()
        finally:
            server.stop()


def create_global_limit(name: str, limit: int) -> None:
    """`prefect global-concurrency-limit create NAME --limit LIMIT`, unless it exists (the
    flows that move the production alias hold `eul-model`, as prefect.yaml sets up)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.exceptions import ObjectAlreadyExists

    with get_client(sync_client=True) as client, contextlib.suppress(ObjectAlreadyExists):
        client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=limit))


def run_flow(
    root: Path, api_url: str, flow: str, options: list[str], echo: Callable[[str], None]
) -> dict[str, Any]:
    """`python -m flows FLOW` on the project `root`, run there, against the Prefect server at
    `api_url`; the result it prints as its last line. Prefect's logs (stderr) come through as
    they are, any other line it prints through `echo`."""
    command = [sys.executable, "-m", "flows", flow, "--project-dir", str(root)]
    command += ["--params-file", "params.yaml", *options]
    env = {
        **os.environ,
        **tool_variables(),
        "PREFECT_API_URL": api_url,
        "PREFECT_HOME": str(root / PREFECT_DIR),
    }
    last = ""
    with subprocess.Popen(command, cwd=root, env=env, stdout=subprocess.PIPE, text=True) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            if last.strip():
                echo(last.rstrip("\n"))
            last = line
    try:
        result = json.loads(last)
    except ValueError:
        result = None
    if proc.returncode != 0 or not isinstance(result, dict):
        error = result.get("error") if isinstance(result, dict) else None
        raise DemoError(
            error or f"`python -m flows {flow}` failed (exit {proc.returncode}); see its output"
        )
    return result
