"""``executor: dask``: every attempt a Dask task, under its attempt id as the key.

The orchestrator's side. How an attempt runs on its worker is ``worker``'s docstring; what it
leaves in its directory is ``status``'s. Here:

* **Submitting.** ``submit`` only queues; ``poll`` sends what was queued in one ``Client.map``
  per shape (one graph update for many attempts), with Dask's retries off, and marks the
  futures ``fire_and_forget``: the scheduler then runs them to the end even when no client
  wants them any more, so the attempts outlive this orchestrator's client. Each asks for
  its ``vcpus``, ``memory`` (MiB) and ``gpus`` as worker resources, and for its pool's marker
  (``options``).
* **News.** Starts and ends arrive as worker events on the run's topic, and departures of
  workers as the scheduler's ``remove-worker`` events (on its ``all`` topic), all pushed to
  this client: nothing is asked per attempt. A worker that leaves *retired* (gracefully:
  ``retire_workers``) gave its attempts their notice: they end ``AttemptPreempted`` once their
  command has stopped (its exit status is on the shared filesystem within the notice). One
  that leaves otherwise (killed, crashed, cut off) loses its attempts: ``AttemptLost`` at once.
  The futures' own states catch the rest (a task that failed outside the wrapper, a task
  cancelled by someone else).
* **Kills and signals** reach the attempt's worker through ``Client.run`` (its
  ``AttemptKeeper``), batched per poll; an attempt not started yet is cancelled in Dask.
* **Resume.** ``recover`` reads each attempt's files: an exit status settles it; a claim by
  a worker still in the cluster is adopted by submitting the same key again (the scheduler
  still runs it, so the new future is the old task's; if it ran to its end meanwhile, the
  claim keeps the command from running twice and its status file settles it); a claim by a
  worker gone is lost; no claim means it never started, and the runtime submits it again.
* **Cancel.** A cancelled run's kills reach every attempt; ``close(final=True)`` cancels
  every key of the run Dask still holds.

The run's directory must be shared by the orchestrator and the workers (as on a cluster's
shared filesystem): the attempts' logs, checkpoints, claims and exit statuses are there.
"""

from __future__ import annotations

import contextlib
import os
import queue
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from distributed import Future, fire_and_forget

from stormproof.core.defs import PoolDef
from stormproof.core.events import (
    AttemptExited,
    AttemptLost,
    AttemptPreempted,
    AttemptStarted,
    AttemptSubmitFailed,
    Event,
)
from stormproof.executors._files import create_attempt
from stormproof.executors.base import AttemptJob, ExecutorUnavailable
from stormproof.executors.dask import cluster, pools
from stormproof.executors.dask.cluster import Connection
from stormproof.executors.dask.options import GPUS, MEMORY, VCPUS, DaskOptions, run_scope
from stormproof.executors.dask.status import (
    AttemptSpec,
    Status,
    Verdict,
    read_claim,
    read_status,
)
from stormproof.executors.dask.worker import (
    KEEPER,
    AttemptKeeper,
    PoolMarker,
    kill_attempts,
    run_attempt,
    signal_attempt,
)
from stormproof.executors.local import (
    _DISK_FAULTS,
    ENV_MEMORY_LIMIT,
    ENV_MEMORY_LIMIT_MIB,
    _switch,
)

#: Exit code of an attempt killed before it started (128 + SIGTERM), as a batch system says.
SIGTERM_EXIT = 143
#: How often futures, departures and duplicates are looked at again.
_SWEEP_S = 0.25
#: ``poll`` gives news this long after it came, with whatever came meanwhile: each of the
#: driver's rounds (the core, a commit of the log, one graph update for the attempts that
#: follow) then serves several attempts instead of one. Dask workers hold queues of
#: attempts, so they do not wait for it; a chain of tasks waits this much more per link.
_GATHER_S = 0.02
#: A finished task whose end event has not arrived after this long: its result is fetched.
_NEWS_GRACE_S = 2.0
#: A duplicate's attempt is settled from its files after this long (its wrapper may be
#: between the end of its command and its status file).
_DUPLICATE_GRACE_S = 1.0
#: After a worker's retirement, its attempts' statuses are awaited their notice plus this.
_RETIRE_MARGIN_S = 10.0
#: The time limit the wrapper enforces behind the core's timer: timeout + max(this, 10 %).
_TIME_MARGIN_S = 60.0


@dataclass(eq=False)
class _Tracked:
    """One attempt this executor watches, until its final event."""

    job: AttemptJob
    spec: AttemptSpec
    resources: tuple[tuple[str, float], ...]
    future: Future[Any] | None = None
    worker: str = ""  # address of the worker running it, once known
    node: str = ""
    started: bool = False
    killed: bool = False
    finished_at: float | None = None  # monotonic: its future finished (news expected)
    check_at: float | None = None  # monotonic: settle it from its files then
    departed: bool = False  # its worker was retired under it


class DaskExecutor:
    """Attempts as Dask tasks; see the module docstring."""

    delegates_placement: ClassVar[bool] = True

    def __init__(self, run_dir: Path, options: Mapping[str, Any] | None = None) -> None:
        opts = dict(options or {})
        self.options = DaskOptions.from_dict(opts)
        self.scope = run_scope(Path(run_dir).name, run_dir)
        self.topic = f"stormproof:{self.scope}"
        self.memory_limits = _switch(opts.get("memory_limit", os.environ.get(ENV_MEMORY_LIMIT)))
        self._conn: Connection | None = None
        self._inbox: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self._tracked: dict[str, _Tracked] = {}  # by key
        self._ended: set[str] = set()  # keys whose final event was given
        self._to_submit: list[_Tracked] = []
        self._kills: dict[str, dict[str, float]] = {}  # worker address -> key -> grace
        self._to_cancel: list[Future[Any]] = []
        self._departed: dict[str, bool] = {}  # worker address -> retired (expected)
        self._news: list[Event] = []
        self._news_since = 0.0  # monotonic: when the oldest news not yet given came
        self._control = ThreadPoolExecutor(1, thread_name_prefix="stormproof-dask")
        self._next_sweep = 0.0

    # ------------------------------------------------------------------ pools (classmethods)
    @classmethod
    def describe_pools(
        cls, pools_: tuple[PoolDef, ...], options: Mapping[str, Any]
    ) -> tuple[PoolDef, ...]:
        return pools.describe(pools_, options)

    @classmethod
    def check_workflow(
        cls, spec: Any, pools_: Sequence[PoolDef], options: Mapping[str, Any]
    ) -> None:
        pools.check(spec.tasks, pools_, options)

    # ------------------------------------------------------------------ the seam
    def prepare(self) -> None:
        """Connect (or start the local cluster): a cluster that cannot be used stops the
        command here, in one line, before the run's log changes."""
        self._connection()

    def submit(self, job: AttemptJob) -> None:
        key = self._key(job.attempt_id)
        if key in self._tracked or key in self._ended:
            return
        try:  # here, while the attempt waits, not on its worker once it may run
            create_attempt(os.path.abspath(job.attempt_dir))
        except OSError as exc:
            if exc.errno in _DISK_FAULTS:  # the machine's fault, not the attempt's: stop
                raise ExecutorUnavailable(
                    f"cannot create {job.attempt_dir} for attempt {job.attempt_id}: "
                    f"{exc.strerror or exc}; free space on that disk (or fix it)"
                ) from exc
            self._ended.add(key)
            why = f"cannot create the attempt's directory or logs: {exc}"
            self._tell(AttemptSubmitFailed(time.time(), job.attempt_id, why))
            return
        tracked = self._track(job)
        self._to_submit.append(tracked)

    def kill(self, attempt_id: str, grace_s: float) -> None:
        tracked = self._tracked.get(self._key(attempt_id))
        if tracked is None:
            return
        tracked.killed = True
        if tracked.started and tracked.worker:
            self._kills.setdefault(tracked.worker, {})[tracked.spec.key] = max(0.0, grace_s)
        elif tracked in self._to_submit:  # never sent: it ends here
            self._to_submit.remove(tracked)
            self._end(tracked, AttemptExited(time.time(), attempt_id, SIGTERM_EXIT))
        elif tracked.future is not None:
            self._to_cancel.append(tracked.future)

    def withdraw(self, attempt_id: str) -> None:
        return None  # no successors are held on Dask

    def signal(self, attempt_id: str, signum: int) -> None:
        tracked = self._tracked.get(self._key(attempt_id))
        if tracked is not None and tracked.started and tracked.worker:
            self._call(signal_attempt, tracked.spec.key, int(signum), workers=[tracked.worker])

    def interrupt_instance(self, instance_id: str, notice_s: float) -> None:
        """``stormproof interrupt --instance WORKER``: retire the worker, as a deployment does on
        a spot node's preemption notice. Its attempts already have the core's notice (a kill
        with the notice as grace); its keeper holds the worker's close until they stopped."""
        self._flush()  # the kills first (one control thread: they go out in order)
        client = self._client()
        self._control.submit(client.retire_workers, names=[instance_id], close_workers=True)

    def poll(self, timeout_s: float) -> list[Event]:
        """The news, once there is some and ``_GATHER_S`` has passed for more to join it
        (within ``timeout_s``)."""
        deadline = time.monotonic() + max(0.0, timeout_s)
        self._flush()
        while True:
            self._drain()
            now = time.monotonic()
            if now >= self._next_sweep:
                self._sweep(now)
                self._next_sweep = now + _SWEEP_S
            if self._news:
                deadline = min(deadline, self._news_since + _GATHER_S)
            if now >= deadline:
                break
            with contextlib.suppress(queue.Empty):
                wait = max(0.0, min(deadline, self._next_sweep) - now)
                self._handle(*self._inbox.get(timeout=wait))
        news, self._news = self._news, []
        return news

    def recover(self, jobs: Sequence[AttemptJob]) -> list[Event]:
        """Settle from the files, adopt what still runs, report the rest (module docstring)."""
        if not jobs:
            return []
        conn = self._connection()
        present = {w.address for w in cluster.workers(conn.client)}
        events: list[Event] = []
        for job in jobs:
            key = self._key(job.attempt_id)
            attempt_dir = os.path.abspath(job.attempt_dir)
            status = read_status(attempt_dir)
            if status is not None:
                events += [_started(job.attempt_id, key, status.node, status.started_at)]
                events.append(self._final(job.attempt_id, status, killed=False))
                self._ended.add(key)
                continue
            claim = read_claim(attempt_dir)
            if claim is None:
                continue  # never started: the runtime submits it, and submit is idempotent
            if claim.worker and claim.worker not in present:
                why = (
                    f"it ran on the Dask worker {claim.node}, which left the cluster while no "
                    "orchestrator watched, without an exit status"
                )
                events.append(AttemptLost(time.time(), job.attempt_id, why))
                self._ended.add(key)
                continue
            tracked = self._track(job)
            tracked.started, tracked.worker, tracked.node = True, claim.worker, claim.node
            self._to_submit.append(tracked)  # the same key: the scheduler's own task, adopted
            nodes = (claim.node,) if claim.node else ()
            events.append(AttemptStarted(min(claim.at, time.time()), job.attempt_id, key, nodes))
        self._flush()
        return events

    def close(self, final: bool = False) -> None:
        """Stop watching; attempts run on (``fire_and_forget``). ``final``: the run has ended,
        so every key of it Dask still holds is cancelled."""
        if self._conn is None:
            self._control.shutdown(wait=False)
            return
        with contextlib.suppress(ExecutorUnavailable):
            self._flush()
        if final:
            left = [t.future for t in self._tracked.values() if t.future is not None]
            if left:
                self._call(self._conn.client.cancel, left, force=True)
        self._control.shutdown(wait=True)
        conn, self._conn = self._conn, None
        with contextlib.suppress(Exception):  # the scheduler may be gone already
            conn.client.unsubscribe_topic(self.topic)
            conn.client.unsubscribe_topic("all")
        if conn.cluster is None:
            cluster.forget_client(conn.client)
        else:
            conn.close()

    # ------------------------------------------------------------------ sending
    def _connection(self) -> Connection:
        if self._conn is not None:
            return self._conn
        opts = self.options
        opts.require_cluster()
        if opts.local is not None:
            markers = [p.resource for p in opts.pools.values() if p.resource]
            conn = cluster.start_local(opts.local, markers)
        else:
            conn = Connection(cluster.shared_client(opts))
        client = conn.client
        client.register_plugin(AttemptKeeper(), name=KEEPER)
        if opts.prefixes():
            marker = PoolMarker(opts.prefixes())
            client.register_plugin(marker, name=marker.name)
        client.subscribe_topic(self.topic, lambda event: self._inbox.put(("run", event[1])))
        client.subscribe_topic("all", self._on_cluster_event)
        self._conn = conn
        return conn

    def _on_cluster_event(self, event: tuple[float, Any]) -> None:
        msg = event[1]
        if isinstance(msg, dict) and msg.get("action") == "remove-worker":
            self._inbox.put(("gone", msg))

    def _flush(self) -> None:
        """Send what ``submit`` and ``kill`` queued: one graph update per shape."""
        if not (self._to_submit or self._kills or self._to_cancel):
            return
        client = self._client()
        groups: dict[tuple[tuple[str, float], ...], list[_Tracked]] = {}
        for tracked in self._to_submit:
            groups.setdefault(tracked.resources, []).append(tracked)
        self._to_submit = []
        for resources, batch in groups.items():
            futures = client.map(
                run_attempt,
                [t.spec for t in batch],
                key=[t.spec.key for t in batch],
                pure=False,
                retries=0,
                resources=dict(resources),
            )
            for tracked, future in zip(batch, futures, strict=True):
                tracked.future = future
            fire_and_forget(futures)
        kills, self._kills = self._kills, {}
        for address, by_key in kills.items():
            self._call(kill_attempts, by_key, workers=[address])
        cancels, self._to_cancel = self._to_cancel, []
        if cancels:
            self._call(client.cancel, cancels, force=True)

    def _call(self, fn: Any, *args: Any, workers: list[str] | None = None, **kw: Any) -> None:
        """Run a control call (a ``Client.run`` on workers, a cancel) off the driver's thread."""
        client = self._client()
        if workers is not None:
            self._control.submit(client.run, fn, *args, workers=workers, on_error="ignore")
        else:
            self._control.submit(fn, *args, **kw)

    def _client(self) -> Any:
        client = self._connection().client
        if client.status in ("closed", "closing", "failed"):
            raise ExecutorUnavailable(f"lost {self.options.where} (client {client.status})")
        return client

    # ------------------------------------------------------------------ news
    def _drain(self) -> None:
        while True:
            try:
                item = self._inbox.get_nowait()
            except queue.Empty:
                return
            self._handle(*item)

    def _handle(self, kind: str, msg: Any) -> None:
        if kind == "gone":
            self._worker_gone(str(msg.get("worker", "")), bool(msg.get("expected")))
            return
        tracked = self._tracked.get(str(msg.get("key", "")))
        if tracked is None:
            return  # another run's news, or an attempt that already ended
        event = msg.get("e")
        if event == "S":
            self._started(tracked, str(msg["worker"]), str(msg["node"]), float(msg["at"]))
        elif event == "X":
            status = Status.from_dict(msg)
            self._started(tracked, status.worker, status.node, status.started_at)
            self._end(tracked, self._final(tracked.job.attempt_id, status, tracked.killed))
        elif event == "D":  # ran before: its files will say how it ended
            tracked.check_at = time.monotonic() + _DUPLICATE_GRACE_S

    def _started(self, tracked: _Tracked, worker: str, node: str, at: float) -> None:
        if tracked.started:
            if not tracked.worker:
                tracked.worker, tracked.node = worker, node
            return
        tracked.started, tracked.worker, tracked.node = True, worker, node
        key, aid = tracked.spec.key, tracked.job.attempt_id
        self._tell(_started(aid, key, node, at))
        if worker in self._departed:  # its worker left before we heard it started
            self._on_departure(tracked, self._departed[worker])

    def _worker_gone(self, address: str, retired: bool) -> None:
        self._departed[address] = retired
        for tracked in list(self._tracked.values()):
            if tracked.started and tracked.worker == address:
                self._on_departure(tracked, retired)

    def _on_departure(self, tracked: _Tracked, retired: bool) -> None:
        if retired:  # its command has its notice to stop: its status file will say
            tracked.departed = True
            tracked.check_at = time.monotonic() + tracked.spec.notice_s + _RETIRE_MARGIN_S
            return
        status = read_status(tracked.spec.attempt_dir)
        if status is not None:
            self._end(tracked, self._final(tracked.job.attempt_id, status, tracked.killed))
            return
        why = (
            f"its Dask worker {tracked.node} left the cluster without being retired (killed, "
            "crashed or cut off)"
        )
        self._end(tracked, AttemptLost(time.time(), tracked.job.attempt_id, why))

    def _sweep(self, now: float) -> None:
        """Look again at what events cannot tell: futures that ended outside the wrapper,
        finished tasks whose news is late, attempts due to be settled from their files."""
        for tracked in list(self._tracked.values()):
            if tracked.check_at is not None and now >= tracked.check_at:
                self._settle_from_files(tracked)
                continue
            future = tracked.future
            if future is None:
                continue
            state = str(future.status)
            if state == "pending":
                continue
            if state == "finished":
                if tracked.finished_at is None:
                    tracked.finished_at = now
                elif now - tracked.finished_at > _NEWS_GRACE_S:
                    tracked.finished_at = now + 3600.0  # fetched once
                    self._control.submit(self._fetch_result, tracked.spec.key, future)
            else:
                self._future_ended(tracked, state)

    def _fetch_result(self, key: str, future: Future[Any]) -> None:
        """The task returned but its end event never came: its result says the same."""
        with contextlib.suppress(Exception):
            kind, message = future.result(timeout=30)
            if kind in ("X", "D"):
                self._inbox.put(("run", {**message, "e": kind, "key": key}))

    def _future_ended(self, tracked: _Tracked, state: str) -> None:
        aid = tracked.job.attempt_id
        if state == "cancelled":
            if not tracked.killed:
                why = "its Dask task was cancelled outside stormproof"
                self._end(tracked, AttemptLost(time.time(), aid, why))
            elif not tracked.started:
                self._end(tracked, AttemptExited(time.time(), aid, SIGTERM_EXIT))
            else:
                tracked.future = None  # its wrapper stops the command and reports the end
            return
        exc = _exception(tracked.future)
        if not tracked.started and state == "error":
            message = f"its Dask task failed before the attempt started: {exc}"
            self._end(tracked, AttemptSubmitFailed(time.time(), aid, message))
        else:
            self._end(tracked, AttemptLost(time.time(), aid, f"its Dask task {state}: {exc}"))

    def _settle_from_files(self, tracked: _Tracked) -> None:
        """Settle an attempt its future cannot (a duplicate ran, or its worker was retired)."""
        tracked.check_at = None
        aid = tracked.job.attempt_id
        status = read_status(tracked.spec.attempt_dir)
        if status is not None:
            self._started(tracked, status.worker, status.node, status.started_at)
            self._end(tracked, self._final(aid, status, tracked.killed))
            return
        claim = read_claim(tracked.spec.attempt_dir)
        if claim is not None and self._departed.get(claim.worker) and not tracked.departed:
            self._started(tracked, claim.worker, claim.node, claim.at)  # retired under it
            return
        if tracked.departed:
            why = (
                f"its Dask worker {tracked.node} was retired and the attempt left no exit "
                f"status within its notice of {tracked.spec.notice_s:g}s"
            )
            self._end(tracked, AttemptPreempted(time.time(), aid, why))
            return
        where = f" on {claim.node}" if claim is not None and claim.node else ""
        why = f"it ran{where} before, Dask no longer runs it there, and it left no exit status"
        self._end(tracked, AttemptLost(time.time(), aid, why))

    def _final(self, aid: str, status: Status, killed: bool) -> Event:
        """The seam's final event for an exit status (``status.Verdict``)."""
        now = time.time()
        verdict = status.verdict
        if verdict == Verdict.REFUSED:
            return AttemptSubmitFailed(now, aid, status.reason or "the command could not start")
        if verdict == Verdict.RETIRED:
            why = (
                f"the Dask worker {status.node} was retired (closed gracefully) while it ran; "
                f"it got SIGTERM and its notice to checkpoint (exit {status.code})"
            )
            return AttemptPreempted(now, aid, why)
        if verdict == Verdict.BROKEN or (verdict == Verdict.CANCELLED and not killed):
            return AttemptLost(now, aid, status.reason or "its Dask task was cancelled")
        return AttemptExited(
            now,
            aid,
            status.code,
            out_of_memory=status.out_of_memory,
            timed_out=verdict == Verdict.TIMEOUT,
            cpu_s=status.cpu_s,
            max_rss_mib=status.max_rss_mib,
        )

    def _tell(self, event: Event) -> None:
        if not self._news:
            self._news_since = time.monotonic()
        self._news.append(event)

    def _end(self, tracked: _Tracked, event: Event) -> None:
        key = tracked.spec.key
        self._tracked.pop(key, None)
        self._ended.add(key)
        tracked.future = None  # released: the scheduler forgets the task once it is done
        self._tell(event)

    # ------------------------------------------------------------------ attempts
    def _key(self, attempt_id: str) -> str:
        return f"{self.scope}/{attempt_id}"

    def _track(self, job: AttemptJob) -> _Tracked:
        options = self.options.pool(job.pool)
        env = {str(k): str(v) for k, v in job.env.items()}
        limited = self.memory_limits and bool(env.get(ENV_MEMORY_LIMIT_MIB))
        timeout = job.timeout_s
        spec = AttemptSpec(
            key=self._key(job.attempt_id),
            topic=self.topic,
            attempt_id=job.attempt_id,
            attempt_dir=os.path.abspath(job.attempt_dir),
            command=job.command if isinstance(job.command, str) else [str(a) for a in job.command],
            env=env,
            memory_limit=max(1, job.memory_mib) << 20 if limited else 0,
            notice_s=options.notice_s,
            time_limit_s=None if timeout is None else timeout + max(_TIME_MARGIN_S, timeout / 10),
            hold_started_s=self.options.hold_started_s,
            memory_sample_s=self.options.memory_sample_s,
        )
        resources: dict[str, float] = {VCPUS: float(job.vcpus), MEMORY: float(job.memory_mib)}
        if job.gpus:
            resources[GPUS] = float(job.gpus)
        if options.resource:
            resources[options.resource] = 0.0  # only workers that have it; it bounds nothing
        tracked = _Tracked(job, spec, tuple(sorted(resources.items())))
        self._tracked[spec.key] = tracked
        return tracked


def _started(aid: str, key: str, node: str, at: float) -> AttemptStarted:
    """Started where the worker says, when it says (never later than now: clocks differ)."""
    return AttemptStarted(min(at, time.time()), aid, key, (node,) if node else ())


def _exception(future: Future[Any] | None) -> str:
    if future is None:
        return "unknown"
    try:
        exc = future.exception(timeout=5)
    except Exception as err:  # the scheduler is gone too
        return type(err).__name__
    text = str(exc).strip() if exc is not None else ""
    return (text.splitlines() or [type(exc).__name__])[0]
