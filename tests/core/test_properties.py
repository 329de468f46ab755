"""Property tests: random DAGs x random attempt outcomes, invariants after every event.

A tiny fake cluster drives the core the way the runtime does: it starts what
the core launches, ends attempts with outcomes hypothesis picks, fires the
earliest timer when nothing else can happen, and checks, after each event:

* ``Workflow.validate()`` (capacity never oversubscribed, counters agree, …);
* no attempt is launched before every parent of its task succeeded;
* a task that ended is never launched again, and every task ends exactly once;
* retry delays are exactly the retrier's formula; a lost attempt never draws
  on the retry budget;
* the number of attempts never exceeds 1 + retries allowed + interruptions allowed
  (a successor dropped before it started is not an attempt that counts).

With ``successors`` on, the fake cluster behaves like the shim: a queued successor starts
only once its predecessor ended (and it took the place), a kill of a queued one is answered
``AttemptDropped``, a stop drops every queued one; faults lose the instance under a queue.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from stormproof.core.decisions import (
    AttemptEnded,
    Decision,
    KillAttempt,
    LaunchAttempt,
    LaunchInstance,
    RunFinished,
    StartTimer,
    TaskEnded,
    TaskRetrying,
    WithdrawAttempt,
)
from stormproof.core.defs import OnFailure, RetryRule, RunOptions, TaskDef
from stormproof.core.events import (
    AttemptDropped,
    AttemptExited,
    AttemptLost,
    AttemptStarted,
    Event,
    InstanceLost,
    InstanceUp,
    RunResumed,
    StopRequested,
    TimerFired,
)
from stormproof.core.machine import Workflow

from .builders import begin, dag, pool, workflow


@st.composite
def random_dags(draw: st.DrawFn) -> dict[str, list[str]]:
    n = draw(st.integers(1, 12))
    deps: dict[str, list[str]] = {}
    for i in range(n):
        earlier = [f"t{j}" for j in range(i)]
        deps[f"t{i}"] = (
            draw(st.lists(st.sampled_from(earlier), unique=True, max_size=3)) if earlier else []
        )
    return deps


rules = st.builds(
    RetryRule,
    error_equals=st.sampled_from(
        [("States.ALL",), ("Task.Failed",), ("Task.Timeout",), ("States.TaskFailed",)]
    ),
    interval_s=st.sampled_from([0.0, 1.0, 30.0]),
    max_attempts=st.integers(0, 3),
    backoff_rate=st.sampled_from([1.0, 2.0, 2.5]),
    max_delay_s=st.sampled_from([None, 50.0]),
    jitter=st.booleans(),
)


@dataclass
class Observer:
    """What the decisions said so far, to check the invariants across events."""

    tasks: list[TaskDef]
    ended: dict[str, str] = field(default_factory=dict)
    succeeded: set[str] = field(default_factory=set)
    launched: dict[str, int] = field(default_factory=dict)
    timers: dict[str, float] = field(default_factory=dict)
    live: dict[str, bool] = field(default_factory=dict)  # attempt id -> started?
    dropped: dict[str, int] = field(default_factory=dict)  # task id -> attempts dropped
    killed: set[str] = field(default_factory=set)
    pending_instances: list[str] = field(default_factory=list)
    finished: str | None = None

    def see(self, wf: Workflow, ds: list[Decision]) -> None:
        by_id = {t.id: t for t in self.tasks}
        for d in ds:
            if isinstance(d, LaunchAttempt):
                assert d.task_id not in self.ended, f"{d.task_id} launched after it ended"
                for p in by_id[d.task_id].parents:
                    assert self.tasks[p].id in self.succeeded, f"{d.task_id} before its parent"
                self.launched[d.task_id] = self.launched.get(d.task_id, 0) + 1
                self.live[d.attempt_id] = False
                if d.after:
                    assert wf.options.successors, "a successor while they are off"
                    event("a successor was queued")
            elif isinstance(d, (KillAttempt, WithdrawAttempt)):
                self.killed.add(d.attempt_id)
                if isinstance(d, WithdrawAttempt):
                    event("a queued successor was withdrawn")
            elif isinstance(d, LaunchInstance):
                self.pending_instances.append(d.instance_id)
            elif isinstance(d, AttemptEnded) and d.state == "dropped":
                assert not self.live.get(d.attempt_id), f"{d.attempt_id} ran, yet was dropped"
                event("a successor was dropped")
                self.dropped[d.task_id] = self.dropped.get(d.task_id, 0) + 1
            elif isinstance(d, StartTimer):
                self.timers[d.timer_id] = d.fire_at
            elif isinstance(d, TaskRetrying):
                check_retry(wf, by_id[d.task_id], d)
            elif isinstance(d, TaskEnded):
                assert d.task_id not in self.ended, f"{d.task_id} ended twice"
                self.ended[d.task_id] = d.state
                if d.state == "succeeded":
                    self.succeeded.add(d.task_id)
            elif isinstance(d, RunFinished):
                assert self.finished is None
                self.finished = d.state
        wf.validate()


def check_retry(wf: Workflow, task: TaskDef, d: TaskRetrying) -> None:
    if d.error == "Node.Lost":
        assert d.budget == "interruptions" and d.delay_s == 0
        return
    assert d.budget == "retry"
    assert d.retrier is not None
    k = d.retrier - 1
    used = wf.retries_used[task.index]
    rule = task.retry[k]
    assert rule.matches(d.error) and 1 <= used[k] <= rule.max_attempts
    # tiers: every earlier matching retrier is used up
    assert all(
        used[j] >= task.retry[j].max_attempts for j in range(k) if task.retry[j].matches(d.error)
    )
    full = rule.interval_s * rule.backoff_rate ** (used[k] - 1)
    if rule.max_delay_s is not None:
        full = min(full, rule.max_delay_s)
    if rule.jitter:
        assert 0 <= d.delay_s <= full
    else:
        assert d.delay_s == full


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    deps=random_dags(),
    retry=st.lists(rules, max_size=2),
    on_failure=st.sampled_from(list(OnFailure)),
    max_interruptions=st.integers(0, 2),
    timeout=st.sampled_from([None, 5.0]),
    vcpus=st.sampled_from([0.5, 1.0, 2.0]),
    count=st.integers(1, 3),
    max_parallel=st.sampled_from([None, 1, 2]),
    successors=st.sampled_from([0, 1, 2, 3]),
    data=st.data(),
)
def test_random_dags_and_outcomes_keep_every_invariant(
    deps: dict[str, list[str]],
    retry: list[RetryRule],
    on_failure: OnFailure,
    max_interruptions: int,
    timeout: float | None,
    vcpus: float,
    count: int,
    max_parallel: int | None,
    successors: int,
    data: st.DataObject,
) -> None:
    tasks = dag(
        deps,
        vcpus=vcpus,
        retry=retry,
        timeout_s=timeout,
        on_failure=on_failure,
        max_interruptions=max_interruptions,
    )
    options = RunOptions(
        seed=3,
        max_parallel=max_parallel,
        pools=(pool(vcpus=2, count=count),),
        successors=successors,
    )
    wf = Workflow(tasks, options)
    obs = Observer(tasks)
    now = 0.0
    faults = data.draw(st.integers(0, 2))
    stopped = False

    def feed(event: Event) -> None:
        obs.see(wf, wf.handle(event))

    obs.see(wf, begin(wf, now))
    for _ in range(400):
        if obs.finished:
            break
        now += 1.0
        while obs.pending_instances:
            feed(InstanceUp(now, obs.pending_instances.pop(0)))
        live = wf.attempts
        # Like the shim: a queued successor starts only once it holds its place; a killed
        # one that has not started is dropped.
        unstarted = [a for a, s in obs.live.items() if not s and a in live and live[a].holds]
        unstarted = [a for a in unstarted if a not in obs.killed or not live[a].after]
        droppable = [a for a, s in obs.live.items() if not s and a in live and live[a].after]
        killed_queued = [a for a in droppable if a in obs.killed]
        running = [a for a, s in obs.live.items() if s and a in live]
        if killed_queued:
            feed(AttemptDropped(now, killed_queued[0], "killed while queued"))
            continue
        if stopped:
            stopped = False
            for a in droppable:  # the shim drops what is queued when the driver stops
                if a in wf.attempts:
                    feed(AttemptDropped(now, a, "the run stopped"))
            feed(RunResumed(now))
            continue
        choices = (["start"] if unstarted else []) + (["end"] if running else [])
        if choices and faults:
            choices += ["lose", "stop"]
        if not choices:
            pending = sorted((t, i) for i, t in obs.timers.items() if i in wf.timers)
            assert pending, "nothing runs, nothing is due, yet the run is not finished"
            now = max(now, pending[0][0])
            feed(TimerFired(now, pending[0][1]))
            continue
        choice = data.draw(st.sampled_from(choices))
        if choice == "lose":
            faults -= 1
            up = sorted(i.id for i in wf.capacity.instances.values() if i.alive)
            if up:
                feed(InstanceLost(now, data.draw(st.sampled_from(up)), "gone"))
            continue
        if choice == "stop":
            faults -= 1
            stopped = True
            feed(StopRequested(now))
            continue
        if choice == "start":
            att = data.draw(st.sampled_from(unstarted))
            obs.live[att] = True
            feed(AttemptStarted(now, att, "pid"))
            continue
        att = data.draw(st.sampled_from(running))
        outcome = data.draw(st.sampled_from(["ok", "fail", "lost", "timeout"]))
        if outcome == "timeout" and f"timeout:{att}" in wf.timers:
            feed(TimerFired(wf.timers[f"timeout:{att}"], f"timeout:{att}"))
            outcome = "fail"
        if outcome == "lost":
            feed(AttemptLost(now, att, "node died"))
        else:
            feed(AttemptExited(now, att, 0 if outcome == "ok" else 1))
    assert obs.finished is not None, "the run did not finish"
    assert set(obs.ended) == set(deps), "every task ends exactly once"
    for t in tasks:
        allowed = 1 + sum(r.max_attempts for r in t.retry) + t.max_interruptions
        assert obs.launched.get(t.id, 0) - obs.dropped.get(t.id, 0) <= allowed
    expected = "succeeded" if set(obs.succeeded) == set(deps) else "failed"
    assert obs.finished == expected


@settings(max_examples=100, deadline=None)
@given(deps=random_dags(), data=st.data())
def test_kills_only_target_live_attempts(deps: dict[str, list[str]], data: st.DataObject) -> None:
    from stormproof.core.events import CancelRequested

    wf = workflow(dag(deps), [pool(vcpus=4)])
    out = begin(wf)
    live = {d.attempt_id for d in out if isinstance(d, LaunchAttempt)}
    out = wf.handle(CancelRequested(1))
    assert {d.attempt_id for d in out if isinstance(d, KillAttempt)} == live
    for att in sorted(live):
        out = wf.handle(AttemptExited(2, att, data.draw(st.sampled_from([0, 143]))))
        wf.validate()
    assert wf.finished
