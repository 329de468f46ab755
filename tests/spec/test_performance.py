"""Loading stays linear: no quadratic step (the speed targets are `bench/plan_scale.py`'s)."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

from stormproof.spec.load import load_workflow


def write_dag(path: Path, n_tasks: int, seed: int = 1) -> Path:
    """A random DAG in file order, ~3 dependencies per task, with the recipe's usual fields."""
    rng = random.Random(seed)
    tasks = [
        {
            "id": f"t{i}",
            "name": f"Step {i}",
            "command": ["python", "step.py", str(i)],
            "vcpus": 2,
            "memory": 4096,
            "depends_on": sorted({f"t{rng.randrange(i)}" for _ in range(3)}) if i else [],
            "checkpoint_enabled": i % 2 == 0,
        }
        for i in range(n_tasks)
    ]
    path.write_text(json.dumps({"name": "generated", "tasks": tasks}, indent=1))
    return path


def test_twenty_thousand_tasks_load_quickly(tmp_path: Path) -> None:
    path = write_dag(tmp_path / "dag.json", 20_000)
    start = time.perf_counter()
    spec = load_workflow(path)
    assert len(spec.tasks) == 20_000
    # A guard against a quadratic step (minutes), not a speed test: ~0.2 s here, and the
    # 100,000-task target (3 s, 1 GiB) is measured by bench/plan_scale.py.
    assert time.perf_counter() - start < 20.0
