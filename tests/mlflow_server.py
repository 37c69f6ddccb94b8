"""A real `mlflow server` for the tests that read versions and runs back through its REST
API: a free loopback port, a backend store of the caller's, stopped by its PID."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from eul.runtime.servers import answers, free_port, stop, wait_until_up


@contextmanager
def running_mlflow_server(backend_uri: str, root: Path, timeout_s: float = 120) -> Iterator[str]:
    """`mlflow server --backend-store-uri backend_uri` (served artifacts under `root`); yields
    its URL. Its log is `root`/mlflow-server.log."""
    port = free_port()
    mlflow = str(Path(sys.executable).parent / "mlflow")
    root.mkdir(parents=True, exist_ok=True)
    log = (root / "mlflow-server.log").open("w")
    server = subprocess.Popen(
        [mlflow, "server", "--backend-store-uri", backend_uri,
         "--artifacts-destination", str(root / "served"),
         "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        # (no job runner: its worker processes are not needed here and outlive the server)
        env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true",
             "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until_up(server, lambda: answers(f"{url}/health"), timeout_s, "mlflow server", 0.2)
        yield url
    finally:
        stop(server, timeout_s=10)
        with contextlib.suppress(ProcessLookupError):  # anything it started, in its session
            os.killpg(server.pid, signal.SIGKILL)
        log.close()
