"""Workflow builders for plan tests: a task is an id, its dependencies and a runtime."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from stormproof.core.defs import Market, PoolDef, Resources
from stormproof.spec.model import WorkflowSpec


def task(
    task_id: str,
    deps: Sequence[str] = (),
    runtime: float | str | None = None,
    **fields: Any,
) -> dict[str, Any]:
    out: dict[str, Any] = {"id": task_id, "command": ["true"], "depends_on": list(deps)}
    if runtime is not None:
        out["estimated_runtime"] = runtime
    out.update(fields)
    return out


def workflow(*tasks: dict[str, Any], **fields: Any) -> WorkflowSpec:
    return WorkflowSpec.model_validate({"name": "test", "tasks": list(tasks), **fields})


def pool(
    name: str,
    market: Market = Market.ON_DEMAND,
    *,
    vcpus: float = 4,
    memory: int = 8192,
    gpus: int = 0,
    count: int = 1,
    price: float = 0.0,
) -> PoolDef:
    return PoolDef(name, market, Resources(vcpus, memory, gpus), count, price, "c5.xlarge")


def diamond() -> WorkflowSpec:
    """a(10) -> b(20), c(5) -> d(7)."""
    return workflow(
        task("a", runtime=10),
        task("b", ["a"], 20),
        task("c", ["a"], 5),
        task("d", ["b", "c"], 7),
    )
