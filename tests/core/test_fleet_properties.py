"""Property tests of spot capacity: random DAGs x random interruption sequences.

A fake provider drives the core: it starts what the core launches, ends
attempts, sends interruption notices to random spot instances, loses
instances without notice, refuses some launches, and fires the earliest
timer when nothing else can happen. After every event it checks:

* an interruption or a lost node never draws on the retry budget;
* a task interrupted K times (``fallback_after_interruptions``) runs next on
  on-demand, and ``spot_enabled: false`` tasks never run on spot;
* every breaker moves closed -> open -> half_open -> closed|open and nothing
  else; it opens only on a fault, goes half-open only once its cool-down is
  over, and its cool-down is the rule's formula;
* every breaker is where a reference model of the rule, fed the same faults,
  cool-downs and probe outcomes, says it must be: it opens when the faults in
  the window reach the threshold (or healthy instances fall below the floor),
  and a probe that succeeds closes it;
* no attempt is placed on an open pool, nor on an instance that is not up,
  and a half-open pool takes one probe at a time;
* a gang takes exactly ``nodes`` different instances of one pool;
* every task ends exactly once, and the run finishes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from stormproof.core.decisions import (
    AttemptEnded,
    BreakerChanged,
    Decision,
    InstanceChanged,
    LaunchAttempt,
    LaunchInstance,
    RunFinished,
    StartTimer,
    TaskEnded,
    TaskRetrying,
)
from stormproof.core.defs import BreakerRule, Market, PoolDef, Resources, RunOptions, TaskDef
from stormproof.core.events import (
    AttemptExited,
    AttemptStarted,
    Event,
    InstanceLaunchFailed,
    InstanceLost,
    InstanceUp,
    InterruptionNotice,
    RunStarted,
    TimerFired,
)
from stormproof.core.machine import PROVIDER_ERRORS, TASK_ERRORS, Workflow

from .builders import dag
from .test_properties import random_dags

LEGAL = {("closed", "open"), ("open", "half_open"), ("half_open", "closed"), ("half_open", "open")}


@dataclass
class RefBreaker:
    """The breaker rule (DESIGN §4) written out again, plainly, as a reference model."""

    rule: BreakerRule
    state: str = "closed"
    faults: list[float] = field(default_factory=list)
    trips: int = 0
    until: float = 0.0
    closed_at: float = 0.0
    probe: str | None = None

    def fault(self, now: float) -> None:
        if self.state == "half_open":
            self.trip(now)
        elif self.state == "closed":
            self.faults = [t for t in [*self.faults, now] if t > now - self.rule.window_s]
            if len(self.faults) >= self.rule.threshold:
                self.trip(now)

    def floor(self, now: float, up: int, target: int) -> None:
        floor = min(self.rule.min_healthy, target)
        if self.state == "closed" and floor > 0 and up < floor:
            self.trip(now)

    def trip(self, now: float) -> None:
        if self.state == "closed" and now - self.closed_at > self.rule.max_cooldown_s:
            self.trips = 0
        self.trips += 1
        cooldown = min(self.rule.cooldown_s * 2 ** (self.trips - 1), self.rule.max_cooldown_s)
        self.state, self.until, self.probe, self.faults = "open", now + cooldown, None, []

    def cooled(self, now: float) -> None:
        if self.state == "open" and now >= self.until:
            self.state, self.probe = "half_open", None

    def placed(self, attempt_id: str) -> None:
        if self.state == "half_open" and self.probe is None:
            self.probe = attempt_id

    def ended(self, now: float, attempt_id: str, succeeded: bool) -> None:
        if self.probe == attempt_id:
            self.probe = None
            if succeeded:
                self.state, self.faults, self.closed_at = "closed", [], now


@dataclass
class Reference:
    """Every breaker of the run as the reference model has it, fed what the core was fed.

    Pool breakers count the provider's faults (a notice to an up instance, the
    loss of one not yet gone, a refused launch) and the healthy floor after an
    instance goes; per-type breakers count the tasks' own failures. Probes are
    the attempts placed while half-open; their endings are in ``AttemptEnded``.
    """

    rule: BreakerRule
    tasks: dict[str, TaskDef]
    targets: dict[str, int]
    breakers: dict[str, RefBreaker] = field(default_factory=dict)
    instances: dict[str, str] = field(default_factory=dict)

    def get(self, name: str) -> RefBreaker:
        return self.breakers.setdefault(name, RefBreaker(self.rule))

    def feed(self, event: Event, out: list[Decision], timer_was_set: bool) -> None:
        at = event.at
        if isinstance(event, (InterruptionNotice, InstanceLost, InstanceLaunchFailed)):
            state = self.instances.get(event.instance_id)
            counts = {
                InterruptionNotice: ("up",),
                InstanceLost: ("pending", "up", "draining"),
                InstanceLaunchFailed: ("pending",),
            }[type(event)]
            if state in counts:
                self.get(event.instance_id.rsplit("-", 1)[0]).fault(at)
        elif timer_was_set and isinstance(event, TimerFired):
            kind, _, name = event.timer_id.partition(":")
            if kind == "breaker":
                self.get(name).cooled(at)
        for d in out:
            if isinstance(d, InstanceChanged):
                self.instances[d.instance_id] = d.state
                if d.state == "gone" and not d.reason.startswith("the run "):
                    up = sum(
                        1
                        for i, s in self.instances.items()
                        if s == "up" and i.rsplit("-", 1)[0] == d.pool
                    )
                    self.get(d.pool).floor(at, up, self.targets[d.pool])
            elif isinstance(d, LaunchAttempt):
                self.get(d.pool).placed(d.attempt_id)
                if self.rule.per_task_type:
                    self.get(f"{d.pool}/{self.tasks[d.task_id].kind}").placed(d.attempt_id)
            elif isinstance(d, AttemptEnded) and d.error not in PROVIDER_ERRORS:
                ok = d.state == "succeeded"
                self.get(d.pool).ended(at, d.attempt_id, ok)
                if self.rule.per_task_type:
                    typed = self.get(f"{d.pool}/{self.tasks[d.task_id].kind}")
                    if d.error in TASK_ERRORS:
                        typed.fault(at)
                    else:
                        typed.ended(at, d.attempt_id, ok)


@dataclass
class Provider:
    """What the decisions said so far, checked against the rules above."""

    wf: Workflow
    tasks: list[TaskDef]
    fallback_k: int | None
    rule: BreakerRule
    breaker: dict[str, str] = field(default_factory=dict)
    probes: dict[str, int] = field(default_factory=dict)
    instance: dict[str, str] = field(default_factory=dict)
    pending: list[str] = field(default_factory=list)
    timers: dict[str, float] = field(default_factory=dict)
    live: dict[str, bool] = field(default_factory=dict)  # attempt id -> started?
    ended: dict[str, str] = field(default_factory=dict)
    finished: str | None = None
    reference: Reference | None = None
    #: The last BreakerChanged note per breaker: (state, until, trips).
    notes: dict[str, tuple[str, float | None, int]] = field(default_factory=dict)
    #: How often the reference saw each transition, so a run can tell what it exercised.
    seen: dict[str, int] = field(default_factory=dict)

    def feed(self, event: Event) -> None:
        retries_before = {i: list(u) for i, u in self.wf.retries_used.items()}
        interruptions_before = list(self.wf.interruptions)
        timer_was_set = isinstance(event, TimerFired) and event.timer_id in self.wf.timers
        out = self.wf.handle(event)
        self.see(event, out)
        if self.reference is not None:
            self.reference.feed(event, out, timer_was_set)
            self.agree(event)
        for d in out:
            if isinstance(d, TaskRetrying) and d.error in PROVIDER_ERRORS:
                assert d.budget == "interruptions", d
                i = self.wf.index[d.task_id]
                assert self.wf.retries_used.get(i, []) == retries_before.get(i, []), d
                assert self.wf.interruptions[i] == interruptions_before[i] + 1
        self.wf.validate()

    def agree(self, event: Event) -> None:
        """What the core said of every breaker is what the reference model says."""
        assert self.reference is not None
        for name, ref in self.reference.breakers.items():
            state, until, trips = self.notes.get(name, ("closed", None, 0))
            assert state == ref.state, (
                f"after {event}: {name} is {state}, the rule says {ref.state}"
            )
            if state == "open":
                assert (until, trips) == (ref.until, ref.trips), (name, until, trips, ref)
        for name in self.notes:
            assert name in self.reference.breakers, f"{name} moved with no reason to"

    def see(self, event: Event, out: list[Decision]) -> None:
        by_id = {t.id: t for t in self.tasks}
        for d in out:
            if isinstance(d, BreakerChanged):
                old = self.breaker.get(d.pool, "closed")
                assert (old, d.state) in LEGAL, f"{d.pool}: {old} -> {d.state}"
                if d.state == "half_open":
                    assert d.until is None
                    assert event.at >= self.timers.get(f"breaker:{d.pool}", 0.0)
                if d.state == "open":
                    assert d.until is not None
                    cooldown = min(
                        self.rule.cooldown_s * 2 ** (d.trips - 1), self.rule.max_cooldown_s
                    )
                    assert abs(d.until - event.at - cooldown) < 1e-6, (d, cooldown)
                self.breaker[d.pool] = d.state
                self.probes[d.pool] = 0
                self.notes[d.pool] = (d.state, d.until, d.trips)
                key = f"{old}->{d.state}"
                self.seen[key] = self.seen.get(key, 0) + 1
            elif isinstance(d, InstanceChanged):
                self.instance[d.instance_id] = d.state
            elif isinstance(d, LaunchInstance):
                self.pending.append(d.instance_id)
            elif isinstance(d, LaunchAttempt):
                task = by_id[d.task_id]
                i = task.index
                assert d.task_id not in self.ended
                state = self.breaker.get(d.pool, "closed")
                assert state != "open", f"{d.attempt_id} placed on open pool {d.pool}"
                typed = self.breaker.get(f"{d.pool}/{task.kind}", "closed")
                assert typed != "open", f"{d.attempt_id} placed where its type's breaker is open"
                if state == "half_open":
                    self.probes[d.pool] = self.probes.get(d.pool, 0) + 1
                    assert self.probes[d.pool] == 1, f"two probes at once on {d.pool}"
                assert len(d.instances) == task.nodes == len(set(d.instances)), d
                for iid in d.instances:
                    assert self.instance.get(iid) == "up", f"{d.attempt_id} on {iid}"
                    assert iid.rsplit("-", 1)[0] == d.pool
                spot = d.market == Market.SPOT.value
                if spot:
                    assert task.spot_enabled
                    k = self.fallback_k
                    assert k is None or self.wf.interruptions[i] < k, "no fallback"
                self.live[d.attempt_id] = False
            elif isinstance(d, StartTimer):
                self.timers[d.timer_id] = d.fire_at
            elif isinstance(d, TaskEnded):
                assert d.task_id not in self.ended, f"{d.task_id} ended twice"
                self.ended[d.task_id] = d.state
            elif isinstance(d, RunFinished):
                self.finished = d.state


def pools(spot_count: int, gang: int) -> tuple[PoolDef, ...]:
    return (
        PoolDef("spot-a", Market.SPOT, Resources(2, 4096), spot_count, 0.03),
        PoolDef("spot-b", Market.SPOT, Resources(2, 4096), spot_count, 0.04, weight=2.0),
        PoolDef("od", Market.ON_DEMAND, Resources(2, 4096), max(2, gang), 0.1),
    )


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    deps=random_dags(),
    fallback_k=st.sampled_from([None, 1, 2]),
    last_on_demand=st.booleans(),
    max_interruptions=st.integers(0, 3),
    threshold=st.integers(1, 3),
    min_healthy=st.integers(0, 2),
    spot_count=st.integers(1, 3),
    gang=st.integers(1, 2),
    no_spot=st.booleans(),
    per_type=st.booleans(),
    data=st.data(),
)
def test_random_interruptions_keep_every_invariant(
    deps: dict[str, list[str]],
    fallback_k: int | None,
    last_on_demand: bool,
    max_interruptions: int,
    threshold: int,
    min_healthy: int,
    spot_count: int,
    gang: int,
    no_spot: bool,
    per_type: bool,
    data: st.DataObject,
) -> None:
    first = next(iter(deps))
    overrides: dict[str, dict[str, object]] = {first: {"nodes": gang}}
    if no_spot and len(deps) > 1:
        overrides[list(deps)[-1]] = {"spot_enabled": False}
    tasks = dag(deps, max_interruptions=max_interruptions, overrides=overrides)
    rule = BreakerRule(threshold, 50.0, 20.0, 80.0, min_healthy, per_type)
    options = RunOptions(
        seed=1,
        pools=pools(spot_count, gang),
        fallback_after_interruptions=fallback_k,
        last_attempt_on_demand=last_on_demand,
        breaker=rule,
        launch_retry_s=15.0,
    )
    wf = Workflow(tasks, options)
    targets = {pool.name: pool.count for pool in options.pools}
    p = Provider(
        wf, tasks, fallback_k, rule, reference=Reference(rule, {t.id: t for t in tasks}, targets)
    )
    now = 0.0
    p.feed(RunStarted(now))
    faults = 0
    for _ in range(500):
        if p.finished:
            break
        now += 1.0
        if p.pending:
            iid = p.pending.pop(0)
            ok = faults >= 12 or data.draw(st.booleans())
            faults += not ok
            p.feed(InstanceUp(now, iid) if ok else InstanceLaunchFailed(now, iid, "no capacity"))
            continue
        unstarted = [a for a, s in p.live.items() if not s and a in wf.attempts]
        running = [a for a, s in p.live.items() if s and a in wf.attempts]
        spot_up = sorted(i for i, s in p.instance.items() if s == "up" and i.startswith("spot"))
        choices = ["start"] * bool(unstarted) + ["end"] * bool(running)
        if faults < 12:
            choices += ["notice"] * bool(spot_up) + ["lost"] * bool(spot_up)
        if not choices:
            due = sorted((t, i) for i, t in p.timers.items() if i in wf.timers)
            assert due, "nothing runs, nothing is due, yet the run is not finished"
            now = max(now, due[0][0])
            p.feed(TimerFired(now, due[0][1]))
            continue
        choice = data.draw(st.sampled_from(choices))
        if choice == "start":
            att = data.draw(st.sampled_from(unstarted))
            p.live[att] = True
            p.feed(AttemptStarted(now, att, "pid"))
        elif choice == "end":
            att = data.draw(st.sampled_from(running))
            ok = data.draw(st.sampled_from([True, True, False]))
            p.feed(AttemptExited(now, att, 0 if ok else 143))
        elif choice == "notice":
            faults += 1
            iid = data.draw(st.sampled_from(spot_up))
            p.feed(InterruptionNotice(now, iid, data.draw(st.sampled_from([0.0, 5.0])), "test"))
        else:
            faults += 1
            p.feed(InstanceLost(now, data.draw(st.sampled_from(spot_up)), "test"))
    assert p.finished is not None, "the run did not finish"
    assert set(p.ended) == set(deps), "every task ends exactly once"
    for transition in sorted(p.seen):  # pytest --hypothesis-show-statistics: what was exercised
        event(f"breaker {transition}")
