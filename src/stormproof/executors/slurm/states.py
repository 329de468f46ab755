"""What Slurm's view of a job and the job's own status file mean for the core: events.

The job's status file (``script``) is the truth about the command: its exit code, written
once. Slurm's state is the truth about what happened *to* the job when the command could
not say: preempted, its node failed, cancelled by someone, killed at its time limit or for
its memory. The table (also in ``docs/slurm.md``):

==========================  ================================================================
Slurm                        event (the core's error)
==========================  ================================================================
status 0, any state          ``AttemptExited(0)``: the command finished its work
COMPLETED / FAILED           ``AttemptExited(code)`` (``Task.Failed`` unless 0)
TIMEOUT, DEADLINE            ``AttemptExited(timed_out=True)`` (``Task.Timeout``)
OUT_OF_MEMORY                ``AttemptExited(out_of_memory=True)`` (``Task.OutOfMemory``)
PREEMPTED, or a preemption   ``AttemptPreempted`` (``Capacity.Interrupted``)
time on a job that ended
requeued (by anyone)         cancelled, then ``AttemptPreempted`` or ``AttemptLost``
NODE_FAIL, BOOT_FAIL         ``AttemptLost`` (``Node.Lost``)
CANCELLED by someone else    ``AttemptLost`` naming the cancellation (``Node.Lost``)
ended without a status       ``AttemptLost`` (Slurm ran the script twice, or it died early)
==========================  ================================================================

An attempt stormproof itself killed (a timeout, a notice, a cancel) ends ``AttemptExited``
with the code it left, or 137: the core knows why it killed it.

A non-requeueable job (stormproof submits every job with ``--no-requeue``) preempted under
``PreemptMode=REQUEUE`` is cancelled instead: its steps get SIGTERM at the start of
``GraceTime``, the batch script at its end. If the script ends within the grace (the command
checkpointed and exited), Slurm says ``FAILED`` or ``COMPLETED`` with a ``PreemptTime``; if it
is killed at the end, ``PREEMPTED``. Both are preemptions here (checked on Slurm 22.05).
"""

from __future__ import annotations

from dataclasses import dataclass

from stormproof.core.events import AttemptExited, AttemptLost, AttemptPreempted, Event

#: States of a job that has not ended (``squeue --states=all`` shows the others for a while).
LIVE = frozenset(
    {
        "PENDING",
        "CONFIGURING",
        "RUNNING",
        "COMPLETING",
        "SUSPENDED",
        "STOPPED",
        "RESIZING",
        "SIGNALING",
        "STAGE_OUT",
        "RESV_DEL_HOLD",
        "REQUEUED",
        "REQUEUE_FED",
        "REQUEUE_HOLD",
    }
)
#: The job has (or had) a node: the attempt has started.
STARTED = frozenset({"RUNNING", "COMPLETING", "SUSPENDED", "STOPPED", "SIGNALING", "STAGE_OUT"})
REQUEUED = frozenset({"REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD"})
TIMED_OUT = frozenset({"TIMEOUT", "DEADLINE"})
LOST_NODE = frozenset({"NODE_FAIL", "BOOT_FAIL"})
#: Exit code reported for a job that was killed before its script could write a status.
KILLED_CODE = 137


@dataclass(frozen=True, slots=True)
class JobRecord:
    """One job as ``squeue`` or ``sacct`` shows it."""

    job_id: str
    state: str
    name: str = ""
    comment: str = ""
    partition: str = ""
    nodes: str = ""
    #: ``PreemptTime`` was set: Slurm chose the job as a preemption victim.
    preempted: bool = False
    restarts: int = 0
    #: The exit code Slurm recorded (``sacct``'s ``ExitCode``); ``None`` from ``squeue``.
    exit_code: int | None = None

    @property
    def live(self) -> bool:
        return self.state in LIVE

    @property
    def requeued(self) -> bool:
        """Slurm put the job back in the queue after it had started: it must not run again."""
        return self.state in REQUEUED or (self.state == "PENDING" and self.restarts > 0)


def normal_state(raw: str) -> str:
    """``CANCELLED by 0`` → ``CANCELLED``; ``RUNNING+`` (federation flags) → ``RUNNING``."""
    return raw.strip().split(" ", 1)[0].rstrip("+").upper()


def ended(
    attempt_id: str,
    at: float,
    record: JobRecord | None,
    status: int | None,
    killed: bool,
) -> Event:
    """The final event of an attempt whose job ended.

    ``record`` is Slurm's last word (``None``: Slurm has forgotten the job), ``status`` the
    code the job's script wrote (``None``: it wrote none), ``killed``: stormproof asked for it.
    """
    if status == 0:
        return AttemptExited(at=at, attempt_id=attempt_id, exit_code=0)
    slurm_code = record.exit_code if record is not None else None
    code = status if status is not None else slurm_code
    if killed:
        return AttemptExited(at=at, attempt_id=attempt_id, exit_code=_nonzero(code))
    if record is None:
        if status is not None:
            return AttemptExited(at=at, attempt_id=attempt_id, exit_code=status)
        return AttemptLost(at, attempt_id, "Slurm has no record of the job and it left no status")
    where = f"Slurm job {record.job_id}" + (f" on {record.nodes}" if record.nodes else "")
    state = record.state
    if state in TIMED_OUT:
        return AttemptExited(at=at, attempt_id=attempt_id, exit_code=_nonzero(code), timed_out=True)
    if state == "OUT_OF_MEMORY":
        return AttemptExited(
            at=at, attempt_id=attempt_id, exit_code=_nonzero(code), out_of_memory=True
        )
    if state == "PREEMPTED" or record.preempted:
        partition = f" in partition {record.partition}" if record.partition else ""
        return AttemptPreempted(at, attempt_id, f"{where} was preempted{partition}")
    if state in LOST_NODE:
        return AttemptLost(at, attempt_id, f"{where} ended {state}: its node failed")
    if state == "CANCELLED":
        return AttemptLost(
            at,
            attempt_id,
            f"{where} was cancelled outside stormproof (scancel by its owner or an "
            "administrator); stormproof retries it as a new attempt",
        )
    if status is not None:
        return AttemptExited(at=at, attempt_id=attempt_id, exit_code=status)
    if state == "FAILED" and slurm_code:
        return AttemptExited(at=at, attempt_id=attempt_id, exit_code=slurm_code)
    return AttemptLost(
        at,
        attempt_id,
        f"{where} ended {state} without the exit status its script writes (Slurm started it "
        "again after losing track of it, or the script could not run; see its stderr.log)",
    )


def requeued(attempt_id: str, at: float, record: JobRecord) -> Event:
    """A job Slurm requeued: stormproof cancels it (the core owns retries) and says why."""
    where = f"Slurm job {record.job_id}"
    if record.preempted:
        return AttemptPreempted(at, attempt_id, f"{where} was preempted and requeued by Slurm")
    return AttemptLost(
        at,
        attempt_id,
        f"{where} was requeued by Slurm (a node failure or an administrator); stormproof "
        "cancelled it and retries the task as a new attempt",
    )


def _nonzero(code: int | None) -> int:
    return code if code else KILLED_CODE
