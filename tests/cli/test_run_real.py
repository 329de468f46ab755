"""Real runs through the real CLI: real processes, real signals, the embedded defaults."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from .conftest import Cli, read_line, wait_for

pytestmark = pytest.mark.slow


def attempts(status: dict, task: str) -> list[dict]:  # type: ignore[type-arg]
    return status["tasks"][task]["attempts"]  # type: ignore[no-any-return]


def test_retries_back_off_then_succeed(cli: Cli) -> None:
    cli.write(
        "wf.yaml",
        """
name: flaky
tasks:
  - id: flaky
    command: 'n=$(cat "$STORMPROOF_DATA_DIR/n" 2>/dev/null || echo 0); n=$((n+1));
              echo $n > "$STORMPROOF_DATA_DIR/n"; echo "try $n"; [ "$n" -ge 3 ]'
    retry:
      - {error_equals: [Task.Failed], interval_seconds: 0.5, max_attempts: 3, backoff_rate: 2}
""",
    )
    proc = cli("run", "wf.yaml", "--name", "r1")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    st = cli.status("r1")
    assert st["state"] == "succeeded"
    tries = attempts(st, "flaky")
    assert [(a["state"], a["exit_code"]) for a in tries] == [
        ("failed", 1),
        ("failed", 1),
        ("succeeded", 0),
    ]
    assert {a["error"] for a in tries[:2]} == {"Task.Failed"}
    # backoff observed for real: 0.5 s then 1.0 s between an end and the next start
    assert tries[1]["started"] - tries[0]["ended"] >= 0.5
    assert tries[2]["started"] - tries[1]["ended"] >= 1.0
    history = json.loads(cli("history", "r1", "--json").stdout)
    delays = [r["data"]["delay_s"] for r in history if r["kind"] == "TaskRetrying"]
    assert delays == [0.5, 1.0]
    logs = cli("logs", "r1", "flaky", "--attempt", "2", "--stream", "stdout")
    assert logs.stdout.strip() == "try 2"


def test_timeout_terms_then_kills_after_grace(cli: Cli) -> None:
    cli.write(
        "wf.yaml",
        """
name: slow
global_config: {max_retry_attempts: 0, kill_grace: 1s, on_failure: continue}
tasks:
  - {id: polite, command: [sleep, "30"], timeout: 1s}
  - {id: stubborn, command: 'trap "" TERM; sleep 30', timeout: 1s}
""",
    )
    started = time.monotonic()
    proc = cli("run", "wf.yaml", "--name", "t1")
    assert proc.returncode == 1
    assert time.monotonic() - started < 15
    st = cli.status("t1")
    for task in ("polite", "stubborn"):
        (att,) = attempts(st, task)
        assert (att["state"], att["error"]) == ("timed_out", "Task.Timeout")
        assert st["tasks"][task]["state"] == "failed"
    assert attempts(st, "polite")[0]["exit_code"] == 128 + signal.SIGTERM
    assert attempts(st, "stubborn")[0]["exit_code"] == 128 + signal.SIGKILL


FAILING = """
name: mixed
global_config: {{max_retry_attempts: 0, on_failure: {mode}, kill_grace: 1s}}
tasks:
  - {{id: bad, command: 'sleep 0.5; exit 3'}}
  - {{id: after-bad, command: ['true'], depends_on: [bad]}}
  - {{id: slow, command: 'sleep 3; echo done > "$STORMPROOF_DATA_DIR/slow"'}}
  - {{id: after-slow, command: ['true'], depends_on: [slow]}}
"""


def test_on_failure_continue_keeps_running_independent_tasks(cli: Cli) -> None:
    cli.write("wf.yaml", FAILING.format(mode="continue"))
    proc = cli("run", "wf.yaml", "--name", "c1")
    assert proc.returncode == 1, proc.stderr
    st = cli.status("c1")
    states = {t: v["state"] for t, v in st["tasks"].items()}
    assert states == {
        "bad": "failed",
        "after-bad": "skipped",
        "slow": "succeeded",
        "after-slow": "succeeded",
    }
    assert attempts(st, "bad")[0]["exit_code"] == 3


def test_on_failure_fail_stops_the_workflow_and_kills_running_work(cli: Cli) -> None:
    cli.write("wf.yaml", FAILING.format(mode="fail"))
    started = time.monotonic()
    proc = cli("run", "wf.yaml", "--name", "f1")
    assert proc.returncode == 1
    assert time.monotonic() - started < 3 + 2  # slow was killed, not waited for
    st = cli.status("f1")
    states = {t: v["state"] for t, v in st["tasks"].items()}
    assert states == {
        "bad": "failed",
        "after-bad": "skipped",
        "slow": "cancelled",
        "after-slow": "skipped",
    }
    assert not (cli.data_dir / "f1" / "data" / "slow").exists()


SIDE_EFFECTS = """
name: effects
tasks:
{tasks}
"""


def effects_workflow(n_layers: int, width: int, sleep: float) -> str:
    lines = []
    for layer in range(n_layers):
        for k in range(width):
            tid = f"l{layer}-{k}"
            deps = [f"l{layer - 1}-{j}" for j in range(width)] if layer else []
            cmd = f'sleep {sleep}; echo {tid} >> "$STORMPROOF_DATA_DIR/effects"'
            lines.append(f"  - {{id: {tid}, command: '{cmd}', depends_on: {json.dumps(deps)}}}")
    return SIDE_EFFECTS.format(tasks="\n".join(lines))


def effects(cli: Cli, run: str) -> list[str]:
    path = cli.data_dir / run / "data" / "effects"
    return path.read_text().split() if path.exists() else []


def test_ctrl_c_stops_launching_and_resume_finishes_without_redoing_work(cli: Cli) -> None:
    cli.write("wf.yaml", effects_workflow(3, 2, 1.0))
    proc = cli.start("run", "wf.yaml", "--name", "i1")
    wait_for(lambda: len(effects(cli, "i1")) >= 2, what="the first layer")
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=20) == 130
    assert "resume" in proc.stderr.read()
    assert cli.status("i1")["state"] == "stopped"
    proc = cli("resume", "i1")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    done = effects(cli, "i1")
    assert sorted(done) == sorted(f"l{a}-{b}" for a in range(3) for b in range(2))
    st = cli.status("i1")
    assert all(len(t["attempts"]) == 1 for t in st["tasks"].values())
    kinds = [r["kind"] for r in json.loads(cli("history", "i1", "--json").stdout)]
    assert "StopRequested" in kinds and "RunResumed" in kinds


def test_kill_9_of_the_orchestrator_then_resume_runs_each_task_once(cli: Cli) -> None:
    cli.write("wf.yaml", effects_workflow(4, 2, 1.0))
    proc = cli.start("run", "wf.yaml", "--name", "k1")
    wait_for(lambda: len(effects(cli, "k1")) >= 3, what="a few tasks")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    assert cli.status("k1")["state"] == "stopped"
    proc = cli("resume", "k1", timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    done = effects(cli, "k1")
    assert sorted(done) == sorted(f"l{a}-{b}" for a in range(4) for b in range(2))
    st = cli.status("k1")
    assert st["state"] == "succeeded"
    assert all(len(t["attempts"]) == 1 for t in st["tasks"].values())


def test_a_second_driver_of_the_same_run_waits_saying_who_holds_it(cli: Cli) -> None:
    cli.write("wf.yaml", "name: long\ntasks:\n  - {id: nap, command: [sleep, '20']}\n")
    proc = cli.start("run", "wf.yaml", "--name", "l1")
    wait_for(lambda: (cli.data_dir / "l1" / "tasks" / "nap").exists(), what="launch")
    second = cli.start("resume", "l1")
    said = read_line(second.stderr, timeout_s=20)
    assert said == (
        f"run l1 is being driven by pid {proc.pid} (until it exits); "
        "waiting to take it over (Ctrl-C to leave)…"
    )
    assert second.poll() is None
    cancel = cli("cancel", "l1")
    assert cancel.returncode == 1, cancel.stdout + cancel.stderr
    assert proc.wait(timeout=30) == 1
    assert cli.status("l1")["state"] == "cancelled"
    # the first let go: the second takes the run over, finds it ended, and says so
    assert second.wait(timeout=30) == 1
    out, rest = second.communicate()
    assert "run l1 cancelled" in out
    assert "Traceback" not in rest


def test_detach_then_watch_status_until_done(cli: Cli) -> None:
    cli.write("wf.yaml", effects_workflow(2, 1, 0.3))
    proc = cli("run", "wf.yaml", "--name", "d1", "--detach")
    assert proc.returncode == 0, proc.stderr
    assert "d1" in proc.stdout
    watch = cli("status", "d1", "--watch", timeout=60)
    assert watch.returncode == 0
    wait_for(lambda: cli.status("d1")["state"] == "succeeded", what="the detached run")
    listing = cli("status", "--json")
    assert [r["name"] for r in json.loads(listing.stdout)] == ["d1"]


def test_status_json_has_the_documented_shape(cli: Cli) -> None:
    cli.write("wf.yaml", "name: one\ntasks:\n  - {id: hello, command: [echo, hi]}\n")
    assert cli("run", "wf.yaml", "--name", "s1").returncode == 0
    st = cli.status("s1")
    assert st["name"] == "s1" and st["state"] == "succeeded"
    (att,) = st["tasks"]["hello"]["attempts"]
    assert set(att) >= {
        "number",
        "state",
        "exit_code",
        "started",
        "ended",
        "error",
        "pool",
        "instance",
    }
    assert att["number"] == 1 and att["pool"] == "local" and att["instance"] == "local-0"
    assert att["started"] <= att["ended"]


def test_run_name_taken_is_a_clear_error(cli: Cli, tmp_path: Path) -> None:
    cli.write("wf.yaml", "name: one\ntasks:\n  - {id: hello, command: [echo, hi]}\n")
    assert cli("run", "wf.yaml", "--name", "dup").returncode == 0
    again = cli("run", "wf.yaml", "--name", "dup")
    assert again.returncode == 2
    # a finished run has nothing to resume: say what can be done with it instead
    assert "run 'dup' exists and succeeded; pick another --name" in again.stderr
    assert "Traceback" not in again.stderr
