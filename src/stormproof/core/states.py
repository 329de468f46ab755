"""Task and attempt states, and the transitions between them, as data.

A transition that is not in these tables is a bug in the core, not a user
error: ``check_task_transition`` raises ``InvalidTransition`` naming the task,
both states and the event being handled, so a failing property test says
exactly what went wrong.
"""

from __future__ import annotations

from enum import Enum


class TaskState(str, Enum):
    WAITING = "waiting"  # some parent has not succeeded yet
    READY = "ready"  # every parent succeeded; queued for capacity
    BACKOFF = "backoff"  # a retry is due when its timer fires
    RUNNING = "running"  # one attempt is placed or running
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"  # never ran: an upstream task failed, or the workflow failed first
    CANCELLED = "cancelled"

    @property
    def is_final(self) -> bool:
        return self in FINAL_TASK_STATES


FINAL_TASK_STATES = frozenset(
    {TaskState.SUCCEEDED, TaskState.FAILED, TaskState.SKIPPED, TaskState.CANCELLED}
)


class AttemptState(str, Enum):
    PLACED = "placed"  # launch decided and recorded; the backend has not confirmed it
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    INTERRUPTED = "interrupted"  # the provider reclaimed its instance (Capacity.Interrupted)
    LOST = "lost"
    CANCELLED = "cancelled"
    DROPPED = "dropped"  # a queued successor given up before it started: no budget used


class RunMode(str, Enum):
    RUNNING = "running"  # launching as capacity allows
    STOPPING = "stopping"  # Ctrl-C: launch nothing; running attempts carry on
    FAILING = "failing"  # a task failed for good: launch nothing, wait for the rest to end
    CANCELLING = "cancelling"  # cancel: kill what runs, end the rest
    FINISHED = "finished"


_T = TaskState
TASK_TRANSITIONS: frozenset[tuple[TaskState, TaskState]] = frozenset(
    {
        (_T.WAITING, _T.READY),
        (_T.WAITING, _T.SUCCEEDED),  # kept: it succeeded before a redrive, or is reused
        (_T.WAITING, _T.SKIPPED),
        (_T.WAITING, _T.CANCELLED),
        (_T.READY, _T.RUNNING),
        (_T.READY, _T.FAILED),  # no capacity can ever hold it (Capacity.Unavailable)
        (_T.READY, _T.SKIPPED),
        (_T.READY, _T.CANCELLED),
        (_T.RUNNING, _T.SUCCEEDED),
        (_T.RUNNING, _T.FAILED),
        (_T.RUNNING, _T.BACKOFF),
        (_T.RUNNING, _T.READY),  # interrupted or lost: requeued at once
        (_T.RUNNING, _T.CANCELLED),
        (_T.BACKOFF, _T.READY),
        (_T.BACKOFF, _T.FAILED),  # the workflow is failing: the retry will never run
        (_T.BACKOFF, _T.SKIPPED),
        (_T.BACKOFF, _T.CANCELLED),
    }
)


class InvalidTransition(AssertionError):
    """The core tried a state change its tables do not allow: a bug, with the evidence."""


def check_task_transition(task_id: str, old: TaskState, new: TaskState, event: object) -> None:
    if (old, new) not in TASK_TRANSITIONS:
        raise InvalidTransition(
            f"task {task_id!r}: {old.value} -> {new.value} is not a legal transition "
            f"(while handling {event!r})"
        )
