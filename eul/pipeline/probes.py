"""Quick probes of the stores the pipeline needs, shared by the flows' parameter checks
(`eul.pipeline.checks`), the command line and `eul doctor`: one line of what is wrong and
its fix, in seconds (MLflow's own client retries an unreachable server for minutes)."""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from pathlib import Path

from eul.runtime.urls import shown_url

TIMEOUT_S = 5.0
SQLITE_PREFIX = "sqlite:///"
SQLITE_MAGIC = b"SQLite format 3\x00"


def first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def nearest_existing(path: Path) -> Path:
    path = path.resolve()
    while not path.exists():
        path = path.parent
    return path


def creatable(path: Path) -> bool:
    """Whether `path` (absent) could be made: its nearest existing ancestor is a writable
    folder."""
    parent = nearest_existing(path.parent)
    return parent.is_dir() and os.access(parent, os.W_OK | os.X_OK)


def http_problem(url: str, timeout: float = TIMEOUT_S, token: str | None = None) -> str | None:
    """Why a GET of `url` fails (refused, timed out, an HTTP error), or None if it answers."""
    request = urllib.request.Request(url, method="GET")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            response.read(256)
    except urllib.error.HTTPError as err:
        return f"answers HTTP {err.code} {err.reason}"
    except urllib.error.URLError as err:
        reason = err.reason
        text = getattr(reason, "strerror", None) or str(reason)
        return f"does not answer ({text.lower()})"
    except TimeoutError:
        return f"does not answer within {timeout:g} s"
    except (ValueError, OSError) as err:
        return f"cannot be reached ({first_line(err)})"
    return None


def mlflow_problem(tracking_uri: str, timeout: float = TIMEOUT_S) -> tuple[str, str] | None:
    """What is wrong with the MLflow tracking URI and its fix, or None when nothing is.

    Quick on purpose: MLflow's own client retries an unreachable server for minutes.
    SQLite: the file is an SQLite database, or absent under a folder that can be made.
    HTTP(S): the server's /health answers. Other stores (a database URL) are not probed.
    """
    fix = "point MLFLOW_TRACKING_URI or registry.tracking_uri in params.yaml at it"
    if tracking_uri.startswith(SQLITE_PREFIX):
        path = Path(tracking_uri[len(SQLITE_PREFIX) :])
        if path.is_dir():
            return f"the MLflow store {path} is a folder, not an SQLite file", fix
        if not path.exists():
            return None if creatable(path) else (f"cannot create the MLflow store {path}", fix)
        with path.open("rb") as handle:
            head = handle.read(len(SQLITE_MAGIC))
        if head and head != SQLITE_MAGIC:
            return f"the MLflow store {path} is not an SQLite database", fix
        return None
    if tracking_uri.startswith(("http://", "https://")):
        problem = http_problem(tracking_uri.rstrip("/") + "/health", timeout)
        if problem:
            return f"the MLflow server at {shown_url(tracking_uri)} {problem}", f"start it or {fix}"
    return None
