"""Placement, problems, prices and duration bounds, with numbers checked by hand."""

from __future__ import annotations

import os
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stormproof.config import local_pool
from stormproof.core.defs import Market, PoolDef
from stormproof.plan.estimate import (
    Estimate,
    _peak,
    estimate,
    human_duration,
    instance_share,
    place,
    placement_problems,
)
from stormproof.plan.graph import Dag
from stormproof.spec.model import WorkflowSpec
from tests.recipe_sample import RECIPE_SAMPLE

from .builders import pool, task, workflow

SPOT = pool("spot-c5", Market.SPOT, vcpus=4, memory=8192, price=0.068, count=4)
ON_DEMAND = pool("ondemand", Market.ON_DEMAND, vcpus=4, memory=8192, price=0.17, count=2)


def run(spec: WorkflowSpec, pools: list[PoolDef], **kw: Any) -> Estimate:
    return estimate(spec, Dag.from_spec(spec), pools, **kw)


def test_recipe_sample_on_this_machine_names_what_does_not_fit() -> None:
    cpus = os.cpu_count() or 1
    memory_mib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20
    spec = WorkflowSpec.model_validate(RECIPE_SAMPLE)
    est = run(spec, [local_pool()])

    expected_misfits = [
        t for t in spec.tasks if t.vcpus > cpus or t.memory > memory_mib or t.nodes > 1
    ]
    assert len(est.problems) == len(expected_misfits) >= 3  # every multi-node task, at least
    for t, problem in zip(expected_misfits, est.problems, strict=True):
        assert problem.startswith(f"{t.id} needs {t.nodes} nodes x {t.vcpus:g} vCPUs / ")
        assert f"{t.memory:,} MiB" in problem
        assert f"the largest pool 'local' has 1 instance of {cpus} vCPUs / {memory_mib:,} MiB" in (
            problem
        )
        assert "add a pool in stormproof.yaml" in problem
        short = [
            field
            for field, bad in (
                ("vcpus", t.vcpus > cpus),
                ("memory", t.memory > memory_mib),
                ("nodes", t.nodes > 1),
            )
            if bad
        ]
        assert problem.endswith("or lower " + "/".join(short))
        assert est.pool_name(spec.tasks.index(t)) is None
    fits = cpus >= 2 and memory_mib >= 4096
    assert est.pool_name(0) == ("local" if fits else None)
    assert est.lower_bound


def test_costs_by_hand_on_spot_and_on_demand() -> None:
    spec = workflow(
        # half the vCPUs, a quarter of the memory of a c5.xlarge: share 0.5, on spot
        task("cpu", runtime="2h", vcpus=2, memory=2048),
        # a whole instance on each of 2 nodes, spot not allowed: on-demand
        task("mpi", ["cpu"], "1h", vcpus=4, memory=4096, nodes=2, spot_enabled=False),
        # memory dominates: 1 vCPU but all 8 GiB, share 1
        task("mem", ["cpu"], "30m", vcpus=1, memory=8192),
    )
    est = run(spec, [SPOT, ON_DEMAND])
    assert [est.pool_name(i) for i in range(3)] == ["spot-c5", "ondemand", "spot-c5"]
    assert est.cost_usd == pytest.approx((2 * 0.5 * 0.068, 1 * 2 * 1.0 * 0.17, 0.5 * 1 * 0.068))
    assert est.total_cost_usd == pytest.approx(0.068 + 0.34 + 0.034)
    assert est.on_demand_cost_usd == pytest.approx(2 * 0.5 * 0.17 + 0.34 + 0.5 * 0.17)
    assert est.vcpu_hours == pytest.approx(2 * 2 + 4 * 2 * 1 + 1 * 0.5)
    assert est.duration_s == est.critical_path_s == 3 * 3600.0
    assert not est.lower_bound
    assert est.problems == ()


def test_spot_pools_are_tried_first_whatever_the_file_order() -> None:
    spec = workflow(task("a", runtime=60, vcpus=1, memory=512))
    est = run(spec, [ON_DEMAND, SPOT])
    assert est.pool_name(0) == "spot-c5"


def test_a_task_goes_to_the_next_pool_when_it_does_not_fit_the_first() -> None:
    small_spot = pool("small", Market.SPOT, vcpus=2, memory=4096, price=0.03, count=8)
    big_spot = pool("big", Market.SPOT, vcpus=16, memory=65536, price=0.3, count=1)
    pools = [small_spot, big_spot, ON_DEMAND]
    assert place(pools, (2, 4096, 0, 8, True)) == 0
    assert place(pools, (4, 4096, 0, 1, True)) == 1
    assert place(pools, (4, 4096, 0, 2, True)) == 2  # big has one instance; on-demand has two
    assert place(pools, (4, 4096, 0, 3, True)) == -1


def test_gpu_share_counts_when_the_pool_has_gpus() -> None:
    gpu = pool("gpu", Market.SPOT, vcpus=8, memory=61440, gpus=4, price=1.0)
    assert instance_share(gpu, (2, 8192, 1, 1, True)) == 0.25
    assert instance_share(gpu, (2, 8192, 3, 1, True)) == 0.75
    spec = workflow(task("train", runtime="1h", vcpus=1, memory=1024, gpus=2))
    assert run(spec, [gpu]).total_cost_usd == pytest.approx(0.5)


def test_problems_for_many_tasks_of_one_shape_are_one_line() -> None:
    spec = workflow(*(task(f"t{i}", vcpus=64, memory=1024) for i in range(6)))
    est = run(spec, [ON_DEMAND])
    assert est.problems == (
        "t0, t1, t2 and 3 more tasks need 64 vCPUs / 1,024 MiB; the largest pool 'ondemand' "
        "has 2 instances of 4 vCPUs / 8,192 MiB — add a pool in stormproof.yaml or lower vcpus",
    )


def test_spot_disabled_task_with_only_spot_pools() -> None:
    spec = workflow(task("a", vcpus=1, memory=512, spot_enabled=False))
    (problem,) = run(spec, [SPOT]).problems
    assert problem.startswith("a needs 1 vCPUs / 512 MiB on on-demand capacity")
    assert "add an on_demand pool in stormproof.yaml or set spot_enabled: true" in problem


def test_spot_disabled_task_that_only_a_spot_pool_could_hold() -> None:
    big_spot = pool("big", Market.SPOT, vcpus=16, memory=65536, count=1)
    spec = workflow(task("a", vcpus=8, memory=512, spot_enabled=False))
    (problem,) = run(spec, [big_spot, ON_DEMAND]).problems
    assert "the largest pool 'ondemand'" in problem
    assert problem.endswith("(a spot pool would fit, but spot_enabled is false)")


def test_tight_capacity_raises_the_duration_to_the_work_bound() -> None:
    one = pool("one", vcpus=4, memory=8192, count=1, price=0.1)
    spec = workflow(*(task(f"t{i}", runtime="1h", vcpus=4, memory=1024) for i in range(10)))
    est = run(spec, [one])
    assert est.critical_path_s == 3600.0
    assert est.duration_s == 10 * 3600.0
    assert est.lower_bound
    assert any(
        "at its peak the workflow could use 40 vCPUs at once, the pools have 4" in n
        for n in est.notes
    )


def test_capacity_that_is_only_tight_on_paper_is_not_flagged() -> None:
    # 4 tasks of 4 vCPUs exceed 8 vCPUs in total, but never more than 2 run at once.
    two = pool("two", vcpus=4, memory=8192, count=2)
    spec = workflow(
        task("a", runtime=10, vcpus=4),
        task("b", runtime=10, vcpus=4),
        task("c", ["a", "b"], 10, vcpus=4),
        task("d", ["a", "b"], 10, vcpus=4),
    )
    est = run(spec, [two])
    assert est.duration_s == 20.0
    assert not est.lower_bound


def test_max_parallel_bounds_the_duration() -> None:
    spec = workflow(*(task(f"t{i}", runtime="1h", vcpus=1, memory=512) for i in range(4)))
    est = run(spec, [ON_DEMAND], max_parallel=2)
    assert est.duration_s == 2 * 3600.0
    assert est.lower_bound
    assert any("max_parallel 2" in n for n in est.notes)


def test_no_on_demand_fit_is_counted_at_the_placed_price_and_said() -> None:
    spec = workflow(task("a", runtime="1h", vcpus=4, memory=8192, nodes=3))
    est = run(spec, [SPOT, ON_DEMAND])
    assert est.pool_name(0) == "spot-c5"
    assert est.on_demand_cost_usd == pytest.approx(est.total_cost_usd) == pytest.approx(3 * 0.068)
    assert any("1 task fit no on_demand pool" in n for n in est.notes)


def test_rework_seam_and_interruption_rate_note() -> None:
    spec = workflow(task("a", runtime="1h", vcpus=4, memory=8192))
    rates = {"spot-c5": 0.05}
    est = run(spec, [SPOT, ON_DEMAND], interruption_rates=rates)
    assert any(
        "interruption_rate of pool 'spot-c5' is not priced in by plan" in n
        and "stormproof simulate" in n
        for n in est.notes
    )
    seen = []

    def rework(p: PoolDef, rate: float | None, runtime_s: float, checkpoint: bool) -> float:
        seen.append((p.name, rate, runtime_s, checkpoint))
        return 1.5

    est = run(spec, [SPOT, ON_DEMAND], interruption_rates=rates, rework=rework)
    assert est.total_cost_usd == pytest.approx(1.5 * 0.068)
    assert seen == [("spot-c5", 0.05, 3600.0, False)]
    assert not any("interruption_rate" in n for n in est.notes)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (0.02, "<1s"),
        (0.5, "<1s"),
        (1.4, "1s"),
        (45, "45s"),
        (750, "12m 30s"),
        (3900, "1h 05m"),
        (36 * 3600, "1d 12h"),
    ],
)
def test_human_duration(seconds: float, text: str) -> None:
    assert human_duration(seconds) == text


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 10), st.integers(0, 5), st.sampled_from([0.0, 1.0, 2.5])),
        max_size=30,
    )
)
def test_peak_matches_brute_force(intervals: list[tuple[int, int, float]]) -> None:
    start = [float(s) for s, _, _ in intervals]
    finish = [float(s + d) for s, d, _ in intervals]
    amount = [a for _, _, a in intervals]
    # Half-open intervals [start, finish): check just after every start.
    brute = max(
        (
            sum(a for s, f, a in zip(start, finish, amount, strict=True) if s <= t < f)
            for t in start
        ),
        default=0.0,
    )
    assert _peak(start, finish, amount) == pytest.approx(brute)


def test_placement_problems_are_the_estimates_problems_without_the_plan() -> None:
    """``run`` refuses with ``placement_problems``; ``plan`` shows ``estimate``'s: the same."""
    big_spot = pool("big", Market.SPOT, vcpus=16, memory=65536, count=1)
    spec = workflow(
        task("fits", vcpus=1, memory=512),
        task("wide", vcpus=64, memory=1024, depends_on=["fits"]),
        task("wide2", vcpus=64, memory=1024),
        task("od-only", vcpus=8, memory=512, spot_enabled=False),
        task("gang", vcpus=1, memory=512, nodes=3),
    )
    for pools in ([ON_DEMAND], [SPOT], [big_spot, ON_DEMAND], [SPOT, ON_DEMAND]):
        expected = run(spec, pools, pools_from="here.yaml").problems
        assert expected  # every case has something that does not fit
        assert tuple(placement_problems(spec, pools, "here.yaml")) == expected
    assert placement_problems(workflow(task("a", vcpus=1, memory=512)), [ON_DEMAND]) == []
