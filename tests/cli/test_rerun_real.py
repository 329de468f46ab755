"""The second run, for real: ``redrive`` and ``run --reuse`` through the real CLI, with
side-effect files that prove which tasks ran, and a kill -9 in the middle of a redrive."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import pytest

from .conftest import Cli, wait_for

pytestmark = pytest.mark.slow

# Every task appends its id to the run's `effects` file: the file says what ran, how often.
EFFECT = 'echo {id} >> "$STORMPROOF_DATA_DIR/effects"'

FAILING = """
name: effects
global_config: {{max_retry_attempts: 0, on_failure: continue}}
tasks:
  - {{id: prep, command: '{prep}'}}
  - {{id: bad, command: '{bad}', depends_on: [prep]}}
  - {{id: after, command: '{after}', depends_on: [bad]}}
  - {{id: side, command: '{side}', depends_on: [prep]}}
"""


def failing(bad_exit: int, after_sleep: float = 0.0) -> str:
    return FAILING.format(
        prep=EFFECT.format(id="prep"),
        bad=EFFECT.format(id="bad") + f"; exit {bad_exit}",
        after=f"sleep {after_sleep}; " + EFFECT.format(id="after"),
        side=EFFECT.format(id="side"),
    )


def effects(cli: Cli, run: str) -> list[str]:
    path = cli.data_dir / run / "data" / "effects"
    return path.read_text().split() if path.exists() else []


def plan_json(cli: Cli, *args: str) -> dict[str, Any]:
    proc = cli(*args, "--plan", "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data: dict[str, Any] = json.loads(proc.stdout)
    return data


def verdicts(plan: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {t["task"]: (t["verdict"], t["reason"]) for t in plan["tasks"]}


def test_redrive_after_a_fixed_command_reruns_only_the_failed_task_and_its_descendants(
    cli: Cli,
) -> None:
    wf = cli.write("wf.yaml", failing(bad_exit=3))
    first = cli("run", "wf.yaml", "--name", "r1")
    assert first.returncode == 1
    assert "stormproof redrive r1" in first.stdout  # the way on, said where it failed
    assert sorted(effects(cli, "r1")) == ["bad", "prep", "side"]
    again = cli("run", "wf.yaml", "--name", "r1")
    assert again.returncode == 2 and "stormproof redrive r1 FILE" in again.stderr
    wf.write_text(failing(bad_exit=0))

    plan = plan_json(cli, "redrive", "r1")
    assert verdicts(plan) == {
        "prep": ("kept", "succeeded in r1"),
        "bad": ("run", "command changed"),
        "after": ("run", "parent 'bad' reruns"),
        "side": ("kept", "succeeded in r1"),
    }
    assert plan["state"] == "failed"
    proc = cli("redrive", "r1")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # prep and side ran once (in r1); bad twice (failed, then fixed); after once, after bad
    ran = effects(cli, "r1")
    assert sorted(ran) == sorted(["prep", "side", "bad", "bad", "after"])
    assert ran.index("after") > len(ran) - 1 - ran[::-1].index("bad")  # after the fixed bad
    st = cli.status("r1")
    assert st["state"] == "succeeded"
    numbers = {t: [a["number"] for a in v["attempts"]] for t, v in st["tasks"].items()}
    assert numbers == {"prep": [1], "bad": [1, 2], "after": [1], "side": [1]}
    history = json.loads(cli("history", "r1", "--json").stdout)
    kinds = [r["kind"] for r in history]
    assert kinds.count("RunStarted") == 2 and kinds.count("RunRedriven") == 1
    (redriven,) = [r for r in history if r["kind"] == "RunRedriven"]
    assert redriven["data"]["verdicts"]["bad"] == ["run", "command changed"]
    assert "exit 0" in json.dumps(redriven["data"]["spec"])  # the new workflow, in the log
    nothing = cli("redrive", "r1")
    assert nothing.returncode == 0 and "nothing to redrive" in nothing.stdout


def test_redrive_plan_names_new_removed_and_changed_tasks_and_runs_nothing(cli: Cli) -> None:
    wf = cli.write("wf.yaml", failing(bad_exit=3))
    assert cli("run", "wf.yaml", "--name", "r1").returncode == 1
    rows_before = len(json.loads(cli("history", "r1", "--json").stdout))
    text = failing(bad_exit=3).replace("  - {id: side", "  - {id: extra, command: 'true'}\n#")
    text = text.replace("name: effects", "name: effects\ndescription: edited")
    text = text.replace(
        "{id: prep, command: 'echo prep", "{id: prep, environment: {X: '1'}, command: 'echo prep"
    )
    wf.write_text(text)
    plan = plan_json(cli, "run", "wf.yaml", "--name", "r1", "--redrive")
    assert verdicts(plan) == {
        "prep": ("run", "environment changed"),
        "bad": ("run", "parent 'prep' reruns"),
        "after": ("run", "parent 'bad' reruns"),
        "extra": ("run", "new task"),
    }
    assert plan["removed"] == ["side"]
    human = cli("redrive", "r1", "--plan")
    assert "environment changed" in human.stdout and "side" in human.stdout
    assert len(json.loads(cli("history", "r1", "--json").stdout)) == rows_before


def test_kill_9_during_a_redrive_then_resume_finishes_it_running_each_task_once(
    cli: Cli,
) -> None:
    wf = cli.write("wf.yaml", failing(bad_exit=3))
    assert cli("run", "wf.yaml", "--name", "r1").returncode == 1
    wf.write_text(failing(bad_exit=0, after_sleep=3.0))
    proc = cli.start("redrive", "r1")
    wait_for(lambda: effects(cli, "r1").count("bad") == 2, what="the fixed task")
    wait_for(lambda: (cli.data_dir / "r1" / "tasks" / "after").exists(), what="its child")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    assert cli.status("r1")["state"] == "stopped"
    busy = cli("redrive", "r1")  # `after` still runs, detached: a redrive must not start it again
    assert busy.returncode == 2 and "stormproof resume r1" in busy.stderr, busy.stderr
    proc2 = cli("resume", "r1", timeout=120)
    assert proc2.returncode == 0, proc2.stdout + proc2.stderr
    assert sorted(effects(cli, "r1")) == sorted(["prep", "side", "bad", "bad", "after"])
    st = cli.status("r1")
    assert st["state"] == "succeeded"
    assert [a["number"] for a in st["tasks"]["after"]["attempts"]] == [1]
    assert [a["state"] for a in st["tasks"]["bad"]["attempts"]] == ["failed", "succeeded"]


REUSE = """
name: reuse
global_config: {max_retry_attempts: 0}
tasks:
  - id: prep
    command: 'cd "$STORMPROOF_DATA_DIR"; echo prep >> effects;
              cp "$STORMPROOF_WORKFLOW_DIR/params.txt" p'
    inputs: [params.txt]
    outputs: [p]
  - id: sim
    command: 'cd "$STORMPROOF_DATA_DIR"; echo sim >> effects; cat p > {out}'
    depends_on: [prep]
    outputs: [{out}]
  - id: plot
    command: 'cd "$STORMPROOF_DATA_DIR"; echo plot >> effects; mkdir -p plots; cp {out} plots/'
    depends_on: [sim]
    outputs: [plots]
  - id: side
    command: 'cd "$STORMPROOF_DATA_DIR"; echo side >> effects; echo s > s'
    depends_on: [prep]
    outputs: [s]
  - {id: note, command: 'echo note >> "$STORMPROOF_DATA_DIR/effects"', depends_on: [prep]}
"""


def reuse_workflow(cli: Cli, out: str = "sim.nc") -> Path:
    cli.write("params.txt", "dt=1\n")
    return cli.write("wf.yaml", REUSE.replace("{out}", out))


def test_reuse_after_a_change_to_one_command_reruns_that_task_and_its_descendants_only(
    cli: Cli,
) -> None:
    wf = reuse_workflow(cli)
    assert cli("run", "wf.yaml", "--name", "r0", "-q").returncode == 0
    wf.write_text(wf.read_text().replace("cat p", "cat  p"))  # sim's command changes
    plan = plan_json(cli, "run", "wf.yaml", "--reuse")
    assert verdicts(plan) == {
        "prep": ("reused", "same fingerprint; outputs as run r0 left them"),
        "sim": ("run", "command changed since run r0"),
        "plot": ("run", "parent 'sim' reruns"),
        "side": ("reused", "same fingerprint; outputs as run r0 left them"),
        "note": ("run", "declares no outputs, so it is never reused"),
    }
    proc = cli("run", "wf.yaml", "--reuse", "--name", "r1", "-q")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert sorted(effects(cli, "r1")) == ["note", "plot", "sim"]
    data = cli.data_dir / "r1" / "data"
    assert (data / "p").read_text() == "dt=1\n"  # copied from r0 before anything ran
    assert (data / "s").read_text() == "s\n"
    assert (data / "plots" / "sim.nc").read_text() == "dt=1\n"
    st = cli.status("r1")
    assert st["tasks"]["prep"]["state"] == "succeeded" and st["tasks"]["prep"]["attempts"] == []
    # r1 recorded its own results: everything with outputs is reused from it next time
    again = verdicts(plan_json(cli, "run", "wf.yaml", "--reuse"))
    assert {t: v[0] for t, v in again.items()} == {
        "prep": "reused", "sim": "reused", "plot": "reused", "side": "reused", "note": "run"
    }  # fmt: skip
    assert {t["from_run"] for t in plan_json(cli, "run", "wf.yaml", "--reuse")["tasks"]} >= {"r1"}


def test_a_deleted_or_changed_output_or_input_forces_a_rerun_with_the_reason(cli: Cli) -> None:
    reuse_workflow(cli)
    assert cli("run", "wf.yaml", "--name", "r0", "-q").returncode == 0
    (cli.data_dir / "r0" / "data" / "sim.nc").unlink()
    (cli.data_dir / "r0" / "data" / "s").write_text("changed\n")
    plan = verdicts(plan_json(cli, "run", "wf.yaml", "--reuse"))
    assert plan["sim"] == ("run", "output missing: sim.nc")
    assert plan["plot"] == ("run", "parent 'sim' reruns")
    assert plan["side"] == ("run", "output changed since run r0: s")
    proc = cli("run", "wf.yaml", "--reuse", "--name", "r1", "-q")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert sorted(effects(cli, "r1")) == ["note", "plot", "side", "sim"]
    cli.write("params.txt", "dt=2\n")
    plan = verdicts(plan_json(cli, "run", "wf.yaml", "--reuse"))
    assert plan["prep"] == ("run", "input changed since run r1: params.txt")
    assert plan["side"] == ("run", "parent 'prep' reruns")


def test_reuse_of_a_workflow_no_run_has_done_says_so(cli: Cli) -> None:
    reuse_workflow(cli)
    plan = verdicts(plan_json(cli, "run", "wf.yaml", "--reuse"))
    assert plan["prep"] == ("run", "no earlier run in this home has a result for it")
    bad = cli("run", "wf.yaml", "--plan")
    assert bad.returncode == 2 and "--plan goes with --reuse or --redrive" in bad.stderr


def test_a_detached_redrive_runs_in_the_background(cli: Cli) -> None:
    wf = cli.write("wf.yaml", failing(bad_exit=3))
    # run --redrive of a name not taken yet just starts it: one command for the first and the next
    assert cli("run", "wf.yaml", "--name", "r1", "--redrive", "-q").returncode == 1
    wf.write_text(failing(bad_exit=0))
    proc = cli("redrive", "r1", "--detach")
    assert proc.returncode == 0, proc.stderr
    assert "status r1 --watch" in proc.stdout
    wait_for(lambda: cli.status("r1")["state"] == "succeeded", what="the redrive", timeout=60)
    assert sorted(effects(cli, "r1")) == sorted(["prep", "side", "bad", "bad", "after"])
