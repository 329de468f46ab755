"""One core, two shells: a real run and a simulated run of the same workflow, with the same
injected interruption, make the same decisions (timings aside)."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

from stormproof.config import load_config
from stormproof.core.decisions import AttemptEnded, LaunchAttempt, RunFinished, TaskEnded
from stormproof.core.events import InterruptionNotice
from stormproof.sim.build import build
from stormproof.spec.load import load_workflow

from ..cli.conftest import Cli, wait_for

pytestmark = pytest.mark.slow

CONFIG = """\
pools:
  - {name: spot, market: spot, vcpus: 1, memory: 512, price: 0.1, count: 1}
  - {name: od, market: on_demand, vcpus: 1, memory: 512, price: 0.3, count: 1}
policy: {fallback_after_interruptions: 1}
"""
# The real run's order must not depend on how fast the test's CLI calls are: b's first attempt
# waits to be interrupted, and c ends only once the test has seen that (the file `go`), as in the
# simulation (b interrupted at 2 s, c ends at 4 s, then b's retry takes the on-demand instance).
WORKFLOW = """\
name: shared
tasks:
  - {id: a, command: 'sleep 1', memory: 256, estimated_runtime: 1s}
  - id: b
    command: 'if [ "$STORMPROOF_ATTEMPT" = 1 ]; then sleep 120; else sleep 1; fi'
    memory: 256
    estimated_runtime: 3s
    depends_on: [a]
  - id: c
    command: 'until [ -e "$STORMPROOF_WORKFLOW_DIR/go" ]; do sleep 0.1; done'
    memory: 256
    estimated_runtime: 3s
    depends_on: [a]
"""
KEPT = {"LaunchAttempt", "AttemptEnded", "TaskEnded", "RunFinished"}


def key(kind: str, d: dict[str, Any]) -> tuple[object, ...]:
    if kind == "LaunchAttempt":
        return (kind, d["attempt_id"], d["pool"], tuple(d["instances"]))
    if kind == "AttemptEnded":
        return (kind, d["attempt_id"], d["state"], d["error"], d["budget"])
    if kind == "TaskEnded":
        return (kind, d["task_id"], d["state"])
    return (kind, d["state"])


def test_a_real_run_and_a_simulated_run_decide_the_same(cli: Cli) -> None:
    cli.write("stormproof.yaml", CONFIG)
    wf = cli.write("wf.yaml", WORKFLOW)
    assert cli("run", str(wf), "--name", "r", "--detach").returncode == 0

    def b_on() -> str | None:
        proc = cli("fleet", "r", "--json")
        for inst in json.loads(proc.stdout) if proc.returncode == 0 else []:
            if "b/1" in inst["attempts"]:
                return str(inst["id"])
        return None

    wait_for(lambda: b_on() is not None, timeout=60, what="b to run")
    instance = b_on()
    assert instance == "spot-0"
    assert cli("interrupt", "r", "--instance", instance, "--notice", "0s").returncode == 0

    def b_interrupted() -> bool:
        attempts = cli.status("r")["tasks"]["b"]["attempts"]
        return bool(attempts) and attempts[0]["state"] == "interrupted"

    wait_for(b_interrupted, timeout=60, what="b's first attempt to end interrupted")
    (cli.cwd / "go").write_text("")
    wait_for(lambda: cli.status("r")["state"] == "succeeded", timeout=60, what="the run")
    rows = json.loads(cli("history", "r", "--json").stdout)
    real = [key(r["kind"], r["data"]) for r in rows if r["kind"] in KEPT]

    config = load_config(Path(cli.cwd / "stormproof.yaml"), cli.cwd, {})
    built = build(load_workflow(wf), config, cli.cwd, {})
    result = built.sim.run(
        random.Random(0), record=True, inject=[InterruptionNotice(2.0, "spot-0", 0.0, "test")]
    )
    simulated = [
        key(d.kind, d.to_dict())
        for d in result.decisions
        if isinstance(d, (LaunchAttempt, AttemptEnded, TaskEnded, RunFinished))
    ]
    assert simulated == real
    assert ("AttemptEnded", "b/1", "interrupted", "Capacity.Interrupted", "interruptions") in real
    assert ("LaunchAttempt", "b/2", "od", ("od-0",)) in real
