"""The chaos suite's random workflows: seeded DAGs of short shell tasks that leave traces.

Each task appends to a file outside stormproof's home a line as an attempt starts
(``start <attempt id>``) and one as it ends (``end <attempt id> <exit code>``); a checkpointing
task commits its state with the marker protocol (waiting for the result), and, when restored,
says whether what it found is intact (``restored <attempt id> ok|BAD``). The pools are a spot
pool, maybe interrupted at random (and by ``stormproof interrupt``), with a short notice, and
an on-demand pool, where successors may queue.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Settings:
    """How hard to push: kills per run (orchestrator-side deaths), tasks per run."""

    kills_per_run: tuple[int, int] = (6, 12)
    tasks_per_run: tuple[int, int] = (30, 50)
    shim_kills_per_cycle: tuple[int, int] = (0, 2)


def task_script(task: str, effects: Path, nap_s: float, fail: str, checkpoint: bool) -> str:
    """A short task: lines to ``effects`` as it starts and ends; maybe a checkpoint."""
    code = {"never": "0", "first": '$([ "$STORMPROOF_ATTEMPT" = 1 ] && echo 3 || echo 0)'}
    lines = [f'e={effects}; a="$STORMPROOF_ATTEMPT_ID"', 'echo "start $a" >> "$e"']
    if checkpoint:
        lines += [
            'c="$STORMPROOF_CHECKPOINT_DIR"',
            'if [ "$STORMPROOF_RESTORED" = 1 ]; then',
            f'  if [ "$(cat "$c/state")" = "{task} ok" ]; then r=ok; else r=BAD; fi',
            '  echo "restored $a $r" >> "$e"',
            "fi",
            f"sleep {nap_s / 2}",
            f'echo "{task} ok" > "$c/state"',
            'rm -f "$c/.commit-result"; : > "$c/.commit.tmp" && mv "$c/.commit.tmp" "$c/.commit"',
            'n=0; while [ -e "$c/.commit" ] && [ $n -lt 3000 ]; do sleep 0.01; n=$((n+1)); done',
        ]
    lines += [
        f"sleep {nap_s / 2 if checkpoint else nap_s}",
        f"c={code.get(fail, '4')}",
        'echo "end $a $c" >> "$e"',
        'exit "$c"',
    ]
    return "\n".join(lines) + "\n"


def workflow(rng: random.Random, name: str, effects: Path, settings: Settings) -> dict[str, Any]:
    n = rng.randint(*settings.tasks_per_run)
    tasks = []
    for i in range(n):
        earlier = list(range(max(0, i - 8), i))
        deps = rng.sample(earlier, min(len(earlier), rng.choice((0, 1, 1, 2))))
        checkpoint = rng.random() < 0.25
        fail = rng.choices(("never", "first", "always"), (0.85, 0.13, 0.02))[0]
        nap = rng.choice((0.0, 0.05, 0.1, 0.3, 0.6, 1.0))
        tasks.append(
            {
                "id": f"t{i}",
                "command": task_script(f"t{i}", effects, nap, fail, checkpoint),
                "depends_on": [f"t{d}" for d in sorted(deps)],
                "vcpus": 1,
                "memory": 256,
                "checkpoint_enabled": checkpoint,
            }
        )
    return {
        "name": name,
        "global_config": {
            "max_retry_attempts": 2,
            "retry_interval": "0.1s",
            "on_failure": "continue",
            "kill_grace": "0.3s",
        },
        "tasks": tasks,
    }


def config(rng: random.Random) -> str:
    rate = rng.choice((0, 300, 900))  # interruptions per instance-hour on spot
    spot_rate = f", interruption_rate: {rate}" if rate else ""
    return (
        "pools:\n"
        "  - {name: spot, market: spot, instance: chaos.s, vcpus: 1, memory: 1024, price: 0.03,"
        f" count: 2, notice: 0.3s{spot_rate}}}\n"
        "  - {name: od, market: on_demand, instance: chaos.o, vcpus: 2, memory: 1024,"
        " price: 0.1, count: 1}\n"
        f"policy: {{successors: {rng.choice((0, 1, 3))}}}\n"
    )
