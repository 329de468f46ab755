"""The driver: the core's shell for real runs.

It owns everything the core may not touch: the clock, signals, the event log
and the executor. One loop:

1. gather events (executor news, fleet news, due timers, requests from other processes);
2. feed them to the core, one at a time;
3. append every event and the decisions it caused to the log and **flush**;
4. only then carry the actions out (launch, kill, start a timer).

Because step 3 comes before step 4, a crash at any point leaves a log that
says at least as much as what was done. For the same reason a fault of the
machine rather than of the run stops it, resumable, instead of failing it: the
event log cannot be written (``StoreFault``: disk full, locked), the
executor cannot be reached (``ExecutorUnavailable``), or the checkpoint store
is gone (``Checkpointing.fault``). What the log says was decided and was not
carried out is carried out by ``resume``. Resume replays the log through a
fresh core (deterministic), asks the executor what became of every attempt
that was live, adopts what still runs and relaunches only what never started;
likewise it asks the fleet again only for instances whose launch was never
answered.

The run is driven under its lease (``runtime/lease.py``): the driver waits for
it, renews it, and after each flush makes sure it still holds the run before it
acts. If the event store fails (its server gone, its disk full) the run stops
resumably; if another orchestrator took the run over, this one stops at once,
acting on nothing more.
"""

from __future__ import annotations

import dataclasses
import heapq
import json
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import FrameType
from typing import TYPE_CHECKING, Any, Protocol

from stormproof.capacity.base import Fleet, InstanceView
from stormproof.capacity.local import LocalFleet, PoolSource, build_sources
from stormproof.checkpoints import protocol
from stormproof.core.capacity import InstanceState
from stormproof.core.decisions import (
    Decision,
    KillAttempt,
    LaunchAttempt,
    LaunchInstance,
    PruneCheckpoints,
    RequestCheckpoint,
    StartTimer,
    TerminateInstance,
    WithdrawAttempt,
)
from stormproof.core.events import (
    AttemptDropped,
    AttemptExited,
    AttemptLost,
    AttemptPreempted,
    AttemptStarted,
    CancelRequested,
    Event,
    FleetScaleRequested,
    InstanceLost,
    InterruptionNotice,
    RunResumed,
    RunStarted,
    StopRequested,
    TimerFired,
    event_from_dict,
)
from stormproof.core.machine import Workflow
from stormproof.core.states import AttemptState
from stormproof.errors import LeaseLost, StoreFault
from stormproof.executors.base import Executor, ExecutorUnavailable
from stormproof.runtime.attempt_jobs import AttemptJobs
from stormproof.runtime.checkpointing import Checkpointing
from stormproof.runtime.compile import compile_tasks, run_options
from stormproof.runtime.home import Home
from stormproof.runtime.lease import LeaseKeeper, OnWait, hold_lease
from stormproof.runtime.redrive import begin, segment_rows
from stormproof.runtime.reuse import TaskResults, copy_reused
from stormproof.runtime.runs import RunContext
from stormproof.runtime.view_store import ViewKeeper
from stormproof.store.base import EventLog, Row

if TYPE_CHECKING:
    from stormproof.monitor.alerts.hook import RunAlerts

#: How often the loop wakes up with nothing to do, to read requests and refresh progress.
IDLE_WAKE_S = 0.25
#: Events that end an attempt: its checkpoint, if one is being saved, is stored first.
_ATTEMPT_ENDS = (AttemptExited, AttemptLost, AttemptPreempted)


class Reporter(Protocol):
    """Whoever shows progress (the CLI's live table, or nothing)."""

    def on_decisions(self, decisions: Sequence[Decision], now: float) -> None: ...

    def tick(self, now: float) -> None: ...

    def resumed(self, core: Workflow) -> None:
        """The run's state as its history left it, before anything new is decided."""


@dataclass
class DriveResult:
    state: str  # succeeded | failed | cancelled | stopped
    live_attempts: int = 0  # attempts left running in the background (when stopped)
    reason: str = ""


@dataclass
class Driver:
    home: Home
    store: EventLog
    ctx: RunContext
    executor: Executor
    reporter: Reporter | None = None
    checkpointing: Checkpointing | None = None
    clock: Callable[[], float] = time.time
    #: Where instances come from; default: the local fleet with the run's recorded sources.
    fleet: Fleet | None = None
    #: Told who drives the run while this driver waits for it; ``None``: ``RunLocked`` at once.
    on_lease_wait: OnWait | None = None
    #: The run's alert rules (``monitor.alerts``), when it has any.
    alerts: RunAlerts | None = None
    #: A redrive to begin (``runtime.redrive``): the ``RunRedriven`` row's data, written under
    #: the lease if the log still ends at ``redrive_after_seq``, as planned.
    redrive: dict[str, Any] | None = None
    redrive_after_seq: int = 0
    _timers: list[tuple[float, str]] = field(default_factory=list)
    _stop: str | None = None
    #: The run's status view, folded as rows are appended and kept in the store.
    _keeper: ViewKeeper | None = None
    _lease: LeaseKeeper | None = None
    #: The event store failed or the lease was lost: nothing more may be written or decided.
    _store_failed: bool = False
    #: Another orchestrator may drive the run now (the lease was lost, or may have lapsed
    #: while the store was unreachable): nothing more may be sent anywhere, not even what the
    #: executor still has queued. The caller must not close the executor either, and should
    #: leave at once, as a ``kill -9`` would (which every part of a run survives).
    abandoned: bool = False

    def __post_init__(self) -> None:
        self.tasks = compile_tasks(self.ctx.spec, default_runtime_s=self.ctx.default_runtime_s)
        ctx = self.ctx
        self.core = Workflow(
            self.tasks,
            run_options(ctx.spec, ctx.pools, ctx.seed, ctx.max_parallel, ctx.policy),
        )
        self._view = _CoreFleet(self.core)
        markets = {p.name: p.market.value for p in self.core.options.pools}
        timeouts = [t.timeout_s for t in self.tasks]
        self.jobs = AttemptJobs.for_run(self.home, self.ctx, timeouts, markets)
        self._results = TaskResults.for_run(self.store, self.ctx, self.home)

    # ------------------------------------------------------------------ entry
    def drive(self, initial: Sequence[Event] = ()) -> DriveResult:
        """Drive the run until it finishes or is stopped; holds the run's lease throughout."""
        with hold_lease(self.store, self.ctx.name, self.on_lease_wait) as lease:
            self._lease = lease
            self.home.check_run_tree(self.ctx.name)  # a link planted there is refused
            self.home.make_inside(self.home.data_dir(self.ctx.name))
            if self.redrive is not None:
                self._begin_redrive()
            history = list(self.store.read(self.ctx.name))
            segment = segment_rows(history, self.ctx)  # a redrive's replay starts at its row
            keeper = self._keeper = ViewKeeper(
                self.store, self.store.get_run(self.ctx.name), history
            )
            now = self.clock()
            first = next((r for r in segment if r.category == "event"), None)
            if self.fleet is None:
                sources = [PoolSource.from_dict(d) for d in self.ctx.sources]
                origin = now if first is None else first.at
                self.fleet = LocalFleet(build_sources(sources, origin, self.ctx.seed))
            pending: list[Event] = []
            if first is None:
                pending = [self._start(now)]
                if self.alerts is not None and history:  # a redrive: the segments before it
                    self.alerts.replay(history)
            else:
                self._replay(segment)
                lease.keep()  # a long replay must not let the lease lapse
                if self.reporter is not None:  # a resumed run's progress starts where it was
                    self.reporter.resumed(self.core)
                if self.alerts is not None:  # alerts raised but never delivered: again
                    self.alerts.replay(history)
                if self.core.final is not None:
                    self._close_alerts()
                    keeper.save()
                    return DriveResult(self.core.final)
            with self._signals():
                try:
                    if first is not None:  # in here: an executor that is gone stops the run
                        self._relaunch_pending()
                        pending = [*self._recover(now), RunResumed(now)]
                    return self._loop([*pending, *initial])
                except ExecutorUnavailable as exc:
                    return self._stopped_by_fault(f"the {self.ctx.executor} executor failed: {exc}")
                except StoreFault as exc:
                    self._store_failed = True
                    self.abandoned = not lease.surely_held()
                    return DriveResult("stopped", len(self.core.attempts), str(exc))
                except LeaseLost:
                    self._store_failed = self.abandoned = True
                    raise
                finally:
                    self._finish()

    def _stopped_by_fault(self, reason: str) -> DriveResult:
        """A fault of the machine, not of the run: record the stop if the log still takes it,
        carry nothing out (``resume`` does what was decided), and say how to go on."""
        try:
            self._process([StopRequested(self.clock(), reason)], act=False)
        except StoreFault:
            self._store_failed = True
        return DriveResult("stopped", len(self.core.attempts), reason)

    def _save_view(self) -> None:
        """The view as the log now ends (a cache: a store that fails here loses nothing)."""
        if self._keeper is not None:
            self._keeper.save()

    def _finish(self) -> None:
        """Log what checkpoint saves in flight produced and the alerts' last words, then let
        the executor go; with the store failed, write and decide nothing more; abandoned,
        touch nothing at all."""
        if self.abandoned:
            return
        if not self._store_failed:
            try:
                self._drain_checkpoints()
                self._close_alerts()
                self.store.flush()
                self._save_view()
            except StoreFault:
                self._store_failed = True
                self.abandoned = self._lease is not None and not self._lease.surely_held()
                if self.abandoned:
                    return
            except ExecutorUnavailable:
                pass  # on the way out already: the journal and the checkpoint dirs keep the rest
        if self._store_failed and self.checkpointing is not None:
            self.checkpointing.close()
        final = self.core.final is not None and not self._store_failed
        self.executor.close(final=final)
        if self.fleet is not None:
            self.fleet.close(final=final)

    # ------------------------------------------------------------------ the loop
    def _loop(self, pending: list[Event]) -> DriveResult:
        last_requests = 0.0
        assert self._lease is not None
        keep_lease = self._lease.keep
        while True:
            keep_lease()
            if pending:
                self._process(pending)
                pending = []
                if self.core.final is not None:
                    return DriveResult(self.core.final)
            now = self.clock()
            if self.alerts is not None:
                self._note(self.alerts.poll(now))
            fault = self.checkpointing.fault if self.checkpointing is not None else None
            if fault is not None and self._stop is None:
                self._stop = fault
            if self._stop is not None:
                self._process([StopRequested(now, self._stop)])
                live = len(self.core.attempts)
                return DriveResult("stopped", live, self._stop)
            pending = self._due_timers(now)
            if self.fleet is not None:
                pending += self.fleet.poll(now, self._view)
            if now - last_requests >= IDLE_WAKE_S:
                last_requests = now
                pending += self._requests(now)
            if pending:
                continue
            wait = IDLE_WAKE_S
            if self.checkpointing is not None and self.checkpointing.busy:
                wait = 0.02
            if self._timers:
                wait = max(0.0, min(wait, self._timers[0][0] - now))
            pending = self._through_checkpoints(self.executor.poll(wait))
            if self.reporter is not None:
                self.reporter.tick(self.clock())

    def _through_checkpoints(self, events: list[Event]) -> list[Event]:
        """Hold ends of attempts whose last commit is still being saved; collect finished I/O."""
        ckpt = self.checkpointing
        if ckpt is None:
            return events
        kept = [
            e
            for e in events
            if not (isinstance(e, _ATTEMPT_ENDS) and ckpt.on_attempt_end(e.attempt_id, e))
        ]
        ckpt.scan(self.clock())
        done, jobs = ckpt.take()
        for job in jobs:
            self.executor.submit(job)
        return kept + done

    def _process(self, events: Sequence[Event], act: bool = True) -> None:
        rows: list[Row] = []
        decided: list[Decision] = []
        for event in events:
            decisions = self.core.handle(event)
            rows.append(Row(0, "event", event.kind, event.at, None, event.to_dict()))
            rows.extend(Row(0, "decision", d.kind, event.at, None, d.to_dict()) for d in decisions)
            decided.extend(decisions)
        numbered = self._append(rows)
        self.store.flush()  # outbox first: nothing is done that the log does not already say
        if self._lease is not None:
            self._lease.keep()  # …and nothing by a driver whose lease may have lapsed meanwhile
        self._after_flush(numbered)
        if self.checkpointing is not None:
            self.checkpointing.after_flush()
        if self._results is not None:
            self._results.record(decided, events[-1].at)
        if not act:
            return
        for d in decided:
            if d.is_action:
                self._act(d)
        self._interrupt_instances(events)
        if self.reporter is not None and decided:
            self.reporter.on_decisions(decided, events[-1].at)

    def _append(self, rows: list[Row]) -> list[Row]:
        """Append rows, and the alerts they raise in the same transaction (outbox)."""
        numbered = self.store.append(self.ctx.name, rows)
        if self.alerts is not None:
            raised = self.alerts.observe(numbered)
            if raised:
                numbered += self.store.append(self.ctx.name, raised)
        return numbered

    def _flushed(self, rows: list[Row]) -> None:
        """Make appended rows durable, then show them to what follows the log."""
        self.store.flush()
        self._after_flush(rows)

    def _after_flush(self, rows: list[Row]) -> None:
        """Show durable rows to what follows the log: the view, the alerts."""
        if self._keeper is not None:
            self._keeper.apply(rows)
        if self.alerts is not None:
            self.alerts.after_flush()

    def _note(self, rows: list[Row]) -> None:
        """Log what happened beside the core (alert deliveries, deadline estimates)."""
        if rows:
            self._flushed(self._append(rows))

    def _close_alerts(self) -> None:
        if self.alerts is not None:
            self._note(self.alerts.close(self.core.final is not None, self.clock()))

    def _act(self, d: Decision) -> None:
        if isinstance(d, LaunchAttempt):
            i = self.core.index[d.task_id]
            job = self.jobs.job(i, d.number, d.instances, d.memory_mib, d.pool, d.after)
            if self.checkpointing is not None and self.tasks[i].checkpoint_enabled:
                self.checkpointing.launch(job, d.restore_from, self.executor.submit)
            else:
                self.executor.submit(job)
        elif isinstance(d, RequestCheckpoint):
            self._request_checkpoint(d.attempt_id)
        elif isinstance(d, PruneCheckpoints):
            if self.checkpointing is not None:
                self.checkpointing.prune(d.task_id, d.keep)
        elif isinstance(d, KillAttempt):
            self.executor.kill(d.attempt_id, d.grace_s)
        elif isinstance(d, WithdrawAttempt):
            self.executor.withdraw(d.attempt_id)
        elif isinstance(d, StartTimer):
            heapq.heappush(self._timers, (d.fire_at, d.timer_id))
        elif isinstance(d, LaunchInstance) and self.fleet is not None:
            self.fleet.launch(d.instance_id, d.pool)
        elif isinstance(d, TerminateInstance) and self.fleet is not None:
            self.fleet.terminate(d.instance_id)

    def _interrupt_instances(self, events: Sequence[Event]) -> None:
        """``stormproof interrupt --instance NODE`` on a batch system: besides the notice the core
        gives the attempts there, the executor may take the node away for real (a Dask worker
        is retired), through its optional ``interrupt_instance(node, notice_s)``."""
        hook = getattr(self.executor, "interrupt_instance", None)
        if hook is None:
            return
        for e in events:
            if isinstance(e, InterruptionNotice) and e.source == "cli":
                hook(e.instance_id, e.notice_s)

    def _drain_checkpoints(self) -> None:
        """Let saves in flight finish and log what they produced before the driver goes."""
        if self.checkpointing is None:
            return
        self.checkpointing.close()
        events, _jobs = self.checkpointing.take()  # restored-but-unsubmitted jobs: resume does it
        if events:
            self._process(events)
        self.checkpointing.after_flush()

    def _request_checkpoint(self, attempt_id: str) -> None:
        if self.checkpointing is None or self.checkpointing.request(attempt_id) is None:
            return
        task = self.ctx.spec.tasks[self.core.index[attempt_id.rsplit("/", 1)[0]]]
        name = task.checkpoint_signal or self.ctx.spec.global_config.checkpoint_signal
        if name != "none":
            self.executor.signal(attempt_id, protocol.parse_signal(name))

    def _due_timers(self, now: float) -> list[Event]:
        due: list[Event] = []
        while self._timers and self._timers[0][0] <= now:
            _, timer_id = heapq.heappop(self._timers)
            due.append(TimerFired(now, timer_id))
        return due

    def _requests(self, now: float) -> list[Event]:
        """Requests other processes left in the store: cancel, interrupt, lose, scale.

        A request is a kind, optionally followed by ``:`` and a JSON payload;
        the CLI checked it against the run before posting it.
        """
        events: list[Event] = []
        for request in self.store.take_requests(self.ctx.name):
            kind, _, raw = request.partition(":")
            try:
                data = json.loads(raw) if raw else {}
            except ValueError:
                continue  # written by a newer or broken client: nothing safe to do with it
            if kind == "cancel":
                events.append(CancelRequested(now))
            elif kind == "interrupt":
                notice = float(data.get("notice_s", 120.0))
                events.append(InterruptionNotice(now, str(data.get("instance")), notice, "cli"))
            elif kind == "lose":
                why = "stormproof interrupt --lost"
                events.append(InstanceLost(now, str(data.get("instance")), why))
            elif kind == "scale":
                pool, count = str(data.get("pool")), int(data.get("count", 0))
                events.append(FleetScaleRequested(now, pool, count))
        return events

    # ------------------------------------------------------------------ start, redrive
    def _start(self, now: float) -> RunStarted:
        """The segment's first event: what it keeps and carries (``RunContext.start``), once
        the outputs it reuses from earlier runs are in its data dir (again after a crash)."""
        start = self.ctx.start
        copy_reused(start, self.home.data_dir(self.ctx.name), self.ctx.name)
        return RunStarted(
            now,
            tuple(start.get("kept", ())),
            tuple(start.get("kept_why", ())),
            tuple(
                (t, int(n), tuple(seqs), int(top)) for t, n, seqs, top in start.get("carried", ())
            ),
        )

    def _begin_redrive(self) -> None:
        """Write the ``RunRedriven`` row under the lease (``redrive.begin``)."""
        seq = begin(
            self.store, self.ctx.name, self.redrive or {}, self.redrive_after_seq, self.clock()
        )
        self.ctx = dataclasses.replace(self.ctx, segment_seq=seq)
        self.redrive = None

    # ------------------------------------------------------------------ resume
    def _replay(self, history: Sequence[Row]) -> None:
        for row in history:
            if row.category == "event":
                self.core.handle(event_from_dict(row.kind, row.data))
        for timer_id, fire_at in self.core.timers.items():
            heapq.heappush(self._timers, (fire_at, timer_id))

    def _relaunch_pending(self) -> None:
        """Instance launches decided and logged but never answered: ask the fleet again.

        Instances the log says are up (or gone, or refused) are not launched
        again; a fleet is keyed by instance id, so asking twice is harmless.
        """
        if self.fleet is None:
            return
        for inst in self.core.capacity.instances.values():
            if inst.state is InstanceState.PENDING:
                self.fleet.launch(inst.id, inst.pool.name)

    def _recover(self, now: float) -> list[Event]:
        """Ask the executor about every attempt the log says is live; adopt, or relaunch."""
        live = self.core.live_attempts()
        if not live:
            return []
        jobs = {
            a.id: self.jobs.job(a.task, a.number, a.instances, a.need.memory_mib, a.pool, a.after)
            for a in live
        }
        news = self.executor.recover(list(jobs.values()))
        known = {getattr(e, "attempt_id", "") for e in news}
        events: list[Event] = list(news)
        ckpt = self.checkpointing
        for att in live:
            checkpointed = ckpt is not None and self.tasks[att.task].checkpoint_enabled
            if att.id in known:
                if checkpointed and ckpt is not None:
                    ckpt.adopt(jobs[att.id])
                if att.kill_reason is not None and any(
                    isinstance(e, AttemptStarted) and e.attempt_id == att.id for e in news
                ):
                    self.executor.kill(att.id, self.tasks[att.task].kill_grace_s)
                continue
            if att.state is AttemptState.PLACED and att.kill_reason is None:
                # decided and logged, never carried out: carry it out now
                if checkpointed and ckpt is not None:
                    restore = tuple(reversed(self.core.checkpoints.get(att.task, ())))
                    ckpt.launch(jobs[att.id], restore, self.executor.submit)
                else:
                    self.executor.submit(jobs[att.id])
            elif att.after and att.state is AttemptState.PLACED:
                # a successor the executor holds (it reports nothing for those) or never got:
                # submitting is idempotent; a kill decided meanwhile ends it AttemptDropped
                self.executor.submit(jobs[att.id])
                if att.kill_reason == "withdrawn":
                    self.executor.withdraw(att.id)
                else:
                    self.executor.kill(att.id, 0.0)
            elif att.state is AttemptState.PLACED:
                # never started, and a kill was decided meanwhile (an interruption of its
                # instance, a cancel): it ends without having run, using no budget
                why = "it never started: the executor never heard of it before it was stopped"
                events.append(AttemptDropped(now, att.id, why))
            else:
                events.append(AttemptLost(now, att.id, "the executor has no record of it"))
        return events

    # ------------------------------------------------------------------ helpers
    def _signals(self) -> _SignalScope:
        return _SignalScope(self)

    def request_stop(self, reason: str) -> None:
        self._stop = reason


class _SignalScope:
    """Ctrl-C and SIGTERM ask the driver to stop launching; they never kill attempts."""

    def __init__(self, driver: Driver) -> None:
        self.driver = driver
        self.saved: dict[int, Any] = {}

    def __enter__(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for sig, why in ((signal.SIGINT, "interrupted (Ctrl-C)"), (signal.SIGTERM, "SIGTERM")):

            def handler(_sig: int, _frame: FrameType | None, why: str = why) -> None:
                self.driver.request_stop(why)

            self.saved[sig] = signal.signal(sig, handler)

    def __exit__(self, *exc: object) -> None:
        for sig, old in self.saved.items():
            signal.signal(sig, old)


class _CoreFleet:
    """The core's instances as the interruption sources see them (read-only)."""

    def __init__(self, core: Workflow) -> None:
        self.core = core

    def live(self, pool: str) -> list[InstanceView]:
        members = self.core.capacity.members(pool) if pool in self.core.capacity.target else []
        return [
            InstanceView(i.id, pool, i.state.value)
            for i in members
            if i.state in (InstanceState.PENDING, InstanceState.UP, InstanceState.DRAINING)
        ]
