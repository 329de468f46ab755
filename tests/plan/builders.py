"""Workflow builders for plan tests: a task is an id, its dependencies and a runtime."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from stormproof.core.defs import Market, PoolDef, Resources
from stormproof.spec.model import WorkflowSpec

#: The recipe's sample workflow, verbatim (seed/000, step 8).
RECIPE_SAMPLE: dict[str, Any] = {
    "name": "Molecular Dynamics Simulation",
    "description": "Multi-stage molecular dynamics workflow with checkpointing",
    "global_config": {
        "checkpoint_interval": 600,
        "max_retry_attempts": 3,
        "spot_strategy": "diversified",
    },
    "tasks": [
        {
            "id": "data-preprocessing",
            "name": "Data Preprocessing",
            "type": "batch",
            "container_image": "scientific-computing:preprocessing",
            "command": ["python", "/app/preprocess.py"],
            "vcpus": 2,
            "memory": 4096,
            "nodes": 1,
            "environment": {
                "INPUT_PATH": "/mnt/efs/raw_data",
                "OUTPUT_PATH": "/mnt/efs/processed_data",
            },
            "checkpoint_enabled": True,
            "spot_enabled": True,
        },
        {
            "id": "equilibration",
            "name": "System Equilibration",
            "type": "batch",
            "container_image": "scientific-computing:md-simulation",
            "command": ["mpirun", "gromacs", "equilibrate"],
            "vcpus": 8,
            "memory": 16384,
            "nodes": 4,
            "depends_on": ["data-preprocessing"],
            "environment": {
                "INPUT_PATH": "/mnt/efs/processed_data",
                "OUTPUT_PATH": "/mnt/efs/equilibration",
            },
            "checkpoint_enabled": True,
            "spot_enabled": True,
            "retry_attempts": 2,
        },
        {
            "id": "production-run",
            "name": "Production MD Run",
            "type": "batch",
            "container_image": "scientific-computing:md-simulation",
            "command": ["mpirun", "gromacs", "mdrun"],
            "vcpus": 16,
            "memory": 32768,
            "nodes": 8,
            "depends_on": ["equilibration"],
            "environment": {
                "INPUT_PATH": "/mnt/efs/equilibration",
                "OUTPUT_PATH": "/mnt/efs/production",
                "SIMULATION_TIME": "1000000",
            },
            "checkpoint_enabled": True,
            "spot_enabled": True,
            "retry_attempts": 3,
            "backoff_multiplier": 2.5,
        },
        {
            "id": "analysis",
            "name": "Trajectory Analysis",
            "type": "batch",
            "container_image": "scientific-computing:analysis",
            "command": ["python", "/app/analyze.py"],
            "vcpus": 4,
            "memory": 8192,
            "nodes": 2,
            "depends_on": ["production-run"],
            "environment": {
                "INPUT_PATH": "/mnt/efs/production",
                "OUTPUT_PATH": "/mnt/efs/results",
            },
            "checkpoint_enabled": False,
            "spot_enabled": True,
        },
    ],
}


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
