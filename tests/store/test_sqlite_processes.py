"""The SQLite event log across real processes, killed with real signals."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from stormproof.errors import RunLocked
from stormproof.store.sqlite import SQLiteEventLog

from .helpers import Child, event

StartChild = Callable[..., Child]
SYNCHRONOUS = ["normal", "full"]


@pytest.fixture
def run_in(db_path: Path) -> str:
    """A run that exists before any child starts."""
    with SQLiteEventLog(db_path) as log:
        log.create_run("r", "wf", {}, 1.0)
    return "r"


@pytest.mark.parametrize("synchronous", SYNCHRONOUS)
def test_rows_appended_but_not_flushed_die_with_a_killed_driver(
    db_path: Path, run_in: str, child: StartChild, synchronous: str
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
    with SQLiteEventLog(db_path) as log:
        assert list(log.read("r")) == []


@pytest.mark.parametrize("synchronous", SYNCHRONOUS)
def test_every_flushed_row_survives_kill_9(
    db_path: Path, run_in: str, child: StartChild, synchronous: str
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
    with SQLiteEventLog(db_path) as log:
        rows = list(log.read("r"))
        assert [r.seq for r in rows] == list(range(1, 401))
        assert rows[-4].data == {"i": 99}
        assert [r.seq for r in log.append("r", [event()])] == [401]


def test_a_reader_in_another_process_sees_whole_flushes_while_the_driver_writes(
    db_path: Path, run_in: str, child: StartChild
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
        with SQLiteEventLog(db_path) as log:
            rows = list(log.read("r"))
        counts.append(len(rows))
        assert [r.seq for r in rows] == list(range(1, len(rows) + 1))
        assert len(rows) % 4 == 0, "a flush must be seen whole or not at all"
        assert all(r.cause == (r.seq - 1) // 4 * 4 + 1 for r in rows if r.category == "decision")
        time.sleep(0.01)
    writer.kill_9()
    assert counts == sorted(counts)
    assert counts[-1] > counts[0], "the writer should have progressed while we read"
    with SQLiteEventLog(db_path) as log:
        assert sum(1 for _ in log.read("r")) % 4 == 0


def test_the_lease_excludes_another_process_until_it_is_killed(
    db_path: Path, run_in: str, child: StartChild
) -> None:
    holder = child(
        """
        with log.driver_lease("r"):
            say("holding")
            time.sleep(600)
        """
    )
    assert holder.line() == "holding"
    with SQLiteEventLog(db_path) as log:
        assert log.is_driven("r")
        with pytest.raises(RunLocked) as caught, log.driver_lease("r"):
            pass
        assert str(caught.value) == (
            f"run 'r' is being driven by another stormproof process (pid {holder.pid}); "
            "wait for it, or stop it first"
        )
        holder.kill_9()
        assert not log.is_driven("r")
        with log.driver_lease("r"):
            assert log.is_driven("r")
        assert not log.is_driven("r")


def test_the_lease_ends_with_the_block(db_path: Path, run_in: str, child: StartChild) -> None:
    go = db_path.with_suffix(".go")
    holder = child(
        """
        go = Path(sys.argv[1]).with_suffix(".go")
        with log.driver_lease("r"):
            say("holding")
            while not go.exists():
                time.sleep(0.01)
        say("released")
        time.sleep(600)
        """
    )
    assert holder.line() == "holding"
    with SQLiteEventLog(db_path) as log:
        assert log.is_driven("r")
        go.touch()
        assert holder.line() == "released"
        assert not log.is_driven("r")
        with log.driver_lease("r"):
            pass


def test_an_attempt_that_outlives_its_driver_does_not_keep_the_lease(
    db_path: Path, run_in: str, child: StartChild
) -> None:
    """Local attempts survive the orchestrator by design; the lease must not go with them."""
    driver = child(
        """
        with log.driver_lease("r"):
            attempt = subprocess.Popen(
                ["sleep", "600"], start_new_session=True, close_fds=False
            )
            say(attempt.pid)
            time.sleep(600)
        """
    )
    attempt_pid = int(driver.line())
    try:
        driver.kill_9()
        with SQLiteEventLog(db_path) as log:
            assert not log.is_driven("r")
            with log.driver_lease("r"):
                pass
    finally:
        os.kill(attempt_pid, signal.SIGKILL)


def test_is_driven_probes_never_make_a_starting_driver_fail(
    db_path: Path, run_in: str, child: StartChild
) -> None:
    """``stormproof status --watch`` probing the lease must not look like a driver to ``resume``."""
    prober = child(
        """
        say("probing")
        while True:
            log.is_driven("r")
        """
    )
    assert prober.line() == "probing"
    with SQLiteEventLog(db_path) as log:
        deadline = time.monotonic() + 0.5  # thousands of leases: without a remedy, dozens fail
        while time.monotonic() < deadline:
            with log.driver_lease("r"):
                pass
    prober.kill_9()


def test_a_cancel_posted_by_another_process_reaches_the_driver(
    db_path: Path, run_in: str, child: StartChild
) -> None:
    with SQLiteEventLog(db_path) as log, log.driver_lease("r"):
        canceller = child('log.post_request("r", "cancel", 2.0)')
        canceller.wait_ok()
        assert log.take_requests("r") == ["cancel"]
        assert log.take_requests("r") == []


def test_processes_opening_a_fresh_home_at_once_all_succeed(
    db_path: Path, child: StartChild
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
    with SQLiteEventLog(db_path) as log:
        assert sorted(r.name for r in log.list_runs()) == [f"run-{i}" for i in range(4)]
        assert all(len(list(log.read(f"run-{i}"))) == 2 for i in range(4))


@pytest.mark.parametrize("synchronous", SYNCHRONOUS)
def test_drivers_of_two_runs_and_a_request_poster_write_one_file_at_once(
    db_path: Path, child: StartChild, synchronous: str
) -> None:
    """Runs of one home share the file: every flush of each driver must wait its turn (the
    busy timeout), never fail with 'database is locked', whatever the interleaving."""
    with SQLiteEventLog(db_path) as log:
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
    with SQLiteEventLog(db_path) as log:
        for k in range(200):
            log.post_request("a" if k % 2 else "b", "noop", float(k))
    for c in drivers:
        assert c.line(60.0) == "done"
        c.wait_ok()
    with SQLiteEventLog(db_path) as log:
        for name in ("a", "b"):
            rows = list(log.read(name))
            assert len(rows) == sum(1 + i % 7 for i in range(1500))
            assert [r.seq for r in rows] == list(range(1, len(rows) + 1))
