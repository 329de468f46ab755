"""Helpers for the Slurm executor's real-cluster tests."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
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
from stormproof.executors.slurm import SlurmExecutor

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
    """Poll until ``until(events so far)`` holds; fail after ``timeout_s``."""
    events: list[Event] = []
    deadline = time.monotonic() + timeout_s
    while not until(events):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out; events so far: {events}")
        events += ex.poll(0.25)
    return events


def finals(events: Sequence[Event]) -> dict[str, Event]:
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
