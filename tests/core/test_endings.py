"""How an attempt ends (``core/outcomes.py`` rule 1), as one table: every way the backend can
report an end, under every reason the core may have had to kill the attempt first.

Each row says the attempt's final state, its error, the budget it draws on, and what then
happens to its task; the kill reasons are made the way a run makes them (a notice on the
instance, the task's timer, a cancel, another task failing the run), not set by hand.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from stormproof.core.decisions import (
    AttemptEnded,
    Decision,
    KillAttempt,
    LaunchAttempt,
    StartTimer,
    TaskEnded,
    TaskRetrying,
)
from stormproof.core.defs import BreakerRule, RetryRule, RunOptions
from stormproof.core.events import (
    AttemptDropped,
    AttemptExited,
    AttemptLost,
    AttemptPreempted,
    AttemptStarted,
    CancelRequested,
    Event,
    InterruptionNotice,
    TimerFired,
)
from stormproof.core.machine import Workflow
from stormproof.core.states import TaskState

from .builders import begin, dag, pool

T = "t/1"
#: Task errors wait this long before their retry; the provider's are retried at once.
BACKOFF_S = 5.0


def running() -> tuple[Workflow, str]:
    """Task ``t`` (a retrier for its own errors, two interruptions allowed) running beside
    ``other`` (no retrier) on one instance; returns the core and that instance."""
    tasks = dag(
        {"t": [], "other": []},
        retry=[RetryRule(("States.ALL",), BACKOFF_S, 3, 1.0)],
        timeout_s=60.0,
        max_interruptions=2,
        overrides={"other": {"retry": ()}},
    )
    options = RunOptions(pools=(pool(vcpus=2),), breaker=BreakerRule(threshold=10))
    wf = Workflow(tasks, options)
    out = begin(wf)
    (launch,) = [d for d in out if isinstance(d, LaunchAttempt) and d.attempt_id == T]
    return wf, launch.instances[0]


def _interrupted(wf: Workflow, instance: str) -> list[Decision]:
    return wf.handle(InterruptionNotice(2.0, instance, 120.0, source="cli"))


def _timed_out(wf: Workflow, instance: str) -> list[Decision]:
    return wf.handle(TimerFired(61.0, f"timeout:{T}"))


def _cancelled(wf: Workflow, instance: str) -> list[Decision]:
    return wf.handle(CancelRequested(2.0))


def _failing(wf: Workflow, instance: str) -> list[Decision]:
    return wf.handle(AttemptExited(2.0, "other/1", 1))  # no retrier: the run fails


#: How the core came to kill the attempt before its end was reported.
CAUSES: dict[str | None, Callable[[Workflow, str], list[Decision]]] = {
    None: lambda wf, instance: [],
    "interrupted": _interrupted,
    "timeout": _timed_out,
    "cancel": _cancelled,
    "failing": _failing,
}

ENDS: dict[str, Callable[[float], Event]] = {
    "exit 0": lambda at: AttemptExited(at, T, 0),
    "exit 1": lambda at: AttemptExited(at, T, 1),
    "out of memory": lambda at: AttemptExited(at, T, 137, out_of_memory=True),
    "backend's time limit": lambda at: AttemptExited(at, T, 1, timed_out=True),
    "lost": lambda at: AttemptLost(at, T, "node died"),
    "preempted": lambda at: AttemptPreempted(at, T, "PREEMPTED"),
    "dropped": lambda at: AttemptDropped(at, T, "never ran"),
}

OK = ("succeeded", None, None)
CANCELLED = ("cancelled", None, None)
DROPPED = ("dropped", None, None)
FAILED = ("failed", "Task.Failed", "retry")
OOM = ("failed", "Task.OutOfMemory", "retry")
TIMED_OUT = ("timed_out", "Task.Timeout", "retry")
LOST = ("lost", "Node.Lost", "interruptions")
INTERRUPTED = ("interrupted", "Capacity.Interrupted", "interruptions")

#: (the end reported, why the core killed it) -> (attempt state, error, budget).
TABLE: dict[tuple[str, str | None], tuple[str, str | None, str | None]] = {
    **{("exit 0", cause): OK for cause in CAUSES},  # a command that succeeded, succeeded
    ("exit 1", None): FAILED,
    ("exit 1", "interrupted"): INTERRUPTED,
    ("exit 1", "timeout"): TIMED_OUT,
    ("out of memory", None): OOM,
    ("out of memory", "interrupted"): INTERRUPTED,  # the notice came first: not its fault
    ("out of memory", "timeout"): TIMED_OUT,
    ("backend's time limit", None): TIMED_OUT,
    ("backend's time limit", "interrupted"): INTERRUPTED,
    ("backend's time limit", "timeout"): TIMED_OUT,
    ("lost", None): LOST,
    ("lost", "interrupted"): INTERRUPTED,  # it went with the instance the notice was for
    ("lost", "timeout"): LOST,
    ("preempted", None): INTERRUPTED,
    ("preempted", "interrupted"): INTERRUPTED,
    ("preempted", "timeout"): INTERRUPTED,
    **{("dropped", cause): DROPPED for cause in (None, "interrupted")},
    **{
        (end, cause): CANCELLED
        for end in ENDS
        if end != "exit 0"
        for cause in ("cancel", "failing")
    },
}


#: An attempt's time limit runs from its start: one that never started cannot time out.
UNREACHABLE = {("dropped", "timeout")}


def test_the_table_covers_every_end_under_every_cause() -> None:
    assert set(TABLE) | UNREACHABLE == {(end, cause) for end in ENDS for cause in CAUSES}
    wf, instance = running()
    assert not [d for d in _timed_out(wf, instance) if isinstance(d, KillAttempt)]


@pytest.mark.parametrize(("end", "cause"), sorted(TABLE, key=str))
def test_an_attempt_ends_as_the_table_says_and_its_task_follows(
    end: str, cause: str | None
) -> None:
    wf, instance = running()
    if end != "dropped":  # a dropped attempt never started
        wf.handle(AttemptStarted(1.0, T, "1", (instance,)))
    before = CAUSES[cause](wf, instance)
    if cause is not None:
        assert [d.attempt_id for d in before if isinstance(d, KillAttempt)].count(T) == 1
    faults = len(wf.breakers["local"].faults)
    out = wf.handle(ENDS[end](70.0))
    (ended,) = [d for d in out if isinstance(d, AttemptEnded) and d.attempt_id == T]
    state, error, budget = TABLE[end, cause]
    assert (ended.state, ended.error, ended.budget) == (state, error, budget)
    reported = ENDS[end](70.0)
    code = (
        reported.exit_code if isinstance(reported, AttemptExited) and state != "dropped" else None
    )
    assert ended.exit_code == code
    task_ended = [d for d in out if isinstance(d, TaskEnded) and d.task_id == "t"]
    retrying = [d for d in out if isinstance(d, TaskRetrying) and d.task_id == "t"]
    if state == "succeeded":
        assert [(d.state, d.error) for d in task_ended] == [("succeeded", None)]
    elif state == "cancelled":
        assert [(d.state, d.error) for d in task_ended] == [("cancelled", None)]
        assert wf.task_state("t") is TaskState.CANCELLED
    elif state == "dropped":  # ready again, no budget drawn, no backoff
        assert not task_ended and not retrying
        assert wf.task_state("t") in (TaskState.READY, TaskState.RUNNING)
    else:
        (retry,) = retrying
        assert (retry.error, retry.budget) == (error, budget)
        timers = [d.timer_id for d in out if isinstance(d, StartTimer)]
        if budget == "retry":  # the task's own error: after the retrier's backoff
            assert retry.delay_s == BACKOFF_S and "retry:t:1" in timers
            assert wf.task_state("t") is TaskState.BACKOFF
        else:  # the provider's: at once
            assert retry.delay_s == 0.0 and "retry:t:1" not in timers
            assert wf.task_state("t") in (TaskState.READY, TaskState.RUNNING)
    drew_retry = wf.retries_used.get(0, [0]) != [0]
    assert (wf.interruptions[0], drew_retry) == (
        (1, False) if budget == "interruptions" else (0, budget == "retry")
    )
    # a preemption is a fault of its pool unless the notice that caused the kill counted it
    pool_fault = end == "preempted" and cause in (None, "timeout")
    assert len(wf.breakers["local"].faults) - faults == int(pool_fault)
    wf.validate()
