"""A real PostgreSQL server for the tests that need one: each gets a database of its own,
created on the server and dropped after, and they skip with one line when the server does
not answer.

The server is $EUL_TEST_POSTGRES (an admin URL; default the local PostgreSQL 15 on
127.0.0.1:5432 with trust auth). Databases are named ``eul_test_<pid>_<random>`` so that
runs on the same server never meet.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pytest
from sqlalchemy.engine import URL, make_url

POSTGRES_ENV = "EUL_TEST_POSTGRES"
DEFAULT_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


def admin_url() -> URL:
    """The server the tests use, as an SQLAlchemy URL (its admin database)."""
    return make_url(os.environ.get(POSTGRES_ENV) or DEFAULT_ADMIN_URL)


def with_driver(url: str, driver: str) -> str:
    """`url` with another SQLAlchemy driver: ``postgresql+psycopg2``, ``postgresql+asyncpg``
    or plain ``postgresql`` (what MLflow takes)."""
    return make_url(url).set(drivername=driver).render_as_string(hide_password=False)


@dataclass(frozen=True)
class PostgresServer:
    """The reachable server: it creates and drops the tests' databases."""

    admin: URL

    @property
    def where(self) -> str:
        return f"{self.admin.host or 'localhost'}:{self.admin.port or 5432}"

    def _connect(self):
        import psycopg2

        url = self.admin
        return psycopg2.connect(
            host=url.host,
            port=url.port or 5432,
            user=url.username,
            password=url.password,
            dbname=url.database or "postgres",
            connect_timeout=5,
        )

    def _admin(self, *statements: tuple[str, tuple]) -> None:
        conn = self._connect()
        try:
            conn.autocommit = True  # CREATE and DROP DATABASE refuse a transaction
            with conn.cursor() as cursor:
                for sql, args in statements:
                    cursor.execute(sql, args)
        finally:
            conn.close()

    def create_database(self) -> str:
        """A new empty database; returns its URL (``postgresql://``, password kept)."""
        name = f"eul_test_{os.getpid()}_{secrets.token_hex(4)}"
        self._admin((f'CREATE DATABASE "{name}"', ()))
        return self.admin.set(database=name).render_as_string(hide_password=False)

    def drop_database(self, url: str) -> None:
        """Drop the database of `url`, ending any connection a test left open to it."""
        name = make_url(url).database
        self._admin(
            (
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()",
                (name,),
            ),
            (f'DROP DATABASE IF EXISTS "{name}"', ()),
        )

    @contextmanager
    def database(self) -> Iterator[str]:
        """A fresh database for the block, dropped after it."""
        url = self.create_database()
        try:
            yield url
        finally:
            self.drop_database(url)


@pytest.fixture(scope="session")
def postgres_server() -> PostgresServer:
    """The PostgreSQL server, or a skip naming where it was looked for (never a password)."""
    server = PostgresServer(admin_url())
    try:
        server._admin(("SELECT 1", ()))
    except ModuleNotFoundError as err:
        pytest.skip(f"PostgreSQL driver missing: {err.name} (pip install -e '.[dev]')")
    except Exception as err:  # refused, timed out, bad credentials: all one skip
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        if server.admin.password:
            first = first.replace(server.admin.password, "***")
        pytest.skip(f"PostgreSQL not reachable at {server.where}: {first}")
    return server


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """A fresh database for the test (``postgresql://`` URL), dropped after it."""
    with postgres_server.database() as url:
        yield url


@pytest.fixture(scope="module")
def module_postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """A fresh database shared by the module's tests (for servers and schemas that take
    seconds to set up), dropped after the module."""
    with postgres_server.database() as url:
        yield url
