"""Fake executors: the executor seam with no processes, for tests and what-if runs.

``FakeExecutor``: each submitted attempt "runs" instantly: ``poll`` reports it
started and then ended with the exit code that ``outcome(job)`` gives (default
0). It keeps every job it was given, so tests can assert on commands and
environments without spawning anything. Its pools are modelled (the core places).

``FakeBatchExecutor``: a batch system in the process, for driving a run on
*delegated* pools end to end (DELEGATED.md): it places attempts itself, on
named nodes per pool, ``slots`` jobs at a time per node, a job of ``nodes: N``
on N different nodes, first come first served; a job waits while no node has
room. It reports the nodes in ``AttemptStarted.nodes``, and lets a test end a
job (``finish``), preempt a node (``preempt``: its jobs commit a checkpoint if
they keep one, then end ``AttemptPreempted``, as under Slurm's GraceTime) or
lose one (``lose_node``: ``AttemptLost``, and no job starts there until
``revive``). A kill with a grace makes a checkpointing job commit first, as a
task does on SIGTERM. It outlives a driver like a real batch system: the same
object passed to a resumed driver answers ``recover`` for the jobs it holds,
and ``submissions`` counts how often each attempt id was submitted.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from stormproof.checkpoints import protocol
from stormproof.core.defs import PoolDef, Resources
from stormproof.core.events import (
    AttemptExited,
    AttemptLost,
    AttemptPreempted,
    AttemptStarted,
    AttemptSubmitFailed,
    Event,
)
from stormproof.executors.base import AttemptJob

#: Exit code of an attempt that ended on SIGTERM (128 + 15).
SIGTERM_EXIT = 143


class FakeExecutor:
    delegates_placement: ClassVar[bool] = False

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


@dataclass
class _Job:
    job: AttemptJob
    nodes: tuple[str, ...] = ()
    #: The event that ended it (kept for ``recover``), once it ended.
    end: Event | None = None


@dataclass
class FakeBatchExecutor:
    """A batch system that places attempts itself (see the module's docstring).

    ``nodes`` maps each pool to its node names (or ``options["nodes"]``, when built by
    name from stormproof.yaml); ``outcome(job)`` is the exit code a job ends with as soon
    as it starts, or None to keep it running until ``finish``.
    """

    delegates_placement: ClassVar[bool] = True

    run_dir: Path | None = None
    options: Mapping[str, Any] | None = None
    nodes: Mapping[str, Sequence[str]] = field(default_factory=dict)
    outcome: Callable[[AttemptJob], int | None] = lambda job: 0
    slots: int = 1
    held: dict[str, _Job] = field(default_factory=dict)
    #: Jobs waiting for room, first come first served.
    queue: list[str] = field(default_factory=list)
    down: set[str] = field(default_factory=set)
    submissions: dict[str, int] = field(default_factory=dict)
    killed: list[tuple[str, float]] = field(default_factory=list)
    signals: list[tuple[str, int]] = field(default_factory=list)
    _news: list[Event] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.nodes and self.options:
            self.nodes = dict(self.options.get("nodes", {}))

    @classmethod
    def describe_pools(
        cls, pools: tuple[PoolDef, ...], options: Mapping[str, Any]
    ) -> tuple[PoolDef, ...]:
        """Fill what the file left out from ``options["pools"][name]`` (``vcpus``,
        ``memory``, ``count``), as a Slurm backend would from ``sinfo``."""
        known = options.get("pools", {})
        out = []
        for pool in pools:
            shape = known.get(pool.name, {})
            cap = pool.capacity
            out.append(
                dataclasses.replace(
                    pool,
                    capacity=Resources(
                        cap.vcpus or float(shape.get("vcpus", 0)),
                        cap.memory_mib or int(shape.get("memory", 0)),
                        cap.gpus,
                    ),
                    count=pool.count or int(shape.get("count", 0)),
                )
            )
        return tuple(out)

    # ------------------------------------------------------------------ the seam
    def prepare(self) -> None:
        pass

    def submit(self, job: AttemptJob) -> None:
        self.submissions[job.attempt_id] = self.submissions.get(job.attempt_id, 0) + 1
        if job.attempt_id in self.held:
            return
        if not self.nodes.get(job.pool):  # as sbatch refuses a partition it does not have
            why = f"the batch system has no nodes in pool {job.pool!r}"
            self._news.append(AttemptSubmitFailed(time.time(), job.attempt_id, why))
            return
        self.held[job.attempt_id] = _Job(job)
        self.queue.append(job.attempt_id)
        self._schedule()

    def kill(self, attempt_id: str, grace_s: float) -> None:
        self.killed.append((attempt_id, grace_s))
        held = self.held.get(attempt_id)
        if held is None or held.end is not None:
            return
        if not held.nodes:  # still queued: cancelled before it ran
            self.queue.remove(attempt_id)
            self._end(held, AttemptExited(time.time(), attempt_id, SIGTERM_EXIT))
            return
        if grace_s > 0:
            _commit_checkpoint(held.job)  # what a task does on SIGTERM within its grace
        self._end(held, AttemptExited(time.time(), attempt_id, SIGTERM_EXIT))

    def withdraw(self, attempt_id: str) -> None:
        return None  # no successors on a batch system

    def signal(self, attempt_id: str, signum: int) -> None:
        self.signals.append((attempt_id, signum))

    def poll(self, timeout_s: float) -> list[Event]:
        if not self._news:
            time.sleep(min(timeout_s, 0.005))  # a driver waiting on held jobs must not spin
        news, self._news = self._news, []
        return news

    def recover(self, jobs: Sequence[AttemptJob]) -> list[Event]:
        """Running jobs are adopted (``AttemptStarted``); ended ones report how they ended."""
        out: list[Event] = []
        for job in jobs:
            held = self.held.get(job.attempt_id)
            if held is None:
                continue  # never heard of it: the runtime submits it afresh
            if held.end is not None:
                out.append(held.end)
            elif held.nodes:
                out.append(AttemptStarted(time.time(), job.attempt_id, "fake", held.nodes))
        asked = {j.attempt_id for j in jobs}
        self._news = [e for e in self._news if getattr(e, "attempt_id", "") not in asked]
        return out

    def close(self, final: bool = False) -> None:
        return None  # jobs outlive the orchestrator

    # ------------------------------------------------------------------ the test's hands
    def running(self, node: str | None = None) -> list[str]:
        """Attempts running now (on ``node``, if given), oldest first."""
        return [
            a
            for a, h in self.held.items()
            if h.nodes and h.end is None and (node is None or node in h.nodes)
        ]

    def finish(self, attempt_id: str, exit_code: int = 0) -> None:
        self._end(self.held[attempt_id], AttemptExited(time.time(), attempt_id, exit_code))

    def preempt(self, node: str) -> list[str]:
        """The batch system preempts every job on ``node``: they checkpoint within the grace
        (those that keep checkpoints), then end ``AttemptPreempted``; the node stays up."""
        taken = self.running(node)
        for attempt_id in taken:
            held = self.held[attempt_id]
            _commit_checkpoint(held.job)
            self._end(held, AttemptPreempted(time.time(), attempt_id, "PREEMPTED"))
        return taken

    def lose_node(self, node: str) -> list[str]:
        """``node`` fails: its jobs vanish (``AttemptLost``), nothing starts there for now."""
        self.down.add(node)
        taken = self.running(node)
        for attempt_id in taken:
            self._end(self.held[attempt_id], AttemptLost(time.time(), attempt_id, "NODE_FAIL"))
        return taken

    def revive(self, node: str) -> None:
        self.down.discard(node)
        self._schedule()

    # ------------------------------------------------------------------ placement
    def _end(self, held: _Job, event: Event) -> None:
        if held.end is not None:
            return
        held.end = event
        self._news.append(event)
        self._schedule()

    def _busy(self) -> dict[str, int]:
        busy: dict[str, int] = {}
        for h in self.held.values():
            if h.end is None:
                for n in h.nodes:
                    busy[n] = busy.get(n, 0) + 1
        return busy

    def _schedule(self) -> None:
        """Start every waiting job the nodes have room for, in the order they came."""
        busy = self._busy()
        for attempt_id in list(self.queue):
            held = self.held[attempt_id]
            free = [
                n
                for n in self.nodes.get(held.job.pool, ())
                if n not in self.down and busy.get(n, 0) < self.slots
            ]
            if len(free) < held.job.nodes:
                continue
            held.nodes = tuple(free[: held.job.nodes])
            for n in held.nodes:
                busy[n] = busy.get(n, 0) + 1
            self.queue.remove(attempt_id)
            now = time.time()
            self._news.append(AttemptStarted(now, attempt_id, f"job-{attempt_id}", held.nodes))
            code = self.outcome(held.job)
            if code is not None:
                held.end = AttemptExited(now, attempt_id, code)
                self._news.append(held.end)
                busy = self._busy()


def _commit_checkpoint(job: AttemptJob) -> None:
    """Write a checkpoint and its commit marker, as a checkpointing task would."""
    directory = job.env.get(protocol.ENV_CHECKPOINT_DIR)
    if not directory or not Path(directory).is_dir():
        return
    Path(directory, "state").write_text(f"progress of {job.attempt_id}\n")
    protocol.write_atomic(Path(directory, protocol.COMMIT), "")
