"""The workflow state machine: events in, decisions out.

Rules of the core (the h11 habit: say them first):

1. One door in: ``Workflow.handle(event) -> list[Decision]``. Nothing else
   changes state. The same sequence of events always yields the same state and
   the same decisions: that is what makes replay (resume), simulation and
   property tests drive one and the same core.
2. No clock, no entropy, no I/O. Time is ``event.at``; delays are timers the
   driver fires; jitter is a pure hash of the run's seed (``core.rng``); ids
   are derived (``"<task>/<attempt number>"``).
3. Task state changes go through ``Workflow._move``, which checks the transition
   table in ``core.states``.
4. ``Workflow`` holds the run's state; the rules that change it live in one
   module per concern, as functions of the workflow, each opening with its own
   rules:

   * ``core.placement``: readiness, which ready task goes where, prices;
   * ``core.successors``: tasks queued behind a running attempt;
   * ``core.fleet``: instances, notices, losses, scaling, the breakers' wiring;
   * ``core.outcomes``: how attempts end, retries and budgets, failing,
     skipping, cancelling, cost;
   * ``core.checkpoints``: checkpoints and the timers alongside an attempt.

   This module is the door (``handle`` and its table of handlers, the timers'
   table), the views others read, and the invariants (``validate``). Public
   attributes are views anyone may read; those with a leading underscore are
   the concerns' own bookkeeping. Nothing outside ``core`` writes either.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from stormproof.core import checkpoints, fleet, outcomes, placement, successors
from stormproof.core.attempt import (
    PROVIDER_ERRORS,
    TASK_ERRORS,
    Attempt,
    Cost,
)
from stormproof.core.breaker import Breaker
from stormproof.core.capacity import Capacity, InstanceState
from stormproof.core.decisions import Decision, PruneCheckpoints, RunFinished
from stormproof.core.defs import Market, Resources, RunOptions, SpotStrategy, TaskDef
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
from stormproof.core.placement import ShapeKey
from stormproof.core.states import (
    FINAL_TASK_STATES,
    TASK_TRANSITIONS,
    RunMode,
    TaskState,
    check_task_transition,
)

__all__ = ["PROVIDER_ERRORS", "TASK_ERRORS", "Attempt", "Cost", "Workflow"]

# Enum members the hot paths test, bound once: on CPython 3.11 reading a member off its
# class goes through the slot of ``EnumType.__getattr__`` (~70 ns; a global, ~15 ns), and
# a simulated task makes dozens of such tests. Each core module binds those it tests.
_FINISHED = RunMode.FINISHED


class Workflow:
    """The state of one run, advanced only by ``handle``."""

    def __init__(self, tasks: Sequence[TaskDef], options: RunOptions) -> None:
        self.tasks = tuple(tasks)
        self.options = options
        self.index = {t.id: t.index for t in self.tasks}
        self.mode = RunMode.RUNNING
        self.started = False
        self.now = 0.0
        self.unfinished = len(self.tasks)
        self.any_failed = False
        self.final: str | None = None  # succeeded | failed | cancelled, once finished
        self._narrate = options.narrate
        self._init_tasks()
        self._init_fleet(options)
        self._init_placement(options)
        self._init_checkpoints()

    def _init_tasks(self) -> None:
        """Tasks, their attempts and budgets (``core.outcomes``)."""
        n = len(self.tasks)
        self.state = [TaskState.WAITING] * n
        self.waiting_on = [len(t.parents) for t in self.tasks]
        self.attempts_made = [0] * n
        self.interruptions = [0] * n
        self.retries_used: dict[int, list[int]] = {}
        self.current: dict[int, Attempt] = {}  # task index -> its live attempt
        self.attempts: dict[str, Attempt] = {}  # attempt id -> live attempt
        self.timers: dict[str, float] = {}  # timer id -> fire_at, not yet fired
        #: Memory multiplier per task index after ``Task.OutOfMemory`` (absent: 1).
        self.memory_scale: dict[int, float] = {}
        self.cost = Cost()
        self._spot_pools = {p.name: p.market is Market.SPOT for p in self.options.pools}

    def _init_fleet(self, options: RunOptions) -> None:
        """Instances and breakers (``core.fleet``)."""
        self.capacity = Capacity(options.pools)
        self.breakers = {p.name: Breaker(p.name, options.breaker) for p in options.pools}
        self._typed_breakers = options.breaker.per_task_type
        #: Pools a batch system places on (``PoolDef.delegated``; ``core.fleet`` rule 8).
        self._delegated = frozenset(p.name for p in options.pools if p.delegated)
        #: The fleet's initial instances not answered yet (up or refused). Placement waits for
        #: all of them, like the recipe's wait for the fleet request to be fulfilled, so the
        #: first wave spreads over the whole fleet, not over whichever instance came up first.
        self._fleet_pending: set[str] = set()

    def _init_placement(self, options: RunOptions) -> None:
        """Ready queues, market choice and prices (``core.placement``, ``core.successors``)."""
        #: Deadline policies: when the run started, and its critical path (at on-demand speed).
        self.run_start = 0.0
        self._critical_s = max((t.priority for t in self.tasks), default=0.0)
        self._has_spot = any(p.market is Market.SPOT for p in options.pools)
        self._market_names = {p.name: p.market.value for p in options.pools}
        self._rate_cache: dict[tuple[str, float, int, int, int], tuple[float, float]] = {}
        #: Placement needs no breaker fault counts unless a strategy ranks pools by them.
        self._ranks_by_faults = options.spot_strategy in (
            SpotStrategy.CAPACITY_OPTIMIZED,
            SpotStrategy.PRICE_CAPACITY_OPTIMIZED,
        )
        self._queues: dict[ShapeKey, list[tuple[float, int]]] = {}
        self._ready = 0
        #: Whether a placement could succeed now that did not before: set when capacity is
        #: freed, a task becomes ready or the mode changes; placement is skipped otherwise.
        self._changed = True
        #: Successors (``core.successors``): attempts that may take one now, how many live
        #: attempts hold no place, the pools where they may queue, and how long attempts run.
        self._hosts: dict[str, Attempt] = {}
        self._queued = 0
        self._typical_run_s = math.inf
        self._steady = frozenset(
            p.name for p in options.pools if p.market is Market.ON_DEMAND and not p.interruptible
        )

    def _init_checkpoints(self) -> None:
        """Committed checkpoints (``core.checkpoints``)."""
        #: Committed checkpoint seqs per task index, oldest first; corrupt ones are removed.
        self.checkpoints: dict[int, list[int]] = {}
        self.corrupt: dict[int, set[int]] = {}
        self._every_why: dict[int, str] = {}
        #: Highest seq per task index used before a redrive (``checkpoints.carry``).
        self._seq_floor: dict[int, int] = {}

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
            placement.dispatch(self, event, out)
        if not self.unfinished:
            self._check_finished(event, out)
        return out

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

    def markets(self, i: int) -> tuple[bool, bool, float | None]:
        """May task ``i`` use spot now, on-demand now, and if not on-demand, from when
        (``core.placement.markets``)."""
        return placement.markets(self, i)

    def on_demand_only(self, i: int) -> str | None:
        """Why task ``i`` may not use spot now, or None if it may."""
        return placement.on_demand_only(self, i)

    def next_checkpoint_seq(self, task_id: str) -> int:
        """The seq the next checkpoint of the task gets: after every seq ever seen."""
        return checkpoints.next_seq(self, self.index[task_id])

    def next_checkpoint_seq_of(self, i: int) -> int:
        """``next_checkpoint_seq`` by task index (the simulator has it at hand)."""
        return checkpoints.next_seq(self, i)

    # ------------------------------------------------------------------ the run
    def _on_run_started(self, event: RunStarted, out: list[Decision]) -> None:
        if self.started:
            return
        self.started = True
        self.run_start = event.at
        if event.kept or event.carried:  # a redrive, or a run that reuses earlier results
            outcomes.keep(self, event, out)
            checkpoints.carry(self, event)
        fleet.create_fleet(self, out)
        waiting, waiting_on = TaskState.WAITING, self.waiting_on
        for t in self.tasks:
            if waiting_on[t.index] == 0 and self.state[t.index] is waiting:
                why = "parents kept" if t.parents else "no dependencies"
                placement.make_ready(self, t.index, event, out, why)

    def _on_resumed(self, event: RunResumed, out: list[Decision]) -> None:
        self._changed = True
        if self.mode is RunMode.STOPPING:
            self.mode = RunMode.RUNNING

    def _on_stop(self, event: StopRequested, out: list[Decision]) -> None:
        if self.mode is RunMode.RUNNING:
            self.mode = RunMode.STOPPING

    def _on_timer(self, event: TimerFired, out: list[Decision]) -> None:
        if self.timers.pop(event.timer_id, None) is None:
            return
        kind, _, key = event.timer_id.partition(":")
        on = _TIMERS.get(kind)
        if on is not None:
            on(self, key, event, out)

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
                fleet.remove_instance(self, inst, f"the run {final}", out)
        if final == "succeeded":
            for i, seqs in self.checkpoints.items():
                if (seqs or i in self.corrupt) and not self.tasks[i].keep_checkpoints_on_success:
                    out.append(PruneCheckpoints(self.tasks[i].id, (), "the workflow succeeded"))
        out.append(RunFinished(final, f"all {len(self.tasks)} tasks ended"))

    # ------------------------------------------------------------------ invariants
    def validate(self) -> None:
        """Invariants, checked by tests and the simulator after every event."""
        usage: dict[str, Resources] = {}
        outstanding = dict.fromkeys(self._delegated, 0)
        queued = 0
        for att in self.attempts.values():
            if self.state[att.task] is not TaskState.RUNNING:
                raise AssertionError(f"{att.id} is live but its task is {self.state[att.task]}")
            if self.current.get(att.task) is not att:
                raise AssertionError(f"{att.id} is not its task's current attempt")
            if not att.holds:
                queued += 1
                successors.check_queued(self, att)
                continue
            delegated = att.pool in self._delegated
            if delegated:
                outstanding[att.pool] += 1
            for iid in att.instances:
                if not delegated:
                    usage[iid] = usage.get(iid, Resources(0, 0, 0)).plus(att.need)
                if att.id not in self.capacity.instances[iid].attempts:
                    raise AssertionError(f"{att.id} holds a place on {iid} that does not list it")
        self.capacity.check(usage)
        if outstanding != self.capacity.outstanding:
            raise AssertionError(
                f"{outstanding} outstanding, the count says {self.capacity.outstanding}"
            )
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
    AttemptExited: outcomes.on_exit,
    TimerFired: Workflow._on_timer,
    CheckpointCommitted: checkpoints.on_committed,
    AttemptStarted: checkpoints.on_started,
    AttemptLost: outcomes.on_lost,
    AttemptPreempted: outcomes.on_preempted,
    AttemptSubmitFailed: outcomes.on_submit_failed,
    AttemptDropped: outcomes.on_dropped,
    RunStarted: Workflow._on_run_started,
    RunResumed: Workflow._on_resumed,
    StopRequested: Workflow._on_stop,
    CancelRequested: outcomes.on_cancel,
    CheckpointCorrupt: checkpoints.on_corrupt,
    CheckpointRestored: checkpoints.on_restored,
    InterruptionNotice: fleet.on_notice,
    InstanceLost: fleet.on_instance_lost,
    InstanceUp: fleet.on_instance_up,
    InstanceLaunchFailed: fleet.on_launch_failed,
    FleetScaleRequested: fleet.on_scale,
}

#: What a fired timer does, by the kind its id starts with (``kind:key``).
_TIMERS: dict[str, Callable[[Workflow, str, TimerFired, list[Decision]], None]] = {
    "timeout": checkpoints.on_timeout,
    "checkpoint": checkpoints.on_interval,
    "retry": outcomes.on_retry_due,
    "reclaim": fleet.on_reclaim,
    "breaker": fleet.on_cooled,
    "relaunch": fleet.on_relaunch,
    "policy": placement.on_policy_due,
    "withdraw": successors.on_withdraw_due,
    "fleet": fleet.on_fleet_wait,
}
