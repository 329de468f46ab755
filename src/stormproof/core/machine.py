"""The workflow state machine: events in, decisions out.

Rules of this module (the h11 habit: say them first):

1. One door in: ``Workflow.handle(event) -> list[Decision]``. Nothing else
   changes state. The same sequence of events always yields the same state and
   the same decisions: that is what makes replay (resume), simulation and
   property tests drive one and the same core.
2. No clock, no entropy, no I/O. Time is ``event.at``; delays are timers the
   driver fires; jitter is a pure hash of the run's seed (``core.rng``); ids
   are derived (``"<task>/<attempt number>"``).
3. Task state changes go through ``_move``, which checks the transition table
   in ``core.states``.
4. Scheduling is incremental: indegree counters release children; ready tasks
   wait in one heap per resource shape, highest upward rank first; a placement
   looks at the heads of the heaps only. Nothing rescans the DAG.
5. Successors (``RunOptions.successors``): a ready task that fits in no free
   capacity may be queued behind a live single-node attempt on an
   uninterruptible on-demand instance whose reservation is at least its need.
   It holds no capacity (``Attempt.holds`` is false) until its predecessor
   ends; then, in the same ``handle``, it takes its predecessor's place. If it
   cannot (the instance is going, it was killed, its predecessor never held a
   place), it ends ``dropped`` and its task is ready again at no cost to any
   budget. Only the executor says a queued successor ended without starting
   (``AttemptDropped``), except when its instance is lost, where the core ends
   it itself, as it ends everything else there. More than one may queue behind
   an attempt (up to ``successors``) only while attempts run shorter than
   ``successor_patience_s`` (a moving average of the run times of attempts that
   held a place): a deep queue hides the round trip for tasks that last
   milliseconds, and would only hold ready tasks back behind long ones.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from stormproof.core import rng
from stormproof.core.breaker import Breaker, BreakerState, Transition
from stormproof.core.capacity import Capacity, Instance, InstanceState, Placement, share
from stormproof.core.decisions import (
    AttemptEnded,
    BreakerChanged,
    Decision,
    InstanceChanged,
    KillAttempt,
    LaunchAttempt,
    LaunchInstance,
    PruneCheckpoints,
    RequestCheckpoint,
    RunFinished,
    StartTimer,
    TaskEnded,
    TaskReady,
    TaskRetrying,
    TerminateInstance,
    WithdrawAttempt,
)
from stormproof.core.defs import (
    Market,
    OnFailure,
    PoolDef,
    Resources,
    RunOptions,
    SpotPolicy,
    SpotStrategy,
    TaskDef,
)
from stormproof.core.events import (
    AttemptDropped,
    AttemptExited,
    AttemptLost,
    AttemptPreempted,
    AttemptStarted,
    AttemptSubmitFailed,
    CancelRequested,
    CheckpointCommitted,
    CheckpointCorrupt,
    CheckpointRestored,
    Event,
    FleetScaleRequested,
    InstanceLaunchFailed,
    InstanceLost,
    InstanceUp,
    InterruptionNotice,
    RunResumed,
    RunStarted,
    StopRequested,
    TimerFired,
)
from stormproof.core.policy import Choice, Situation, decide, wait_until
from stormproof.core.states import (
    FINAL_TASK_STATES,
    TASK_TRANSITIONS,
    AttemptState,
    RunMode,
    TaskState,
    check_task_transition,
)

TASK_FAILED = "Task.Failed"
TASK_TIMEOUT = "Task.Timeout"
NODE_LOST = "Node.Lost"
CAPACITY_INTERRUPTED = "Capacity.Interrupted"
CAPACITY_UNAVAILABLE = "Capacity.Unavailable"
TASK_OUT_OF_MEMORY = "Task.OutOfMemory"
#: Errors that are the provider's fault: they draw on ``max_interruptions``, never on retries.
PROVIDER_ERRORS = frozenset({NODE_LOST, CAPACITY_INTERRUPTED})
#: The task's own failures: what a per-task-type breaker counts.
TASK_ERRORS = frozenset({TASK_FAILED, TASK_TIMEOUT, TASK_OUT_OF_MEMORY})

ShapeKey = tuple[float, int, int, int, bool]

_NO_FAULTS: dict[str, int] = {}
# Enum members the hot paths test, bound once: on CPython 3.11 reading a member off its
# class goes through the slot of ``EnumType.__getattr__`` (~70 ns; a global, ~15 ns), and
# a simulated task makes dozens of such tests.
_READY, _WAITING, _RUNNING = TaskState.READY, TaskState.WAITING, TaskState.RUNNING
_SUCCEEDED = TaskState.SUCCEEDED
_PLACED, _ATTEMPT_RUNNING = AttemptState.PLACED, AttemptState.RUNNING
_ATTEMPT_SUCCEEDED = AttemptState.SUCCEEDED
_TAKEN_AWAY = frozenset({AttemptState.INTERRUPTED, AttemptState.LOST})
_MODE_RUNNING, _FINISHED = RunMode.RUNNING, RunMode.FINISHED
_ON_DEMAND = Market.ON_DEMAND
_POLICY_ON_DEMAND = SpotPolicy.ON_DEMAND
#: An attempt state's name, without ``Enum.value`` (a Python-level property) per attempt.
_STATE_NAMES = {s: s.value for s in AttemptState}


@dataclass(slots=True)
class Attempt:
    """An attempt that has not ended yet (ended ones are only in the log)."""

    id: str
    task: int
    number: int
    instances: tuple[str, ...]
    pool: str = ""
    need: Resources = field(default_factory=lambda: Resources(0, 0, 0))
    state: AttemptState = AttemptState.PLACED
    #: "timeout", "interrupted", "cancel" or "failing" once a kill was decided
    kill_reason: str | None = None
    launched_at: float = 0.0
    started_at: float | None = None
    last_commit_at: float | None = None
    restored: bool = False
    usd_per_h: float = 0.0
    od_usd_per_h: float = 0.0
    #: The attempt this one is queued behind ("" for one placed on free capacity).
    after: str = ""
    #: The attempt queued behind this one, if any.
    successor: str | None = None
    #: Whether it holds its place on ``instances`` (a queued successor does not, yet).
    holds: bool = True


@dataclass(slots=True)
class Cost:
    """Money and instance time, per task and for the run (DESIGN §5), in USD and seconds."""

    spent: float = 0.0
    on_demand_equivalent: float = 0.0
    wasted: float = 0.0
    wasted_s: float = 0.0
    spot_s: float = 0.0
    on_demand_s: float = 0.0

    @property
    def saved(self) -> float:
        return self.on_demand_equivalent - self.spent

    def add(self, other: Cost) -> None:
        self.spent += other.spent
        self.on_demand_equivalent += other.on_demand_equivalent
        self.wasted += other.wasted
        self.wasted_s += other.wasted_s
        self.spot_s += other.spot_s
        self.on_demand_s += other.on_demand_s


class Workflow:
    """The state of one run, advanced only by ``handle``."""

    def __init__(self, tasks: Sequence[TaskDef], options: RunOptions) -> None:
        self.tasks = tuple(tasks)
        self.options = options
        self.index = {t.id: t.index for t in self.tasks}
        self.capacity = Capacity(options.pools)
        self.breakers = {p.name: Breaker(p.name, options.breaker) for p in options.pools}
        #: Memory multiplier per task index after ``Task.OutOfMemory`` (absent: 1).
        self.memory_scale: dict[int, float] = {}
        self.cost = Cost()
        #: Deadline policies: when the run started, and its critical path (at on-demand speed).
        self.run_start = 0.0
        self._critical_s = max((t.priority for t in self.tasks), default=0.0)
        self._has_spot = any(p.market is Market.SPOT for p in options.pools)
        self._spot_pools = {p.name: p.market is Market.SPOT for p in options.pools}
        self._market_names = {p.name: p.market.value for p in options.pools}
        self._rate_cache: dict[tuple[str, float, int, int, int], tuple[float, float]] = {}
        self._typed_breakers = options.breaker.per_task_type
        self._narrate = options.narrate
        self._every_why: dict[int, str] = {}
        #: Placement needs no breaker fault counts unless a strategy ranks pools by them.
        self._ranks_by_faults = options.spot_strategy in (
            SpotStrategy.CAPACITY_OPTIMIZED,
            SpotStrategy.PRICE_CAPACITY_OPTIMIZED,
        )
        self.mode = RunMode.RUNNING
        self.started = False
        self.now = 0.0
        n = len(self.tasks)
        self.state = [TaskState.WAITING] * n
        self.waiting_on = [len(t.parents) for t in self.tasks]
        self.attempts_made = [0] * n
        self.interruptions = [0] * n
        self.retries_used: dict[int, list[int]] = {}
        self.current: dict[int, Attempt] = {}  # task index -> its live attempt
        self.attempts: dict[str, Attempt] = {}  # attempt id -> live attempt
        self.timers: dict[str, float] = {}  # timer id -> fire_at, not yet fired
        self.unfinished = n
        self.any_failed = False
        self.final: str | None = None  # succeeded | failed | cancelled, once finished
        #: Committed checkpoint seqs per task index, oldest first; corrupt ones are removed.
        self.checkpoints: dict[int, list[int]] = {}
        self.corrupt: dict[int, set[int]] = {}
        self._queues: dict[ShapeKey, list[tuple[float, int]]] = {}
        self._ready = 0
        #: Whether a placement could succeed now that did not before: set when capacity is
        #: freed, a task becomes ready or the mode changes; placement is skipped otherwise.
        self._changed = True
        #: Successors: live attempts that may take one now (no successor yet, shallow enough),
        #: oldest first; how many live attempts hold no place (queued successors); and the
        #: pools where successors may queue (on-demand, no interruption source).
        self._hosts: dict[str, Attempt] = {}
        self._queued = 0
        #: Moving average of how long attempts that held a place ran (infinite: none yet):
        #: successors queue deeper than one only while it is below the patience.
        self._typical_run_s = math.inf
        self._steady = frozenset(
            p.name for p in options.pools if p.market is Market.ON_DEMAND and not p.interruptible
        )
        #: The fleet's initial instances not answered yet (up or refused). Placement waits for
        #: all of them, like the recipe's wait for the fleet request to be fulfilled, so the
        #: first wave spreads over the whole fleet, not over whichever instance came up first.
        self._fleet_pending: set[str] = set()

    # ------------------------------------------------------------------ the door
    def handle(self, event: Event) -> list[Decision]:
        """Advance the run by one event and say what must happen next."""
        if event.at > self.now:
            self.now = event.at
        out: list[Decision] = []
        on = _ON.get(type(event))
        if on is None:  # pragma: no cover - every event class is in the table
            raise TypeError(f"the core does not know the event {event!r}")
        on(self, event, out)
        if self._changed:  # most events change nothing placement needs
            self._dispatch(event, out)
        if not self.unfinished:
            self._check_finished(event, out)
        return out

    def _on_resumed(self, event: RunResumed, out: list[Decision]) -> None:
        self._changed = True
        if self.mode is RunMode.STOPPING:
            self.mode = RunMode.RUNNING

    def _on_stop(self, event: StopRequested, out: list[Decision]) -> None:
        if self.mode is RunMode.RUNNING:
            self.mode = RunMode.STOPPING

    def _on_restored(self, event: CheckpointRestored, out: list[Decision]) -> None:
        att = self.attempts.get(event.attempt_id)
        if att is not None and event.seq:
            att.restored = True

    def handle_all(self, events: Iterable[Event]) -> list[Decision]:
        out: list[Decision] = []
        for event in events:
            out += self.handle(event)
        return out

    # ------------------------------------------------------------------ views
    def task_state(self, task_id: str) -> TaskState:
        return self.state[self.index[task_id]]

    def live_attempts(self) -> list[Attempt]:
        return list(self.attempts.values())

    @property
    def finished(self) -> bool:
        return self.mode is RunMode.FINISHED

    # ------------------------------------------------------------------ handlers
    def _on_run_started(self, event: Event, out: list[Decision]) -> None:
        if self.started:
            return
        self.started = True
        self.run_start = event.at
        self._create_fleet(out)
        for t in self.tasks:
            if not t.parents:
                self._make_ready(t.index, event, out, "no dependencies")

    def _on_started(self, event: AttemptStarted, out: list[Decision]) -> None:
        att = self.attempts.get(event.attempt_id)
        if att is None or att.state is not _PLACED:
            return  # adopted again after a restart, or news of an attempt that already ended
        att.state = _ATTEMPT_RUNNING
        att.started_at = event.at
        if att.kill_reason == "withdrawn":
            att.kill_reason = None  # it started before the withdrawal reached the executor
        task = self.tasks[att.task]
        if task.checkpoint_enabled and task.checkpoint_interval_s:
            self._arm_checkpoint_timer(att, event.at + task.checkpoint_interval_s, out)
        if task.timeout_s is not None:
            timer = f"timeout:{att.id}"
            fire_at = event.at + task.timeout_s
            self.timers[timer] = fire_at
            out.append(StartTimer(timer, fire_at, f"timeout {task.timeout_s:g}s of {att.id}"))

    def _on_exit(self, event: AttemptExited, out: list[Decision]) -> None:
        att = self.attempts.get(event.attempt_id)
        if att is None:
            return
        code = event.exit_code
        if att.kill_reason == "dropped" and code != 0:
            self._drop(att, event, out, f"killed as a queued successor (exit {code})")
            return
        if code == 0:
            self._end_attempt(att, _ATTEMPT_SUCCEEDED, None, code, None, event, out)
            self._succeed(att.task, event, out)
        elif att.kill_reason == "interrupted":
            self._failed_attempt(att, CAPACITY_INTERRUPTED, code, event, out)
        elif event.out_of_memory and att.kill_reason is None:
            self._failed_attempt(att, TASK_OUT_OF_MEMORY, code, event, out)
        elif att.kill_reason == "timeout" or (event.timed_out and att.kill_reason is None):
            self._failed_attempt(att, TASK_TIMEOUT, code, event, out)
        elif att.kill_reason in ("cancel", "failing"):
            self._end_cancelled(att, code, event, out, att.kill_reason)
        else:
            self._failed_attempt(att, TASK_FAILED, code, event, out)

    def _on_lost(self, event: AttemptLost, out: list[Decision]) -> None:
        att = self.attempts.get(event.attempt_id)
        if att is None:
            return
        if att.kill_reason in ("cancel", "failing"):
            self._end_cancelled(att, None, event, out, att.kill_reason)
            return
        if att.kill_reason == "dropped":
            self._drop(att, event, out, f"lost as a queued successor: {event.reason}")
            return
        error = CAPACITY_INTERRUPTED if att.kill_reason == "interrupted" else NODE_LOST
        self._failed_attempt(att, error, None, event, out, event.reason)

    def _on_preempted(self, event: AttemptPreempted, out: list[Decision]) -> None:
        """The batch system reclaimed the attempt: an interruption, and a fault of its pool
        (unless a notice already counted it: then the kill was ours, on the provider's word)."""
        att = self.attempts.get(event.attempt_id)
        if att is None:
            return
        if att.kill_reason in ("cancel", "failing"):
            self._end_cancelled(att, None, event, out, att.kill_reason)
            return
        if att.kill_reason == "dropped":
            self._drop(att, event, out, f"preempted as a queued successor: {event.reason}")
            return
        if att.kill_reason != "interrupted":
            self._fault(att.pool, event.at, f"preemption of {att.id}", out)
        self._failed_attempt(att, CAPACITY_INTERRUPTED, None, event, out, event.reason)

    def _end_cancelled(
        self,
        att: Attempt,
        code: int | None,
        event: Event,
        out: list[Decision],
        why: str,
        attempt_why: str = "",
    ) -> None:
        """An attempt killed because the run is cancelled or failing ends its task cancelled."""
        self._end_attempt(att, AttemptState.CANCELLED, None, code, None, event, out, attempt_why)
        self._move(att.task, TaskState.CANCELLED, event)
        if self._narrate:
            out.append(TaskEnded(self.tasks[att.task].id, "cancelled", None, why))

    def _on_dropped(self, event: AttemptDropped, out: list[Decision]) -> None:
        att = self.attempts.get(event.attempt_id)
        if att is None:
            return
        if att.kill_reason in ("cancel", "failing"):
            why = f"dropped before it started: {event.reason}"
            self._end_cancelled(att, None, event, out, att.kill_reason, why)
            return
        self._drop(att, event, out, event.reason or "dropped before it started")

    def _drop(self, att: Attempt, event: Event, out: list[Decision], why: str) -> None:
        """A queued successor ends without having run: its task is ready again, no budget used."""
        self._end_attempt(att, AttemptState.DROPPED, None, None, None, event, out, why)
        i = att.task
        if self.mode in (RunMode.RUNNING, RunMode.STOPPING):
            self._make_ready(i, event, out, f"{att.id} dropped: {why}")
        else:  # cancelling or failing: nothing more starts
            self._move(i, TaskState.CANCELLED, event)
            if self._narrate:
                why = f"the run is {self.mode.value}"
                out.append(TaskEnded(self.tasks[i].id, "cancelled", None, why))

    def _on_submit_failed(self, event: AttemptSubmitFailed, out: list[Decision]) -> None:
        att = self.attempts.get(event.attempt_id)
        if att is not None:
            self._failed_attempt(att, TASK_FAILED, None, event, out, event.message)

    def _on_timer(self, event: TimerFired, out: list[Decision]) -> None:
        if self.timers.pop(event.timer_id, None) is None:
            return
        kind, _, key = event.timer_id.partition(":")
        if kind == "timeout":
            att = self.attempts.get(key)
            if att is not None and att.kill_reason is None:
                att.kill_reason = "timeout"
                grace = self.tasks[att.task].kill_grace_s
                out.append(KillAttempt(att.id, grace, "timeout reached"))
        elif kind == "checkpoint":
            att = self.attempts.get(key)
            if att is not None and att.kill_reason is None:
                task = self.tasks[att.task]
                out.append(RequestCheckpoint(att.id, self._every(att.task)))
                self._arm_checkpoint_timer(att, event.at + (task.checkpoint_interval_s or 0.0), out)
        elif kind == "retry":
            task_id = key.rsplit(":", 1)[0]
            i = self.index[task_id]
            if self.state[i] is TaskState.BACKOFF:
                self._make_ready(i, event, out, "backoff ended")
        elif kind == "reclaim":
            inst = self.capacity.instances.get(key)
            if inst is not None and inst.state is InstanceState.DRAINING:
                self._remove_instance(inst, "reclaimed by the provider", out)
        elif kind == "breaker":
            breaker = self.breakers.get(key)
            if breaker is not None:
                self._breaker_moved(breaker, breaker.cooled(event.at), out)
        elif kind == "relaunch" and key in self.breakers:
            self._maintain(key, out)
        elif kind == "policy":
            self._changed = True  # a waiting task may now use on-demand
        elif kind == "withdraw":
            self._changed = True  # a queued successor's patience is over: look again
        elif kind == "fleet":
            self._fleet_pending.clear()  # not all answered in time: place on what is up
            self._changed = True

    def _arm_checkpoint_timer(self, att: Attempt, fire_at: float, out: list[Decision]) -> None:
        timer = "checkpoint:" + att.id
        self.timers[timer] = fire_at
        out.append(StartTimer(timer, fire_at, "checkpoint interval"))  # whose: the timer's id

    def _every(self, i: int) -> str:
        """Why task ``i``'s checkpoint is asked for (formatted once per task, not per ask)."""
        why = self._every_why.get(i)
        if why is None:
            why = self._every_why[i] = f"every {self.tasks[i].checkpoint_interval_s:g}s"
        return why

    def _on_checkpoint(self, event: CheckpointCommitted, out: list[Decision]) -> None:
        live = self.attempts.get(event.attempt_id)
        if live is not None:
            live.last_commit_at = event.at
        task_id = event.attempt_id.rsplit("/", 1)[0]
        i = self.index.get(task_id)
        if i is None:
            return
        seqs = self.checkpoints.setdefault(i, [])
        if event.seq in seqs or (self.corrupt and event.seq in self.corrupt.get(i, ())):
            return
        seqs.append(event.seq)
        if len(seqs) > 1 and seqs[-2] > event.seq:
            seqs.sort()
        keep = self.tasks[i].keep_checkpoints
        if keep > 0 and len(seqs) > keep:
            kept = tuple(seqs[-keep:])
            del seqs[:-keep]
            out.append(PruneCheckpoints(task_id, kept, f"keep the last {keep}"))

    def _on_corrupt(self, event: CheckpointCorrupt, out: list[Decision]) -> None:
        i = self.index.get(event.task_id)
        if i is None:
            return
        self.corrupt.setdefault(i, set()).add(event.seq)
        seqs = self.checkpoints.get(i, [])
        if event.seq in seqs:
            seqs.remove(event.seq)

    def next_checkpoint_seq(self, task_id: str) -> int:
        """The seq the next checkpoint of the task gets: after every seq ever seen."""
        return self.next_checkpoint_seq_of(self.index[task_id])

    def next_checkpoint_seq_of(self, i: int) -> int:
        """``next_checkpoint_seq`` by task index (the simulator has it at hand)."""
        seqs = self.checkpoints.get(i)
        top = seqs[-1] if seqs else 0  # kept sorted
        corrupt = self.corrupt.get(i)
        if corrupt:
            top = max(top, max(corrupt))
        return top + 1

    def _on_cancel(self, event: Event, out: list[Decision]) -> None:
        if self.mode in (RunMode.CANCELLING, RunMode.FINISHED):
            return
        self.mode = RunMode.CANCELLING
        self._kill_live("cancel", "the run was cancelled", out)
        for i, st in enumerate(self.state):
            if st in (TaskState.WAITING, TaskState.READY, TaskState.BACKOFF):
                self._end_unstarted(i, TaskState.CANCELLED, event, out, "the run was cancelled")

    # ------------------------------------------------------------------ fleet
    def _on_notice(self, event: InterruptionNotice, out: list[Decision]) -> None:
        """The two-minute warning: drain the instance, SIGTERM what runs, reclaim at the end."""
        inst = self.capacity.instances.get(event.instance_id)
        if inst is None or inst.state is not InstanceState.UP:
            return
        inst.state = InstanceState.DRAINING
        grace = max(0.0, event.notice_s)
        why = f"interruption notice ({event.source or 'provider'}): reclaimed in {grace:g}s"
        self._instance_note(inst, why, out)
        self._kill_successors(inst, f"{inst.id}: {why}", out)
        for aid in sorted(inst.attempts):
            att = self.attempts.get(aid)
            if att is not None and att.kill_reason in (None, "timeout", "withdrawn"):
                att.kill_reason = "interrupted"
                out.append(KillAttempt(aid, grace, f"{inst.id}: {why}"))
        timer = f"reclaim:{inst.id}"
        self.timers[timer] = event.at + grace
        out.append(StartTimer(timer, event.at + grace, f"{inst.id} is reclaimed"))
        self._fault(inst.pool.name, event.at, f"interruption of {inst.id}", out)
        self._changed = True

    def _on_instance_lost(self, event: InstanceLost, out: list[Decision]) -> None:
        """No warning: whatever ran there is lost now (``Node.Lost``), and killed to be sure."""
        inst = self.capacity.instances.get(event.instance_id)
        if inst is None or inst.state in (InstanceState.GONE, InstanceState.FAILED):
            return
        why = f"{inst.id} lost" + (f": {event.reason}" if event.reason else "")
        for aid in sorted(inst.attempts):
            att = self.attempts.get(aid)
            if att is None:
                continue
            for queued in reversed(self._chain(att)):  # the last first: each unlinks itself
                out.append(KillAttempt(queued.id, 0.0, why))
                if queued.kill_reason in ("cancel", "failing"):
                    self._end_cancelled(queued, None, event, out, why, why)
                else:
                    self._drop(queued, event, out, why)
            out.append(KillAttempt(aid, 0.0, why))
            if att.kill_reason in ("cancel", "failing"):
                self._end_cancelled(att, None, event, out, why, why)
            else:
                self._failed_attempt(att, NODE_LOST, None, event, out, why)
        self._fault(inst.pool.name, event.at, why, out)
        self._remove_instance(inst, why, out)

    def _on_instance_up(self, event: InstanceUp, out: list[Decision]) -> None:
        inst = self.capacity.instances.get(event.instance_id)
        if inst is None or inst.state is not InstanceState.PENDING:
            return
        inst.state = InstanceState.UP
        self._instance_note(inst, "launched", out)
        self._changed = True

    def _on_launch_failed(self, event: InstanceLaunchFailed, out: list[Decision]) -> None:
        inst = self.capacity.instances.get(event.instance_id)
        if inst is None or inst.state is not InstanceState.PENDING:
            return
        pool = inst.pool.name
        self.capacity.remove(inst, InstanceState.FAILED)
        why = f"{CAPACITY_UNAVAILABLE}: {event.reason or 'no capacity'}"
        self._instance_note(inst, why, out)
        self._fault(pool, event.at, f"launch of {inst.id} failed", out)
        timer = f"relaunch:{pool}"
        if timer not in self.timers:
            fire_at = event.at + self.options.launch_retry_s
            self.timers[timer] = fire_at
            out.append(StartTimer(timer, fire_at, f"launch in {pool} again"))

    def _on_scale(self, event: FleetScaleRequested, out: list[Decision]) -> None:
        if event.pool not in self.capacity.target or event.count < 0:
            return  # the CLI checks names; an old log may still name a removed pool
        self.capacity.target[event.pool] = event.count
        excess = self.capacity.counted(event.pool) - event.count
        # Give back what costs nothing to lose first: pending, then idle, newest first.
        members = self.capacity.members(event.pool)
        order = sorted(
            (i for i in members if i.state.counts),
            key=lambda i: (i.state is InstanceState.UP, bool(i.attempts), -members.index(i)),
        )
        for inst in order[: max(0, excess)]:
            if inst.attempts:
                self._kill_successors(inst, f"{inst.id} scaled down", out)
                inst.state = InstanceState.DRAINING
                inst.retiring = True
                self._instance_note(inst, f"scaled down to {event.count}: retires when idle", out)
            else:
                self._remove_instance(inst, f"scaled down to {event.count}", out)
        self._maintain(event.pool, out)
        self._changed = True

    def _create_fleet(self, out: list[Decision]) -> None:
        """Ask for every pool's initial instances, like the recipe's Spot Fleet request.

        Each is ``pending`` until the backend answers ``InstanceUp`` (or
        ``InstanceLaunchFailed``, which the fleet then retries like any launch).
        """
        for pool in self.capacity.pools:
            count = self.capacity.target[pool.name]
            units = f"{count * pool.weight:g} unit(s) at weight {pool.weight:g}"
            why = f"fleet created: {count} x {pool.instance_type} in {pool.name} ({units})"
            for _ in range(count):
                inst = self.capacity.add(pool, InstanceState.PENDING)
                self._fleet_pending.add(inst.id)
                self._instance_note(inst, why, out)
                out.append(LaunchInstance(inst.id, pool.name, why))
        if self._fleet_pending:
            timer = "fleet:created"
            fire_at = self.now + self.options.launch_retry_s
            self.timers[timer] = fire_at
            out.append(StartTimer(timer, fire_at, "place on what is up by then"))

    def _maintain(self, pool: str, out: list[Decision]) -> None:
        """Keep the pool at its target, like a fleet of type "maintain"; not while it is open."""
        if self.breakers[pool].state is BreakerState.OPEN or f"relaunch:{pool}" in self.timers:
            return
        if self.mode in (RunMode.FINISHED, RunMode.CANCELLING):
            return
        missing = self.capacity.target[pool] - self.capacity.counted(pool)
        for _ in range(max(0, missing)):
            inst = self.capacity.add(self.capacity.by_name[pool], InstanceState.PENDING)
            self._instance_note(inst, f"keep {pool} at {self.capacity.target[pool]}", out)
            out.append(LaunchInstance(inst.id, pool, f"{pool} below its target"))

    def _remove_instance(self, inst: Instance, why: str, out: list[Decision]) -> None:
        pool = inst.pool.name
        self.capacity.remove(inst, InstanceState.GONE)
        self.timers.pop(f"reclaim:{inst.id}", None)
        out.append(TerminateInstance(inst.id, why))
        self._instance_note(inst, why, out)
        if self.mode is RunMode.FINISHED:
            return
        breaker = self.breakers[pool]
        target = self.capacity.target[pool]
        self._breaker_moved(breaker, breaker.healthy(self.now, self.capacity.up(pool), target), out)
        self._maintain(pool, out)

    def _fault(self, pool: str, at: float, what: str, out: list[Decision]) -> None:
        breaker = self.breakers[pool]
        self._breaker_moved(breaker, breaker.fault(at, what), out)

    def _breaker_moved(
        self, breaker: Breaker, moved: Transition | None, out: list[Decision]
    ) -> None:
        if moved is None:
            return
        out.append(
            BreakerChanged(
                breaker.pool, moved.state.value, moved.until, breaker.trips, moved.reason
            )
        )
        self._changed = True
        if moved.until is not None:
            timer = f"breaker:{breaker.pool}"
            self.timers[timer] = moved.until
            out.append(StartTimer(timer, moved.until, f"half-open {breaker.pool}"))
        elif breaker.pool in self.capacity.target:
            self._maintain(breaker.pool, out)

    def _type_breaker(self, pool: str, kind: str) -> Breaker | None:
        """The breaker of tasks of type ``kind`` on ``pool``, when those are on."""
        if not self._typed_breakers:
            return None
        name = f"{pool}/{kind}"
        breaker = self.breakers.get(name)
        if breaker is None:
            breaker = self.breakers[name] = Breaker(name, self.options.breaker)
        return breaker

    def _instance_note(self, inst: Instance, why: str, out: list[Decision]) -> None:
        pool = inst.pool
        out.append(InstanceChanged(inst.id, pool.name, pool.market.value, inst.state.value, why))

    # ------------------------------------------------------------------ outcomes
    def _succeed(self, i: int, event: Event, out: list[Decision]) -> None:
        self._move(i, _SUCCEEDED, event)
        task = self.tasks[i]
        narrate = self._narrate
        if narrate:
            out.append(TaskEnded(task.id, "succeeded", None, f"attempt {self.attempts_made[i]}"))
        waiting_on, state = self.waiting_on, self.state
        for c in task.children:
            left = waiting_on[c] = waiting_on[c] - 1
            if left == 0 and state[c] is _WAITING:
                why = f"parents done (last: {task.id})" if narrate else ""
                self._make_ready(c, event, out, why)

    def _failed_attempt(
        self,
        att: Attempt,
        error: str,
        code: int | None,
        event: Event,
        out: list[Decision],
        detail: str = "",
    ) -> None:
        """An attempt ended badly: retry by the right budget, or fail the task for good."""
        i = att.task
        task = self.tasks[i]
        state = {
            TASK_TIMEOUT: AttemptState.TIMED_OUT,
            NODE_LOST: AttemptState.LOST,
            CAPACITY_INTERRUPTED: AttemptState.INTERRUPTED,
        }.get(error, AttemptState.FAILED)
        if error in PROVIDER_ERRORS:
            self.interruptions[i] += 1
            budget = "interruptions"
            allowed = self.interruptions[i] <= task.max_interruptions
            delay, retrier = 0.0, None
            reason = f"{self.interruptions[i]}/{task.max_interruptions} interruptions"
        else:
            budget = "retry"
            rule = self._next_retry_rule(i, error)
            allowed = rule is not None
            delay, reason = 0.0, "no retrier left for " + error
            retrier = None if rule is None else rule + 1
            if rule is not None:
                used = self.retries_used[i]
                used[rule] += 1
                r = task.retry[rule]
                delay = r.delay_s(used[rule], rng.unit(self.options.seed, i, att.number))
                reason = f"retrier {rule + 1}: retry {used[rule]}/{r.max_attempts}"
        why = f"{error}" + (f" (exit {code})" if code is not None else "")
        why += f": {detail}" if detail else ""
        self._end_attempt(att, state, error, code, budget, event, out, why)
        if allowed and error == TASK_OUT_OF_MEMORY and task.memory_escalation > 1:
            scale = self.memory_scale.get(i, 1.0) * task.memory_escalation
            self.memory_scale[i] = scale
            need = self._need(i)
            reason += f"; memory escalated to {need.memory_mib} MiB"
            if not self.capacity.could_ever_fit(need, task.nodes, task.spot_enabled):
                allowed = False
                reason = f"escalated memory {need.memory_mib} MiB fits no pool"
        if allowed and self.mode in (RunMode.RUNNING, RunMode.STOPPING):
            out.append(TaskRetrying(task.id, error, delay, budget, retrier, reason))
            if delay > 0:
                self._move(i, TaskState.BACKOFF, event)
                timer = f"retry:{task.id}:{att.number}"
                self.timers[timer] = self.now + delay
                out.append(StartTimer(timer, self.now + delay, f"retry {task.id} after {delay:g}s"))
            else:
                self._make_ready(i, event, out, f"retry after {error}")
            return
        self._fail_task(i, error, event, out, reason if not allowed else "the workflow is failing")

    def _next_retry_rule(self, i: int, error: str) -> int | None:
        rules = self.tasks[i].retry
        used = self.retries_used.setdefault(i, [0] * len(rules))
        for k, rule in enumerate(rules):
            if rule.matches(error) and used[k] < rule.max_attempts:
                return k
        return None

    def _fail_task(self, i: int, error: str, event: Event, out: list[Decision], why: str) -> None:
        self._move(i, TaskState.FAILED, event)
        self.any_failed = True
        task = self.tasks[i]
        if self._narrate:
            out.append(TaskEnded(task.id, "failed", error, why))
        if task.on_failure is OnFailure.CONTINUE:
            self._skip_descendants(i, event, out)
        else:
            self._start_failing(task, event, out)

    def _start_failing(self, task: TaskDef, event: Event, out: list[Decision]) -> None:
        if self.mode in (RunMode.FAILING, RunMode.CANCELLING):
            return
        self.mode = RunMode.FAILING
        why = f"workflow failing: task {task.id} failed"
        if task.on_failure is OnFailure.FAIL:
            self._kill_live("failing", why, out)
        else:  # finish: what runs carries on, but nothing new starts
            for att in list(self.attempts.values()):
                if not att.holds and att.kill_reason in (None, "withdrawn"):
                    att.kill_reason = "failing"
                    out.append(KillAttempt(att.id, 0.0, why))
        for j, st in enumerate(self.state):
            if st in (TaskState.WAITING, TaskState.READY, TaskState.BACKOFF):
                self._end_unstarted(j, TaskState.SKIPPED, event, out, why)

    def _skip_descendants(self, i: int, event: Event, out: list[Decision]) -> None:
        stack = list(self.tasks[i].children)
        why = f"upstream task {self.tasks[i].id} failed"
        while stack:
            c = stack.pop()
            if self.state[c] is TaskState.WAITING:
                self._end_unstarted(c, TaskState.SKIPPED, event, out, why)
                stack.extend(self.tasks[c].children)

    def _end_unstarted(
        self, i: int, new: TaskState, event: Event, out: list[Decision], why: str
    ) -> None:
        if self.state[i] is TaskState.READY:
            self._ready -= 1  # its heap entry goes stale and is dropped when seen
        elif self.state[i] is TaskState.BACKOFF:
            self.timers.pop(f"retry:{self.tasks[i].id}:{self.attempts_made[i]}", None)
        self._move(i, new, event)
        if self._narrate:
            out.append(TaskEnded(self.tasks[i].id, new.value, None, why))

    def _kill_live(self, reason: str, why: str, out: list[Decision]) -> None:
        # Queued successors first, so that none starts as its predecessor dies of the kill.
        for att in sorted(self.attempts.values(), key=lambda a: a.holds):
            if att.kill_reason in (None, "timeout", "withdrawn"):
                att.kill_reason = reason
                out.append(KillAttempt(att.id, self.tasks[att.task].kill_grace_s, why))

    def _end_attempt(
        self,
        att: Attempt,
        state: AttemptState,
        error: str | None,
        code: int | None,
        budget: str | None,
        event: Event,
        out: list[Decision],
        why: str = "",
    ) -> None:
        task = self.tasks[att.task]
        del self.attempts[att.id]
        del self.current[att.task]
        # only the timers it can have (building a key costs as much as the lookup)
        if task.timeout_s is not None:
            self.timers.pop(f"timeout:{att.id}", None)
        if task.checkpoint_enabled:
            self.timers.pop(f"checkpoint:{att.id}", None)
        if self._hosts:
            self._hosts.pop(att.id, None)
        if att.holds:
            self.capacity.release(att.id, att.need, att.instances)
            if self.options.successors > 1 and att.pool in self._steady:
                began = att.started_at if att.started_at is not None else att.launched_at
                self._note_run_time(event.at - began)
        else:
            self._queued -= 1
            self._unlink(att)
        if att.successor is not None:
            self._hand_over(att, event, out)
        self._changed = True
        cost = self._charge(att, state, event.at) if att.holds else Cost()
        out.append(
            AttemptEnded(
                att.id,
                task.id,
                _STATE_NAMES[state],
                error,
                code,
                budget,
                why,
                att.pool,
                round(max(0.0, event.at - att.launched_at), 3),
                cost.spent,
                cost.on_demand_equivalent,
                round(cost.wasted_s, 3),
                cost.wasted,
            )
        )
        ok = state is _ATTEMPT_SUCCEEDED
        breaker = self.breakers.get(att.pool)
        if breaker is not None and breaker.probe is not None and error not in PROVIDER_ERRORS:
            self._breaker_moved(breaker, breaker.ended(event.at, att.id, ok), out)
        typed = self._type_breaker(att.pool, task.kind)
        if typed is not None and error not in PROVIDER_ERRORS:
            if error in TASK_ERRORS:
                moved = typed.fault(event.at, f"{error} of {att.id}")
            else:
                moved = typed.ended(event.at, att.id, ok)
            self._breaker_moved(typed, moved, out)
        for iid in att.instances:
            inst = self.capacity.instances[iid]
            if inst.retiring and not inst.attempts and inst.state is InstanceState.DRAINING:
                self._remove_instance(inst, "scaled down: retired once idle", out)

    def _charge(self, att: Attempt, state: AttemptState, end: float) -> Cost:
        """Bill the attempt per second (rounded up) and split off what interruptions wasted."""
        seconds = float(math.ceil(max(0.0, end - att.launched_at) - 1e-9))
        wasted = 0.0
        if att.restored and att.started_at is not None:
            wasted = att.started_at - att.launched_at  # restoring is the price of restarting
        if state in _TAKEN_AWAY:
            since = att.last_commit_at if att.last_commit_at is not None else att.launched_at
            wasted = end - since if att.last_commit_at is None else wasted + end - since
        wasted = min(seconds, max(0.0, wasted))
        rate = att.usd_per_h / 3600.0
        od = (seconds - wasted) * att.od_usd_per_h / 3600.0
        if self._spot_pools.get(att.pool, False):
            cost = Cost(seconds * rate, od, wasted * rate, wasted, seconds, 0.0)
        else:
            cost = Cost(seconds * rate, od, wasted * rate, wasted, 0.0, seconds)
        self.cost.add(cost)
        return cost

    # ------------------------------------------------------------------ scheduling
    def _make_ready(self, i: int, event: Event, out: list[Decision], why: str) -> None:
        self._move(i, _READY, event)
        task = self.tasks[i]
        r = self._need(i)
        key: ShapeKey = (r.vcpus, r.memory_mib, r.gpus, task.nodes, task.spot_enabled)
        heapq.heappush(self._queues.setdefault(key, []), (-task.priority, i))
        self._ready += 1
        self._changed = True
        if self._narrate:
            out.append(TaskReady(task.id, why))

    def _dispatch(self, event: Event, out: list[Decision]) -> None:
        """Place what is ready; ``handle`` calls it only when something placement needs changed."""
        if self.mode is not _MODE_RUNNING:
            return
        if self._fleet_pending and not self._fleet_answered():
            return
        self._changed = False
        limit = self.options.max_parallel
        while self._ready:
            # Queued successors run no sooner than a place frees: max_parallel counts places.
            free_ok = limit is None or len(self.attempts) - self._queued < limit
            if not (free_ok or self._hosts) or not self._place_best(event, out, free_ok):
                break
        if self._queued:
            self._withdraw_stuck(out)
        if self._ready and not self.attempts:
            # All capacity is free and still nothing fits: those tasks never will.
            self._fail_unplaceable(event, out)

    def _fleet_answered(self) -> bool:
        """Whether every initial instance is up or refused (then the wait timer is dropped)."""
        instances = self.capacity.instances
        self._fleet_pending = {
            iid for iid in self._fleet_pending if instances[iid].state is InstanceState.PENDING
        }
        if self._fleet_pending:
            return False
        self.timers.pop("fleet:created", None)
        return True

    def _place_best(self, event: Event, out: list[Decision], free_ok: bool = True) -> bool:
        """Launch the highest-ranked ready task that fits now; False if none fits.

        Free capacity first, for every task; only then a successor's place behind a
        running attempt (``_find_host``), never instead of free capacity.
        """
        queues, state = self._queues, self.state
        heads: list[tuple[float, int, ShapeKey]] = []
        emptied: list[ShapeKey] = []
        for key, heap in queues.items():
            while heap and state[heap[0][1]] is not _READY:
                heapq.heappop(heap)  # stale: the task was skipped or cancelled meanwhile
            if heap:
                top = heap[0]
                heads.append((top[0], top[1], key))
            else:
                emptied.append(key)
        for key in emptied:
            del queues[key]
        if len(heads) > 1:  # most workflows have one shape of task, so one queue
            heads.sort()
        if free_ok:
            for _, i, key in heads:
                placement = self._find(i, out)
                if placement is not None:
                    heapq.heappop(self._queues[key])
                    self._launch(i, placement, event, out)
                    return True
        if self._hosts:
            for _, i, key in heads:
                host = self._find_host(i)
                if host is not None:
                    heapq.heappop(self._queues[key])
                    inst = self.capacity.instances[host.instances[0]]
                    self._launch(i, Placement(inst.pool, (inst,)), event, out, host)
                    return True
        return False

    # ------------------------------------------------------------------ successors
    def _can_host(self, att: Attempt) -> bool:
        """Whether a successor may ever queue behind ``att`` (its pool, its shape)."""
        return len(att.instances) == 1 and att.pool in self._steady

    def _depth(self, att: Attempt) -> int:
        """How many queued attempts stand between ``att`` and the one holding the place."""
        depth = 0
        while not att.holds:
            pred = self.attempts.get(att.after)
            if pred is None:
                return self.options.successors  # orphaned: it will never take a place
            att = pred
            depth += 1
        return depth

    def _find_host(self, i: int) -> Attempt | None:
        """A live attempt task ``i`` may queue behind, or None (see rule 5 above).

        Checkpointed tasks never queue: their restore runs in the orchestrator before the
        submit, so a successor would restore long before it could start.
        """
        task = self.tasks[i]
        if task.nodes != 1 or task.checkpoint_enabled:
            return None
        need = self._need(i)
        if not self.markets(i)[1]:
            return None  # may not use on-demand now; the only pools successors queue on
        for host in self._hosts.values():
            if host.kill_reason is not None or not need.fits_in(host.need):
                continue
            if not self._pool_allows(host.pool, task.kind):
                continue
            if not self.capacity.instances[host.instances[0]].alive:
                continue
            return host
        return None

    def _chain(self, att: Attempt) -> list[Attempt]:
        """The successors queued behind ``att``, nearest first."""
        chain: list[Attempt] = []
        while att.successor is not None:
            nxt = self.attempts.get(att.successor)
            if nxt is None:
                break
            chain.append(nxt)
            att = nxt
        return chain

    def _depth_limit(self) -> int:
        """How many successors may queue behind one place now (see rule 5 above)."""
        deep = self._typical_run_s < self.options.successor_patience_s
        return self.options.successors if deep else min(1, self.options.successors)

    def _offer(self, att: Attempt) -> None:
        """Let successors queue behind ``att`` if it may take one."""
        if (
            att.successor is None
            and att.kill_reason is None
            and self._can_host(att)
            and self._depth(att) < self._depth_limit()
        ):
            self._hosts[att.id] = att
            self._changed = True

    def _unlink(self, att: Attempt) -> None:
        """A queued successor ended: its predecessor may take another."""
        pred = self.attempts.get(att.after)
        if pred is not None and pred.successor == att.id:
            pred.successor = None
            self._offer(pred)

    def _note_run_time(self, seconds: float) -> None:
        last = self._typical_run_s
        self._typical_run_s = seconds if last == math.inf else 0.75 * last + 0.25 * seconds

    def _hand_over(self, att: Attempt, event: Event, out: list[Decision]) -> None:
        """``att`` ended: its successor takes its place, or is dropped if it cannot."""
        nxt = self.attempts.get(att.successor or "")
        att.successor = None
        if nxt is None:
            return
        inst = self.capacity.instances[nxt.instances[0]]
        if att.holds and nxt.kill_reason in (None, "withdrawn") and inst.alive:
            nxt.holds = True
            self._queued -= 1
            nxt.launched_at = event.at  # billed from when it holds the place
            self.capacity.take(nxt.id, nxt.need, nxt.instances)
            tail = [nxt, *self._chain(nxt)][-1]
            self._offer(tail)
            return
        self._drop_queued(
            [nxt, *self._chain(nxt)], f"{att.id} ended without a place to pass on", out
        )

    def _withdraw_stuck(self, out: list[Decision]) -> None:
        """Queued successors that could run on free capacity now, behind a predecessor that
        has held its place for ``successor_patience_s``, are withdrawn: a long attempt must
        not keep a task waiting while a place stands free. The executor drops one that has
        not started (``AttemptDropped``: ready again, placed afresh) and ignores the request
        for one that has. Shorter waits are left alone (that churn would cost more than
        it saves); a timer looks again once the patience of the oldest is over.
        """
        limit = self.options.max_parallel
        if limit is not None and len(self.attempts) - self._queued >= limit:
            return  # no place is free: max_parallel holds them all
        patience = self.options.successor_patience_s
        recheck = math.inf
        for att in list(self.attempts.values()):
            if att.holds or att.kill_reason is not None or att.state is not AttemptState.PLACED:
                continue
            pred = self.attempts.get(att.after)
            if pred is None or not pred.holds:
                continue
            if not self._fits_free(att):
                continue
            since = pred.started_at if pred.started_at is not None else pred.launched_at
            if self.now - since < patience:
                recheck = min(recheck, since + patience)
                continue
            att.kill_reason = "withdrawn"
            self._hosts.pop(att.id, None)
            why = f"a place is free and {pred.id} has held it for {self.now - since:.0f}s"
            out.append(WithdrawAttempt(att.id, why))
        if recheck < self.timers.get("withdraw", math.inf):
            self.timers["withdraw"] = recheck
            out.append(StartTimer("withdraw", recheck, "look again at queued successors"))

    def _fits_free(self, att: Attempt) -> bool:
        """Whether free capacity of a pool the task may use now could hold it."""
        spot, on_demand, _ = self.markets(att.task)
        return self._free_placement(att.task, att.need, spot, on_demand) is not None

    def _kill_successors(self, inst: Instance, why: str, out: list[Decision]) -> None:
        """The instance is going: nothing queued on it may start (they end ``dropped``)."""
        for aid in sorted(inst.attempts):
            att = self.attempts.get(aid)
            if att is None:
                continue
            self._drop_queued(self._chain(att), why, out)
            self._hosts.pop(att.id, None)

    def _drop_queued(self, queued: list[Attempt], why: str, out: list[Decision]) -> None:
        """Queued successors that must never start: killed, to end ``dropped``."""
        for att in queued:
            self._hosts.pop(att.id, None)
            if att.kill_reason in (None, "withdrawn"):
                att.kill_reason = "dropped"
                out.append(KillAttempt(att.id, 0.0, why))

    def _need(self, i: int) -> Resources:
        """What one node of task ``i``'s next attempt asks for (memory escalated after OOM)."""
        r = self.tasks[i].resources
        if not self.memory_scale:
            return r
        scale = self.memory_scale.get(i)
        return r if scale is None else Resources(r.vcpus, math.ceil(r.memory_mib * scale), r.gpus)

    def on_demand_only(self, i: int) -> str | None:
        """Why task ``i`` may not use spot now (fallback, DESIGN §4), or None if it may."""
        task = self.tasks[i]
        if not task.spot_enabled:
            return "spot_enabled is false"
        k = self.options.fallback_after_interruptions
        if k is not None and self.interruptions[i] >= k:
            return f"interrupted {self.interruptions[i]} times (fallback after {k})"
        if self.options.last_attempt_on_demand and self.interruptions[i] >= task.max_interruptions:
            return "the last attempt its interruption budget allows"
        return None

    def markets(self, i: int) -> tuple[bool, bool, float | None]:
        """May task ``i`` use spot now, on-demand now, and if not on-demand, from when.

        With a deadline, the run's ``SpotPolicy`` decides by the one rule of
        ``core.policy`` (the one ``bench/cant_be_late.py`` measures), for this task: work
        left is its rank (the critical path from it to the end), the job's whole work the
        workflow's critical path, and one interruption costs its ``at_risk``. Placement
        tries spot pools first, so the rule is asked twice: with spot free (spot allowed?)
        and without (on-demand now, or wait, and until when).
        """
        if self.on_demand_only(i) is not None or not self._has_spot:
            return False, True, None
        policy = self.options.spot_policy
        deadline = self.options.deadline_s
        if deadline is None:  # no deadline logic: spot if free, else on-demand at once
            return policy is not _POLICY_ON_DEMAND, True, None
        elapsed = self.now - self.run_start
        task = self.tasks[i]
        situation = Situation(
            elapsed_s=elapsed,
            remaining_work_s=task.priority,
            remaining_time_s=deadline - elapsed,
            spot_available=True,
            market=Choice.IDLE,
            changeover_s=0.0,
            at_risk_s=task.at_risk_s,
            tick_s=0.0,
            compute_s=self._critical_s,
            deadline_s=deadline,
            spot_streak_s=0.0,
        )
        spot = decide(policy, situation) is Choice.SPOT
        situation = situation._replace(spot_available=False)
        if decide(policy, situation) is Choice.ON_DEMAND:
            return spot, True, None
        od_from = self.run_start + wait_until(policy, situation)
        if self.now >= od_from:  # the rule's last moment to wait: on-demand from now on
            return spot, True, None
        return spot, False, od_from

    def _find(self, i: int, out: list[Decision]) -> Placement | None:
        task = self.tasks[i]
        spot, on_demand, wake_at = self.markets(i)
        placement = self._free_placement(i, self._need(i), spot, on_demand)
        if placement is not None:
            return placement
        if wake_at is not None:
            timer = f"policy:{task.id}"
            if self.timers.get(timer, math.inf) > wake_at:
                self.timers[timer] = wake_at
                out.append(StartTimer(timer, wake_at, f"{task.id} may use on-demand"))
        return None

    def _free_placement(
        self, i: int, need: Resources, spot: bool, on_demand: bool
    ) -> Placement | None:
        """Free capacity for task ``i`` on the pools it may use, best pool first."""
        task = self.tasks[i]
        faults = (
            {name: len(b.faults) for name, b in self.breakers.items() if "/" not in name}
            if spot and self._ranks_by_faults
            else _NO_FAULTS
        )
        for pool in self.capacity.pool_order(spot, self.options.spot_strategy, faults):
            if pool.market is _ON_DEMAND and not on_demand:
                break  # on-demand pools come last: nothing more to try
            if self._pool_allows(pool.name, task.kind):
                placement = self.capacity.find_in(pool, need, task.nodes)
                if placement is not None:
                    return placement
        return None

    def _pool_allows(self, pool: str, kind: str) -> bool:
        """Whether the pool's breakers (and its breaker for this task type) let work on."""
        if not self.breakers[pool].allows():
            return False
        typed = self._type_breaker(pool, kind)
        return typed is None or typed.allows()

    def _launch(
        self,
        i: int,
        placement: Placement,
        event: Event,
        out: list[Decision],
        host: Attempt | None = None,
    ) -> None:
        task = self.tasks[i]
        pool = placement.pool
        chosen = placement.instances
        instances = (chosen[0].id,) if len(chosen) == 1 else tuple([x.id for x in chosen])
        need = self._need(i)
        self._ready -= 1
        self._move(i, _RUNNING, event)
        number = self.attempts_made[i] = self.attempts_made[i] + 1
        usd_per_h, od_usd_per_h = self._rates(pool, need, task.nodes)
        att_id = f"{task.id}/{number}"
        # positional: the hot path of every placement (fields in declaration order)
        att = Attempt(att_id, i, number, instances, pool.name, need, _PLACED, None,
                      event.at, None, None, False, usd_per_h, od_usd_per_h)  # fmt: skip
        self.attempts[att_id] = att
        self.current[i] = att
        if host is None:
            self.capacity.take(att_id, need, instances)
        else:
            att.after, att.holds = host.id, False
            host.successor = att_id
            self._hosts.pop(host.id, None)
            self._queued += 1
        if self.options.successors:
            self._offer(att)
        self.breakers[pool.name].placed(att_id)
        typed = self._type_breaker(pool.name, task.kind)
        if typed is not None:
            typed.placed(att_id)
        why = "placed on " + ", ".join(instances)
        if host is not None:
            why += f", to start when {host.id} ends"
        if pool.market is Market.ON_DEMAND and task.spot_enabled:
            forced = self.on_demand_only(i)
            if forced is not None:
                why += f" (on-demand: {forced})"
        restore = tuple(reversed(self.checkpoints.get(i, ()))) if task.checkpoint_enabled else ()
        out.append(
            LaunchAttempt(
                att_id,
                task.id,
                number,
                instances,
                pool.name,
                why,
                restore,
                need.memory_mib,
                self._market_names[pool.name],
                usd_per_h,
                od_usd_per_h,
                att.after,
            )
        )

    def _rates(self, pool: PoolDef, need: Resources, nodes: int) -> tuple[float, float]:
        """An attempt's price per hour on ``pool``, and on the cheapest on-demand pool that
        could hold it (what the same work would have cost without spot). Cached by shape:
        every placement asks, and a workflow has few shapes."""
        key = (pool.name, need.vcpus, need.memory_mib, need.gpus, nodes)
        rates = self._rate_cache.get(key)
        if rates is None:
            usd_per_h = pool.price_usd_per_h * share(need, pool.capacity) * nodes
            rates = self._rate_cache[key] = (
                usd_per_h,
                self._on_demand_rate(need, nodes, usd_per_h),
            )
        return rates

    def _on_demand_rate(self, need: Resources, nodes: int, fallback: float) -> float:
        """The attempt's price per hour on the cheapest on-demand pool that could hold it."""
        rates = [
            p.price_usd_per_h * share(need, p.capacity) * nodes
            for p in self.capacity.pools
            if p.market is Market.ON_DEMAND and need.fits_in(p.capacity)
        ]
        return min(rates, default=fallback)

    def _fail_unplaceable(self, event: Event, out: list[Decision]) -> None:
        """Nothing runs, yet tasks wait: end those no pool could ever hold.

        The others wait for capacity: instances being launched, a breaker
        that will half-open, or a user who scales a pool up.
        """
        for key, heap in list(self._queues.items()):
            waiting: list[tuple[float, int]] = []
            while heap:
                entry = heapq.heappop(heap)
                i = entry[1]
                if self.state[i] is not TaskState.READY:
                    continue
                task = self.tasks[i]
                if self.capacity.could_ever_fit(self._need(i), task.nodes, task.spot_enabled):
                    waiting.append(entry)
                else:
                    self._ready -= 1
                    self._move(i, TaskState.FAILED, event)
                    self.any_failed = True
                    if self._narrate:
                        why = "no pool can ever hold this task"
                        out.append(TaskEnded(self.tasks[i].id, "failed", CAPACITY_UNAVAILABLE, why))
                    self._skip_descendants(i, event, out)
            if waiting:
                heapq.heapify(waiting)
                self._queues[key] = waiting
            else:
                del self._queues[key]

    # ------------------------------------------------------------------ bookkeeping
    def _move(self, i: int, new: TaskState, event: Event) -> None:
        old = self.state[i]
        if (old, new) not in TASK_TRANSITIONS:
            check_task_transition(self.tasks[i].id, old, new, event)  # raises, with the evidence
        self.state[i] = new
        if new in FINAL_TASK_STATES:
            self.unfinished -= 1

    def _check_finished(self, event: Event, out: list[Decision]) -> None:
        """End the run; ``handle`` calls it only once no task is unfinished."""
        if self.mode is _FINISHED or not self.started:
            return
        if self.mode is RunMode.CANCELLING:
            final = "cancelled"
        else:
            final = "failed" if self.any_failed else "succeeded"
        self.mode = RunMode.FINISHED
        self.final = final
        for inst in list(self.capacity.instances.values()):
            if inst.state in (InstanceState.PENDING, InstanceState.UP, InstanceState.DRAINING):
                self._remove_instance(inst, f"the run {final}", out)
        if final == "succeeded":
            for i, seqs in self.checkpoints.items():
                if (seqs or i in self.corrupt) and not self.tasks[i].keep_checkpoints_on_success:
                    out.append(PruneCheckpoints(self.tasks[i].id, (), "the workflow succeeded"))
        out.append(RunFinished(final, f"all {len(self.tasks)} tasks ended"))

    def _check_queued(self, att: Attempt) -> None:
        """A queued successor: behind a live attempt at least its size, within the depth."""
        if att.kill_reason is not None:
            return  # being dropped: its predecessor may be gone already
        pred = self.attempts.get(att.after)
        if pred is None or pred.successor != att.id:
            raise AssertionError(f"{att.id} is queued behind {att.after!r}, which is not live")
        if pred.instances != att.instances or not att.need.fits_in(pred.need):
            raise AssertionError(f"{att.id} does not fit the place of {pred.id}")
        if self._depth(att) > self.options.successors or self.tasks[att.task].nodes != 1:
            raise AssertionError(f"{att.id} is queued deeper than {self.options.successors}")
        if att.pool not in self._steady:
            raise AssertionError(f"{att.id} is queued on {att.pool}, which may be interrupted")

    def validate(self) -> None:
        """Invariants, checked by tests and the simulator after every event."""
        usage: dict[str, Resources] = {}
        queued = 0
        for att in self.attempts.values():
            if self.state[att.task] is not TaskState.RUNNING:
                raise AssertionError(f"{att.id} is live but its task is {self.state[att.task]}")
            if self.current.get(att.task) is not att:
                raise AssertionError(f"{att.id} is not its task's current attempt")
            if not att.holds:
                queued += 1
                self._check_queued(att)
                continue
            for iid in att.instances:
                usage[iid] = usage.get(iid, Resources(0, 0, 0)).plus(att.need)
                if att.id not in self.capacity.instances[iid].attempts:
                    raise AssertionError(f"{att.id} holds a place on {iid} that does not list it")
        self.capacity.check(usage)
        if queued != self._queued:
            raise AssertionError(f"{queued} queued successors, but the count says {self._queued}")
        limit = self.options.max_parallel
        holding = len(self.attempts) - queued
        if limit is not None and holding > limit:
            raise AssertionError(f"{holding} attempts hold places, max_parallel is {limit}")
        running = sum(1 for s in self.state if s is TaskState.RUNNING)
        if running != len(self.attempts):
            raise AssertionError(f"{running} tasks running but {len(self.attempts)} attempts live")
        ready = sum(1 for s in self.state if s is TaskState.READY)
        if ready != self._ready:
            raise AssertionError(f"{ready} tasks ready but the queues count {self._ready}")
        if self.unfinished != sum(1 for s in self.state if not s.is_final):
            raise AssertionError("the unfinished count drifted")
        for t in self.tasks:
            st = self.state[t.index]
            if st in (TaskState.READY, TaskState.RUNNING, TaskState.SUCCEEDED, TaskState.BACKOFF):
                for p in t.parents:
                    if self.state[p] is not TaskState.SUCCEEDED:
                        raise AssertionError(
                            f"{t.id} is {st.value} but parent "
                            f"{self.tasks[p].id} is {self.state[p].value}"
                        )


#: The door's table: what each kind of event does to a run (one lookup, whatever the kind;
#: a simulated run handles thousands of events). Plain functions, so that no run holds a
#: reference cycle through its own bound methods.
_ON: dict[type[Event], Callable[[Workflow, Any, list[Decision]], None]] = {
    AttemptExited: Workflow._on_exit,
    TimerFired: Workflow._on_timer,
    CheckpointCommitted: Workflow._on_checkpoint,
    AttemptStarted: Workflow._on_started,
    AttemptLost: Workflow._on_lost,
    AttemptPreempted: Workflow._on_preempted,
    AttemptSubmitFailed: Workflow._on_submit_failed,
    AttemptDropped: Workflow._on_dropped,
    RunStarted: Workflow._on_run_started,
    RunResumed: Workflow._on_resumed,
    StopRequested: Workflow._on_stop,
    CancelRequested: Workflow._on_cancel,
    CheckpointCorrupt: Workflow._on_corrupt,
    CheckpointRestored: Workflow._on_restored,
    InterruptionNotice: Workflow._on_notice,
    InstanceLost: Workflow._on_instance_lost,
    InstanceUp: Workflow._on_instance_up,
    InstanceLaunchFailed: Workflow._on_launch_failed,
    FleetScaleRequested: Workflow._on_scale,
}
