"""Batch's job states and status reasons, translated to the executor seam's events.

Pure: a job description (``DescribeJobs``) and what the attempt's agent wrote to S3 in,
events out. The table:

=====================================================  ===========================================
Batch says                                             event
=====================================================  ===========================================
SUBMITTED, PENDING, RUNNABLE, STARTING                 nothing yet (queued)
RUNNING                                                ``AttemptStarted`` (nodes: the EC2 host)
SUCCEEDED                                              ``AttemptExited(0)``
FAILED after stormproof's own ``TerminateJob``         ``AttemptExited`` (the core killed it)
FAILED, ``OutOfMemoryError: Container killed…``        ``AttemptExited(out_of_memory=True)``
FAILED, ``Job attempt duration exceeded timeout``      ``AttemptExited(timed_out=True)``
FAILED, the agent's status: stopped on a notice        ``AttemptPreempted`` (Capacity.Interrupted)
FAILED, the agent's status: the command's exit code    ``AttemptExited(code)`` (settled once, by it)
FAILED, ``Host EC2 (instance i-…) terminated.``        spot pool: ``AttemptPreempted``;
                                                       on-demand: ``AttemptLost`` (``Node.Lost``)
FAILED, ``CannotPullContainerError`` and kin           ``AttemptSubmitFailed`` naming the image
FAILED with an exit code                               ``AttemptExited(code)``
FAILED, anything else (terminated by someone else)     ``AttemptLost`` with Batch's reason
=====================================================  ===========================================

The agent's status comes first where it exists: a job whose host vanished after the command
ended still ends with the command's own exit code, exactly once.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from stormproof.core.events import (
    AttemptExited,
    AttemptLost,
    AttemptPreempted,
    AttemptSubmitFailed,
    Event,
)

QUEUED = frozenset({"SUBMITTED", "PENDING", "RUNNABLE", "STARTING"})
ENDED = frozenset({"SUCCEEDED", "FAILED"})
#: Exit code reported for an attempt Batch stopped without one (SIGKILL).
KILLED_EXIT = 137
#: What stormproof's own ``TerminateJob`` calls give as the reason (to know them again).
OUR_REASON_PREFIX = "stormproof:"
_HOST_GONE = re.compile(r"Host EC2 \(instance (?P<id>i-[0-9a-f]+)\) terminated", re.I)
_CANNOT_START = (
    "CannotPullContainerError",
    "CannotStartContainerError",
    "CannotCreateContainerError",
    "CannotInspectContainerError",
    "ResourceInitializationError",
)


@dataclass(frozen=True)
class Finished:
    """What Batch says about a job that ended, pulled out of its description."""

    status: str
    reason: str
    container_reason: str
    exit_code: int | None
    started: bool

    @classmethod
    def of(cls, job: Mapping[str, Any]) -> Finished:
        container = dict(job.get("container") or {})
        attempts = job.get("attempts") or []
        last = dict((attempts[-1] or {}).get("container") or {}) if attempts else {}
        exit_code = container.get("exitCode", last.get("exitCode"))
        return cls(
            status=str(job.get("status", "")),
            reason=str(job.get("statusReason") or ""),
            container_reason=str(container.get("reason") or last.get("reason") or ""),
            exit_code=int(exit_code) if exit_code is not None else None,
            started=bool(job.get("startedAt")),
        )


def host_of_reason(reason: str) -> str | None:
    """The instance id in ``Host EC2 (instance i-…) terminated.``, if that is the reason."""
    match = _HOST_GONE.search(reason)
    return match["id"] if match else None


def ended(
    now: float,
    attempt_id: str,
    job: Mapping[str, Any],
    *,
    spot: bool,
    killed: bool,
    image: str,
    agent: Mapping[str, Any] | None,
) -> Event:
    """The one event that ends an attempt whose Batch job is SUCCEEDED or FAILED."""
    f = Finished.of(job)
    if f.status == "SUCCEEDED":
        return AttemptExited(now, attempt_id, f.exit_code or 0)
    if killed:
        code = f.exit_code if f.exit_code is not None else _agent_code(agent, 143)
        return AttemptExited(now, attempt_id, code)
    if "OutOfMemoryError" in f.container_reason or "OutOfMemoryError" in f.reason:
        return AttemptExited(now, attempt_id, f.exit_code or KILLED_EXIT, out_of_memory=True)
    if "duration exceeded timeout" in f.reason:
        return AttemptExited(now, attempt_id, f.exit_code or KILLED_EXIT, timed_out=True)
    if agent is not None and agent.get("state") == "ended":
        if agent.get("notice"):
            why = f"interruption notice ({agent['notice']}); the agent stopped the command"
            return AttemptPreempted(now, attempt_id, why)
        return AttemptExited(now, attempt_id, int(agent.get("exit_code", 1)))
    host = host_of_reason(f.reason)
    if host is not None:
        if spot:
            return AttemptPreempted(now, attempt_id, f"spot host reclaimed: {f.reason}")
        return AttemptLost(now, attempt_id, f.reason)
    for marker in _CANNOT_START:
        if marker in f.container_reason or marker in f.reason:
            detail = f.container_reason or f.reason
            return AttemptSubmitFailed(
                now,
                attempt_id,
                f"Batch could not start the container of image {image!r}: {detail} (check the "
                "task's container_image, or aws.image: does the image exist, can the hosts "
                "pull it?)",
            )
    if f.exit_code is not None:
        return AttemptExited(now, attempt_id, f.exit_code)
    return AttemptLost(now, attempt_id, f"Batch ended the job: {f.reason or 'no reason given'}")


def _agent_code(agent: Mapping[str, Any] | None, default: int) -> int:
    if agent is not None and agent.get("exit_code") is not None:
        return int(agent["exit_code"])
    return default
