"""Small builders so core tests read like the scenario they describe."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from stormproof.core.decisions import Decision, LaunchInstance
from stormproof.core.defs import (
    Market,
    OnFailure,
    PoolDef,
    Resources,
    RetryRule,
    RunOptions,
    TaskDef,
)
from stormproof.core.events import InstanceUp, RunStarted
from stormproof.core.machine import Workflow


def pool(
    name: str = "local",
    vcpus: float = 2,
    memory: int = 4096,
    count: int = 1,
    market: Market = Market.ON_DEMAND,
    gpus: int = 0,
) -> PoolDef:
    return PoolDef(name, market, Resources(vcpus, memory, gpus), count)


def dag(
    deps: Mapping[str, Sequence[str]],
    *,
    vcpus: float = 1,
    memory: int = 100,
    retry: Sequence[RetryRule] = (),
    timeout_s: float | None = None,
    on_failure: OnFailure = OnFailure.FAIL,
    max_interruptions: int = 10,
    overrides: Mapping[str, Mapping[str, object]] | None = None,
) -> list[TaskDef]:
    """Tasks from ``{id: [parent ids]}`` in insertion order (parents must come first)."""
    ids = list(deps)
    index = {t: i for i, t in enumerate(ids)}
    children: dict[str, list[int]] = {t: [] for t in ids}
    for t, parents in deps.items():
        for p in parents:
            children[p].append(index[t])
    tasks = []
    for t in ids:
        fields: dict[str, object] = dict(
            id=t,
            index=index[t],
            parents=tuple(index[p] for p in deps[t]),
            children=tuple(children[t]),
            resources=Resources(vcpus, memory, 0),
            retry=tuple(retry),
            timeout_s=timeout_s,
            on_failure=on_failure,
            max_interruptions=max_interruptions,
        )
        fields.update((overrides or {}).get(t, {}))
        tasks.append(TaskDef(**fields))  # type: ignore[arg-type]
    return tasks


def workflow(
    tasks: Sequence[TaskDef],
    pools: Sequence[PoolDef] | None = None,
    *,
    max_parallel: int | None = None,
    seed: int = 0,
) -> Workflow:
    return Workflow(
        tasks, RunOptions(seed=seed, max_parallel=max_parallel, pools=tuple(pools or [pool()]))
    )


def begin(wf: Workflow, at: float = 0.0) -> list[Decision]:
    """Start the run and bring up every instance the fleet asks for: the decisions of both."""
    out = wf.handle(RunStarted(at))
    for iid in [d.instance_id for d in out if isinstance(d, LaunchInstance)]:
        out += wf.handle(InstanceUp(at, iid))
    return out
