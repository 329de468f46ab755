"""The worker's side: the Dask task that runs one attempt, and the plugin that keeps them.

``run_attempt(spec)`` is the function the orchestrator submits, under the attempt's key,
with Dask's retries off. On the worker it:

1. returns at once, without running anything, if its worker is closing or its task was
   cancelled meanwhile, or if the attempt was claimed before (``status.ATTEMPT_FILE``: Dask
   ran the task again, after its first worker left or after a resumed orchestrator
   resubmitted the key). A duplicate reports itself (``D``) and the orchestrator decides from
   the files;
2. runs the command as the local executor does: its own session, ``work/`` as its cwd, the
   logs beside it, the worker's environment plus the attempt's, a list without a shell and a
   string under ``sh -c``, 127/126 for a command that cannot be found or run. The claim, the
   spawn and the ``wait4`` are made by the worker's *spawner* (``executors._spawner``: a small
   single-threaded process the keeper starts; its docstring says why), which the task's
   thread asks and then waits on. If the worker process dies (kill -9, the OOM killer), its
   commands die with it, as they would with their node, instead of running on unwatched
   while the core retries them elsewhere: the spawner kills the process groups of the
   attempts still running when its control socket closes. If the spawner dies, each
   waiting thread kills its command's group and reports the attempt broken (lost);
3. reports its start (``S``, with the worker's name: the attempt's node) unless the command
   ended within ``hold_started_s``, waits for it, and meanwhile acts on the kills and signals
   the orchestrator sends (``AttemptKeeper.kill``), its worker closing (the *notice*: SIGTERM,
   ``notice_s`` to commit a checkpoint, then SIGKILL), its task being cancelled, its own time
   limit, and its memory limit (sampled by the keeper, as the local shim does);
4. appends its exit status to ``status.ATTEMPT_FILE`` and reports the end (``X``), then
   returns it.

Reports go through ``Worker.log_event`` on the run's topic: the scheduler pushes them to the
orchestrator's client (``Client.subscribe_topic``) over the connection it already has, so the
orchestrator asks no worker anything per attempt.

``AttemptKeeper`` is a ``WorkerPlugin`` (one per worker, registered by the orchestrator): it
knows the attempts running on its worker, so that ``Client.run`` can reach them by key
(``kill_attempts``, ``signal_attempt``), and its ``teardown`` holds the worker's close until
they have had their notice. A retired worker (``Client.retire_workers``: what a deployment does
on a spot node's preemption notice, and what ``stormproof interrupt`` asks for) closes
gracefully: the scheduler reschedules its tasks at once (the claim keeps them from running
twice), and the worker's close would wait for running tasks only 30 s; the teardown makes it
wait for the notice instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from distributed import get_worker
from distributed.core import Status as WorkerStatus
from distributed.diagnostics.plugin import WorkerPlugin
from distributed.worker import Worker

from stormproof.executors._memory import MemorySampler
from stormproof.executors._spawner import Channel, Spawner
from stormproof.executors.dask.status import (
    ATTEMPT_FILE,
    PROTOCOL,
    AttemptSpec,
    Claim,
    Status,
    Verdict,
    read_claim,
    write_status,
)

KEEPER = "stormproof-attempts"
#: How often a waiting wrapper looks at its worker's state and its deadlines.
_CHECK_S = 0.2
_CLOSING = frozenset((WorkerStatus.closing_gracefully, WorkerStatus.closing, WorkerStatus.closed))
#: SIGTERM to SIGKILL for a command whose task was cancelled in Dask (no grace was given).
_CANCEL_GRACE_S = 10.0
_KILLED = 128 + signal.SIGKILL
_LOG_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC
_keeper_lock = threading.Lock()


@dataclass(eq=False)
class _Running:
    """One command running on this worker."""

    spec: AttemptSpec
    pid: int
    started_at: float
    #: Its conversation with the spawner, which reports its exit.
    channel: Channel
    #: The spawner's peak resident set (KiB) when it started the command: the most the
    #: command's ``ru_maxrss`` can have inherited from the process it was forked from.
    inherited_rss_kib: int = 0
    #: Why it is being stopped (a ``Verdict``), once something asked; the first reason wins.
    verdict: str | None = None
    reason: str = ""
    #: Monotonic time its SIGKILL is due.
    kill_at: float | None = None
    killed_for_memory: bool = False
    ended: threading.Event = field(default_factory=threading.Event)


class AttemptKeeper(WorkerPlugin):
    """The attempts running on one worker (see the module docstring)."""

    name = KEEPER
    #: Registered once per cluster: a second orchestrator must not replace the keeper (and
    #: forget the attempts) of a worker whose attempts run on.
    idempotent = True

    def setup(self, worker: Worker) -> None:
        self.worker = worker
        self.lock = threading.Lock()
        self.running: dict[str, _Running] = {}
        self.limited: dict[int, _Running] = {}  # session id -> attempt with a memory limit
        self.sampling = False
        self.closing = False
        self.spawner: Spawner | None = None

    async def teardown(self, worker: Worker) -> None:
        """The worker closes: every attempt gets its notice, and the close waits for them."""
        with self.lock:
            self.closing = True
            running = list(self.running.values())
        for run in running:
            self.stop(run, run.spec.notice_s, Verdict.RETIRED, f"its worker {worker.name} closed")
        waits = [r.kill_at for r in running if r.kill_at is not None]
        deadline = (max(waits) if waits else time.monotonic()) + 5.0
        while any(not r.ended.is_set() for r in running) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if self.spawner is not None:
            self.spawner.close()  # what is left, it kills now

    # ------------------------------------------------------------------ attempts
    def open_channel(self, request: dict[str, Any]) -> Channel:
        """Ask the spawner to run a command (starting it, or a new one if it died)."""
        with self.lock:
            spawner = self.spawner
        if spawner is not None:
            with contextlib.suppress(OSError):
                return spawner.open(request)
        with self.lock:
            fresh = self.spawner
            if fresh is spawner or fresh is None:  # no other thread replaced it meanwhile
                if spawner is not None:
                    spawner.close(timeout_s=1.0)
                fresh = self.spawner = Spawner()
        return fresh.open(request)

    def add(self, run: _Running) -> None:
        with self.lock:
            self.running[run.spec.key] = run
            if run.spec.memory_limit > 0:
                self.limited[run.pid] = run
                start = not self.sampling
                self.sampling = True
            else:
                start = False
        if start:
            sampler = threading.Thread(target=self._sample_memory, name="stormproof-memory")
            sampler.daemon = True
            sampler.start()

    def remove(self, run: _Running) -> None:
        with self.lock:
            self.running.pop(run.spec.key, None)
            self.limited.pop(run.pid, None)
        run.ended.set()

    def stop(self, run: _Running, grace_s: float, verdict: str, reason: str) -> None:
        """SIGTERM the command's group now (once), SIGKILL after ``grace_s`` (the earliest
        deadline asked for wins)."""
        with self.lock:
            first = run.verdict is None
            if first:
                run.verdict, run.reason = verdict, reason
            due = time.monotonic() + max(0.0, grace_s)
            if run.kill_at is None or due < run.kill_at:
                run.kill_at = due
        if first:
            run.channel.send("stop")  # before the signal: its stragglers die with the leader
            _signal_group(run.pid, signal.SIGTERM if grace_s > 0 else signal.SIGKILL)

    def kill(self, key: str, grace_s: float) -> bool:
        run = self.running.get(key)
        if run is None:
            return False
        self.stop(run, grace_s, Verdict.KILLED, "killed by the orchestrator")
        return True

    # ------------------------------------------------------------------ memory
    def _sample_memory(self) -> None:
        """Sample every limited session while there are any (the shim's watchdog, per worker)."""
        sampler = MemorySampler()
        while True:
            with self.lock:
                limited = dict(self.limited)
                if not limited:
                    self.sampling = False
                    return
            interval = min(r.spec.memory_sample_s for r in limited.values())
            for sid, session in sampler.sample(limited.keys()).items():
                run = limited[sid]
                limit = run.spec.memory_limit
                if not session.leader_alive or session.rss <= limit:
                    continue
                used = sampler.proportional(pid for pid, _ in session.members) or session.rss
                if used > limit:
                    self._kill_for_memory(run, used, [pid for pid, _ in session.members])
            time.sleep(interval)

    def _kill_for_memory(self, run: _Running, used: int, members: list[int]) -> None:
        with self.lock:
            self.limited.pop(run.pid, None)
            run.killed_for_memory = True
            if run.verdict is None:
                run.verdict = Verdict.MEMORY
        run.channel.send("stop")
        note = (
            f"killed: it used {used >> 20} MiB of memory, over its limit of "
            f"{run.spec.memory_limit >> 20} MiB"
        )
        run.reason = note
        _signal_group(run.pid, signal.SIGKILL)
        for pid in members:  # those that left the leader's group but not its session
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        _append(os.path.join(run.spec.attempt_dir, "stderr.log"), f"stormproof: {note}\n")


class PoolMarker(WorkerPlugin):
    """Gives each worker whose name starts with a pool's ``name_prefix`` that pool's marker
    resource, as it joins (registered once per set of prefixes; ``options`` says why pools
    are resources). A worker that declares the marker already keeps its own amount."""

    idempotent = True

    def __init__(self, prefixes: dict[str, str]) -> None:
        self.prefixes = dict(sorted(prefixes.items()))
        digest = hashlib.sha256(repr(self.prefixes).encode()).hexdigest()[:12]
        self.name = f"stormproof-pools-{digest}"

    async def setup(self, worker: Worker) -> None:
        have = worker.state.total_resources
        name = str(worker.name)
        marks = {r: 1.0 for p, r in self.prefixes.items() if name.startswith(p) and r not in have}
        if not marks:
            return
        await worker.set_resources(**marks)
        if worker.status == WorkerStatus.running:
            # The scheduler looks again at the tasks no worker could take (an attempt waiting
            # for this pool) when a worker joins or resumes, not when one gains a resource:
            # a pause of no duration makes it look, now that this worker has the marker.
            worker.status = WorkerStatus.paused
            worker.status = WorkerStatus.running


# ---------------------------------------------------------------------- the Dask task
def run_attempt(spec: AttemptSpec) -> tuple[str, dict[str, Any]]:
    """Run one attempt to its end on this worker (see the module docstring).

    Returns ``("X", status)``, ``("D", claim)`` for a duplicate, or ``("N", reason)`` when it
    ran nothing because its worker is closing or its task was cancelled.
    """
    worker = get_worker()
    keeper = _keeper(worker)
    if keeper.closing or worker.status in _CLOSING or _cancelled(worker, spec.key):
        return "N", {"reason": "its worker is closing, or its task was cancelled"}
    started = _start(spec, keeper)
    if started is None:  # claimed before: Dask ran the task again
        claim = read_claim(spec.attempt_dir)
        seen = {"worker": claim.worker, "node": claim.node} if claim else {}
        message = {"e": "D", "key": spec.key, "claim": seen}
        worker.log_event(spec.topic, message)
        return "D", message
    if isinstance(started, Status):
        return "X", _finish(worker, spec, started)
    run = started
    keeper.add(run)
    try:
        status = _wait(worker, keeper, run)
    except BaseException:  # the wrapper broke: its command must not run on unwatched
        _signal_group(run.pid, signal.SIGKILL)
        raise
    finally:
        keeper.remove(run)
        run.channel.close()
    return "X", _finish(worker, spec, status)


def _start(spec: AttemptSpec, keeper: AttemptKeeper) -> _Running | Status | None:
    """Have the spawner claim the attempt and start its command with its logs: the running
    command, the ``Status`` of one that could not start, or ``None`` if it was claimed."""
    worker = keeper.worker
    node, now = str(worker.name), time.time()
    claim = Claim(worker.address, node, now)
    argv = ["/bin/sh", "-c", spec.command] if isinstance(spec.command, str) else list(spec.command)
    request = {
        "argv": argv,
        "cwd": os.path.join(spec.attempt_dir, "work"),
        "env": dict(spec.env),
        "stdout": os.path.join(spec.attempt_dir, "stdout.log"),
        "stderr": os.path.join(spec.attempt_dir, "stderr.log"),
        "claim": [os.path.join(spec.attempt_dir, ATTEMPT_FILE), claim.line()],
    }

    def broken(reason: str) -> Status:
        return Status(126, Verdict.REFUSED, worker.address, node, now, time.time(), reason=reason)

    try:
        channel = keeper.open_channel(request)
    except OSError as exc:
        return broken(f"cannot start the worker's spawner process: {exc}")
    answer = channel.read()
    kind = None if answer is None else answer.get("e")
    if kind == "started" and answer is not None:
        at, kib = float(answer["at"]), int(answer["inherited_kib"])
        return _Running(spec, int(answer["pid"]), at, channel, inherited_rss_kib=kib)
    channel.close()
    if answer is None:
        why = "the worker's spawner process died while it started the command"
        return Status(126, Verdict.BROKEN, worker.address, node, now, time.time(), reason=why)
    if kind == "claimed":
        return None
    code, verdict, reason = int(answer["code"]), str(answer["verdict"]), str(answer["reason"])
    return Status(code, verdict, worker.address, node, now, time.time(), reason=reason)


def _wait(worker: Worker, keeper: AttemptKeeper, run: _Running) -> Status:
    """Wait for the spawner's report of the command's exit, acting meanwhile on notices,
    kills and limits."""
    spec, channel = run.spec, run.channel
    if not channel.ready(spec.hold_started_s):
        message = {"e": "S", "key": spec.key, "worker": worker.address}
        worker.log_event(spec.topic, {**message, "node": str(worker.name), "at": run.started_at})
    deadline = None if spec.time_limit_s is None else time.monotonic() + spec.time_limit_s
    while not channel.ready(_next_wake(run)):
        _check(worker, keeper, run, deadline)
    end = channel.read()
    node = str(worker.name)
    if end is None:  # the spawner is gone: the command is no longer anyone's child
        _signal_group(run.pid, signal.SIGKILL)
        if run.verdict is None:  # killed from outside, not closed with its worker
            why = f"the spawner process of the Dask worker {node} died while the command ran"
            run.verdict, run.reason = Verdict.BROKEN, why
        end = {"code": _KILLED, "cpu_s": None, "maxrss_kib": 0}
    code = int(end["code"])
    verdict = run.verdict or Verdict.EXITED
    oom = run.killed_for_memory and code == _KILLED
    if run.killed_for_memory and not oom:
        verdict = Verdict.EXITED  # it ended on its own just before the SIGKILL
    return Status(
        code,
        verdict,
        worker.address,
        node,
        run.started_at,
        time.time(),
        out_of_memory=oom,
        cpu_s=None if end["cpu_s"] is None else float(end["cpu_s"]),
        max_rss_mib=_peak_rss_mib(int(end["maxrss_kib"]), run.inherited_rss_kib),
        reason=run.reason,
    )


def _next_wake(run: _Running) -> float:
    if run.kill_at is None:
        return _CHECK_S
    return max(0.0, min(_CHECK_S, run.kill_at - time.monotonic()))


def _check(worker: Worker, keeper: AttemptKeeper, run: _Running, deadline: float | None) -> None:
    """One look at what may end the command: a due SIGKILL, a closing worker, a cancelled
    task, the time limit."""
    now = time.monotonic()
    if run.kill_at is not None and now >= run.kill_at:
        _signal_group(run.pid, signal.SIGKILL)
        run.kill_at = None
    if run.verdict is not None:
        return
    if keeper.closing or worker.status in _CLOSING:
        why = f"its worker {worker.name} is closing (retired)"
        keeper.stop(run, run.spec.notice_s, Verdict.RETIRED, why)
    elif _cancelled(worker, run.spec.key):
        keeper.stop(run, _CANCEL_GRACE_S, Verdict.CANCELLED, "its Dask task was cancelled")
    elif deadline is not None and now >= deadline:
        why = f"ran past its time limit of {run.spec.time_limit_s:g}s"
        keeper.stop(run, _CANCEL_GRACE_S, Verdict.TIMEOUT, why)


def _finish(worker: Worker, spec: AttemptSpec, status: Status) -> dict[str, Any]:
    """Write the exit status, then report it: whoever hears of it finds the file."""
    write_status(spec.attempt_dir, status)
    message = {"e": "X", "key": spec.key, **status.to_dict()}
    worker.log_event(spec.topic, message)
    return message


# ---------------------------------------------------------------------- Client.run
def kill_attempts(kills: dict[str, float], dask_worker: Worker) -> list[str]:
    """``Client.run``: SIGTERM these attempts (by key) now, SIGKILL after their grace."""
    keeper = _keeper(dask_worker)
    return [key for key, grace in kills.items() if keeper.kill(key, grace)]


def signal_attempt(key: str, signum: int, dask_worker: Worker) -> bool:
    """``Client.run``: one signal to the attempt's process group (a checkpoint request)."""
    run = _keeper(dask_worker).running.get(key)
    return run is not None and _signal_group(run.pid, signum)


def worker_protocol(dask_worker: Worker) -> int:
    """``Client.run``: which wrapper this worker has (and that it can import stormproof)."""
    return PROTOCOL


# ---------------------------------------------------------------------- plumbing
def _peak_rss_mib(max_rss_kib: int, inherited_kib: int) -> float | None:
    """The command's peak resident memory, MiB, when ``ru_maxrss`` tells it.

    Linux carries a forked child's high-water mark across its ``exec``: the command's
    ``ru_maxrss`` is the larger of its own peak and the spawner's at the fork (a small
    process's 10-20 MiB, even for ``true``). Above the spawner's peak it is the command's own;
    at or below it, the command's is unknown (smaller than that), and ``None`` says so.
    """
    if max_rss_kib <= inherited_kib:
        return None
    return round(max_rss_kib / 1024.0, 1)


def _signal_group(pgid: int, signum: int) -> bool:
    try:
        os.killpg(pgid, signum)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def _cancelled(worker: Worker, key: str) -> bool:
    """Whether the scheduler took this task back (cancelled, or released from this worker)."""
    ts = worker.state.tasks.get(key)
    return ts is None or ts.state in ("cancelled", "released", "forgotten")


def _keeper(worker: Worker) -> AttemptKeeper:
    """The worker's keeper; made here if the orchestrator's registration has not reached it."""
    keeper = worker.plugins.get(KEEPER)
    if isinstance(keeper, AttemptKeeper):
        return keeper
    with _keeper_lock:
        keeper = worker.plugins.get(KEEPER)
        if not isinstance(keeper, AttemptKeeper):
            keeper = AttemptKeeper()
            keeper.setup(worker)
            worker.plugins[KEEPER] = keeper
    return keeper


def _append(path: str, text: str) -> None:
    """One line for the attempt's owner to read, in its log; a log we cannot open gets none."""
    with contextlib.suppress(OSError):
        fd = os.open(path, _LOG_FLAGS, 0o644)
        try:
            os.write(fd, text.encode(errors="replace"))
        finally:
            os.close(fd)
