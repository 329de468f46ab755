"""The simulator: deterministic, faithful to its models, and the deadline policies' promise."""

from __future__ import annotations

import dataclasses
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stormproof.core.decisions import (
    InstanceChanged,
    LaunchAttempt,
    LaunchInstance,
    TaskEnded,
    TaskReady,
)
from stormproof.core.defs import (
    BreakerRule,
    Market,
    PoolDef,
    Resources,
    RunOptions,
    SpotPolicy,
    TaskDef,
)
from stormproof.runtime.compile import checkpoint_overhead
from stormproof.sim.engine import PoolModel, Simulation, TaskModel
from stormproof.sim.montecarlo import percentile, run_many, summarize
from stormproof.traces import Trace

from ..core.builders import dag
from ..core.test_properties import random_dags

SPOT = PoolDef("spot", Market.SPOT, Resources(1, 1024), 2, 0.1)
OD = PoolDef("od", Market.ON_DEMAND, Resources(1, 1024), 20, 0.3)


def chain(n: int, runtime: float, **override: object) -> tuple[list[TaskDef], list[TaskModel]]:
    deps = {f"t{i}": [f"t{i - 1}"] if i else [] for i in range(n)}
    tasks = dag(deps, vcpus=1, memory=1024, overrides={t: dict(override) for t in deps})
    rank = [runtime * (n - i) for i in range(n)]
    tasks = [
        TaskDef(
            **{
                **_fields(t),
                "priority": rank[t.index],
                "estimated_s": runtime,
                "at_risk_s": runtime,
            }
        )
        for t in tasks
    ]
    return tasks, [TaskModel(runtime) for _ in tasks]


def _fields(t: TaskDef) -> dict[str, object]:
    return {name: getattr(t, name) for name in TaskDef.__slots__}  # type: ignore[attr-defined]


def test_no_interruptions_makespan_is_the_critical_path_and_cost_is_exact() -> None:
    tasks, models = chain(3, 600.0)
    sim = Simulation(tasks, RunOptions(pools=(SPOT, OD)), models)
    r = sim.run(random.Random(1))
    assert (r.final, r.makespan_s, r.interrupted_attempts) == ("succeeded", 1800.0, 0)
    assert r.cost.spent == pytest.approx(1800 * 0.1 / 3600)
    assert r.cost.on_demand_equivalent == pytest.approx(1800 * 0.3 / 3600)


def test_a_checkpointed_task_loses_only_the_work_after_its_last_checkpoint() -> None:
    tasks, _ = chain(1, 1000.0, checkpoint_enabled=True, checkpoint_interval_s=100.0)
    models = [TaskModel(1000.0, checkpoint_cost_s=10.0, restart_s=5.0)]
    trace = Trace(350.0, (1, 0), "t")  # spot for 350 s, then gone for 350 s, ...
    pools = (PoolDef("spot", Market.SPOT, Resources(1, 1024), 1, 0.1), OD)
    sim = Simulation(
        tasks,
        RunOptions(pools=pools, fallback_after_interruptions=1),
        models,
        [PoolModel("spot", trace=trace, notice_s=0.0)],
    )

    class Start0(random.Random):
        def randrange(self, *args: object, **kw: object) -> int:  # type: ignore[override]
            return 0

    r = sim.run(Start0(0), record=True)
    assert r.final == "succeeded" and r.interrupted_attempts == 1
    # The core asks for a checkpoint every 100 s of wall time (at 100, 200, 300 on spot); each
    # pauses the work 10 s, so they save 100, 190 and 280 s of work. The trace takes the
    # instance at 350 with no notice: 350 - 310 = 40 s of work lost (the waste), 280 s kept.
    # On-demand (fallback after 1): 5 s restore, 720 s of work, and a checkpoint every 100 s
    # from its start at 355 (455, ..., 1055): 7 x 10 s. 350 + 5 + 720 + 70 = 1145.
    first, second = r.records
    assert (first.state, first.end) == ("interrupted", 350.0)
    assert second.market == "on_demand"
    assert r.makespan_s == pytest.approx(1145.0)
    assert r.cost.wasted_s == pytest.approx(40.0 + 5.0)  # lost work + the restore


def test_interruptions_count_attempts_taken_away_not_notices_to_idle_instances() -> None:
    tasks, models = chain(3, 3600.0)
    spot = PoolModel("spot", rate_per_h=2.0, notice_s=0.0)
    on_demand = Simulation(
        tasks, RunOptions(pools=(SPOT, OD), spot_policy=SpotPolicy.ON_DEMAND), models, [spot]
    )
    r = on_demand.run(random.Random(3))
    assert r.notices > 0, "the idle spot instances were reclaimed, again and again"
    assert r.interrupted_attempts == 0 and r.cost.spot_s == 0
    spot_first = Simulation(tasks, RunOptions(pools=(SPOT, OD)), models, [spot])
    r = spot_first.run(random.Random(3), record=True)
    taken = sum(rec.state in ("interrupted", "lost") for rec in r.records)
    assert r.interrupted_attempts == taken > 0
    assert r.notices > taken, "notices to the second, idle spot instance count apart"


def test_same_seed_same_result_and_workers_do_not_change_it() -> None:
    tasks = dag({f"t{i}": [] for i in range(30)}, vcpus=1, memory=1024)
    models = [TaskModel(600.0 + 60 * (i % 5), spread=0.2) for i in range(30)]
    sim = Simulation(tasks, RunOptions(pools=(SPOT, OD)), models, [PoolModel("spot", 2.0)])
    a = summarize(run_many(sim, 40, seed=5, workers=1), None, {})
    b = summarize(run_many(sim, 40, seed=5, workers=2), None, {})
    c = summarize(run_many(sim, 40, seed=6, workers=1), None, {})
    assert a == b
    assert a != c


def test_each_monte_carlo_run_replays_the_trace_from_a_random_point() -> None:
    """Spot for one tick in ten, and a spot-only pool: a run's makespan says where in the
    trace it started (the one-minute task waits for the spot tick; the pool retries its
    launch every minute). A fixed start would give every run the same makespan."""
    tasks, models = chain(1, 60.0)
    trace = Trace(600.0, (1, 0, 0, 0, 0, 0, 0, 0, 0, 0), "one in ten")
    pools = (PoolDef("spot", Market.SPOT, Resources(1, 1024), 1, 0.1),)
    options = RunOptions(pools=pools, breaker=BreakerRule(threshold=10**6))
    sim = Simulation(tasks, options, models, [PoolModel("spot", trace=trace, notice_s=0.0)])
    spans = [r.makespan_s for r in run_many(sim, 300, seed=11, workers=1)]
    ticks_waited = [int(s // 600) for s in spans]
    assert set(ticks_waited) == set(range(10)), "every start point of the trace occurs"
    for k in range(10):
        assert 10 <= ticks_waited.count(k) <= 55, (k, ticks_waited.count(k))  # about 30 each


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert (percentile(values, 50), percentile(values, 90), percentile(values, 99)) == (50, 90, 99)
    assert percentile([3.0], 99) == 3.0


def test_rates_interrupt_about_as_often_as_configured() -> None:
    tasks, models = chain(1, 20 * 3600.0, checkpoint_enabled=True)
    pools = (PoolDef("spot", Market.SPOT, Resources(1, 1024), 1, 0.1),)  # spot only: retries
    sim = Simulation(tasks, RunOptions(pools=pools), models, [PoolModel("spot", 0.1, None, 0)])
    spot_hours, interrupted = 0.0, 0
    for k in range(40):
        for rec in sim.run(random.Random(k), record=True).records:
            spot_hours += (rec.end - rec.start) / 3600
            interrupted += rec.state == "interrupted"
    assert 0.075 < interrupted / spot_hours < 0.125  # 0.1 per instance-hour


@st.composite
def runtimes(draw: st.DrawFn, n: int) -> list[float]:
    return [draw(st.sampled_from([300.0, 900.0, 1800.0, 3600.0])) for _ in range(n)]


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    deps=random_dags(),
    policy=st.sampled_from(list(SpotPolicy)),
    rate=st.sampled_from([0.5, 2.0, 6.0]),
    slack=st.sampled_from([1.0, 1.2, 2.0, 4.0]),
    checkpointed=st.booleans(),
    notice=st.sampled_from([0.0, 120.0]),
    data=st.data(),
)
def test_no_policy_misses_a_deadline_that_on_demand_could_meet(
    deps: dict[str, list[str]],
    policy: SpotPolicy,
    rate: float,
    slack: float,
    checkpointed: bool,
    notice: float,
    data: st.DataObject,
) -> None:
    """Ample on-demand capacity: all-on-demand takes exactly the critical path; any deadline
    at or above it must be met by every policy, whatever the interruptions."""
    n = len(deps)
    times = data.draw(runtimes(n))
    ids = list(deps)
    interval = 300.0
    own = [t + checkpoint_overhead(t, interval if checkpointed else None, 10.0) for t in times]
    rank = [0.0] * n
    for i in reversed(range(n)):
        kids = [j for j in range(n) if ids[i] in deps[ids[j]]]
        rank[i] = own[i] + max((rank[j] for j in kids), default=0.0)
    critical = max(rank)  # what all-on-demand takes, at most
    tasks = []
    for t in dag(deps, vcpus=1, memory=1024):
        i = t.index
        at_risk = min(times[i], interval + 10.0) + 10.0 if checkpointed else times[i]
        fields = _fields(t)
        fields.update(
            priority=rank[i],
            estimated_s=times[i],
            at_risk_s=at_risk,
            checkpoint_enabled=checkpointed,
            checkpoint_interval_s=interval if checkpointed else None,
            max_interruptions=1000,
        )
        tasks.append(TaskDef(**fields))  # type: ignore[arg-type]
    models = [TaskModel(times[i], 10.0 if checkpointed else 0.0, 10.0) for i in range(n)]
    pools = (PoolDef("spot", Market.SPOT, Resources(1, 1024), 3, 0.1), OD)
    options = RunOptions(pools=pools, spot_policy=policy, deadline_s=critical * slack)
    spot = PoolModel("spot", rate_per_h=rate, notice_s=notice)
    sim = Simulation(tasks, options, models, [spot], max_time_s=critical * 50)
    r = sim.run(random.Random(data.draw(st.integers(0, 10**6))), record=True)
    assert r.final == "succeeded"
    if policy is not SpotPolicy.SPOT_FIRST:  # spot_first ignores deadlines by definition
        assert r.makespan_s <= critical * slack + 1e-6, (policy, r.makespan_s, critical * slack)
    if policy is SpotPolicy.ON_DEMAND:
        assert all(d.market == "on_demand" for d in r.decisions if isinstance(d, LaunchAttempt))
        assert r.makespan_s <= critical + 1e-6


def test_greedy_waits_for_spot_while_it_is_safe_then_pays_for_on_demand() -> None:
    tasks, models = chain(2, 3600.0)
    pools = (PoolDef("spot", Market.SPOT, Resources(1, 1024), 1, 0.1), OD)
    # spot comes back after 1 h; the deadline leaves 1.5 h of slack
    trace = Trace(3600.0, (0, 1, 1, 1, 1, 1, 1, 1), "t")

    class Start0(random.Random):
        def randrange(self, *args: object, **kw: object) -> int:  # type: ignore[override]
            return 0

    def first_on_demand_start(policy: SpotPolicy) -> float:
        options = RunOptions(pools=pools, spot_policy=policy, deadline_s=2 * 3600 + 5400)
        sim = Simulation(tasks, options, models, [PoolModel("spot", trace=trace, notice_s=0)])
        r = sim.run(Start0(0), record=True)
        assert r.final == "succeeded" and r.makespan_s <= 2 * 3600 + 5400
        return min(rec.start for rec in r.records if rec.market == "on_demand")

    # The trace takes the one spot instance at 0 (t0 is interrupted at once) and gives spot
    # back at 3600 s. t0's latest start is 12600 - 7200 = 5400 s; minus what an interruption
    # can cost (the whole task, 3600 s) spot is safe until 1800 s. spot_first goes on-demand at
    # once; greedy waits for spot until 1800 s, then pays for on-demand.
    assert first_on_demand_start(SpotPolicy.SPOT_FIRST) == 0.0
    assert first_on_demand_start(SpotPolicy.GREEDY) == 1800.0

    def markets(policy: SpotPolicy, deadline: float) -> list[str]:
        options = RunOptions(pools=pools, spot_policy=policy, deadline_s=deadline)
        sim = Simulation(tasks, options, models, [PoolModel("spot", trace=trace, notice_s=0)])
        r = sim.run(Start0(0), record=True)
        assert r.final == "succeeded" and r.makespan_s <= deadline
        return [rec.market for rec in r.records if rec.state == "succeeded"]

    assert markets(SpotPolicy.GREEDY, 6 * 3600) == ["spot", "spot"]
    assert markets(SpotPolicy.ON_DEMAND, 6 * 3600) == ["on_demand", "on_demand"]
    assert markets(SpotPolicy.SPOT_FIRST, 6 * 3600)[0] == "on_demand"  # no waiting at all


def test_the_simulator_launches_the_fleet_the_core_asks_for_and_a_trace_can_refuse_it() -> None:
    tasks, models = chain(2, 600.0)
    spot = PoolDef("spot", Market.SPOT, Resources(1, 1024), 3, 0.1)
    trace = Trace(3600.0, (1,) * 10, "t")  # one spot instance available, ever
    sim = Simulation(tasks, RunOptions(pools=(spot, OD)), models, [PoolModel("spot", None, trace)])
    r = sim.run(random.Random(1), record=True)
    launched = [d.instance_id for d in r.decisions if isinstance(d, LaunchInstance)]
    assert launched[:3] == ["spot-0", "spot-1", "spot-2"] and "od-19" in launched
    changed = [(d.instance_id, d.state) for d in r.decisions if isinstance(d, InstanceChanged)]
    assert ("spot-0", "up") in changed
    assert ("spot-1", "failed") in changed and ("spot-2", "failed") in changed
    assert r.final == "succeeded"
    assert r.records[0].instances == ("spot-0",), "the first task ran on the one that came up"


def _checkpointing_workflow(seed: int) -> Simulation:
    """Thirty tasks in a random DAG, a third checkpointing, on spot that is taken away often."""
    rng = random.Random(seed)
    deps = {f"t{i}": [f"t{j}" for j in range(i) if rng.random() < 0.1] for i in range(30)}
    tasks = [
        TaskDef(
            **{
                **_fields(t),
                "checkpoint_enabled": t.index % 3 == 0,
                "checkpoint_interval_s": 200.0 if t.index % 3 == 0 else None,
            }
        )
        for t in dag(deps, vcpus=1, memory=1024)
    ]
    models = [TaskModel(600.0, 10.0, 5.0, spread=0.3) for _ in tasks]
    options = RunOptions(pools=(SPOT, OD), fallback_after_interruptions=2)
    return Simulation(tasks, options, models, [PoolModel("spot", 3.0, notice_s=30.0)])


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_an_unrecorded_run_keeps_no_notes_and_comes_out_the_same(seed: int) -> None:
    """Monte Carlo runs keep nothing of the core's decisions, so the core leaves out its notes
    on tasks' progress there (``narrate=False``); what the run comes to must not change."""
    sim = _checkpointing_workflow(seed)
    loud = sim.run(random.Random(seed), record=True)
    quiet = sim.run(random.Random(seed))
    assert loud.interrupted_attempts > 0, "the faults this test is about happened"
    assert (quiet.final, quiet.makespan_s, quiet.cost) == (loud.final, loud.makespan_s, loud.cost)
    assert (quiet.attempts, quiet.interrupted_attempts, quiet.notices) == (
        loud.attempts,
        loud.interrupted_attempts,
        loud.notices,
    )


@pytest.mark.parametrize("seed", [4, 5])
def test_a_core_that_does_not_narrate_decides_the_same_minus_its_task_notes(seed: int) -> None:
    sim = _checkpointing_workflow(seed)
    loud = sim.run(random.Random(seed), record=True).decisions
    quiet_sim = Simulation(
        sim.tasks,
        dataclasses.replace(sim.options, narrate=False),
        sim.models,
        list(sim.pools.values()),
    )
    quiet = quiet_sim.run(random.Random(seed), record=True).decisions
    notes = (TaskReady, TaskEnded)
    assert sum(isinstance(d, notes) for d in loud) >= 60, "each task was ready and ended"
    assert not any(isinstance(d, notes) for d in quiet)
    assert quiet == [d for d in loud if not isinstance(d, notes)]


def test_a_simulated_commit_takes_the_models_checkpoint_cost_to_save(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from stormproof.core.events import CheckpointCommitted, Event
    from stormproof.sim import engine

    tasks, _ = chain(1, 1000.0, checkpoint_enabled=True, checkpoint_interval_s=100.0)
    sim = Simulation(tasks, RunOptions(pools=(OD,)), [TaskModel(1000.0, checkpoint_cost_s=10.0)])
    fed: list[Event] = []
    feed = engine._Run.feed

    def recording(run: engine._Run, event: Event) -> None:
        fed.append(event)
        feed(run, event)

    monkeypatch.setattr(engine._Run, "feed", recording)
    assert sim.run(random.Random(1)).final == "succeeded"
    commits = [e for e in fed if isinstance(e, CheckpointCommitted)]
    assert len(commits) >= 9  # every 100 s of a 1000 s task
    assert {c.save_s for c in commits} == {10.0}
