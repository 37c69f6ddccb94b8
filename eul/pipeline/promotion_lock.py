"""The promotion lock: what makes promotion a compare-and-set.

Promotion reads the production alias, compares it with the version a batch was built on,
and moves it; two promotions doing that at once could both read the same production and
the later one silently replace the earlier (its requests then served by a version that
does not honour them). The lock is held around read -> compare -> move -> the log's marks.

It lives with the deletion log, which every flow of a project shares:

- PostgreSQL: a session advisory lock (`pg_try_advisory_lock`) on a connection of its
  own, keyed by the registered model's name. The server drops it when the connection goes,
  so a holder killed with SIGKILL leaves no stale lock.
- SQLite (a file on one machine): `flock` on a file next to the database file. The kernel
  drops it when the holder's process ends, however it ends; the file keeps the holder's
  pid, host and start time only to name them in the error when the lock is not free in
  time. An in-memory log, or another server database, locks a file in the working folder
  instead (which serialises the promotions of one machine only).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from eul.pipeline.context import Context, PipelineError

# A promotion holds the lock for seconds (tags, the alias, the log's marks); one waiting
# longer than this is stuck behind something else, and says so.
LOCK_TIMEOUT_S = 120.0
_POLL_S = 0.05


def _lock_key(model_name: str) -> int:
    """The advisory lock's key: a signed 64-bit number from the model's name."""
    digest = hashlib.sha256(f"eul-promotion:{model_name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def lock_path(ctx: Context) -> Path:
    """The lock file of a log that is not on PostgreSQL, one per registered model: next to
    an SQLite file, else in the working folder."""
    from sqlalchemy.engine import make_url

    name = hashlib.sha256(ctx.settings.model_name.encode()).hexdigest()[:12]
    url = make_url(ctx.log_url)
    database = url.database or ""
    in_memory = database in ("", ":memory:") or "mode=memory" in database
    if url.get_backend_name() != "sqlite" or in_memory or database.startswith("file:"):
        return ctx.workdir / f"promotion-{name}.lock"
    db = Path(database).expanduser()
    return db.with_name(f"{db.name}.promotion-{name}.lock")


def _holder() -> dict[str, Any]:
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "since": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


@contextmanager
def _file_lock(path: Path, timeout_s: float) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise PipelineError(
                        f"another promotion holds {path} ({_read_holder(path)}) for more than "
                        f"{timeout_s:.0f} s; rerun once it is done (the lock goes with its "
                        "process, so a killed one frees it)"
                    ) from None
                time.sleep(_POLL_S)
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(_holder()) + "\n").encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _read_holder(path: Path) -> str:
    try:
        holder = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return "holder unknown"
    if not holder:
        return "holder unknown"
    return f"pid {holder.get('pid')} on {holder.get('host')} since {holder.get('since')}"


@contextmanager
def _advisory_lock(url: str, key: int, timeout_s: float) -> Iterator[None]:
    from sqlalchemy import create_engine, text
    from sqlalchemy.pool import NullPool

    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            deadline = time.monotonic() + timeout_s
            while not conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar():
                conn.rollback()
                if time.monotonic() > deadline:
                    raise PipelineError(
                        f"another promotion holds the log database's promotion lock for more "
                        f"than {timeout_s:.0f} s; rerun once it is done"
                    )
                time.sleep(_POLL_S)
            conn.commit()  # a session lock outlives the transaction; end it, keep the lock
            try:
                yield
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                conn.commit()
    finally:
        engine.dispose()


@contextmanager
def promotion_lock(ctx: Context, timeout_s: float = LOCK_TIMEOUT_S) -> Iterator[None]:
    """Hold the project's promotion lock (one promotion at a time per registered model and
    deletion log); PipelineError when it is not free within `timeout_s`."""
    from sqlalchemy.engine import make_url

    if make_url(ctx.log_url).get_backend_name() == "postgresql":
        with _advisory_lock(ctx.log_url, _lock_key(ctx.settings.model_name), timeout_s):
            yield
    else:
        with _file_lock(lock_path(ctx), timeout_s):
            yield
