"""The log's database: URL parsing, engine creation, and the read and write transactions.

SQLite (the default) runs in WAL mode with a busy timeout, and every write transaction starts
with ``BEGIN IMMEDIATE``, so concurrent writers queue for the lock and the chain head is read
and extended atomically. Other SQLAlchemy databases serialise writers with ``SELECT ... FOR
UPDATE`` on the one-row head table.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, func, select
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DatabaseError, IntegrityError
from sqlalchemy.pool import StaticPool

from eul.stores.log.config import URL_ENV
from eul.stores.log.schema import (
    GENESIS_HASH,
    LedgerError,
    LedgerUnavailable,
    head_table,
    metadata,
)

BUSY_TIMEOUT_S = 60.0
# The PostgreSQL advisory lock openers creating the schema take: any fixed number, the same
# in every process (advisory locks are per database).
SCHEMA_LOCK_KEY = 0x65756C6C6F67  # "eullog"


def enable_wal(cursor: Any, timeout_s: float) -> None:
    """Put the SQLite file in WAL mode (stored in the file: once is enough).

    Switching needs the file to itself, and SQLite answers "locked" at once, without its
    busy wait, while another process is opening a new log too: retry until the timeout.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if str(cursor.execute("PRAGMA journal_mode").fetchone()[0]).lower() == "wal":
                return
            cursor.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as err:
            message = str(err)
            if ("locked" not in message and "busy" not in message) or (time.monotonic() > deadline):
                raise
            time.sleep(0.01)


def parse_url(resolved: str) -> URL:
    """The SQLAlchemy URL, or LedgerError (with any password hidden) when it is not one."""
    try:
        return make_url(resolved)
    except ArgumentError as err:
        shown = resolved if "@" not in resolved else "***@" + resolved.rsplit("@", 1)[1]
        raise LedgerError(
            f"bad log URL {shown!r}: use an SQLAlchemy URL such as "
            f"sqlite:///state/deletion-log.sqlite (--log-url, ${URL_ENV} or log.url)"
        ) from err


def _sqlite_engine(parsed: URL, busy_timeout_s: float) -> Engine:
    """An SQLite engine in WAL mode (for a file) whose transactions SQLAlchemy begins."""
    database = parsed.database or ""
    in_memory = database in ("", ":memory:") or "mode=memory" in database
    if in_memory:
        engine = create_engine(
            parsed, poolclass=StaticPool, connect_args={"check_same_thread": False}
        )
    else:
        if not database.startswith("file:"):
            Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(parsed, connect_args={"timeout": busy_timeout_s})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's BEGIN below, not the driver, open transactions.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
        if not in_memory:
            enable_wal(cursor, busy_timeout_s)
        cursor.execute("PRAGMA synchronous = FULL")
        # A raw subject id replaced by its keyed value leaves no copy in freed space.
        cursor.execute("PRAGMA secure_delete = ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        mode = conn.get_execution_options().get("eul_begin", "DEFERRED")
        conn.exec_driver_sql(f"BEGIN {mode}")

    return engine


class Database:
    """One log database: its engine, and transactions that report a database that cannot be
    used as :class:`LedgerUnavailable`."""

    def __init__(self, resolved_url: str, busy_timeout_s: float = BUSY_TIMEOUT_S) -> None:
        parsed = parse_url(resolved_url)
        self.url = parsed.render_as_string(hide_password=True)
        self.is_sqlite = parsed.get_backend_name() == "sqlite"
        self.engine = self._create_engine(parsed, busy_timeout_s)

    def _create_engine(self, parsed: URL, busy_timeout_s: float) -> Engine:
        if self.is_sqlite:
            return _sqlite_engine(parsed, busy_timeout_s)
        try:
            return create_engine(parsed, pool_pre_ping=True)
        except ModuleNotFoundError as err:
            hint = f"install it (pip install {err.name})"
            if parsed.get_backend_name() == "postgresql":
                # SQLAlchemy 2.1 reads a bare postgresql:// as psycopg 3; eul installs psycopg2
                hint += " or name the driver eul installs: postgresql+psycopg2://..."
            raise LedgerUnavailable(
                f"cannot open the log at {self.url}: its driver {err.name!r} is not "
                f"installed; {hint}"
            ) from err
        except Exception as err:  # a bad option
            raise LedgerUnavailable(f"cannot open the log at {self.url}: {err}") from err

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """A write transaction holding the write lock from its first statement."""
        try:
            with self.engine.connect() as conn:
                conn.execution_options(eul_begin="IMMEDIATE")
                with conn.begin():
                    yield conn
        except IntegrityError:
            raise
        except DatabaseError as err:  # locked, unreachable, or not a database at all
            raise self._db_error(err) from err

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A read transaction: one consistent snapshot of the log, no lock on writers."""
        try:
            with self.engine.connect() as conn:
                if self.engine.dialect.name in ("postgresql", "mysql", "mariadb"):
                    # One snapshot for every statement (SQLite's read transactions are one).
                    conn.execution_options(isolation_level="REPEATABLE READ")
                with conn.begin():
                    yield conn
        except IntegrityError:
            raise
        except DatabaseError as err:  # locked, unreachable, or not a database at all
            raise self._db_error(err) from err

    def _db_error(self, err: DatabaseError) -> LedgerError:
        message = str(err.orig).splitlines()[0] if err.orig else str(err).splitlines()[0]
        if "locked" in message or "busy" in message:
            return LedgerUnavailable(
                f"the log at {self.url} stayed locked by another writer; retry"
            )
        return LedgerUnavailable(f"cannot use the log at {self.url}: {message}")

    def create_schema(self) -> None:
        """Create the tables, the index on lower(request_id) and the head row (at the genesis
        hash) where they are missing.

        Processes that open a new log at once queue here: SQLite's write lock does it; on
        PostgreSQL, where CREATE TABLE takes no lock a second creator waits for, a
        transaction-scoped advisory lock does (without it, the second creator fails once the
        first commits: duplicate key in pg_type).
        """
        with self.write() as conn:
            if self.engine.dialect.name == "postgresql":
                conn.execute(select(func.pg_advisory_xact_lock(SCHEMA_LOCK_KEY)))
            metadata.create_all(conn)
            if conn.engine.dialect.name in ("sqlite", "postgresql"):
                # Submission looks request ids up case-insensitively (ids equal but for case
                # are refused); an index on the expression keeps that one lookup a search.
                conn.exec_driver_sql(
                    "CREATE INDEX IF NOT EXISTS ix_ledger_requests_lower_request_id "
                    "ON ledger_requests (lower(request_id))"
                )
            if conn.execute(select(head_table.c.id)).first() is None:
                conn.execute(head_table.insert().values(id=1, seq=0, hash=GENESIS_HASH))

    def rewrite_file(self) -> None:
        """Rebuild the log's storage so that values a rewrite replaced are no longer in its
        bytes: SQLite's file (VACUUM) with its WAL emptied; on PostgreSQL the log's tables
        (VACUUM FULL: the old row versions stay in their pages until a table is rewritten;
        the server's WAL and backups are beyond its reach). Other databases: nothing."""
        if self.engine.dialect.name == "postgresql":
            self._vacuum_full()
            return
        if not self.is_sqlite:
            return
        raw = self.engine.raw_connection()  # outside any transaction: VACUUM needs that
        try:
            cursor = raw.cursor()
            cursor.execute("VACUUM")
            cursor.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            cursor.close()
        except sqlite3.DatabaseError as err:
            raise LedgerUnavailable(f"cannot rewrite the log at {self.url}: {err}") from err
        finally:
            raw.close()

    def _vacuum_full(self) -> None:
        """PostgreSQL: VACUUM FULL the log's tables (outside a transaction, as it must be)."""
        tables = ", ".join(table.name for table in metadata.sorted_tables)
        try:
            with self.engine.connect() as conn:
                conn.execution_options(isolation_level="AUTOCOMMIT")
                conn.exec_driver_sql(f"VACUUM FULL {tables}")
        except DatabaseError as err:
            raise self._db_error(err) from err

    def close(self) -> None:
        self.engine.dispose()
