"""``FakeExecutor``: the executor seam with no processes, for tests and what-if runs.

Each submitted attempt "runs" instantly: ``poll`` reports it started and then
ended with the exit code that ``outcome(job)`` gives (default 0). It keeps
every job it was given, so tests can assert on commands and environments
without spawning anything.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from stormproof.core.events import AttemptExited, AttemptStarted, Event
from stormproof.executors.base import AttemptJob


class FakeExecutor:
    def __init__(
        self,
        run_dir: Path | None = None,
        options: Mapping[str, Any] | None = None,
        outcome: Callable[[AttemptJob], int] | None = None,
    ) -> None:
        self.outcome = outcome or (lambda job: 0)
        self.jobs: dict[str, AttemptJob] = {}
        self.killed: list[str] = []
        self.signals: list[tuple[str, int]] = []
        self._news: list[Event] = []

    def prepare(self) -> None:
        pass  # nothing to start

    def submit(self, job: AttemptJob) -> None:
        if job.attempt_id in self.jobs:
            return
        self.jobs[job.attempt_id] = job
        now = time.time()
        self._news.append(AttemptStarted(now, job.attempt_id, "fake"))
        self._news.append(AttemptExited(now, job.attempt_id, self.outcome(job)))

    def kill(self, attempt_id: str, grace_s: float) -> None:
        self.killed.append(attempt_id)

    def withdraw(self, attempt_id: str) -> None:
        return None  # every attempt starts at once: none is ever held

    def signal(self, attempt_id: str, signum: int) -> None:
        self.signals.append((attempt_id, signum))

    def poll(self, timeout_s: float) -> list[Event]:
        news, self._news = self._news, []
        return news

    def recover(self, jobs: Sequence[AttemptJob]) -> list[Event]:
        return []

    def close(self, final: bool = False) -> None:
        return None
