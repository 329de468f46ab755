"""The PostgreSQL event log's own matters: its tables, its URL, its server going away."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from stormproof.errors import ConfigError, StoreFault, StormproofError
from stormproof.store.postgres import PostgresEventLog
from stormproof.store.postgres_server import SCHEMA_VERSION

from ._postgres import PostgresServer, fresh_schema, start_server
from .helpers import event


@pytest.fixture
def backend() -> str:
    return "postgresql"


def test_the_tables_live_in_the_schema_the_url_names(postgres: PostgresServer) -> None:
    a, b = fresh_schema(postgres), fresh_schema(postgres)
    with PostgresEventLog(postgres.url(a)) as one, PostgresEventLog(postgres.url(b)) as two:
        one.create_run("only-in-a", "wf", {}, 1.0)
        assert [r.name for r in one.list_runs()] == ["only-in-a"]
        assert two.list_runs() == []
    import psycopg

    with psycopg.connect(postgres.url()) as conn:
        tables = conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s",
            (a,),
        ).fetchall()
    assert sorted(t for (t,) in tables) == [
        "stormproof_info",
        "stormproof_leases",
        "stormproof_requests",
        "stormproof_results",
        "stormproof_rows",
        "stormproof_runs",
        "stormproof_task_views",
        "stormproof_views",
    ]


def test_a_newer_schema_asks_for_an_upgrade(postgres: PostgresServer, where: str) -> None:
    PostgresEventLog(where).close()
    schema = where.rsplit("%3D", 1)[1]
    postgres.execute(f"UPDATE {schema}.stormproof_info SET value = '99'")
    with pytest.raises(StormproofError, match=r"newer stormproof.*version 99.*pip install -U"):
        PostgresEventLog(where)
    assert SCHEMA_VERSION == 1


def test_rows_someone_else_wrote_are_a_clear_error(postgres: PostgresServer, where: str) -> None:
    with PostgresEventLog(where) as log:
        log.create_run("r", "wf", {}, 1.0)
        log.append("r", [event()])
        log.flush()
        schema = where.rsplit("%3D", 1)[1]
        postgres.execute(f"UPDATE {schema}.stormproof_rows SET data = 'not json'")
        with pytest.raises(StormproofError, match="stormproof_\\* tables hold something"):
            list(log.read("r"))


def test_the_url_is_shown_without_its_password_and_checked() -> None:
    with pytest.raises(ConfigError) as caught:
        PostgresEventLog("postgresql://me:s3cret@db/x?sslmode=sometimes&bogus=1")
    assert "s3cret" not in str(caught.value)
    assert str(caught.value).startswith("store: postgresql://me:***@db/x?")
    with pytest.raises(ValueError, match="more than 0 seconds"):
        PostgresEventLog("postgresql://db/x", lease_s=0)


@pytest.fixture
def own_server() -> Iterator[PostgresServer]:
    server = start_server()
    try:
        yield server
    finally:
        server.remove()


def test_the_server_going_away_is_a_fault_and_the_store_carries_on_once_it_is_back(
    own_server: PostgresServer,
) -> None:
    log = PostgresEventLog(own_server.url())
    try:
        log.create_run("r", "wf", {}, 1.0)
        log.append("r", [event("kept")])
        log.flush()
        own_server.stop()
        log.append("r", [event("waits")])
        with pytest.raises(StoreFault, match="lost the connection to PostgreSQL at"):
            log.flush()
        with pytest.raises(StoreFault, match=r"cannot reach PostgreSQL at .*start the server"):
            log.flush()  # the rows stay buffered, and the next call tries to connect again
        own_server.start()
        log.flush()  # same port, same data: the same instance carries on
        assert [r.kind for r in log.read("r")] == ["kept", "waits"]
        assert [r.seq for r in log.read("r")] == [1, 2]
    finally:
        log.close()
