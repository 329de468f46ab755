"""Helpers for the Slurm executor's real-cluster tests."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from stormproof.core.events import (
    AttemptExited,
    AttemptLost,
    AttemptPreempted,
    AttemptStarted,
    AttemptSubmitFailed,
    Event,
)
from stormproof.executors.base import AttemptJob
from stormproof.executors.slurm import SlurmExecutor
from tests.cli.conftest import Cli as BaseCli
from tests.executors import _harness as harness
from tests.executors.slurm._cluster import Cluster

FINAL = (AttemptExited, AttemptLost, AttemptPreempted, AttemptSubmitFailed)


def make_job(
    run_dir: Path,
    name: str,
    command: Sequence[str] | str,
    env: Mapping[str, str] | None = None,
    number: int = 1,
    **fields: Any,
) -> AttemptJob:
    fields.setdefault("pool", "ondemand")
    fields.setdefault("market", "spot" if fields["pool"] == "spot" else "on_demand")
    return AttemptJob(
        run=run_dir.name,
        attempt_id=f"{name}/{number}",
        task_id=name,
        number=number,
        command=command,
        env=dict(env or {}),
        attempt_dir=run_dir / "tasks" / name / f"attempt-{number}",
        **fields,
    )


def executor(run_dir: Path, **options: Any) -> SlurmExecutor:
    options.setdefault("poll_interval_s", 0.5)
    options.setdefault("max_poll_interval_s", 2.0)
    ex = SlurmExecutor(run_dir, options)
    ex.prepare()
    return ex


def collect(
    ex: SlurmExecutor, until: Callable[[list[Event]], bool], timeout_s: float = 60.0
) -> list[Event]:
    """The harness's ``collect`` at a Slurm test's pace."""
    return harness.collect(ex, until, timeout_s, poll_s=0.25)


def finals(events: Sequence[Event]) -> dict[str, Event]:
    """Each attempt's end; on Slurm a preemption ends one too (the retry is a new job)."""
    return {e.attempt_id: e for e in events if isinstance(e, FINAL)}


def started(events: Sequence[Event]) -> dict[str, AttemptStarted]:
    return {e.attempt_id: e for e in events if isinstance(e, AttemptStarted)}


def ended(*ids: str) -> Callable[[list[Event]], bool]:
    return lambda events: set(ids) <= finals(events).keys()


def began(*ids: str) -> Callable[[list[Event]], bool]:
    return lambda events: set(ids) <= started(events).keys()


def wait_file(path: Path, timeout_s: float = 30.0) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.exists():
            return path.read_text()
        time.sleep(0.05)
    raise AssertionError(f"{path} did not appear within {timeout_s}s")


# ---------------------------------------------------------------------- the real command line

ROOT = Path(__file__).resolve().parents[3]
#: Pools on the test cluster's partitions, exactly as the issue writes them, and polling
#: shortened for the tests (the defaults are for a shared production controller).
CONFIG = """\
executor: slurm
pools: [{name: spot, market: spot, partition: spot, price: 0.01},
        {name: ondemand, market: on_demand, partition: ondemand, price: 0.04}]
slurm: {poll_interval: 0.5, max_poll_interval: 2}
"""


@dataclass
class Cli(BaseCli):
    """``stormproof`` run as a user runs it, in a scratch directory, against the test cluster."""

    cluster: Cluster = field(kw_only=True)
    #: Another ``SLURM_CONF`` for the next commands (a dead controller's).
    cluster_conf: Path | None = None
    timeout: ClassVar[float] = 180

    def env(self) -> dict[str, str]:
        env = self.cluster.env(PYTHONUNBUFFERED="1")
        if self.cluster_conf is not None:
            env["SLURM_CONF"] = str(self.cluster_conf)
        env.pop("STORMPROOF_HOME", None)
        # the jobs run `stormproof checkpoint commit` and `python3` from this environment
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
        return env

    def job_of(self, run: str, attempt_id: str) -> dict[str, Any] | None:
        """The ``AttemptStarted`` of an attempt (its Slurm job id and nodes), once logged."""
        for row in self.history(run):
            if row["kind"] == "AttemptStarted" and row["data"]["attempt_id"] == attempt_id:
                return dict(row["data"])
        return None

    def logs(self, run: str, task: str, attempt: int) -> str:
        return self("logs", run, task, "--attempt", str(attempt), "--stream", "stdout").stdout

    def close(self) -> None:
        """Kill what this test started, detached orchestrators included (a failed test's
        would otherwise go on submitting to the next test's cluster)."""
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            p.communicate()
        mark = str(self.cwd).encode()
        for pid_dir in Path("/proc").iterdir():
            if not pid_dir.name.isdigit() or int(pid_dir.name) == os.getpid():
                continue
            try:
                cmdline = (pid_dir / "cmdline").read_bytes()
                cwd = os.readlink(pid_dir / "cwd").encode()
            except OSError:
                continue
            if b"stormproof" in cmdline and (mark in cmdline or cwd.startswith(mark)):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid_dir.name), signal.SIGKILL)


def wait_until(check: Callable[[], Any], timeout_s: float = 60, what: str = "it") -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
