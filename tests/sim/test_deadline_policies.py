"""The deadline policies on the core path: the rule of ``core.policy`` placing a DAG's tasks.

tests/policy measures the same rule on one job against the paper and the exact optimum;
here it drives the core through the simulator, as it does in ``run`` and ``simulate``.
"""

from __future__ import annotations

import random
import statistics

import pytest

from stormproof.core.defs import Market, PoolDef, Resources, RunOptions, SpotPolicy, TaskDef
from stormproof.runtime.compile import checkpoint_overhead
from stormproof.sim.engine import PoolModel, Simulation, TaskModel
from stormproof.traces import Trace

from ..policy.test_single import markov_trace

H = 3600.0
OD = PoolDef("od", Market.ON_DEMAND, Resources(1, 1024), 1, 0.3)


class Start0(random.Random):
    """Replays every trace from its first tick."""

    def randrange(self, *args: object, **kw: object) -> int:  # type: ignore[override]
        return 0


def chain(n: int, runtime_s: float, at_risk_s: float, own_s: float | None = None) -> list[TaskDef]:
    """``n`` tasks one after the other; ``own_s``: each one's on-demand time in the rank."""
    own = runtime_s if own_s is None else own_s
    return [
        TaskDef(
            f"t{i}",
            i,
            (i - 1,) if i else (),
            (i + 1,) if i < n - 1 else (),
            Resources(1, 1024),
            priority=own * (n - i),
            estimated_s=runtime_s,
            at_risk_s=at_risk_s,
            max_interruptions=10**6,
        )
        for i in range(n)
    ]


def test_each_policy_stops_waiting_for_spot_where_its_rule_says() -> None:
    """Two 1 h tasks in a chain, due in 10 h; spot never comes (its pool is empty). Each
    task is one decision of the rule: work left its rank, at risk 600 s (as if checkpointed).

    * greedy waits while the slack covers the risk: a at 36000 - 7200 - 600 = 28200 s; b,
      ready at 31800 s with slack 600, goes at once.
    * stormproof waits while its work left is at most 0.7 of the time left: a until
      36000 - 7200 / 0.7 = 25714.29 s; b, ready an hour later, until 36000 - 3600 / 0.7.
    * uniform progress keeps the critical path on the line 7200 / 36000 = 0.2: a is behind
      at once; b, with 3600 s of the path done at 3600 s, is on the line until 18000 s.
    """
    tasks = chain(2, H, 600.0)
    empty_spot = PoolDef("spot", Market.SPOT, Resources(1, 1024), 0, 0.1)

    def starts(policy: SpotPolicy) -> list[float]:
        options = RunOptions(pools=(empty_spot, OD), spot_policy=policy, deadline_s=10 * H)
        r = Simulation(tasks, options, [TaskModel(H)] * 2).run(random.Random(0), record=True)
        assert r.final == "succeeded" and r.makespan_s <= 10 * H
        assert all(rec.market == "on_demand" for rec in r.records)
        return [rec.start for rec in r.records]

    assert starts(SpotPolicy.GREEDY) == [28200.0, 31800.0]
    a, b = starts(SpotPolicy.STORMPROOF)
    assert a == pytest.approx(36000 - 7200 / 0.7) and b == pytest.approx(36000 - 3600 / 0.7)
    assert starts(SpotPolicy.UNIFORM_PROGRESS) == [0.0, 18000.0]
    assert starts(SpotPolicy.ON_DEMAND) == starts(SpotPolicy.SPOT_FIRST) == [0.0, H]


def spot_progress_hours(policy: SpotPolicy, trace: Trace) -> float:
    """Hours of work done on spot by a chain of 48 checkpointed 20-minute tasks due in 20 h."""
    n, runtime, interval, cost = 48, 1200.0, 300.0, 10.0
    own = runtime + checkpoint_overhead(runtime, interval, cost)
    tasks = [
        TaskDef(
            **{
                **{name: getattr(t, name) for name in TaskDef.__slots__},  # type: ignore[attr-defined]
                "checkpoint_enabled": True,
                "checkpoint_interval_s": interval,
            }
        )
        for t in chain(n, runtime, min(runtime, interval + cost) + cost, own)
    ]
    pools = (PoolDef("spot", Market.SPOT, Resources(1, 1024), 1, 0.1), OD)
    options = RunOptions(pools=pools, spot_policy=policy, deadline_s=20 * H)
    models = [TaskModel(runtime, cost, cost)] * n
    sim = Simulation(tasks, options, models, [PoolModel("spot", trace=trace, notice_s=0.0)])
    r = sim.run(Start0(0), record=True)
    assert r.final == "succeeded" and r.makespan_s <= 20 * H, (policy, r.makespan_s)
    done_on_spot = (x for x in r.records if x.market == "spot" and x.state == "succeeded")
    return sum(x.end - x.start for x in done_on_spot) / H


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_on_the_core_path_greedy_then_uniform_progress_then_the_bound(seed: int) -> None:
    """The ordering of tests/policy, on a DAG in the core: 30 random traces of 20 h (spot
    coming and going in runs), a 16 h chain due in 20 h. No schedule does more work on spot
    than there is spot before the deadline (the bound). Every deadline is met."""
    rng = random.Random(seed)
    spot: dict[SpotPolicy, list[float]] = {
        SpotPolicy.GREEDY: [],
        SpotPolicy.UNIFORM_PROGRESS: [],
        SpotPolicy.STORMPROOF: [],
    }
    bound: list[float] = []
    for _ in range(30):
        trace = markov_trace(rng, 120)
        for policy, hours in spot.items():
            hours.append(spot_progress_hours(policy, trace))
        bound.append(min(16.0, sum(trace.counts) * trace.gap_s / H))
    mean = {policy: statistics.fmean(hours) for policy, hours in spot.items()}
    assert mean[SpotPolicy.GREEDY] < mean[SpotPolicy.UNIFORM_PROGRESS] < statistics.fmean(bound)
    assert mean[SpotPolicy.GREEDY] < mean[SpotPolicy.STORMPROOF] < statistics.fmean(bound)
