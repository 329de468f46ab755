"""Decisions: frozen imperatives and conclusions that the core returns.

Two sorts, one type:

* **Actions** the driver must carry out: ``LaunchAttempt``, ``KillAttempt``, ``WithdrawAttempt``,
  ``StartTimer``.
* **Notes**, the core's conclusions, which the driver only records:
  ``AttemptEnded``, ``TaskReady``, ``TaskRetrying``, ``TaskEnded``,
  ``RunFinished``. They make ``history`` explain *why* and let ``status``
  read a run without replaying it.

Every decision has a ``reason`` in words; the store links it to the event that
caused it.
"""

from __future__ import annotations

from typing import Any, ClassVar

from stormproof.core.record import as_dict, field_names, record


@record
class Decision:
    kind: ClassVar[str] = "Decision"
    is_action: ClassVar[bool] = False

    def to_dict(self) -> dict[str, Any]:
        return as_dict(self)


@record
class LaunchAttempt(Decision):
    """Start attempt ``number`` of ``task_id`` on ``instances`` (one per node)."""

    kind: ClassVar[str] = "LaunchAttempt"
    is_action: ClassVar[bool] = True
    attempt_id: str
    task_id: str
    number: int
    instances: tuple[str, ...]
    pool: str
    reason: str = ""
    #: Committed checkpoints to try, newest first; the runtime restores the first that verifies.
    restore_from: tuple[int, ...] = ()
    #: Memory per node for this attempt (MiB): the task's, escalated after ``Task.OutOfMemory``.
    memory_mib: int = 0
    market: str = ""
    #: What the attempt costs per hour: its share of its instances at the pool's price.
    usd_per_h: float = 0.0
    #: What the same share would cost per hour on the cheapest fitting on-demand pool.
    on_demand_usd_per_h: float = 0.0
    #: A successor: start it when attempt ``after`` ends (at once if that one already ended);
    #: it takes over that attempt's place on ``instances``. Empty: start now.
    after: str = ""


@record
class KillAttempt(Decision):
    """SIGTERM the attempt now, SIGKILL after ``grace_s``."""

    kind: ClassVar[str] = "KillAttempt"
    is_action: ClassVar[bool] = True
    attempt_id: str
    grace_s: float
    reason: str = ""


@record
class WithdrawAttempt(Decision):
    """Drop the queued successor if it has not started (it ends ``AttemptDropped``); if it
    has, do nothing: unlike ``KillAttempt`` this never stops a running attempt."""

    kind: ClassVar[str] = "WithdrawAttempt"
    is_action: ClassVar[bool] = True
    attempt_id: str
    reason: str = ""


@record
class StartTimer(Decision):
    """Feed ``TimerFired(timer_id)`` back once the wall clock reaches ``fire_at``."""

    kind: ClassVar[str] = "StartTimer"
    is_action: ClassVar[bool] = True
    timer_id: str
    fire_at: float
    reason: str = ""


@record
class RequestCheckpoint(Decision):
    """Ask the attempt to checkpoint now (its signal + the request file): the interval is due."""

    kind: ClassVar[str] = "RequestCheckpoint"
    is_action: ClassVar[bool] = True
    attempt_id: str
    reason: str = ""


@record
class PruneCheckpoints(Decision):
    """Delete the task's stored checkpoints except ``keep`` (all of them when ``keep`` is empty)."""

    kind: ClassVar[str] = "PruneCheckpoints"
    is_action: ClassVar[bool] = True
    task_id: str
    keep: tuple[int, ...]
    reason: str = ""


@record
class LaunchInstance(Decision):
    """Ask the capacity backend for one more instance of ``pool``; it answers ``InstanceUp``."""

    kind: ClassVar[str] = "LaunchInstance"
    is_action: ClassVar[bool] = True
    instance_id: str
    pool: str
    reason: str = ""


@record
class TerminateInstance(Decision):
    """Give the instance back (scaled down, reclaimed, or lost); nothing runs on it any more."""

    kind: ClassVar[str] = "TerminateInstance"
    is_action: ClassVar[bool] = True
    instance_id: str
    reason: str = ""


@record
class InstanceChanged(Decision):
    """Note: an instance is now ``pending``, ``up``, ``draining``, ``gone`` or ``failed``."""

    kind: ClassVar[str] = "InstanceChanged"
    instance_id: str
    pool: str
    market: str
    state: str
    reason: str = ""


@record
class BreakerChanged(Decision):
    """Note: a pool's circuit breaker is now ``closed``, ``open`` or ``half_open``."""

    kind: ClassVar[str] = "BreakerChanged"
    pool: str
    state: str
    until: float | None = None  # when an open breaker goes half-open
    trips: int = 0
    reason: str = ""


@record
class AttemptEnded(Decision):
    """Note: an attempt reached a final state (succeeded, failed, timed_out, lost, cancelled)."""

    kind: ClassVar[str] = "AttemptEnded"
    attempt_id: str
    task_id: str
    state: str
    error: str | None = None
    exit_code: int | None = None
    budget: str | None = None
    reason: str = ""
    pool: str = ""
    #: Seconds the attempt held its instances (launch decided to end; on a delegated pool,
    #: started to end: a job waiting in the batch system's queue holds nothing), and their cost.
    seconds: float = 0.0
    cost_usd: float = 0.0
    #: The same seconds at the on-demand price of the same shape (equal to cost on on-demand).
    on_demand_usd: float = 0.0
    #: Instance time lost: work after the last checkpoint when interrupted, plus restore time.
    wasted_s: float = 0.0
    wasted_usd: float = 0.0


@record
class TaskReady(Decision):
    """Note: every parent succeeded (or a retry's backoff ended); the task waits for capacity."""

    kind: ClassVar[str] = "TaskReady"
    task_id: str
    reason: str = ""


@record
class TaskRetrying(Decision):
    """Note: the task will be tried again after ``delay_s``, drawing on ``budget``."""

    kind: ClassVar[str] = "TaskRetrying"
    task_id: str
    error: str
    delay_s: float
    budget: str
    retrier: int | None = None  # 1-based index into the task's retry list
    reason: str = ""


@record
class TaskEnded(Decision):
    """Note: the task is finished for good: succeeded, failed, skipped or cancelled."""

    kind: ClassVar[str] = "TaskEnded"
    task_id: str
    state: str
    error: str | None = None
    reason: str = ""


@record
class RunFinished(Decision):
    """Note: every task has ended; the run is ``succeeded``, ``failed`` or ``cancelled``."""

    kind: ClassVar[str] = "RunFinished"
    state: str
    reason: str = ""


DECISION_TYPES: dict[str, type[Decision]] = {
    cls.kind: cls
    for cls in (
        LaunchAttempt,
        KillAttempt,
        WithdrawAttempt,
        StartTimer,
        RequestCheckpoint,
        PruneCheckpoints,
        LaunchInstance,
        TerminateInstance,
        InstanceChanged,
        BreakerChanged,
        AttemptEnded,
        TaskReady,
        TaskRetrying,
        TaskEnded,
        RunFinished,
    )
}


def decision_from_dict(kind: str, data: dict[str, Any]) -> Decision:
    cls = DECISION_TYPES[kind]
    names = field_names(cls)
    values = {k: v for k, v in data.items() if k in names}
    for key in ("instances", "restore_from", "keep"):
        if key in values:
            values[key] = tuple(values[key])
    return cls(**values)
