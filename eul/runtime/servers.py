"""Servers started on loopback for a run (a Prefect API, an S3 endpoint): a free port,
waiting until one answers, and stopping it by its process."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO

PREFECT = str(Path(sys.executable).parent / "prefect")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_up(
    proc: subprocess.Popen, answers: Callable[[], bool], timeout_s: float, what: str, poll_s: float
) -> None:
    """Return once `answers()` is true; raise if `proc` exits or `timeout_s` passes first
    (the process is left for the caller to stop)."""
    deadline = time.monotonic() + timeout_s
    while not answers():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not start") from None
        time.sleep(poll_s)


def port_open(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
    except OSError:
        return False
    return True


def answers(url: str) -> bool:
    """Whether `url` answers an HTTP GET (a server's health page, say)."""
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except OSError:
        return False


def prefect_healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=2):
            return True
    except OSError:
        return False


def start_prefect_server(
    env: Mapping[str, str], log: IO[str], port: int, timeout_s: float = 120
) -> subprocess.Popen:
    """`prefect server start` on 127.0.0.1:`port`, returned once its API answers."""
    server = subprocess.Popen(
        [PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=dict(env),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_until_up(server, lambda: prefect_healthy(port), timeout_s, "the Prefect server", 0.5)
    except RuntimeError:
        stop(server)
        raise
    return server


def stop(proc: subprocess.Popen, timeout_s: float = 20) -> None:
    """Terminate, and kill what does not exit within `timeout_s`."""
    proc.terminate()
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
