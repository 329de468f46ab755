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

from .helpers import Child

StartChild = Callable[..., Child]
SYNCHRONOUS = ["normal", "full"]


@pytest.fixture
def backend() -> str:
    """These tests are about SQLite's lock file (the shared ones are in ``test_processes.py``)."""
    return "sqlite"


@pytest.fixture
def run_in(db_path: Path) -> str:
    """A run that exists before any child starts."""
    with SQLiteEventLog(db_path) as log:
        log.create_run("r", "wf", {}, 1.0)
    return "r"


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
