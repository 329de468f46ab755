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
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from stormproof.core import rng
from stormproof.core.capacity import Capacity
from stormproof.core.decisions import (
    AttemptEnded,
    Decision,
    KillAttempt,
    LaunchAttempt,
    PruneCheckpoints,
    RequestCheckpoint,
    RunFinished,
    StartTimer,
    TaskEnded,
    TaskReady,
    TaskRetrying,
)
from stormproof.core.defs import OnFailure, Resources, RunOptions, TaskDef
from stormproof.core.events import (
    AttemptExited,
    AttemptLost,
    AttemptStarted,
    AttemptSubmitFailed,
    CancelRequested,
    CheckpointCommitted,
    CheckpointCorrupt,
    CheckpointRestored,
    Event,
    RunResumed,
    RunStarted,
    StopRequested,
    TimerFired,
)
from stormproof.core.states import AttemptState, RunMode, TaskState, check_task_transition

TASK_FAILED = "Task.Failed"
TASK_TIMEOUT = "Task.Timeout"
NODE_LOST = "Node.Lost"
CAPACITY_UNAVAILABLE = "Capacity.Unavailable"
#: Errors that are the provider's fault: they draw on ``max_interruptions``, never on retries.
PROVIDER_ERRORS = frozenset({NODE_LOST, "Capacity.Interrupted"})

ShapeKey = tuple[float, int, int, int, bool]


@dataclass(slots=True)
class Attempt:
    """An attempt that has not ended yet (ended ones are only in the log)."""

    id: str
    task: int
    number: int
    instances: tuple[str, ...]
    state: AttemptState = AttemptState.PLACED
    kill_reason: str | None = None  # "timeout", "cancel" or "failing" once a kill was decided


class Workflow:
    """The state of one run, advanced only by ``handle``."""

    def __init__(self, tasks: Sequence[TaskDef], options: RunOptions) -> None:
        self.tasks = tuple(tasks)
        self.options = options
        self.index = {t.id: t.index for t in self.tasks}
        self.capacity = Capacity(options.pools)
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

    # ------------------------------------------------------------------ the door
    def handle(self, event: Event) -> list[Decision]:
        """Advance the run by one event and say what must happen next."""
        self.now = max(self.now, event.at)
        out: list[Decision] = []
        if isinstance(event, AttemptExited):
            self._on_exit(event, out)
        elif isinstance(event, AttemptStarted):
            self._on_started(event, out)
        elif isinstance(event, AttemptLost):
            self._on_lost(event, out)
        elif isinstance(event, AttemptSubmitFailed):
            self._on_submit_failed(event, out)
        elif isinstance(event, TimerFired):
            self._on_timer(event, out)
        elif isinstance(event, RunStarted):
            self._on_run_started(event, out)
        elif isinstance(event, RunResumed):
            self._changed = True
            if self.mode is RunMode.STOPPING:
                self.mode = RunMode.RUNNING
        elif isinstance(event, StopRequested):
            if self.mode is RunMode.RUNNING:
                self.mode = RunMode.STOPPING
        elif isinstance(event, CancelRequested):
            self._on_cancel(event, out)
        elif isinstance(event, CheckpointCommitted):
            self._on_checkpoint(event, out)
        elif isinstance(event, CheckpointCorrupt):
            self._on_corrupt(event)
        elif isinstance(event, CheckpointRestored):
            pass  # a fact for the log and ``status``; nothing to decide
        else:  # pragma: no cover - every event class is handled above
            raise TypeError(f"the core does not know the event {event!r}")
        self._dispatch(event, out)
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

    # ------------------------------------------------------------------ handlers
    def _on_run_started(self, event: Event, out: list[Decision]) -> None:
        if self.started:
            return
        self.started = True
        for t in self.tasks:
            if not t.parents:
                self._make_ready(t.index, event, out, "no dependencies")

    def _on_started(self, event: AttemptStarted, out: list[Decision]) -> None:
        att = self.attempts.get(event.attempt_id)
        if att is None or att.state is not AttemptState.PLACED:
            return  # adopted again after a restart, or news of an attempt that already ended
        att.state = AttemptState.RUNNING
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
        if code == 0:
            self._end_attempt(att, AttemptState.SUCCEEDED, None, code, None, event, out)
            self._succeed(att.task, event, out)
        elif att.kill_reason == "timeout":
            self._failed_attempt(att, TASK_TIMEOUT, code, event, out)
        elif att.kill_reason in ("cancel", "failing"):
            self._end_attempt(att, AttemptState.CANCELLED, None, code, None, event, out)
            self._move(att.task, TaskState.CANCELLED, event)
            out.append(TaskEnded(self.tasks[att.task].id, "cancelled", None, att.kill_reason))
        else:
            self._failed_attempt(att, TASK_FAILED, code, event, out)

    def _on_lost(self, event: AttemptLost, out: list[Decision]) -> None:
        att = self.attempts.get(event.attempt_id)
        if att is None:
            return
        if att.kill_reason in ("cancel", "failing"):
            self._end_attempt(att, AttemptState.CANCELLED, None, None, None, event, out)
            self._move(att.task, TaskState.CANCELLED, event)
            out.append(TaskEnded(self.tasks[att.task].id, "cancelled", None, att.kill_reason))
            return
        self._failed_attempt(att, NODE_LOST, None, event, out, event.reason)

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
                out.append(RequestCheckpoint(att.id, f"every {task.checkpoint_interval_s:g}s"))
                self._arm_checkpoint_timer(att, event.at + (task.checkpoint_interval_s or 0.0), out)
        elif kind == "retry":
            task_id = key.rsplit(":", 1)[0]
            i = self.index[task_id]
            if self.state[i] is TaskState.BACKOFF:
                self._make_ready(i, event, out, "backoff ended")

    def _arm_checkpoint_timer(self, att: Attempt, fire_at: float, out: list[Decision]) -> None:
        timer = f"checkpoint:{att.id}"
        self.timers[timer] = fire_at
        out.append(StartTimer(timer, fire_at, f"checkpoint interval of {att.id}"))

    def _on_checkpoint(self, event: CheckpointCommitted, out: list[Decision]) -> None:
        task_id = event.attempt_id.rsplit("/", 1)[0]
        i = self.index.get(task_id)
        if i is None:
            return
        seqs = self.checkpoints.setdefault(i, [])
        if event.seq in seqs or event.seq in self.corrupt.get(i, ()):
            return
        seqs.append(event.seq)
        seqs.sort()
        keep = self.tasks[i].keep_checkpoints
        if keep > 0 and len(seqs) > keep:
            kept = tuple(seqs[-keep:])
            del seqs[:-keep]
            out.append(PruneCheckpoints(task_id, kept, f"keep the last {keep}"))

    def _on_corrupt(self, event: CheckpointCorrupt) -> None:
        i = self.index.get(event.task_id)
        if i is None:
            return
        self.corrupt.setdefault(i, set()).add(event.seq)
        seqs = self.checkpoints.get(i, [])
        if event.seq in seqs:
            seqs.remove(event.seq)

    def next_checkpoint_seq(self, task_id: str) -> int:
        """The seq the next checkpoint of the task gets: after every seq ever seen."""
        i = self.index[task_id]
        seen = list(self.checkpoints.get(i, ())) + list(self.corrupt.get(i, ()))
        return max(seen, default=0) + 1

    def _on_cancel(self, event: Event, out: list[Decision]) -> None:
        if self.mode in (RunMode.CANCELLING, RunMode.FINISHED):
            return
        self.mode = RunMode.CANCELLING
        self._kill_live("cancel", "the run was cancelled", out)
        for i, st in enumerate(self.state):
            if st in (TaskState.WAITING, TaskState.READY, TaskState.BACKOFF):
                self._end_unstarted(i, TaskState.CANCELLED, event, out, "the run was cancelled")

    # ------------------------------------------------------------------ outcomes
    def _succeed(self, i: int, event: Event, out: list[Decision]) -> None:
        self._move(i, TaskState.SUCCEEDED, event)
        task = self.tasks[i]
        out.append(TaskEnded(task.id, "succeeded", None, f"attempt {self.attempts_made[i]}"))
        for c in task.children:
            self.waiting_on[c] -= 1
            if self.waiting_on[c] == 0 and self.state[c] is TaskState.WAITING:
                self._make_ready(c, event, out, f"parents done (last: {task.id})")

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
        out.append(TaskEnded(self.tasks[i].id, new.value, None, why))

    def _kill_live(self, reason: str, why: str, out: list[Decision]) -> None:
        for att in self.attempts.values():
            if att.kill_reason in (None, "timeout"):
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
        self.timers.pop(f"timeout:{att.id}", None)
        self.timers.pop(f"checkpoint:{att.id}", None)
        self.capacity.release(att.id, task, att.instances)
        self._changed = True
        out.append(AttemptEnded(att.id, task.id, state.value, error, code, budget, why))

    # ------------------------------------------------------------------ scheduling
    def _make_ready(self, i: int, event: Event, out: list[Decision], why: str) -> None:
        self._move(i, TaskState.READY, event)
        task = self.tasks[i]
        r = task.resources
        key: ShapeKey = (r.vcpus, r.memory_mib, r.gpus, task.nodes, task.spot_enabled)
        heapq.heappush(self._queues.setdefault(key, []), (-task.priority, i))
        self._ready += 1
        self._changed = True
        out.append(TaskReady(task.id, why))

    def _dispatch(self, event: Event, out: list[Decision]) -> None:
        if self.mode is not RunMode.RUNNING or not self._changed:
            return
        self._changed = False
        limit = self.options.max_parallel
        while self._ready and (limit is None or len(self.attempts) < limit):
            if not self._place_best(event, out):
                break
        if self._ready and not self.attempts:
            # All capacity is free and still nothing fits: those tasks never will.
            self._fail_unplaceable(event, out)

    def _place_best(self, event: Event, out: list[Decision]) -> bool:
        """Launch the highest-ranked ready task that fits now; False if none fits."""
        heads: list[tuple[float, int, ShapeKey]] = []
        for key, heap in list(self._queues.items()):
            while heap and self.state[heap[0][1]] is not TaskState.READY:
                heapq.heappop(heap)  # stale: the task was skipped or cancelled meanwhile
            if heap:
                heads.append((heap[0][0], heap[0][1], key))
            else:
                del self._queues[key]
        for _, i, key in sorted(heads):
            placement = self.capacity.find(self.tasks[i])
            if placement is not None:
                heapq.heappop(self._queues[key])
                self._launch(
                    i, placement.pool.name, tuple(x.id for x in placement.instances), event, out
                )
                return True
        return False

    def _launch(
        self, i: int, pool: str, instances: tuple[str, ...], event: Event, out: list[Decision]
    ) -> None:
        task = self.tasks[i]
        self._ready -= 1
        self._move(i, TaskState.RUNNING, event)
        self.attempts_made[i] += 1
        number = self.attempts_made[i]
        att = Attempt(f"{task.id}/{number}", i, number, instances)
        self.attempts[att.id] = att
        self.current[i] = att
        self.capacity.take(att.id, task, instances)
        where = ", ".join(instances)
        restore = tuple(reversed(self.checkpoints.get(i, ()))) if task.checkpoint_enabled else ()
        out.append(
            LaunchAttempt(att.id, task.id, number, instances, pool, f"placed on {where}", restore)
        )

    def _fail_unplaceable(self, event: Event, out: list[Decision]) -> None:
        """Nothing runs, nothing is pending, yet tasks wait: they can never fit. End them."""
        for heap in list(self._queues.values()):
            while heap:
                _, i = heapq.heappop(heap)
                if self.state[i] is TaskState.READY:
                    self._ready -= 1
                    self._move(i, TaskState.FAILED, event)
                    self.any_failed = True
                    out.append(
                        TaskEnded(
                            self.tasks[i].id,
                            "failed",
                            CAPACITY_UNAVAILABLE,
                            "no pool can ever hold this task",
                        )
                    )
                    self._skip_descendants(i, event, out)
        self._queues.clear()

    # ------------------------------------------------------------------ bookkeeping
    def _move(self, i: int, new: TaskState, event: Event) -> None:
        old = self.state[i]
        check_task_transition(self.tasks[i].id, old, new, event)
        self.state[i] = new
        if new.is_final:
            self.unfinished -= 1

    def _check_finished(self, event: Event, out: list[Decision]) -> None:
        if self.mode is RunMode.FINISHED or self.unfinished or not self.started:
            return
        if self.mode is RunMode.CANCELLING:
            final = "cancelled"
        else:
            final = "failed" if self.any_failed else "succeeded"
        self.mode = RunMode.FINISHED
        self.final = final
        if final == "succeeded":
            for i, seqs in self.checkpoints.items():
                if seqs and not self.tasks[i].keep_checkpoints_on_success:
                    out.append(PruneCheckpoints(self.tasks[i].id, (), "the workflow succeeded"))
        out.append(RunFinished(final, f"all {len(self.tasks)} tasks ended"))

    def validate(self) -> None:
        """Invariants, checked by tests and the simulator after every event."""
        usage: dict[str, Resources] = {}
        for att in self.attempts.values():
            task = self.tasks[att.task]
            if self.state[att.task] is not TaskState.RUNNING:
                raise AssertionError(f"{att.id} is live but its task is {self.state[att.task]}")
            if self.current.get(att.task) is not att:
                raise AssertionError(f"{att.id} is not its task's current attempt")
            for iid in att.instances:
                usage[iid] = usage.get(iid, Resources(0, 0, 0)).plus(task.resources)
        self.capacity.check(usage)
        limit = self.options.max_parallel
        if limit is not None and len(self.attempts) > limit:
            raise AssertionError(f"{len(self.attempts)} attempts live, max_parallel is {limit}")
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
