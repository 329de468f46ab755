"""Capacity's bookkeeping that the scenario tests leave open: GPUs taken and given back, the
price share a GPU task pays, on-demand pools by price, and the diversified strategy over
delegated pools (a Slurm partition's nodes count as its units)."""

from __future__ import annotations

import dataclasses

import pytest

from stormproof.core.capacity import Capacity, InstanceState, hourly_price, share
from stormproof.core.decisions import Decision, LaunchAttempt
from stormproof.core.defs import Market, PoolDef, Resources, RunOptions
from stormproof.core.events import AttemptExited, AttemptStarted, RunStarted
from stormproof.core.machine import Workflow

from .builders import begin, dag

GPU_NODE = Resources(8, 65536, 2)


def launches(ds: list[Decision]) -> list[LaunchAttempt]:
    return [d for d in ds if isinstance(d, LaunchAttempt)]


def gpu_tasks(n: int) -> list:  # type: ignore[type-arg]
    one_gpu = {"resources": Resources(1, 1024, 1)}
    return dag({f"t{i}": [] for i in range(n)}, overrides={f"t{i}": one_gpu for i in range(n)})


def test_gpus_are_packed_onto_an_instance_and_given_back_when_an_attempt_ends() -> None:
    pool = PoolDef("gpu", Market.ON_DEMAND, GPU_NODE, 1, price_usd_per_h=4.0)
    wf = Workflow(gpu_tasks(3), RunOptions(pools=(pool,)))
    first = launches(begin(wf))
    assert [d.task_id for d in first] == ["t0", "t1"], "two GPUs: two tasks, however many vCPUs"
    assert wf.capacity.instances["gpu-0"].free_gpus == 0
    wf.handle(AttemptStarted(1, first[0].attempt_id, "pid"))
    (third,) = launches(wf.handle(AttemptExited(2, first[0].attempt_id, 0)))
    assert third.task_id == "t2", "the GPU the first gave back"
    wf.handle(AttemptStarted(3, third.attempt_id, "pid"))
    for d in (first[1], third):
        wf.handle(AttemptExited(4, d.attempt_id, 0))
    assert wf.capacity.instances["gpu-0"].free_gpus == 2


def test_a_gpu_task_pays_for_the_largest_share_it_takes_gpus_included() -> None:
    pool = PoolDef("gpu", Market.ON_DEMAND, Resources(8, 65536, 4), 1, price_usd_per_h=4.0)
    # 1 of 8 vCPUs, 1 GiB of 64, 1 of 4 GPUs: the GPUs decide, a quarter of the price
    assert share(Resources(1, 1024, 1), pool.capacity) == 0.25
    assert hourly_price(pool, Resources(1, 1024, 1), 2) == 2.0
    # without GPUs the vCPUs decide
    assert hourly_price(pool, Resources(2, 1024, 0), 1) == 1.0


def test_on_demand_pools_are_tried_cheapest_first_whatever_their_order() -> None:
    dear = PoolDef("dear", Market.ON_DEMAND, Resources(2, 4096), 1, price_usd_per_h=0.5)
    cheap = PoolDef("cheap", Market.ON_DEMAND, Resources(2, 4096), 1, price_usd_per_h=0.1)
    wf = Workflow(dag({"a": [], "b": []}, vcpus=2), RunOptions(pools=(dear, cheap)))
    assert [(d.task_id, d.pool) for d in launches(begin(wf))] == [("a", "cheap"), ("b", "dear")]


def test_diversified_spreads_over_delegated_pools_by_their_node_counts() -> None:
    def partition(name: str, nodes: int) -> PoolDef:
        return PoolDef(
            name, Market.SPOT, Resources(4, 8192), nodes, 0.01, delegated=True, max_jobs=100
        )

    wf = Workflow(
        dag({f"t{i}": [] for i in range(8)}, vcpus=1),
        RunOptions(pools=(partition("small", 1), partition("large", 3))),
    )
    pools = [d.pool for d in launches(wf.handle(RunStarted(0.0)))]
    assert (pools.count("small"), pools.count("large")) == (2, 6)


def test_the_invariant_check_the_property_tests_rely_on_catches_each_violation() -> None:
    """``Capacity.check`` is what the property tests assert after every event: it must
    see each kind of broken bookkeeping, or they prove nothing."""
    node = PoolDef("n", Market.ON_DEMAND, Resources(4, 8192, 1), 1)
    part = PoolDef("p", Market.SPOT, Resources(4, 8192), 2, delegated=True, max_jobs=1)
    cap = Capacity((node, part))
    inst = cap.add(node, InstanceState.UP)
    cap.take("a/1", Resources(4, 8192, 1), (inst.id,))
    cap.check({inst.id: Resources(4, 8192, 1)})  # full, and consistent: fine
    for dimension in ({"vcpus": 5}, {"memory_mib": 9000}, {"gpus": 2}):
        over = dataclasses.replace(Resources(4, 8192, 1), **dimension)
        cap.release("a/1", Resources(4, 8192, 1), (inst.id,))
        cap.take("a/1", over, (inst.id,))
        with pytest.raises(AssertionError, match="oversubscribed"):
            cap.check({inst.id: over})
        cap.release("a/1", over, (inst.id,))
        cap.take("a/1", Resources(4, 8192, 1), (inst.id,))
    for dimension in ({"vcpus": 3}, {"memory_mib": 8000}, {"gpus": 0}):
        said = dataclasses.replace(Resources(4, 8192, 1), **dimension)
        with pytest.raises(AssertionError, match=r"free .* \+ used .* !="):
            cap.check({inst.id: said})  # the attempts hold more than the instance lost
    cap.submitted(part)
    cap.submitted(part)
    with pytest.raises(AssertionError, match="2 attempts outstanding in p, max 1"):
        cap.check({inst.id: Resources(4, 8192, 1)})
