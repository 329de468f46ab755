"""What an attempt run on Dask leaves in its directory, and what its wrapper is given.

Both sides read this module: the orchestrator (``executor``) and the wrapper that runs on a
Dask worker (``worker``). The run's directory is assumed to be shared by the orchestrator and
every worker (as a cluster's shared filesystem is: NFS, Lustre, GPFS, CephFS, or one machine's
disk), so the wrapper writes, next to the attempt's logs:

``dask.attempt``
    Its first line is the *claim*: made with ``O_CREAT | O_EXCL`` (atomic, also on NFSv3 and
    later) by the first wrapper that runs the attempt, before its command starts, it names the
    worker. Dask may run a task again (after its worker left, or after an orchestrator restart
    resubmitted its key); a wrapper that finds the claim taken never runs the command a second
    time, so an attempt runs at most once, whatever Dask does. The core decides every retry,
    under a new id.

    Its second line is the *exit status*, appended by the wrapper once the command has ended,
    before the Dask task returns: one ``write`` of one line, and a line without its newline
    reads as not written yet. An attempt that ended while no orchestrator watched is settled
    from it on ``recover``, exactly once. One file rather than two: creating files is a shared
    filesystem's costly operation, and the wrapper runs once per attempt.

``AttemptSpec`` is what the orchestrator submits to Dask for one attempt (the Dask task's
only argument). ``Verdict`` says why an attempt ended; the executor turns it into the
seam's events.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

ATTEMPT_FILE = "dask.attempt"
#: The wrapper's side of the protocol: an orchestrator refuses workers that speak another.
PROTOCOL = 1


class Verdict:
    """Why an attempt's command ended (``Status.verdict``)."""

    EXITED = "exited"  # on its own
    KILLED = "killed"  # the orchestrator asked (KillAttempt: a timeout, a notice, a cancel)
    RETIRED = "retired"  # its worker closed gracefully (retire_workers): the notice ran out
    CANCELLED = "cancelled"  # its Dask task was cancelled (not by a kill of the orchestrator)
    TIMEOUT = "timeout"  # the wrapper's own time limit, the backstop behind the core's timer
    MEMORY = "memory"  # over its memory limit (the watchdog)
    REFUSED = "refused"  # it could not be started (not the command's fault)
    BROKEN = "broken"  # the wrapper itself failed while the command ran: it was killed


@dataclass(frozen=True, slots=True)
class AttemptSpec:
    """One attempt, as the Dask task that runs it receives it."""

    key: str
    #: The topic the wrapper reports on (``Worker.log_event``): one per run.
    topic: str
    attempt_id: str
    attempt_dir: str
    command: Sequence[str] | str
    #: Added to the worker's environment.
    env: Mapping[str, str]
    #: Bytes for the attempt's whole session; 0: no limit.
    memory_limit: int = 0
    #: Seconds the command gets between SIGTERM and SIGKILL when its worker closes.
    notice_s: float = 120.0
    #: The backstop: the wrapper kills the command after this long (None: never).
    time_limit_s: float | None = None
    #: A start is reported only if the command still runs after this long (a short attempt
    #: sends one message, its end, instead of two).
    hold_started_s: float = 0.02
    memory_sample_s: float = 0.1


@dataclass(frozen=True, slots=True)
class Claim:
    """Who runs (or ran) the attempt: the first line of ``dask.attempt``."""

    worker: str  # address
    node: str  # the worker's name
    at: float

    def line(self) -> str:
        """The claim as ``dask.attempt``'s first line."""
        return json.dumps({"worker": self.worker, "node": self.node, "at": self.at}) + "\n"


@dataclass(frozen=True, slots=True)
class Status:
    """How an attempt ended: the second line of ``dask.attempt``, and the message that
    reports it."""

    code: int
    verdict: str
    worker: str
    node: str
    started_at: float
    at: float
    out_of_memory: bool = False
    cpu_s: float | None = None
    max_rss_mib: float | None = None
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "verdict": self.verdict,
            "worker": self.worker,
            "node": self.node,
            "started_at": self.started_at,
            "at": self.at,
            "oom": self.out_of_memory,
            "cpu_s": self.cpu_s,
            "max_rss_mib": self.max_rss_mib,
            "reason": self.reason,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Status:
        return cls(
            code=int(d["code"]),
            verdict=str(d["verdict"]),
            worker=str(d.get("worker", "")),
            node=str(d.get("node", "")),
            started_at=float(d.get("started_at", 0.0)),
            at=float(d.get("at", 0.0)),
            out_of_memory=bool(d.get("oom", False)),
            cpu_s=None if d.get("cpu_s") is None else float(d["cpu_s"]),
            max_rss_mib=None if d.get("max_rss_mib") is None else float(d["max_rss_mib"]),
            reason=str(d.get("reason", "")),
        )


def write_status(attempt_dir: str, status: Status) -> None:
    """Append the exit status to the claimed attempt's file, as one line in one write."""
    fd = os.open(os.path.join(attempt_dir, ATTEMPT_FILE), os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
    try:
        os.write(fd, json.dumps(status.to_dict()).encode() + b"\n")
    finally:
        os.close(fd)


def read_claim(attempt_dir: str) -> Claim | None:
    """The claim, if the attempt was ever started. A claim whose line is not written yet (its
    wrapper is between the create and the write) reads as one by an unknown worker."""
    lines = _lines(attempt_dir)
    if lines is None:
        return None
    with contextlib.suppress(ValueError, KeyError, TypeError, IndexError):
        d = json.loads(lines[0])
        return Claim(str(d["worker"]), str(d["node"]), float(d["at"]))
    return Claim("", "", 0.0)


def read_status(attempt_dir: str) -> Status | None:
    """The exit status, or ``None`` while the attempt has none (running, or it never ran)."""
    lines = _lines(attempt_dir)
    if lines is None or len(lines) < 2:
        return None
    with contextlib.suppress(ValueError, KeyError, TypeError):
        return Status.from_dict(json.loads(lines[1]))
    return None


def _lines(attempt_dir: str) -> list[bytes] | None:
    """The file's complete lines (a last line without its newline is not written yet)."""
    try:
        with open(os.path.join(attempt_dir, ATTEMPT_FILE), "rb") as f:
            data = f.read()
    except OSError:
        return None
    return data.split(b"\n")[:-1]
