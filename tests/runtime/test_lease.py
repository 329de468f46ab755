"""The driver's side of the lease: waiting for it, telling who holds it, renewing it on time."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from stormproof.errors import RunLocked
from stormproof.runtime.lease import RENEW_AFTER, hold_lease
from stormproof.store.base import LeaseHolder
from stormproof.store.sqlite import SQLiteEventLog
from tests.store._postgres import PostgresServer, fresh_schema, start_server


@pytest.fixture
def two_logs(tmp_path: Path) -> Iterator[tuple[SQLiteEventLog, SQLiteEventLog]]:
    with SQLiteEventLog(tmp_path / "db") as one, SQLiteEventLog(tmp_path / "db") as two:
        one.create_run("r", "wf", {}, 1.0)
        yield one, two


def test_a_second_driver_waits_is_told_who_holds_the_run_once_then_takes_it(
    two_logs: tuple[SQLiteEventLog, SQLiteEventLog],
) -> None:
    one, two = two_logs
    told: list[LeaseHolder] = []
    slept: list[float] = []
    with ExitStack() as first:
        held = first.enter_context(one.driver_lease("r"))

        def sleep(seconds: float) -> None:  # the holder lets go on the waiter's third nap
            slept.append(seconds)
            if len(slept) == 3:
                first.close()

        with hold_lease(two, "r", told.append, sleep=sleep) as keeper:
            assert keeper.token == held.token + 1
    assert [(h.pid, h.token, h.expires_in_s) for h in told] == [(os.getpid(), held.token, None)]
    assert len(slept) == 3


def test_without_a_waiter_a_held_run_is_refused_at_once(
    two_logs: tuple[SQLiteEventLog, SQLiteEventLog],
) -> None:
    one, two = two_logs
    with one.driver_lease("r"), pytest.raises(RunLocked), hold_lease(two, "r"):
        pass


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    server = start_server()
    try:
        yield server
    finally:
        server.remove()


def test_the_lease_is_renewed_once_a_third_of_it_has_passed_not_before(
    postgres: PostgresServer,
) -> None:
    """Real PostgreSQL leases of 3 s; the keeper's clock is ours, the server's is real."""
    from stormproof.store.postgres import PostgresEventLog

    url = postgres.url(fresh_schema(postgres))
    now = [100.0]
    with PostgresEventLog(url, lease_s=3.0) as holder, PostgresEventLog(url) as other:
        holder.create_run("r", "wf", {}, 1.0)

        def left_s() -> float:
            with pytest.raises(RunLocked) as caught, other.driver_lease("r"):
                pass
            assert isinstance(caught.value.holder, LeaseHolder)
            assert caught.value.holder.expires_in_s is not None
            return caught.value.holder.expires_in_s

        with hold_lease(holder, "r", clock=lambda: now[0]) as keeper:
            time.sleep(0.5)
            now[0] += 3.0 * RENEW_AFTER - 0.01
            keeper.keep()
            assert left_s() < 2.75, "renewed too early"
            now[0] += 0.01
            keeper.keep()
            assert left_s() > 2.75, "not renewed after a third of the lease"
        assert not other.is_driven("r")  # freed at the end of the block, not left to lapse
