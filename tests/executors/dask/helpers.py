"""Driving a ``DaskExecutor`` directly against the test cluster (no driver, no core)."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from stormproof.core.events import (
    AttemptExited,
    AttemptLost,
    AttemptPreempted,
    AttemptStarted,
    AttemptSubmitFailed,
    Event,
)
from stormproof.executors.base import AttemptJob
from stormproof.executors.dask import DaskExecutor
from tests.executors.dask._cluster import DaskCluster

FINAL = (AttemptExited, AttemptLost, AttemptPreempted, AttemptSubmitFailed)
NOTICE_S = 8.0


def options(cluster: DaskCluster, **extra: Any) -> dict[str, Any]:
    pools = {
        "spot": {"resource": "pool-spot", "notice_s": NOTICE_S},
        "ondemand": {"resource": "pool-ondemand", "notice_s": NOTICE_S},
    }
    return {"scheduler": cluster.address, "pools": pools, "connect_timeout_s": 10, **extra}


@contextlib.contextmanager
def executor(run_dir: Path, opts: Mapping[str, Any]) -> Iterator[DaskExecutor]:
    ex = DaskExecutor(run_dir, opts)
    try:
        ex.prepare()
        yield ex
    finally:
        ex.close(final=True)


def job(
    run_dir: Path,
    name: str,
    command: Sequence[str] | str,
    pool: str = "spot",
    env: Mapping[str, str] | None = None,
    number: int = 1,
    **fields: Any,
) -> AttemptJob:
    return AttemptJob(
        run="test",
        attempt_id=f"{name}/{number}",
        task_id=name,
        number=number,
        command=command,
        env=dict(env or {}),
        attempt_dir=run_dir / "tasks" / name / str(number),
        pool=pool,
        **fields,
    )


def collect(
    ex: DaskExecutor, until: Callable[[list[Event]], bool], timeout_s: float = 60.0
) -> list[Event]:
    events: list[Event] = []
    deadline = time.monotonic() + timeout_s
    while not until(events):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out; events so far: {events}")
        events += ex.poll(0.2)
    return events


def finals(events: Sequence[Event]) -> dict[str, Event]:
    return {e.attempt_id: e for e in events if isinstance(e, FINAL)}


def started(events: Sequence[Event]) -> dict[str, AttemptStarted]:
    return {e.attempt_id: e for e in events if isinstance(e, AttemptStarted)}


def run_to_end(ex: DaskExecutor, jobs: Sequence[AttemptJob], timeout_s: float = 60) -> list[Event]:
    for j in jobs:
        ex.submit(j)
    ids = {j.attempt_id for j in jobs}
    return collect(ex, lambda evs: ids <= finals(evs).keys(), timeout_s)


def wait_for(check: Callable[[], bool], timeout_s: float = 30.0, what: str = "a condition") -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def pid_alive(pid: int) -> bool:
    """Alive and not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return False
    return stat[stat.rfind(b")") + 2 :].split()[0] not in (b"Z", b"X")


def kill_pid_file(path: Path) -> None:
    with contextlib.suppress(OSError, ValueError):
        os.kill(int(path.read_text().split()[0]), signal.SIGKILL)
