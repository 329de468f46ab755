"""Fixtures: the contract tests run against both stores, SQLite and a real PostgreSQL."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from stormproof.store.base import EventLog
from stormproof.store.sqlite import SQLiteEventLog

from ._postgres import PostgresServer, fresh_schema, start_server
from .helpers import Child, open_store

OpenLog = Callable[..., EventLog]


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """One real PostgreSQL for the session (each test gets a schema of its own)."""
    server = start_server()
    try:
        yield server
    finally:
        server.remove()


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "home" / "stormproof.db"


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def where(backend: str, db_path: Path, request: pytest.FixtureRequest) -> str:
    """The store of this test: an SQLite file, or a fresh schema of the session's server."""
    if backend == "sqlite":
        return str(db_path)
    server: PostgresServer = request.getfixturevalue("postgres")
    return server.url(fresh_schema(server))


@pytest.fixture
def open_log(where: str) -> Iterator[OpenLog]:
    """``open_log(lease_s=…)``: another instance on the same store, closed at the end."""
    opened: list[EventLog] = []

    def open_(**options: float | str) -> EventLog:
        opened.append(open_store(where, **options))  # type: ignore[arg-type]
        return opened[-1]

    yield open_
    for log in opened:
        with contextlib.suppress(Exception):
            log.close()


@pytest.fixture
def log(open_log: OpenLog) -> EventLog:
    return open_log()


@pytest.fixture
def sqlite_log(db_path: Path) -> Iterator[SQLiteEventLog]:
    with SQLiteEventLog(db_path) as store:
        yield store


@pytest.fixture
def child(where: str) -> Iterator[Callable[..., Child]]:
    """Start children against this test's store; whatever still runs at the end is killed."""
    started: list[Child] = []

    def start(script: str, synchronous: str = "full", lease_s: float = 30.0) -> Child:
        started.append(Child(script, where, synchronous, lease_s))
        return started[-1]

    yield start
    for c in started:
        c.cleanup()
