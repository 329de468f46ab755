"""Both event stores across real processes, killed with real signals.

What a crashed or concurrent orchestrator may rely on, whatever the store: a
flushed row survives kill -9 and an unflushed one dies with it; readers see
whole flushes; several processes share one store; a lease ends with its block,
and a killed holder's lease passes on (SQLite: at once; PostgreSQL: when it lapses).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from stormproof.errors import RunLocked

from .conftest import OpenLog
from .helpers import Child, event

StartChild = Callable[..., Child]
#: SQLite in both durability modes (power loss aside, both must keep every flushed row), and
#: PostgreSQL (durability is the server's).
DURABILITY = pytest.mark.parametrize(
    ("backend", "synchronous"),
    [("sqlite", "normal"), ("sqlite", "full"), ("postgresql", "full")],
)


@pytest.fixture
def run_in(open_log: OpenLog) -> str:
    """A run that exists before any child starts."""
    with open_log() as log:
        log.create_run("r", "wf", {}, 1.0)
    return "r"


@DURABILITY
def test_rows_appended_but_not_flushed_die_with_a_killed_driver(
    open_log: OpenLog, run_in: str, child: StartChild, synchronous: str
) -> None:
    driver = child(
        """
        log.append("r", [event(), decision(), decision()])
        say("appended")
        time.sleep(600)
        """,
        synchronous,
    )
    assert driver.line() == "appended"
    driver.kill_9()
    with open_log() as log:
        assert list(log.read("r")) == []


@DURABILITY
def test_every_flushed_row_survives_kill_9(
    open_log: OpenLog, run_in: str, child: StartChild, synchronous: str
) -> None:
    driver = child(
        """
        for i in range(100):
            log.append("r", [event(i=i), decision(), decision(), decision()])
            log.flush()
        log.append("r", [event(i="unflushed")])
        say("flushed")
        time.sleep(600)
        """,
        synchronous,
    )
    assert driver.line() == "flushed"
    driver.kill_9()
    with open_log() as log:
        rows = list(log.read("r"))
        assert [r.seq for r in rows] == list(range(1, 401))
        assert rows[-4].data == {"i": 99}
        assert [r.seq for r in log.append("r", [event()])] == [401]


def test_a_reader_in_another_process_sees_whole_flushes_while_the_driver_writes(
    open_log: OpenLog, run_in: str, child: StartChild
) -> None:
    """What ``stormproof status`` does: open, read everything, close — again and again."""
    writer = child(
        """
        say("writing")
        while True:
            log.append("r", [event(), decision(), decision(), decision()])
            log.flush()
        """
    )
    assert writer.line() == "writing"
    counts = []
    for _ in range(25):
        with open_log() as log:
            rows = list(log.read("r"))
        counts.append(len(rows))
        assert [r.seq for r in rows] == list(range(1, len(rows) + 1))
        assert len(rows) % 4 == 0, "a flush must be seen whole or not at all"
        assert all(r.cause == (r.seq - 1) // 4 * 4 + 1 for r in rows if r.category == "decision")
        time.sleep(0.01)
    writer.kill_9()
    assert counts == sorted(counts)
    assert counts[-1] > counts[0], "the writer should have progressed while we read"
    with open_log() as log:
        assert sum(1 for _ in log.read("r")) % 4 == 0


def test_the_lease_ends_with_the_block(
    open_log: OpenLog, run_in: str, child: StartChild, tmp_path: Path
) -> None:
    go = tmp_path / "go"
    holder = child(
        f"""
        go = Path({str(go)!r})
        with log.driver_lease("r"):
            say("holding")
            while not go.exists():
                time.sleep(0.01)
        say("released")
        time.sleep(600)
        """
    )
    assert holder.line() == "holding"
    with open_log() as log:
        assert log.is_driven("r")
        go.touch()
        assert holder.line() == "released"
        assert not log.is_driven("r")
        with log.driver_lease("r"):
            pass


def test_a_killed_holders_lease_passes_on_with_the_next_token(
    open_log: OpenLog, run_in: str, child: StartChild, backend: str
) -> None:
    """SQLite's lock ends with its holder's process; PostgreSQL's lease, which nobody renews
    any more, when it lapses (here after 1 s). Either way the next holder's token is higher."""
    holder = child(
        """
        with log.driver_lease("r") as lease:
            say(lease.token)
            time.sleep(600)
        """,
        lease_s=1.0,
    )
    token = int(holder.line())
    with open_log() as log:
        with pytest.raises(RunLocked) as caught, log.driver_lease("r"):
            pass
        assert caught.value.holder.pid == holder.pid  # type: ignore[attr-defined]
        holder.kill_9()
        killed = time.monotonic()
        if backend == "postgresql":
            assert log.is_driven("r"), "a lease lasts its time after its holder died"
            while log.is_driven("r"):
                assert time.monotonic() - killed < 5, "the lease should have lapsed"
                time.sleep(0.05)
        assert not log.is_driven("r")
        with log.driver_lease("r") as lease:
            assert lease.token == token + 1
            assert log.is_driven("r")


def test_a_cancel_posted_by_another_process_reaches_the_driver(
    open_log: OpenLog, run_in: str, child: StartChild
) -> None:
    with open_log() as log, log.driver_lease("r"):
        canceller = child('log.post_request("r", "cancel", 2.0)')
        canceller.wait_ok()
        assert log.take_requests("r") == ["cancel"]
        assert log.take_requests("r") == []


def test_processes_opening_a_fresh_home_at_once_all_succeed(
    open_log: OpenLog, child: StartChild
) -> None:
    openers = [
        child(
            f"""
            log.create_run("run-{i}", "wf", {{}}, 1.0)
            log.append("run-{i}", [event(), decision()])
            log.flush()
            """
        )
        for i in range(4)
    ]
    for opener in openers:
        opener.wait_ok()
    with open_log() as log:
        assert sorted(r.name for r in log.list_runs()) == [f"run-{i}" for i in range(4)]
        assert all(len(list(log.read(f"run-{i}"))) == 2 for i in range(4))


@DURABILITY
def test_drivers_of_two_runs_and_a_request_poster_write_one_file_at_once(
    open_log: OpenLog, child: StartChild, synchronous: str
) -> None:
    """Runs of one home share the file: every flush of each driver must wait its turn (the
    busy timeout), never fail with 'database is locked', whatever the interleaving."""
    with open_log() as log:
        for name in ("a", "b"):
            log.create_run(name, "wf", {}, 1.0)
    script = """
        run = sys.argv[3]
        say("ready")
        for i in range(1500):
            log.append(run, [event(i=i)] + [decision()] * (i % 7))
            log.flush()
            if i % 100 == 0:
                log.take_requests(run)
        say("done")
        """
    drivers = []
    for name in ("a", "b"):
        c = child(script.replace("sys.argv[3]", repr(name)), synchronous)
        drivers.append(c)
    for c in drivers:
        assert c.line() == "ready"
    with open_log() as log:
        for k in range(200):
            log.post_request("a" if k % 2 else "b", "noop", float(k))
    for c in drivers:
        assert c.line(60.0) == "done"
        c.wait_ok()
    with open_log() as log:
        for name in ("a", "b"):
            rows = list(log.read(name))
            assert len(rows) == sum(1 + i % 7 for i in range(1500))
            assert [r.seq for r in rows] == list(range(1, len(rows) + 1))
