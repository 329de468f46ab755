"""The simulator plays the batch system of delegated pools: nodes, queueing, preemption."""

from __future__ import annotations

import random

import pytest

from stormproof.core.decisions import AttemptEnded, InstanceChanged, LaunchAttempt, LaunchInstance
from stormproof.core.defs import Market, PoolDef, PricePer, Resources, RunOptions
from stormproof.core.events import AttemptPreempted, AttemptStarted, Event
from stormproof.sim import engine
from stormproof.sim.engine import PoolModel, Simulation, TaskModel
from stormproof.traces import Trace

from ..core.builders import dag

#: One 2-vCPU node on spot, billed per vCPU-hour; two on on-demand.
SPOT = PoolDef("spot", Market.SPOT, Resources(2, 4096), 1, 0.01, delegated=True,
               price_per=PricePer.VCPU_HOUR)  # fmt: skip
OD = PoolDef("od", Market.ON_DEMAND, Resources(2, 4096), 2, 0.04, delegated=True)


class Validating(engine._Run):
    """A simulated run that checks the core's invariants after every event, and keeps them."""

    seen: list[Event]

    def feed(self, event: Event) -> None:
        self.seen = getattr(self, "seen", [])
        self.seen.append(event)
        super().feed(event)
        self.core.validate()


def run(sim: Simulation, seed: int) -> tuple[engine.SimResult, list[Event]]:
    r = Validating(sim, random.Random(seed), True)
    result = r.go()
    return result, r.seen


def test_jobs_wait_for_a_node_with_room_and_start_on_the_nodes_the_batch_system_picks() -> None:
    tasks = dag({f"t{k}": [] for k in range(4)}, vcpus=1, memory=1024)
    sim = Simulation(tasks, RunOptions(pools=(SPOT,)), [TaskModel(600.0)] * 4)
    result, seen = run(sim, 1)
    # four 1-vCPU jobs, all submitted at once (max_jobs 100), on one 2-vCPU node: two waves
    assert (result.final, result.makespan_s) == ("succeeded", 1200.0)
    starts = [e for e in seen if isinstance(e, AttemptStarted)]
    assert (
        sorted((e.at, e.nodes) for e in starts)
        == [(0.0, ("spot-n0",))] * 2 + [(600.0, ("spot-n0",))] * 2
    )
    launches = [d for d in result.decisions if isinstance(d, LaunchAttempt)]
    assert len(launches) == 4 and all(d.instances == () for d in launches)
    assert not any(isinstance(d, LaunchInstance) for d in result.decisions)
    # billed per vCPU-hour from each job's start, not from its submit
    assert result.cost.spent == pytest.approx(4 * 600 / 3600 * 1 * 0.01)
    nodes = {d.instance_id for d in result.decisions if isinstance(d, InstanceChanged)}
    assert nodes == {"spot-n0"}


def test_a_spot_partition_preempts_at_its_rate_and_a_commit_in_the_notice_saves_the_work() -> None:
    every_300s = {"checkpoint_enabled": True, "checkpoint_interval_s": 300.0}
    tasks = dag({"sim": []}, vcpus=2, memory=1024, overrides={"sim": every_300s})
    models = [TaskModel(7200.0, checkpoint_cost_s=10.0, restart_s=10.0)]
    wasted = {}
    for notice_s in (60.0, 0.0):
        sim = Simulation(
            tasks, RunOptions(pools=(SPOT, OD)), models, [PoolModel("spot", 2.0, None, notice_s)]
        )
        result, seen = run(sim, 4)
        preempted = [e for e in seen if isinstance(e, AttemptPreempted)]
        ended = [d for d in result.decisions if isinstance(d, AttemptEnded)]
        assert result.final == "succeeded" and preempted
        assert [d.error for d in ended[:-1]] == ["Capacity.Interrupted"] * len(preempted)
        assert result.interrupted_attempts == len(preempted)
        wasted[notice_s] = result.cost.wasted_s
    # SIGTERM, commit within the notice, then PREEMPTED: nothing lost; with no notice, the
    # work since the last periodic checkpoint is
    assert wasted[60.0] == 0.0 < wasted[0.0]


def test_a_trace_that_takes_the_partitions_nodes_away_preempts_what_runs_there() -> None:
    tasks = dag({"a": []}, vcpus=1, memory=1024)
    trace = Trace(300.0, (1, 0, 0, 0), "t")  # the node is there for 300 s in every 1,200
    sim = Simulation(
        tasks,
        RunOptions(pools=(SPOT, OD), fallback_after_interruptions=1),
        [TaskModel(1000.0)],
        [PoolModel("spot", trace=trace, notice_s=0.0)],
    )

    class Start0(random.Random):
        def randrange(self, *args: object, **kw: object) -> int:  # type: ignore[override]
            return 0

    r = Validating(sim, Start0(0), True)
    result = r.go()
    first, second = result.records
    assert (first.pool, first.state, first.end) == ("spot", "interrupted", 300.0)
    assert (second.pool, second.instances) == ("od", ("od-n0",))
    assert result.makespan_s == 1300.0
