"""One simulated run: the very core of a real run, driven on virtual time.

The simulator is a third shell around ``core.machine.Workflow`` (after the
real driver and resume): it feeds the same events a real run would
(``AttemptStarted``, ``AttemptExited``, ``InterruptionNotice``,
``TimerFired``, ``CheckpointCommitted``, …) at virtual times, and carries
out the core's decisions with a model instead of processes:

* an attempt runs for its task's remaining work (``estimated_runtime``,
  optionally drawn from a distribution, minus the progress of the last
  checkpoint), plus ``restart_s`` to restore a checkpoint first;
* a checkpoint request pauses progress for the task's checkpoint cost, then
  commits; an interruption notice makes a ``checkpoint_enabled`` task commit
  within the notice (if its checkpoint cost fits) and exit 143; a kill for
  any other reason ends it at once;
* instances are interrupted at the pool's rate (exponential times), or follow
  a spot trace from a random point, and refused launches follow the trace;
* a delegated pool (a Slurm partition) is a batch system (``sim.batch``):
  ``count`` nodes of its shape, a job starts on the first node(s) with room
  (``AttemptStarted.nodes``) or waits; a spot one preempts what runs on a node
  at its rate per node-hour, or on the nodes its trace takes away: the jobs
  there commit a checkpoint within the notice (if they keep one and it fits)
  and end ``AttemptPreempted``, as under Slurm's GraceTime.

Nothing here decides anything the core decides: placement, retries,
budgets, breakers, fallback and cost are all the core's, which is why a
simulated run makes the same decisions as a real one (tested).
"""

from __future__ import annotations

import dataclasses
import heapq
import itertools
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from stormproof.core.capacity import InstanceState
from stormproof.core.decisions import (
    AttemptEnded,
    Decision,
    InstanceChanged,
    KillAttempt,
    LaunchAttempt,
    LaunchInstance,
    RequestCheckpoint,
    StartTimer,
    WithdrawAttempt,
)
from stormproof.core.defs import Resources, RunOptions, TaskDef
from stormproof.core.events import (
    AttemptDropped,
    AttemptExited,
    AttemptLost,
    AttemptPreempted,
    AttemptStarted,
    CheckpointCommitted,
    CheckpointRestored,
    Event,
    InstanceLaunchFailed,
    InstanceUp,
    InterruptionNotice,
    RunStarted,
    TimerFired,
)
from stormproof.core.machine import Cost, Workflow
from stormproof.sim.batch import BatchSystem
from stormproof.traces import Trace

#: Exit code of an attempt that ended on SIGTERM (128 + 15), as the local executor reports it.
SIGTERM_EXIT = 143


@dataclass(frozen=True, slots=True)
class PoolModel:
    """How a pool loses instances in the simulation."""

    name: str
    rate_per_h: float | None = None
    trace: Trace | None = None
    notice_s: float = 120.0


@dataclass(frozen=True, slots=True)
class TaskModel:
    """How long a task takes and what its checkpoints cost, in seconds."""

    runtime_s: float
    checkpoint_cost_s: float = 0.0
    restart_s: float = 0.0
    #: Log-normal spread of the runtime (0: exactly ``runtime_s`` every run).
    spread: float = 0.0


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    """One attempt of a simulated run, for the Gantt chart."""

    attempt_id: str
    task_id: str
    instances: tuple[str, ...]
    pool: str
    market: str
    start: float
    end: float
    state: str


@dataclass
class SimResult:
    makespan_s: float
    final: str  # succeeded | failed | unfinished
    cost: Cost
    #: Attempts the provider took away (Capacity.Interrupted or Node.Lost): what cost work.
    interrupted_attempts: int
    #: Interruption notices delivered to up instances, idle ones included.
    notices: int
    attempts: int
    records: list[AttemptRecord] = field(default_factory=list)
    decisions: list[Decision] = field(default_factory=list)


@dataclass(slots=True)
class _Live:
    task: int
    run_from: float  # when work (re)started: after the restore, after the last pause
    done_before: float  # progress (s of work) at ``run_from``
    pause_until: float = -1.0
    exit_at: float = math.inf
    exit_code: int = 0
    launched: float = 0.0
    pool: str = ""
    market: str = ""
    instances: tuple[str, ...] = ()


class Simulation:
    """Simulate one run of ``tasks`` on ``options.pools`` with the given models."""

    def __init__(
        self,
        tasks: Sequence[TaskDef],
        options: RunOptions,
        models: Sequence[TaskModel],
        pools: Sequence[PoolModel] = (),
        *,
        max_time_s: float = math.inf,
    ) -> None:
        self.tasks = tuple(tasks)
        self.options = options
        #: What an unrecorded run gives the core: nobody reads its notes on tasks' progress.
        self.quiet_options = dataclasses.replace(options, narrate=False)
        self.models = tuple(models)
        self.draws = [_runtime_draw(m) for m in self.models]
        self.pools = {p.name: p for p in pools}
        self.max_time_s = max_time_s
        #: Pools a batch system places on (``sim.batch``).
        self.delegated = frozenset(p.name for p in options.pools if p.delegated)

    def run(
        self, rng: random.Random, record: bool = False, inject: Sequence[Event] = ()
    ) -> SimResult:
        """One run; ``inject`` adds events at their times (a fault to replay, in tests)."""
        run = _Run(self, rng, record)
        for event in inject:
            run.push(event.at, event)
        return run.go()


class _Run:
    def __init__(self, sim: Simulation, rng: random.Random, record: bool) -> None:
        self.sim = sim
        self.rng = rng
        self.record = record
        self.core = Workflow(sim.tasks, sim.options if record else sim.quiet_options)
        self.heap: list[tuple[float, int, Event | tuple[Any, ...]]] = []
        self.seq = itertools.count(1)  # ties at one time go first in, first out
        self.now = 0.0
        n = len(sim.tasks)
        lognormal = rng.lognormvariate
        self.work = [
            runtime if sigma <= 0 else lognormal(mu, sigma) for runtime, mu, sigma in sim.draws
        ]
        self.saved = [0.0] * n  # progress (s) of the task's newest checkpoint
        self.live: dict[str, _Live] = {}
        self.ended: dict[str, _Live] = {}
        self.notices = 0
        self.records: list[AttemptRecord] = []
        self.decisions: list[Decision] = []
        self.trace_origin = {
            name: rng.randrange(len(p.trace)) * p.trace.gap_s
            for name, p in sim.pools.items()
            if p.trace is not None
        }
        self.granted: dict[str, tuple[float, int]] = {}
        #: Successors waiting for their predecessor to end, by predecessor id (like the shim).
        self.held: dict[str, LaunchAttempt] = {}
        self.batch = BatchSystem(sim.options.pools) if sim.delegated else None

    # ------------------------------------------------------------------ loop
    def go(self) -> SimResult:
        if self.batch is not None:  # the nodes a trace has at the start, before any job
            for name in self.trace_origin:
                if name in self.sim.delegated:
                    self.batch.set_available(name, self._available(name, 0.0))
        self.feed(RunStarted(0.0))
        for name in self.trace_origin:
            self._trace_change(name)
        if self.batch is not None:
            for name, nodes in self.batch.nodes.items():
                for k in range(len(nodes)):
                    self._arm_preemption(name, k, 0.0)
        # locals: this loop runs a few thousand times per simulated run
        heap, pop, core, feed = self.heap, heapq.heappop, self.core, self.feed
        timers, max_time_s = core.timers, self.sim.max_time_s
        while heap and core.final is None:
            at, _, item = pop(heap)
            if at > max_time_s:
                break
            self.now = at
            if isinstance(item, tuple):
                self._on_internal(item)
            elif type(item) is not TimerFired or item.timer_id in timers:
                feed(item)
            # else: a timer the core dropped (its attempt ended): it would say nothing
        final = self.core.final or "unfinished"
        return SimResult(
            self.now,
            final,
            self.core.cost,
            sum(self.core.interruptions),
            self.notices,
            sum(self.core.attempts_made),
            self.records,
            self.decisions,
        )

    def push(self, at: float, item: Event | tuple[Any, ...]) -> None:
        heapq.heappush(self.heap, (at, next(self.seq), item))

    def feed(self, event: Event) -> None:
        if isinstance(event, (AttemptExited, AttemptPreempted)):
            live = self.live.get(event.attempt_id)
            if live is None or event.at != live.exit_at:
                return  # superseded by a later plan for the same attempt
            live = self.live.pop(event.attempt_id)
            if self.record:  # kept for the attempt's record, written when it has ended
                self.ended[event.attempt_id] = live
            successor = self.held.pop(event.attempt_id, None)
            if successor is not None:  # it starts as its predecessor ends, as in the shim
                self._launch(successor, event.at)
        elif isinstance(event, InterruptionNotice):
            inst = self.core.capacity.instances.get(event.instance_id)
            if inst is None or inst.state is not InstanceState.UP:
                return
            self.notices += 1
        decisions = self.core.handle(event)
        if self.record:
            self.decisions.extend(decisions)
        for d in decisions:
            act = _ACTS.get(type(d))
            if act is not None:  # notes need nothing carried out
                act(self, d, event.at)

    # ------------------------------------------------------------------ decisions
    def _start_timer(self, d: StartTimer, now: float) -> None:
        self.push(d.fire_at, TimerFired(d.fire_at, d.timer_id))

    def _withdraw(self, d: WithdrawAttempt, now: float) -> None:
        for pred, held in list(self.held.items()):
            if held.attempt_id == d.attempt_id:  # not started yet: dropped
                self._drop(pred, now, "withdrawn")

    def _request_checkpoint(self, d: RequestCheckpoint, now: float) -> None:
        live = self.live.get(d.attempt_id)
        if live is not None:
            self._checkpoint(d.attempt_id, now, self.sim.models[live.task])

    def _instance_changed(self, d: InstanceChanged, now: float) -> None:
        if d.state == "up" and d.pool not in self.sim.delegated:  # a node: the batch's rate
            self._arm_rate(d.instance_id, d.pool, now)

    def _attempt_ended(self, d: AttemptEnded, now: float) -> None:
        if self.batch is not None and d.pool in self.sim.delegated:
            for launch, nodes in self.batch.end(d.attempt_id):  # what its room lets start
                self._run(launch, now, nodes)
        live = self.ended.pop(d.attempt_id, None) or self.live.pop(d.attempt_id, None)
        if live is not None and self.record:
            self.records.append(
                AttemptRecord(
                    d.attempt_id,
                    d.task_id,
                    live.instances,
                    live.pool,
                    live.market,
                    live.launched,
                    now,
                    d.state,
                )
            )

    def _launch(self, d: LaunchAttempt, now: float) -> None:
        if d.after and (
            d.after in self.live or any(h.attempt_id == d.after for h in self.held.values())
        ):
            self.held[d.after] = d
            return
        if self.batch is not None and d.pool in self.sim.delegated:
            task = self.sim.tasks[self.core.index[d.task_id]]
            need = Resources(task.resources.vcpus, d.memory_mib, task.resources.gpus)
            nodes = self.batch.submit(d, need, task.nodes)
            if nodes is not None:
                self._run(d, now, nodes)
            return  # else it waits for room
        self._run(d, now)

    def _run(self, d: LaunchAttempt, now: float, nodes: tuple[str, ...] = ()) -> None:
        """The attempt starts now (on ``nodes``, when the batch system picked them)."""
        i = self.core.index[d.task_id]
        model = self.sim.models[i]
        restoring = bool(d.restore_from) and self.saved[i] > 0
        start = now + (model.restart_s if restoring else 0.0)
        done = self.saved[i] if restoring else 0.0
        where = nodes or d.instances
        live = _Live(i, start, done, -1.0, math.inf, 0, now, d.pool, d.market, where)
        self.live[d.attempt_id] = live
        if nodes:  # the core learns where it runs, and bills from now
            self.push(now, AttemptStarted(now, d.attempt_id, "sim", nodes))
        if restoring:
            self.push(start, CheckpointRestored(start, d.attempt_id, d.restore_from[0]))
        task = self.sim.tasks[i]
        if not nodes and (restoring or task.timeout_s is not None or task.checkpoint_interval_s):
            self.push(start, AttemptStarted(start, d.attempt_id, "sim"))
        self._plan_exit(d.attempt_id, live, start + self.work[i] - live.done_before, 0)

    def _plan_exit(self, attempt_id: str, live: _Live, at: float, code: int) -> None:
        live.exit_at, live.exit_code = at, code
        self.push(at, AttemptExited(at, attempt_id, code))

    def _kill(self, d: KillAttempt, now: float) -> None:
        for pred, held in list(self.held.items()):
            if held.attempt_id == d.attempt_id:  # never started: dropped, like the shim does
                self._drop(pred, now, "killed while it waited for its predecessor")
                return
        if self.batch is not None and self.batch.waits(d.attempt_id):
            self.push(now, AttemptLost(now, d.attempt_id, "cancelled while it waited"))
            return
        live = self.live.get(d.attempt_id)
        if live is None:
            return
        end = self._commit_within(d.attempt_id, live, now, d.grace_s)
        if end < live.exit_at:
            self._plan_exit(d.attempt_id, live, end, SIGTERM_EXIT)

    def _commit_within(self, attempt_id: str, live: _Live, now: float, grace_s: float) -> float:
        """When an attempt told to stop with ``grace_s`` ends: after the checkpoint it can
        still commit in that time (a task that keeps them), else now."""
        model = self.sim.models[live.task]
        if grace_s <= 0 or not self.sim.tasks[live.task].checkpoint_enabled:
            return now
        if now < live.pause_until:  # already writing one: finish it if there is time
            return live.pause_until if live.pause_until <= now + grace_s else now
        if model.checkpoint_cost_s <= grace_s:
            return self._checkpoint(attempt_id, now, model) or now
        return now

    def _drop(self, pred: str, now: float, why: str) -> None:
        held = self.held.pop(pred)
        self.push(now, AttemptDropped(now, held.attempt_id, why))
        if held.attempt_id in self.held:  # what waited behind it goes too
            self._drop(held.attempt_id, now, f"{held.attempt_id} was dropped")

    def _checkpoint(self, attempt_id: str, now: float, model: TaskModel) -> float | None:
        """Pause for the checkpoint cost, then commit the progress of ``now``."""
        live = self.live.get(attempt_id)
        if live is None or now < live.run_from or now < live.pause_until:
            return None
        progress = live.done_before + (now - live.run_from)
        commit_at = now + model.checkpoint_cost_s
        live.pause_until = commit_at
        live.done_before, live.run_from = progress, commit_at
        seq = self.core.next_checkpoint_seq_of(live.task)
        commit = CheckpointCommitted(
            commit_at, attempt_id, seq, 1, 0, save_s=model.checkpoint_cost_s
        )
        self.push(commit_at, (commit, progress))
        if live.exit_code == 0:
            self._plan_exit(attempt_id, live, live.exit_at + model.checkpoint_cost_s, 0)
        return commit_at

    def _on_internal(self, item: tuple[object, ...]) -> None:
        head = item[0]
        if isinstance(head, CheckpointCommitted):
            live = self.live.get(head.attempt_id)
            if live is None:
                return  # the attempt died before the checkpoint was written
            progress = item[1]
            assert isinstance(progress, float)
            self.saved[live.task] = max(self.saved[live.task], progress)
            self.feed(head)
        elif head == "trace":
            name = item[1]
            assert isinstance(name, str)
            self._trace_change(name)
        elif head == "preempt":
            pool, k = item[1], item[2]
            assert isinstance(pool, str) and isinstance(k, int)
            self._preempt_node(pool, k)

    # ------------------------------------------------------------------ capacity
    def _arm_rate(self, instance_id: str, pool: str, now: float) -> None:
        model = self.sim.pools.get(pool)
        if model is None or not model.rate_per_h:
            return
        at = now + self.rng.expovariate(model.rate_per_h / 3600.0)
        self.push(at, InterruptionNotice(at, instance_id, model.notice_s, "rate"))

    def _available(self, pool: str, now: float) -> int:
        model = self.sim.pools[pool]
        assert model.trace is not None
        return model.trace.at(self.trace_origin[pool] + now)

    def _launch_instance(self, d: LaunchInstance, now: float) -> None:
        model = self.sim.pools.get(d.pool)
        if model is None or model.trace is None:
            self.push(now, InstanceUp(now, d.instance_id))
            return
        up = sum(1 for i in self.core.capacity.members(d.pool) if i.state is InstanceState.UP)
        at, granted = self.granted.get(d.pool, (-1.0, 0))
        granted = granted if at == now else 0
        if up + granted < self._available(d.pool, now):
            self.granted[d.pool] = (now, granted + 1)
            self.push(now, InstanceUp(now, d.instance_id))
        else:
            self.push(now, InstanceLaunchFailed(now, d.instance_id, "the trace has no capacity"))

    def _arm_preemption(self, pool: str, k: int, now: float) -> None:
        """Node ``k`` of a delegated spot pool is preempted at the pool's rate per node-hour."""
        model = self.sim.pools.get(pool)
        if model is None or not model.rate_per_h:
            return
        self.push(now + self.rng.expovariate(model.rate_per_h / 3600.0), ("preempt", pool, k))

    def _preempt_node(self, pool: str, k: int) -> None:
        assert self.batch is not None
        if k < self.batch.available[pool]:  # a node the trace took away has nothing to take
            self.notices += 1
            for attempt_id in self.batch.on_node(pool, k):
                self._preempt(attempt_id, self.sim.pools[pool].notice_s)
        self._arm_preemption(pool, k, self.now)

    def _preempt(self, attempt_id: str, notice_s: float) -> None:
        """The batch system preempts the job: SIGTERM, a checkpoint within the notice if
        it keeps them, then ``AttemptPreempted`` (unless it finishes first)."""
        live = self.live.get(attempt_id)
        if live is None or live.exit_code < 0:
            return  # gone, or already on its way out of a preemption
        end = self._commit_within(attempt_id, live, self.now, notice_s)
        if end < live.exit_at:
            live.exit_at, live.exit_code = end, -1
            self.push(end, AttemptPreempted(end, attempt_id, "preempted by the batch system"))

    def _trace_change(self, pool: str) -> None:
        if self.batch is not None and pool in self.sim.delegated:
            self._trace_nodes(pool)
            return
        model = self.sim.pools[pool]
        ups = [i for i in self.core.capacity.members(pool) if i.state is InstanceState.UP]
        excess = len(ups) - self._available(pool, self.now)
        for inst in reversed(ups[len(ups) - max(0, excess) :]):
            self.push(self.now, InterruptionNotice(self.now, inst.id, model.notice_s, "trace"))
        self._next_trace_change(pool, self.now)

    def _trace_nodes(self, pool: str) -> None:
        """A delegated pool's trace says how many of its nodes are there now: jobs on the
        others are preempted, waiting jobs start on those that came back."""
        assert self.batch is not None
        before = self.batch.available[pool]
        gone, started = self.batch.set_available(pool, self._available(pool, self.now))
        self.notices += max(0, before - self.batch.available[pool])
        for attempt_id in gone:
            self._preempt(attempt_id, self.sim.pools[pool].notice_s)
        for launch, nodes in started:
            self._run(launch, self.now, nodes)
        self._next_trace_change(pool, self.now)

    def _next_trace_change(self, pool: str, now: float) -> None:
        trace = self.sim.pools[pool].trace
        assert trace is not None
        t0 = self.trace_origin[pool] + now
        tick = math.floor(t0 / trace.gap_s)
        current = trace.at(t0)
        for k in range(1, len(trace) + 1):
            if trace.counts[(tick + k) % len(trace)] != current:
                self.push((tick + k) * trace.gap_s - self.trace_origin[pool], ("trace", pool))
                return


def _runtime_draw(model: TaskModel) -> tuple[float, float, float]:
    """The runtime, and the log-normal's mu and sigma that give it as the mean (sigma 0: fixed).

    mu = ln(mean) - sigma^2 / 2; computed once per simulation, drawn once per task per run.
    """
    sigma = max(model.spread, 0.0)
    return model.runtime_s, math.log(max(model.runtime_s, 1e-9)) - sigma * sigma / 2, sigma


#: What carries out each kind of decision (by exact type: one lookup per decision). Plain
#: functions, so that no run holds a reference cycle through its own bound methods.
_ACTS: dict[type, Callable[[_Run, Any, float], None]] = {
    LaunchAttempt: _Run._launch,
    StartTimer: _Run._start_timer,
    KillAttempt: _Run._kill,
    WithdrawAttempt: _Run._withdraw,
    RequestCheckpoint: _Run._request_checkpoint,
    LaunchInstance: _Run._launch_instance,
    InstanceChanged: _Run._instance_changed,
    AttemptEnded: _Run._attempt_ended,
}
