"""Events: frozen, past-tense facts that the core is told about.

Every event carries ``at``, the wall-clock second it happened, because the
core has no clock of its own. Events are the inputs that are persisted: a
run's state is the fold of its events through ``Workflow.handle``.

``kind`` is the class name and is what the event log stores; ``to_dict`` and
``event_from_dict`` are the only serialisation, shared by every store.
"""

from __future__ import annotations

from typing import Any, ClassVar

from stormproof.core.record import as_dict, field_names, record


@record
class Event:
    at: float
    kind: ClassVar[str] = "Event"

    def to_dict(self) -> dict[str, Any]:
        return as_dict(self)


@record
class RunStarted(Event):
    """The driver started the run: for the first time, or again after a redrive (which begins a
    new segment of the same history; see ``runtime.redrive``).

    ``kept`` tasks end succeeded at once and never run: they succeeded before the redrive, or
    in an earlier run whose outputs this one reuses; ``kept_why`` says why, one text per kept
    task, in the same order. Every parent of a kept task is kept.

    ``carried`` are the tasks that ran before a redrive and run again, each as ``(task id,
    attempts made, committed checkpoint seqs its next attempt may restore (oldest first; none
    when its definition changed), highest checkpoint seq it ever used)``: attempt numbers and
    checkpoint seqs continue after those, so no attempt id or checkpoint is used twice.
    """

    kind: ClassVar[str] = "RunStarted"
    kept: tuple[str, ...] = ()
    kept_why: tuple[str, ...] = ()
    carried: tuple[tuple[str, int, tuple[int, ...], int], ...] = ()


@record
class RunResumed(Event):
    """A driver took the run over after the previous one stopped or died."""

    kind: ClassVar[str] = "RunResumed"


@record
class StopRequested(Event):
    """Ctrl-C or SIGTERM on the driver: launch nothing more; running attempts carry on."""

    kind: ClassVar[str] = "StopRequested"
    reason: str = "interrupted"


@record
class CancelRequested(Event):
    """The user cancelled the run: kill what runs, end every unfinished task as cancelled."""

    kind: ClassVar[str] = "CancelRequested"


@record
class AttemptStarted(Event):
    """The backend accepted the attempt; ``handle`` is its id there (pid, Slurm job id, …)."""

    kind: ClassVar[str] = "AttemptStarted"
    attempt_id: str = ""
    handle: str = ""
    #: Where the backend runs it, one name per node, when the backend chose (a delegated
    #: pool: a Slurm partition's node, a Dask worker, an EC2 instance under AWS Batch).
    nodes: tuple[str, ...] = ()


@record
class AttemptExited(Event):
    """The attempt's command ended with ``exit_code`` (128+N when killed by signal N)."""

    kind: ClassVar[str] = "AttemptExited"
    attempt_id: str = ""
    exit_code: int = 0
    #: The backend killed it for using more than its memory (``Task.OutOfMemory``).
    out_of_memory: bool = False
    #: The backend's own time limit ended it (Slurm's TIMEOUT, Batch's timeout): ``Task.Timeout``.
    timed_out: bool = False
    #: CPU seconds (user + system) the command and its children used, if the backend knows.
    cpu_s: float | None = None
    #: Peak resident memory of the command's largest process, MiB, if the backend knows.
    max_rss_mib: float | None = None


@record
class AttemptLost(Event):
    """The attempt vanished without an exit status (its node or shim died); ``Node.Lost``."""

    kind: ClassVar[str] = "AttemptLost"
    attempt_id: str = ""
    reason: str = ""


@record
class AttemptPreempted(Event):
    """The provider took the attempt away and it ended: ``Capacity.Interrupted``.

    What a batch system reports after the fact (Slurm's PREEMPTED, a Dask worker
    retired while the attempt ran, an AWS Batch job whose spot host was reclaimed),
    where the local fleet instead hears an ``InterruptionNotice`` first. Like every
    interruption it draws on the task's ``max_interruptions`` budget, never on retries.
    """

    kind: ClassVar[str] = "AttemptPreempted"
    attempt_id: str = ""
    reason: str = ""


@record
class AttemptSubmitFailed(Event):
    """The backend refused or could not start the attempt (command not found, bad cwd, …)."""

    kind: ClassVar[str] = "AttemptSubmitFailed"
    attempt_id: str = ""
    message: str = ""


@record
class AttemptDropped(Event):
    """A queued successor was given up before it ever started (killed while queued, its
    predecessor's instance went, the run stopped, or its shim died while holding it).

    Nothing ran, so the task is ready again and no retry or interruption budget is used.
    """

    kind: ClassVar[str] = "AttemptDropped"
    attempt_id: str = ""
    reason: str = ""


@record
class TimerFired(Event):
    """A timer the core asked for (``StartTimer``) is due."""

    kind: ClassVar[str] = "TimerFired"
    timer_id: str = ""


@record
class CheckpointCommitted(Event):
    """A checkpoint of the attempt is in the store, manifest written last and verified.

    ``save_s`` is how long the save took, from the task's commit request (its marker) to the
    checkpoint in the store, as the runtime (or the AWS agent, or the simulator's model)
    measured it; 0 when unknown (a log written before it was recorded). ``plan --from-run``
    takes a task's checkpoint cost from it.
    """

    kind: ClassVar[str] = "CheckpointCommitted"
    attempt_id: str = ""
    seq: int = 0
    files: int = 0
    total_bytes: int = 0
    save_s: float = 0.0


@record
class CheckpointCorrupt(Event):
    """A stored checkpoint failed verification (``Checkpoint.Corrupt``); never restore it."""

    kind: ClassVar[str] = "CheckpointCorrupt"
    task_id: str = ""
    seq: int = 0
    problem: str = ""


@record
class CheckpointRestored(Event):
    """Before the attempt started, checkpoint ``seq`` was restored into it (0: none, fresh)."""

    kind: ClassVar[str] = "CheckpointRestored"
    attempt_id: str = ""
    seq: int = 0


@record
class InstanceUp(Event):
    """The capacity backend has the instance the core asked for (``LaunchInstance``) running."""

    kind: ClassVar[str] = "InstanceUp"
    instance_id: str = ""


@record
class InstanceLaunchFailed(Event):
    """The backend could not get the instance (no spot capacity): ``Capacity.Unavailable``."""

    kind: ClassVar[str] = "InstanceLaunchFailed"
    instance_id: str = ""
    reason: str = ""


@record
class InterruptionNotice(Event):
    """The provider will reclaim the instance in ``notice_s`` (the spot two-minute warning).

    ``source`` says who noticed: ``cli`` (``stormproof interrupt``), ``rate``,
    ``trace``, or a cloud agent (``ec2-metadata``, ``gcp-preempted``).
    """

    kind: ClassVar[str] = "InterruptionNotice"
    instance_id: str = ""
    notice_s: float = 120.0
    source: str = ""


@record
class InstanceLost(Event):
    """The instance vanished without notice: what ran there ends ``Node.Lost``."""

    kind: ClassVar[str] = "InstanceLost"
    instance_id: str = ""
    reason: str = ""


@record
class FleetScaleRequested(Event):
    """The user asked for ``count`` instances in ``pool`` (``fleet NAME --scale POOL=N``)."""

    kind: ClassVar[str] = "FleetScaleRequested"
    pool: str = ""
    count: int = 0


EVENT_TYPES: dict[str, type[Event]] = {
    cls.kind: cls
    for cls in (
        RunStarted,
        RunResumed,
        StopRequested,
        CancelRequested,
        AttemptStarted,
        AttemptExited,
        AttemptLost,
        AttemptPreempted,
        AttemptSubmitFailed,
        AttemptDropped,
        TimerFired,
        CheckpointCommitted,
        CheckpointCorrupt,
        CheckpointRestored,
        InstanceUp,
        InstanceLaunchFailed,
        InterruptionNotice,
        InstanceLost,
        FleetScaleRequested,
    )
}


def event_from_dict(kind: str, data: dict[str, Any]) -> Event:
    """Rebuild an event from what a store saved; unknown keys are ignored (forward compatible)."""
    cls = EVENT_TYPES[kind]
    names = field_names(cls)
    values: dict[str, Any] = {
        k: _tuples(v) if v.__class__ is list else v for k, v in data.items() if k in names
    }
    return cls(**values)


def _tuples(value: list[Any]) -> tuple[Any, ...]:
    """JSON gives back lists where an event had tuples (``nodes``, ``kept``, ``carried``)."""
    return tuple(_tuples(v) if v.__class__ is list else v for v in value)
