"""What a run measured, for real: save times of a task's checkpoints through the local runtime,
``status --json``'s checkpoints, and ``plan --from-run`` on finished, changed, redriven,
unfinished and cancelled runs, and its errors.

The declared runtimes are hours; the tasks take well under a second. So a plan that uses
what a run measured is visibly another plan: seconds, not a day and a half.
"""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from ..cli.conftest import Cli, wait_for

pytestmark = pytest.mark.slow

#: Two checkpoints, each committed and waited for (``task.commit`` returns once it is saved).
CHECKPOINTING = textwrap.dedent(
    """
    import time
    from stormproof import task

    for step in (1, 2):
        (task.checkpoint_dir() / "state").write_text("x" * 100_000 * step)
        task.commit({"step": step})
        time.sleep(0.05)
    """
)

WORKFLOW = """
name: measured
global_config: {{max_retry_attempts: 0}}
tasks:
  - {{id: prep, command: 'sleep 0.2', estimated_runtime: 10h}}
  - id: sim
    command: [{python}, {script}]
    environment: {{MODE: {mode}}}
    estimated_runtime: 20h
    checkpoint_enabled: true
    depends_on: [prep]
  - {{id: post, command: '{post}', estimated_runtime: 5h, depends_on: [sim]}}
"""


def workflow(cli: Cli, name: str = "wf.yaml", post: str = "sleep 0.1", mode: str = "v1") -> Path:
    script = cli.cwd / "checkpointing.py"
    script.write_text(CHECKPOINTING)
    text = WORKFLOW.format(
        python=json.dumps(sys.executable), script=json.dumps(str(script)), post=post, mode=mode
    )
    return cli.write(name, text)


def plan(cli: Cli, *args: str) -> dict[str, Any]:
    proc = cli("plan", *args, "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data: dict[str, Any] = json.loads(proc.stdout)
    return data


def sources(data: dict[str, Any]) -> dict[str, str]:
    return {task: t["source"] for task, t in data["tasks"].items()}


def test_a_real_tasks_checkpoints_say_how_long_they_took_to_save(cli: Cli) -> None:
    workflow(cli)
    proc = cli("run", "wf.yaml", "--name", "r1", "-q")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    status = cli.status("r1")
    (attempt,) = status["tasks"]["sim"]["attempts"]
    checkpoints = attempt["checkpoints"]
    assert [(c["seq"], c["files"], c["bytes"]) for c in checkpoints] == [
        (1, 1, 100_000),
        (2, 1, 200_000),
    ]
    wall_s = attempt["ended"] - attempt["started"]
    for c in checkpoints:
        assert 0 < c["save_s"] < wall_s
    assert status["checkpoints"]["count"] == 2
    assert status["tasks"]["prep"]["attempts"][0]["checkpoints"] == []
    text = cli("status", "r1").stdout
    assert "checkpoints: 2 saved, 0.3 MiB, save " in text


def test_plan_from_a_finished_run_uses_its_measured_figures_and_names_what_changed(
    cli: Cli,
) -> None:
    workflow(cli)
    assert cli("run", "wf.yaml", "--name", "r1", "-q").returncode == 0
    declared = plan(cli, "wf.yaml")
    assert declared["estimate"]["duration_s"] == 35 * 3600.0
    assert declared["from_run"] is None

    measured = plan(cli, "wf.yaml", "--from-run", "r1")
    assert sources(measured) == {"prep": "measured", "sim": "measured", "post": "measured"}
    assert 0.2 <= measured["tasks"]["prep"]["runtime_s"] < 60
    assert measured["estimate"]["duration_s"] < 60  # seconds, not 35 hours
    assert measured["from_run"]["runtime_measured"] == 3
    advice = measured["checkpoint_advice"]["sim"]
    assert advice["checkpoint_cost_source"] == "measured"
    assert 0 < advice["checkpoint_cost_s"] < 60
    text = cli("plan", "wf.yaml", "--from-run", "r1").stdout
    assert "runtime: measured in r1 for 3 of 3 tasks" in text
    assert "checkpoint save: measured in r1 for 1 task" in text

    # sim's environment changes: it keeps its declared figures, and so does post below it
    workflow(cli, "changed.yaml", mode="v2")
    changed = plan(cli, "changed.yaml", "--from-run", "r1")
    assert sources(changed) == {"prep": "measured", "sim": "declared", "post": "declared"}
    assert changed["tasks"]["sim"]["runtime_s"] == 20 * 3600.0
    assert changed["from_run"]["declared"] == {
        "sim": {"why": "changed", "reason": "environment changed"},
        "post": {"why": "changed", "reason": "parent 'sim' changed"},
    }
    text = cli("plan", "changed.yaml", "--from-run", "r1").stdout
    assert "runtime: measured in r1 for 1 of 3 tasks, declared for 2 (changed: sim, post)" in text


def test_plan_from_a_redriven_run_measures_each_task_by_its_own_definition(cli: Cli) -> None:
    failing = workflow(cli, "failing.yaml", post="exit 3")
    proc = cli("run", "failing.yaml", "--name", "r2", "-q")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    fixed = workflow(cli, "fixed.yaml")
    proc = cli("redrive", "r2", "fixed.yaml")
    assert proc.returncode == 0, proc.stdout + proc.stderr

    # post succeeded only after the redrive, with the fixed command: measured from there
    after = plan(cli, str(fixed), "--from-run", "r2")
    assert sources(after) == {"prep": "measured", "sim": "measured", "post": "measured"}
    # the failing command's post ran in r2 too, and never succeeded
    before = plan(cli, str(failing), "--from-run", "r2")
    assert sources(before) == {"prep": "measured", "sim": "measured", "post": "declared"}
    assert before["from_run"]["declared"]["post"] == {
        "why": "no successful attempt",
        "reason": "no successful attempt in run r2",
    }


def test_plan_from_an_unfinished_then_cancelled_run_keeps_declared_what_did_not_succeed(
    cli: Cli,
) -> None:
    workflow(cli, post="while [ ! -f go ]; do sleep 0.05; done")
    proc = cli.start("run", "wf.yaml", "--name", "r3", "-q")

    def post_running() -> bool:
        status = cli("status", "r3", "--json")
        if status.returncode != 0:  # the run is not created yet
            return False
        tasks = json.loads(status.stdout)["tasks"]
        return tasks["sim"]["state"] == "succeeded" and tasks["post"]["state"] == "running"

    wait_for(post_running, timeout=60, what="post to run")
    unfinished = plan(cli, "wf.yaml", "--from-run", "r3")
    assert sources(unfinished) == {"prep": "measured", "sim": "measured", "post": "declared"}
    assert cli("cancel", "r3").returncode == 1
    assert proc.wait(timeout=60) == 1
    cancelled = plan(cli, "wf.yaml", "--from-run", "r3")
    assert sources(cancelled) == sources(unfinished)
    text = cli("plan", "wf.yaml", "--from-run", "r3").stdout
    assert "declared for 1 (no successful attempt: post)" in text


def test_plan_from_run_refuses_an_unknown_run_and_one_of_another_workflow(cli: Cli) -> None:
    workflow(cli)
    assert cli("run", "wf.yaml", "--name", "r1", "-q").returncode == 0
    unknown = cli("plan", "wf.yaml", "--from-run", "r")
    assert unknown.returncode == 2
    assert unknown.stderr.strip().splitlines() == [
        f"error: no run named 'r' in {cli.cwd / '.stormproof'} (did you mean 'r1'?); "
        "`stormproof status` lists runs"
    ]
    cli.write("other.yaml", "name: other\ntasks:\n  - {id: x, command: 'true'}\n")
    other = cli("plan", "other.yaml", "--from-run", "r1")
    assert other.returncode == 2
    (line,) = other.stderr.strip().splitlines()
    assert line.startswith("error: --from-run r1: run 'r1' ran workflow 'measured', which has")
    assert "no task in common with other.yaml (workflow 'other')" in line
    assert "Traceback" not in other.stderr


def test_a_success_that_began_from_a_checkpoint_counts_the_work_before_it(tmp_path: Path) -> None:
    """sim/1 works 100 s, asks for checkpoint 1 at 100 (saved at 102) and is interrupted at
    130; sim/2 restores it, runs 50 s and succeeds: the task takes 100 + 50 s from scratch,
    not the 50 s of its last attempt (the 30 s lost after the checkpoint are rework)."""
    from stormproof.config import local_pool
    from stormproof.core.decisions import AttemptEnded, LaunchAttempt
    from stormproof.core.events import (
        AttemptExited,
        AttemptStarted,
        CheckpointCommitted,
        CheckpointRestored,
        Event,
        RunStarted,
    )
    from stormproof.runtime.measured import measure_run
    from stormproof.runtime.runs import new_context
    from stormproof.spec.model import WorkflowSpec
    from stormproof.store.base import Row
    from stormproof.store.sqlite import SQLiteEventLog

    spec = WorkflowSpec.model_validate(
        {
            "name": "w",
            "tasks": [
                {"id": "sim", "command": "x", "checkpoint_enabled": True, "estimated_runtime": "9h"}
            ],
        }
    )
    file = tmp_path / "wf.yaml"
    ctx = new_context("r", spec, (local_pool(),), file, "local")
    store = SQLiteEventLog(tmp_path / "db.sqlite")
    store.create_run("r", "w", ctx.to_meta(), 0.0)

    def launch(n: int, at: float) -> Row:
        d = LaunchAttempt(f"sim/{n}", "sim", n, (), "local", "placed")
        return Row(0, "decision", d.kind, at, None, d.to_dict())

    def ended(n: int, state: str, at: float) -> Row:
        d = AttemptEnded(f"sim/{n}", "sim", state)
        return Row(0, "decision", d.kind, at, None, d.to_dict())

    def event(e: Event) -> Row:
        return Row(0, "event", e.kind, e.at, None, e.to_dict())

    store.append(
        "r",
        [
            event(RunStarted(0.0)),
            launch(1, 0.0),
            event(CheckpointRestored(0.0, "sim/1", 0)),
            event(AttemptStarted(10.0, "sim/1", "1")),
            event(CheckpointCommitted(112.0, "sim/1", 1, 1, 10, save_s=2.0)),
            event(AttemptExited(140.0, "sim/1", 143)),
            ended(1, "interrupted", 140.0),
            launch(2, 150.0),
            event(CheckpointRestored(151.0, "sim/2", 1)),
            event(AttemptStarted(160.0, "sim/2", "2")),
            event(AttemptExited(210.0, "sim/2", 0)),
            ended(2, "succeeded", 210.0),
        ],
    )
    store.flush()
    measured = measure_run(store, "r", spec, file, None)
    assert measured.runtime_s("sim") == 100.0 + 50.0
    assert measured.save_s("sim") == 2.0
    store.close()


def test_a_task_reused_from_an_earlier_run_says_where_it_really_ran(cli: Cli) -> None:
    cli.write(
        "wf.yaml",
        "name: outputs\ntasks:\n"
        "  - id: make\n"
        "    command: 'echo made > \"$STORMPROOF_DATA_DIR/out.txt\"'\n"
        "    outputs: [out.txt]\n"
        "    estimated_runtime: 3h\n",
    )
    assert cli("run", "wf.yaml", "--name", "r1", "-q").returncode == 0
    proc = cli("run", "wf.yaml", "--name", "r2", "--reuse", "-q")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert sources(plan(cli, "wf.yaml", "--from-run", "r1")) == {"make": "measured"}
    reused = plan(cli, "wf.yaml", "--from-run", "r2")
    assert sources(reused) == {"make": "declared"}
    assert reused["from_run"]["declared"]["make"] == {
        "why": "no successful attempt",
        "reason": "kept in run r2 without running (same fingerprint; outputs as run r1 left them)",
    }
