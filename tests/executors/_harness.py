"""Helpers for real-process tests of the local executor.

Every shim and attempt a test starts is killed and reaped at teardown. They are found through
the run's own journal (one line per shim start and per launch), so a failing test leaves no
strays behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stormproof.core.events import (
    AttemptDropped,
    AttemptExited,
    AttemptLost,
    AttemptSubmitFailed,
    Event,
)
from stormproof.executors._files import (
    ExitStatus,
    Layout,
    is_our_process,
    proc_start_ticks,
    read_journal,
)
from stormproof.executors.base import AttemptJob, Executor
from stormproof.executors.local import LocalExecutor

FINAL = (AttemptExited, AttemptLost, AttemptSubmitFailed, AttemptDropped)
PYTHON = sys.executable


@dataclass
class Harness:
    run_dir: Path
    executors: list[LocalExecutor] = field(default_factory=list)

    @property
    def layout(self) -> Layout:
        return Layout.for_run(self.run_dir)

    def executor(self, **options: Any) -> LocalExecutor:
        options.setdefault("idle_exit_s", 3.0)
        ex = LocalExecutor(self.run_dir, options)
        self.executors.append(ex)
        return ex

    def job(
        self, name: str, command: Sequence[str] | str, env: Mapping[str, str] | None = None
    ) -> AttemptJob:
        return AttemptJob(
            run="test",
            attempt_id=f"{name}/1",
            task_id=name,
            number=1,
            command=command,
            env=dict(env or {}),
            attempt_dir=self.run_dir / "attempts" / name / "1",
        )

    def shim_pid(self) -> int | None:
        try:
            pid = int(Path(self.layout.pid).read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        return pid if is_shim(pid) else None

    def journal(self) -> tuple[list[int], list[tuple[int, float]]]:
        """Pids of every shim started for this run, and (pid, spawn time) of every attempt."""
        shims: list[int] = []
        attempts: list[tuple[int, float]] = []
        with contextlib.suppress(FileNotFoundError):
            for line in Path(self.layout.journal).read_text().splitlines():
                item = json.loads(line)
                if item[0] == "B":
                    shims.append(int(item[2]))
                elif item[0] == "L":
                    attempts.append((int(item[2]), float(item[3])))
        return shims, attempts

    def keepers(self) -> list[int]:
        """Pids of the keepers of every shim started for this run."""
        with contextlib.suppress(FileNotFoundError):
            lines = Path(self.layout.journal).read_text().splitlines()
            items = [json.loads(line) for line in lines]
            return [int(i[3]) for i in items if i[0] == "B" and len(i) > 3 and i[3]]
        return []

    def status(self, job: AttemptJob) -> ExitStatus | None:
        """The exit status the run's journal holds for ``job``, if any (as a recovery reads it)."""
        record = read_journal(self.layout.journal).get(job.attempt_id)
        return None if record is None else record.status

    def cleanup(self) -> None:
        for ex in self.executors:
            ex.close()
        shims, attempts = self.journal()
        shims += self.keepers()
        for pid in shims:
            if is_shim(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        groups = [pid for pid, spawned in attempts if is_our_process(pid, spawned)]
        for pgid in groups:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGKILL)
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline:
            reap_zombie_children()  # orphans come to us (see set_subreaper)
            if not any(map(is_shim, shims)) and not any(map(group_exists, groups)):
                break
            time.sleep(0.01)


def kill_shim(harness: Harness) -> None:
    """``kill -9`` the run's shim and wait until it is gone."""
    pid = harness.shim_pid()
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    assert wait_gone(pid)


def keeper_pid(harness: Harness) -> int | None:
    """The keeper of the run's current shim (from the shim's line in the journal), if alive."""
    shim = harness.shim_pid()
    for line in reversed(Path(harness.layout.journal).read_text().splitlines()):
        item = json.loads(line)
        if item[0] == "B" and int(item[2]) == shim and len(item) > 3:
            return int(item[3]) if is_shim(int(item[3])) else None
    return None


def group_exists(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def reap_zombie_children() -> None:
    """Reap this process's children that have ended (orphans handed to us as subreaper)."""
    me = os.getpid()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_bytes()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2 :].split()
        if fields[0] == b"Z" and int(fields[1]) == me:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(int(entry), os.WNOHANG)


def set_subreaper(on: bool) -> None:
    """Make this process the reaper of orphaned descendants (shims, and attempts of killed shims).

    This container's pid 1 does not reap orphans, so killing a shim would leave its children
    as zombies for good. As their subreaper, the test process can reap them in ``cleanup``.
    """
    pr_set_child_subreaper = 36
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(pr_set_child_subreaper, int(on), 0, 0, 0)


def is_shim(pid: int) -> bool:
    try:
        return b"stormproof.executors._shim" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def wait_gone(pid: int, timeout_s: float = 5.0) -> bool:
    """Wait until ``pid`` has ended (a zombie counts as ended)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc_start_ticks(pid) is None:
            return True
        time.sleep(0.01)
    return False


def wait_for(predicate: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for a condition")
        time.sleep(0.01)


def collect(
    ex: Executor,
    until: Callable[[list[Event]], bool],
    timeout_s: float = 10.0,
    poll_s: float = 0.2,
) -> list[Event]:
    """Poll any executor until ``until(events so far)`` holds; fail after ``timeout_s``."""
    events: list[Event] = []
    deadline = time.monotonic() + timeout_s
    while not until(events):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out; events so far: {events}")
        events += ex.poll(poll_s)
    return events


def finals(events: Sequence[Event]) -> dict[str, Event]:
    return {e.attempt_id: e for e in events if isinstance(e, FINAL)}


def run_to_end(
    ex: LocalExecutor, jobs: Sequence[AttemptJob], timeout_s: float = 10.0
) -> list[Event]:
    """Submit the jobs and poll until each has a final event."""
    for job in jobs:
        ex.submit(job)
    ids = {job.attempt_id for job in jobs}
    return collect(ex, lambda evs: ids <= finals(evs).keys(), timeout_s)
