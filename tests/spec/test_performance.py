"""Loading stays fast and small: `stormproof plan` of 100,000 tasks has 3 s and 1 GiB in all."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest

from stormproof.spec.load import load_workflow

_MEASURE = """
import resource, sys, time
from stormproof.spec.load import load_workflow
start = time.perf_counter()
spec = load_workflow(sys.argv[1])
print(len(spec.tasks), time.perf_counter() - start,
      resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
"""


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
    assert time.perf_counter() - start < 2.0  # ~0.2 s here; anything quadratic takes minutes


@pytest.mark.slow
def test_a_hundred_thousand_tasks_in_under_3_s_and_1_gib(tmp_path: Path) -> None:
    path = write_dag(tmp_path / "dag.json", 100_000)
    out = subprocess.run(
        [sys.executable, "-c", _MEASURE, str(path)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    n_tasks, seconds, peak_rss = int(out[0]), float(out[1]), int(out[2])
    assert n_tasks == 100_000
    assert seconds < 3.0, f"loading took {seconds:.2f} s"
    assert peak_rss < 1 << 30, f"peak RSS {peak_rss / 2**20:.0f} MiB"
