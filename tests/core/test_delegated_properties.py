"""Property tests of delegated pools: random DAGs x random batch-system behaviour.

A fake batch system drives the core the way Slurm would through the executor:
it starts what the core submitted whenever it likes (late, or never before the
job ends, or news of a start that comes after the job ended), on nodes it picks,
and ends jobs with exit codes, preemptions
(``AttemptPreempted``), lost jobs (``AttemptLost``), lost nodes
(``InstanceLost``) and notices to nodes (``InterruptionNotice``). After every
event it checks:

* ``Workflow.validate()``, and no delegated pool has more than ``max_jobs``
  attempts outstanding (counted from the decisions, not from the core);
* no ``LaunchInstance`` ever, and every launch names no instance;
* no attempt is submitted to a pool whose breaker is open, and a half-open one
  takes one probe at a time;
* a finished task is never launched again, and every task ends exactly once;
* interruptions (preemptions, lost jobs and nodes) never draw on the retry
  budget, and a task never has more attempts than its two budgets allow;
* the run finishes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from stormproof.core.decisions import (
    AttemptEnded,
    BreakerChanged,
    Decision,
    LaunchAttempt,
    LaunchInstance,
    RunFinished,
    StartTimer,
    TaskEnded,
    TaskRetrying,
)
from stormproof.core.defs import (
    BreakerRule,
    Market,
    PoolDef,
    PricePer,
    Resources,
    RetryRule,
    RunOptions,
)
from stormproof.core.events import (
    AttemptExited,
    AttemptLost,
    AttemptPreempted,
    AttemptStarted,
    Event,
    InstanceLost,
    InterruptionNotice,
    RunStarted,
    TimerFired,
)
from stormproof.core.machine import PROVIDER_ERRORS, Workflow

from .builders import dag
from .test_properties import random_dags

NODES = {"spot": ("s1", "s2", "s3"), "od": ("o1", "o2")}


@dataclass
class Batch:
    """The fake batch system and what the decisions said so far."""

    wf: Workflow
    limits: dict[str, int]
    outstanding: dict[str, int] = field(default_factory=dict)
    pool_of: dict[str, str] = field(default_factory=dict)  # live attempt -> pool
    started: dict[str, tuple[str, ...]] = field(default_factory=dict)  # attempt -> nodes
    breaker: dict[str, str] = field(default_factory=dict)
    probe: dict[str, str] = field(default_factory=dict)  # half-open pool -> its probe
    ended: dict[str, str] = field(default_factory=dict)
    gone: list[str] = field(default_factory=list)  # attempts that ended
    launched: dict[str, int] = field(default_factory=dict)
    timers: dict[str, float] = field(default_factory=dict)
    finished: str | None = None

    def feed(self, event_: Event) -> None:
        retries_before = {i: list(u) for i, u in self.wf.retries_used.items()}
        out = self.wf.handle(event_)
        for d in out:
            self.see(d, retries_before)
        self.wf.validate()
        for pool, n in self.outstanding.items():
            assert n <= self.limits[pool], f"{n} jobs outstanding in {pool}"

    def see(self, d: Decision, retries_before: dict[int, list[int]]) -> None:
        wf = self.wf
        if isinstance(d, LaunchInstance):
            raise AssertionError(f"an instance launched for a delegated pool: {d}")
        if isinstance(d, LaunchAttempt):
            assert d.instances == () and d.after == "", d
            assert d.task_id not in self.ended, f"{d.task_id} launched after it ended"
            assert self.breaker.get(d.pool, "closed") != "open", f"{d.attempt_id} on open {d.pool}"
            if self.breaker.get(d.pool) == "half_open":
                probe = self.probe.get(d.pool)
                assert probe is None, f"{d.attempt_id}: {probe} probes {d.pool} already"
                self.probe[d.pool] = d.attempt_id
            self.outstanding[d.pool] = self.outstanding.get(d.pool, 0) + 1
            self.pool_of[d.attempt_id] = d.pool
            self.launched[d.task_id] = self.launched.get(d.task_id, 0) + 1
        elif isinstance(d, AttemptEnded):
            pool = self.pool_of.pop(d.attempt_id)
            self.gone.append(d.attempt_id)
            if self.probe.get(pool) == d.attempt_id:
                del self.probe[pool]  # a half-open pool may take the next probe
            self.outstanding[pool] -= 1
            self.started.pop(d.attempt_id, None)
        elif isinstance(d, BreakerChanged):
            self.breaker[d.pool] = d.state
            self.probe.pop(d.pool, None)
            event(f"breaker {d.state}")
        elif isinstance(d, TaskRetrying) and d.error in PROVIDER_ERRORS:
            i = wf.index[d.task_id]
            assert d.budget == "interruptions"
            assert wf.retries_used.get(i, []) == retries_before.get(i, []), d
            event(f"retried after {d.error}")
        elif isinstance(d, StartTimer):
            self.timers[d.timer_id] = d.fire_at
        elif isinstance(d, TaskEnded):
            assert d.task_id not in self.ended, f"{d.task_id} ended twice"
            self.ended[d.task_id] = d.state
        elif isinstance(d, RunFinished):
            self.finished = d.state


def pools(max_jobs: int, price_per: PricePer) -> tuple[PoolDef, ...]:
    spot, od = Market.SPOT, Market.ON_DEMAND
    return (
        PoolDef("spot", spot, Resources(2, 4096), 3, 0.01, delegated=True, max_jobs=max_jobs,
                price_per=price_per),
        PoolDef("od", od, Resources(2, 4096), 2, 0.05, delegated=True, max_jobs=max_jobs + 1),
    )  # fmt: skip


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    deps=random_dags(),
    max_jobs=st.integers(1, 3),
    max_interruptions=st.integers(0, 3),
    retries=st.integers(0, 2),
    threshold=st.integers(1, 3),
    fallback_k=st.sampled_from([None, 1, 2]),
    gang=st.integers(1, 3),
    price_per=st.sampled_from(list(PricePer)),
    data=st.data(),
)
def test_random_batch_system_behaviour_keeps_every_invariant(
    deps: dict[str, list[str]],
    max_jobs: int,
    max_interruptions: int,
    retries: int,
    threshold: int,
    fallback_k: int | None,
    gang: int,
    price_per: PricePer,
    data: st.DataObject,
) -> None:
    first = next(iter(deps))
    retry = [RetryRule(("States.ALL",), 1.0, retries, 2.0)] if retries else []
    tasks = dag(
        deps, max_interruptions=max_interruptions, retry=retry, overrides={first: {"nodes": gang}}
    )
    rule = BreakerRule(threshold, 50.0, 20.0, 80.0)
    options = RunOptions(
        seed=3,
        pools=pools(max_jobs, price_per),
        breaker=rule,
        fallback_after_interruptions=fallback_k,
        successors=2,  # asked for, yet never on a delegated pool
    )
    wf = Workflow(tasks, options)
    b = Batch(wf, {p.name: p.max_jobs for p in options.pools})
    now = 0.0
    b.feed(RunStarted(now))
    faults = 0
    for _ in range(400):
        if b.finished:
            break
        now += 1.0
        live = sorted(b.pool_of)
        unstarted = [a for a in live if a not in b.started]
        running = [a for a in live if a in b.started]
        nodes = sorted({n for ns in b.started.values() for n in ns})
        choices = ["start"] * bool(unstarted) + ["end"] * bool(live)
        choices += ["stale"] * bool(b.gone and live)  # not instead of what moves the run on
        if faults < 10:
            choices += ["preempt", "lose_job"] * bool(live) + ["notice", "lose_node"] * bool(nodes)
        if not choices:
            due = sorted((t, i) for i, t in b.timers.items() if i in wf.timers)
            assert due, "nothing runs, nothing is due, yet the run is not finished"
            now = max(now, due[0][0])
            b.feed(TimerFired(now, due[0][1]))
            continue
        choice = data.draw(st.sampled_from(choices))
        if choice == "start":
            att = data.draw(st.sampled_from(unstarted))
            task = wf.tasks[wf.index[att.rsplit("/", 1)[0]]]
            pool = b.pool_of[att]
            picked = data.draw(st.permutations(NODES[pool]))[: task.nodes]
            b.started[att] = tuple(picked)
            b.feed(AttemptStarted(now, att, "job", nodes=tuple(picked)))
        elif choice == "stale":  # the news of a start, after the job ended: changes nothing
            att = data.draw(st.sampled_from(b.gone))
            before = (dict(wf.attempts), wf.capacity.outstanding.copy(), list(wf.state))
            out = wf.handle(AttemptStarted(now, att, "job", nodes=("s1",)))
            assert out == [] and before == (dict(wf.attempts), wf.capacity.outstanding, wf.state)
            continue
        elif choice == "end":  # started or not: a start that never came
            att = data.draw(st.sampled_from(live))
            code = data.draw(st.sampled_from([0, 0, 0, 1, 143]))
            b.feed(AttemptExited(now, att, code))
        elif choice == "preempt":
            faults += 1
            b.feed(AttemptPreempted(now, data.draw(st.sampled_from(live)), "PREEMPTED"))
        elif choice == "lose_job":
            faults += 1
            b.feed(AttemptLost(now, data.draw(st.sampled_from(live)), "NODE_FAIL"))
        elif choice == "notice":
            faults += 1
            node = data.draw(st.sampled_from(nodes))
            b.feed(InterruptionNotice(now, node, data.draw(st.sampled_from([0.0, 5.0])), "test"))
        else:
            faults += 1
            b.feed(InstanceLost(now, data.draw(st.sampled_from(nodes)), "test"))
        if running and choice in ("notice", "lose_node"):
            event(f"a {choice} on a node with a running attempt")
    assert b.finished is not None, "the run did not finish"
    assert set(b.ended) == set(deps), "every task ends exactly once"
    for t in tasks:
        allowed = 1 + retries + (t.max_interruptions + 1)
        assert b.launched.get(t.id, 0) <= allowed, (t.id, b.launched.get(t.id))
