"""The executor seam: where an attempt runs.

Designed for batch schedulers first, local processes second:

* ``submit`` returns at once; what becomes of the attempt arrives later as
  events from ``poll`` (``AttemptStarted``, ``AttemptExited``,
  ``AttemptLost``, ``AttemptPreempted``, ``AttemptSubmitFailed``, and
  ``AttemptDropped`` for a successor killed before it started).
* Every attempt is submitted under its attempt id (``"<task>/<number>"``) as
  the job's name, and submitting the same id twice is a no-op, so a restarted
  orchestrator can ``recover`` the ids it had launched and adopt what still
  runs instead of launching it again.
* Backend failures are translated to events here, never raised into the
  runtime, except ``ExecutorUnavailable`` when the backend itself is gone.

Backends register under the ``stormproof.executors`` entry point group; the
class is called as ``cls(run_dir, options)``.

Batch backends (Slurm, AWS Batch, Dask) place attempts themselves; two optional
class-level hooks say so, read with ``getattr`` so an executor without them
keeps the defaults (the local executor does):

``delegates_placement: ClassVar[bool] = False``
    True: every configured pool becomes *delegated* (``core.defs.PoolDef``): the
    core chooses the pool and the market and bounds the attempts outstanding in it
    (``max_jobs``); the backend picks the node and reports it in
    ``AttemptStarted.nodes``. ``LaunchAttempt.instances`` (``AttemptJob.instances``)
    is then empty, and no ``LaunchInstance`` is ever decided for those pools.

``describe_pools(cls, pools, options) -> tuple[PoolDef, ...]`` (a classmethod)
    Called by ``plan``, ``run`` and ``simulate`` before anything is compiled, with
    the configured pools (already delegated when the class delegates) and the
    executor's options. Return them with what the batch system knows filled in:
    a pool the file gave no ``vcpus``/``memory``/``count`` has 0 there, to be set to
    one node's shape (the most a job may ask per node; ``dataclasses.replace(pool,
    capacity=Resources(...), count=...)``) and the number of nodes. Leave what the
    file gave as it is; raise ``errors.ConfigError`` naming the pool and the fix
    for a pool the system does not have (an unknown partition). A field still 0
    afterwards is reported to the user as one to give in stormproof.yaml. Called
    once per command, and never on resume: a run keeps the pools it started with.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from stormproof.core.defs import PoolDef
from stormproof.core.events import Event


@dataclass(frozen=True, slots=True)
class AttemptJob:
    """Everything a backend needs to run one attempt."""

    run: str
    attempt_id: str
    task_id: str
    number: int
    #: A list runs without a shell; a string runs under ``sh -c``.
    command: Sequence[str] | str
    #: Variables added to the backend's environment (task environment + STORMPROOF_*).
    env: Mapping[str, str]
    #: The attempt's own directory: ``work/`` is the cwd, the logs sit beside it.
    attempt_dir: Path
    vcpus: float = 1.0
    memory_mib: int = 1024
    gpus: int = 0
    nodes: int = 1
    instances: tuple[str, ...] = field(default_factory=tuple)
    #: The pool the core chose and its market: a batch backend submits there (a Slurm
    #: partition, a Batch job queue, a group of Dask workers), found in its own options.
    pool: str = ""
    market: str = ""
    #: The task's ``timeout``: a batch backend sets its own time limit a little above it
    #: (the core's timer kills first, with a grace; the backend's limit is the backstop).
    timeout_s: float | None = None
    #: A successor: start when attempt ``after`` ends (at once if it ended or is unknown),
    #: or never, ending ``AttemptDropped``, if killed first. Backends without a way to hold
    #: an attempt may start it once they saw ``after`` end; "" starts now.
    after: str = ""
    #: The task's ``container_image`` (an executor that runs containers runs it; None: none).
    image: str | None = None

    @property
    def work_dir(self) -> Path:
        return self.attempt_dir / "work"

    @property
    def stdout_path(self) -> Path:
        return self.attempt_dir / "stdout.log"

    @property
    def stderr_path(self) -> Path:
        return self.attempt_dir / "stderr.log"


class ExecutorUnavailable(Exception):
    """The backend itself cannot be reached (not one attempt's problem)."""


@runtime_checkable
class Executor(Protocol):
    def prepare(self) -> None:
        """Get ready for the first submit without waiting for it (the local executor starts
        its shim in the background); returns at once, and failures surface at ``submit``."""

    def submit(self, job: AttemptJob) -> None:
        """Start the attempt; return at once. Idempotent per ``job.attempt_id``."""

    def kill(self, attempt_id: str, grace_s: float) -> None:
        """SIGTERM (or the backend's equivalent) now, SIGKILL after ``grace_s``."""

    def withdraw(self, attempt_id: str) -> None:
        """Drop a successor the backend still holds unstarted (``AttemptDropped`` follows);
        no-op if it has started, or if the backend never holds successors."""

    def signal(self, attempt_id: str, signum: int) -> None:
        """Deliver one signal to a running attempt (a checkpoint request); no-op if it ended."""

    def poll(self, timeout_s: float) -> list[Event]:
        """Wait up to ``timeout_s`` for news; return the events that happened (maybe none)."""

    def recover(self, jobs: Sequence[AttemptJob]) -> list[Event]:
        """After a restart: adopt those still running, report those that ended or vanished.

        Returns, per job, ``AttemptStarted`` (adopted, still running) or a final
        event (``AttemptExited`` / ``AttemptLost``); a job the backend never
        heard of gets nothing and the runtime submits it afresh.
        """

    def close(self, final: bool = False) -> None:
        """Stop watching. Running attempts are *not* killed: they outlive the orchestrator.

        ``final=True`` says the run has ended: backend helpers (the local shim) may go at once.
        Otherwise the driver is stopping: successors still held must not start unwatched, so
        they are dropped (a later ``recover`` reports them ``AttemptDropped``).
        """


def executor_options(options: Mapping[str, Any] | None) -> dict[str, Any]:
    return dict(options or {})


def delegates_placement(executor_class: type) -> bool:
    """Whether the executor's batch system places attempts (see the module's docstring)."""
    return bool(getattr(executor_class, "delegates_placement", False))


def describe_pools(
    executor_class: type, pools: tuple[PoolDef, ...], options: Mapping[str, Any]
) -> tuple[PoolDef, ...]:
    """The pools as the executor's system describes them (unchanged without the hook)."""
    hook = getattr(executor_class, "describe_pools", None)
    if hook is None:
        return pools
    described: tuple[PoolDef, ...] = tuple(hook(pools, options))
    return described
