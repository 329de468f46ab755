"""Whole runs on a real Dask cluster through the ``stormproof`` command, as a user runs them:
the example workflow, a worker killed, a worker retired, the orchestrator killed and resumed,
``interrupt``, ``cancel``, and ``local:`` with nothing else started."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

from stormproof.executors.dask.status import read_status
from tests.cli.conftest import Cli
from tests.executors.dask._cluster import SPOT, DaskCluster
from tests.executors.dask.helpers import pid_alive, wait_for

ROOT = Path(__file__).resolve().parents[3]
EXAMPLE = ROOT / "examples" / "molecular-dynamics.yaml"

#: Commits a checkpoint and exits on SIGTERM; a restored attempt reports what it found.
SIM = """\
import os, signal, sys, time
ckpt = os.environ["STORMPROOF_CHECKPOINT_DIR"]
if os.environ.get("STORMPROOF_RESTORED") == "1":
    with open(os.path.join(ckpt, "state")) as f:
        open("restored", "w").write(f.read())
    sys.exit(0)
def stop(signum, frame):
    os.makedirs(ckpt, exist_ok=True)
    with open(os.path.join(ckpt, "state"), "w") as f:
        f.write("step 42\\n")
    open(os.path.join(ckpt, ".commit"), "w").close()
    sys.exit(143)
signal.signal(signal.SIGTERM, stop)
open("pid", "w").write(str(os.getpid()))
time.sleep(120)
"""


def configure(cli: Cli, cluster: DaskCluster, notice: str = "10s") -> None:
    cli.write(
        "stormproof.yaml",
        f"""\
executor: dask
dask:
  scheduler: {cluster.address}
pools:
  - {{name: spot, market: spot, price: 0.03, notice: {notice}}}
  - {{name: ondemand, market: on_demand, price: 0.1}}
""",
    )


def attempts(cli: Cli, run: str, task: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = cli.status(run)["tasks"][task]["attempts"]
    return found


def running_on(cli: Cli, run: str, task: str) -> str | None:
    """The worker the task's last attempt runs on, once it runs (and the run exists)."""
    shown = cli("status", run, "--json")
    if shown.returncode != 0:
        return None
    tried = json.loads(shown.stdout)["tasks"][task]["attempts"]
    if tried and tried[-1]["state"] == "running" and tried[-1]["instance"]:
        return str(tried[-1]["instance"])
    return None


def wait_running(cli: Cli, run: str, task: str, timeout: float = 60) -> str:
    """The worker the task's last attempt runs on, once it runs."""
    seen: list[str] = []

    def check() -> bool:
        node = running_on(cli, run, task)
        if node is not None:
            seen.append(node)
        return bool(seen)

    wait_for(check, timeout, f"{task} to run")
    return seen[0]


def finish(proc: Any, timeout: float = 120) -> tuple[int, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out + err


def test_the_example_workflow_runs_on_dask(cli: Cli, dask_cluster: DaskCluster) -> None:
    configure(cli, dask_cluster)
    done = cli("run", str(EXAMPLE), "--name", "md", "--quiet", timeout=240)
    assert done.returncode == 0, done.stderr
    status = cli.status("md")
    assert status["state"] == "succeeded"
    for task in status["tasks"].values():
        (attempt,) = task["attempts"]
        assert attempt["instance"] in ("spot-1", "ondemand-1")
        assert attempt["pool"] == {"spot-1": "spot", "ondemand-1": "ondemand"}[attempt["instance"]]
    results = cli.cwd / ".stormproof" / "runs" / "md" / "data" / "results"
    assert any(results.iterdir()), "the analysis wrote its results on the shared filesystem"


def test_a_worker_killed_mid_attempt_is_node_lost_and_the_retry_runs_on_another(
    cli: Cli, dask_cluster: DaskCluster
) -> None:
    dask_cluster.start_worker("spot-2", SPOT)
    configure(cli, dask_cluster)
    cli.write("wf.yaml", """\
name: lost
tasks:
  - {id: long, command: [sh, -c, 'if [ "$STORMPROOF_ATTEMPT" = 1 ]; then sleep 60; fi'],
     vcpus: 2, memory: 512}
""")  # fmt: skip
    proc = cli.start("run", "wf.yaml", "--name", "r", "--quiet")
    first = wait_running(cli, "r", "long")
    assert first in ("spot-1", "spot-2")
    dask_cluster.kill_worker(first)
    code, output = finish(proc)
    assert code == 0, output
    lost, retry = attempts(cli, "r", "long")
    assert (lost["state"], lost["error"], lost["instance"]) == ("lost", "Node.Lost", first)
    assert lost["budget"] == "interruptions"
    assert retry["state"] == "succeeded"
    assert retry["instance"] == ({"spot-1", "spot-2"} - {first}).pop()


def test_a_retired_spot_worker_commits_a_checkpoint_the_retry_restores(
    cli: Cli, dask_cluster: DaskCluster
) -> None:
    dask_cluster.start_worker("spot-2", SPOT)
    configure(cli, dask_cluster)
    cli.write("sim.py", SIM)
    cli.write("wf.yaml", """\
name: preempted
tasks:
  - {id: sim, command: [python3, "${STORMPROOF_WORKFLOW_DIR}/sim.py"], vcpus: 2, memory: 512,
     checkpoint_enabled: true, max_interruptions: 3, retry_attempts: 0}
""")  # fmt: skip
    proc = cli.start("run", "wf.yaml", "--name", "r", "--quiet")
    tasks = cli.data_dir / "r" / "tasks" / "sim"
    wait_for(
        lambda: (tasks / "attempt-1" / "work" / "pid").exists(), 60, "the first attempt to start"
    )
    node = wait_running(cli, "r", "sim")
    dask_cluster.retire(node)  # a deployment's answer to a spot preemption notice
    code, output = finish(proc)
    assert code == 0, output
    first, second = attempts(cli, "r", "sim")
    assert (first["state"], first["error"], first["budget"]) == (
        "interrupted", "Capacity.Interrupted", "interruptions",
    )  # fmt: skip
    assert second["state"] == "succeeded" and second["restored_from"] is not None
    assert (tasks / "attempt-2" / "work" / "restored").read_text() == "step 42\n"
    assert cli.status("r")["tasks"]["sim"]["budgets_used"] == {"interruptions": 1, "retry": 0}
    assert node not in dask_cluster.names()


def test_interrupt_retires_the_worker_and_the_retry_falls_back_to_on_demand(
    cli: Cli, dask_cluster: DaskCluster
) -> None:
    configure(cli, dask_cluster, notice="60s")
    with open(cli.cwd / "stormproof.yaml", "a") as f:
        f.write("policy: {fallback_after_interruptions: 1}\n")
    cli.write("sim.py", SIM)
    cli.write("wf.yaml", """\
name: drill
tasks:
  - {id: sim, command: [python3, "${STORMPROOF_WORKFLOW_DIR}/sim.py"], vcpus: 2, memory: 512,
     checkpoint_enabled: true, retry_attempts: 0}
""")  # fmt: skip
    proc = cli.start("run", "wf.yaml", "--name", "r", "--quiet")
    tasks = cli.data_dir / "r" / "tasks" / "sim"
    wait_for(
        lambda: (tasks / "attempt-1" / "work" / "pid").exists(), 60, "the first attempt to start"
    )
    node = wait_running(cli, "r", "sim")
    asked = time.monotonic()
    drill = cli("interrupt", "r", "--instance", node, "--notice", "5s")
    assert drill.returncode == 0, drill.stderr
    wait_for(lambda: node not in dask_cluster.names(), 30, "the worker to be retired")
    code, output = finish(proc)
    assert code == 0, output
    first, second = attempts(cli, "r", "sim")
    assert (first["state"], first["error"]) == ("interrupted", "Capacity.Interrupted")
    assert (second["state"], second["pool"], second["instance"]) == (
        "succeeded", "ondemand", "ondemand-1",
    )  # fmt: skip
    assert first["ended"] - first["started"] < 60, "ended within the interrupt's notice"
    assert time.monotonic() - asked < 60
    assert (tasks / "attempt-2" / "work" / "restored").read_text() == "step 42\n"


def test_kill_9_of_the_orchestrator_then_resume_adopts_and_no_side_effect_happens_twice(
    cli: Cli, dask_cluster: DaskCluster
) -> None:
    configure(cli, dask_cluster)
    side = cli.cwd / "side-effects"
    cli.write("wf.yaml", f"""\
name: crash
tasks:
  - {{id: a, command: [sh, -c, "echo a >> {side}; sleep 5"], memory: 256}}
  - {{id: b, command: [sh, -c, "echo b >> {side}; sleep 1"], memory: 256}}
  - {{id: c, command: [sh, -c, "echo c >> {side}"], depends_on: [a, b], memory: 256}}
""")  # fmt: skip
    proc = cli.start("run", "wf.yaml", "--name", "r", "--quiet")
    b_status = cli.data_dir / "r" / "tasks" / "b" / "attempt-1"
    wait_for(lambda: side.exists() and len(side.read_text().split()) == 2, 60, "a and b")
    os.kill(proc.pid, signal.SIGKILL)  # the orchestrator dies; its attempts run on
    proc.communicate()
    wait_for(lambda: read_status(str(b_status)) is not None, 30, "b to end unwatched")
    resumed = cli("resume", "r", "--quiet", timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    assert sorted(side.read_text().split()) == ["a", "b", "c"]
    for task in ("a", "b", "c"):
        (attempt,) = attempts(cli, "r", task)
        assert attempt["state"] == "succeeded"


def test_cancel_stops_every_attempt_of_the_run(cli: Cli, dask_cluster: DaskCluster) -> None:
    configure(cli, dask_cluster)
    cli.write("wf.yaml", """\
name: cancelled
tasks:
  - {id: a, command: [sh, -c, "echo $$ > pid; exec sleep 120"], memory: 256}
  - {id: b, command: [sh, -c, "echo $$ > pid; exec sleep 120"], memory: 256}
""")  # fmt: skip
    proc = cli.start("run", "wf.yaml", "--name", "r", "--quiet")
    pids = [cli.data_dir / "r" / "tasks" / t / "attempt-1" / "work" / "pid" for t in ("a", "b")]
    wait_for(lambda: all(p.exists() and p.read_text().strip() for p in pids), 60, "a and b")
    cancelled = cli("cancel", "r", timeout=120)
    assert cancelled.returncode == 1, cancelled.stdout + cancelled.stderr
    assert "cancelled" in cancelled.stdout
    finish(proc)
    for pid_file in pids:
        pid = int(pid_file.read_text())
        wait_for(lambda pid=pid: not pid_alive(pid), 20, "the command to be killed")
    held = [k for keys in dask_cluster.client.processing().values() for k in keys]
    assert not [k for k in held if str(k).startswith("r-")], held


def test_a_local_cluster_runs_a_workflow_with_nothing_else_started(cli: Cli) -> None:
    from tests.executors.dask.conftest import require_dask

    require_dask()
    cli.write("stormproof.yaml", "executor: dask\ndask:\n  local: {workers: 2}\n")
    cli.write("wf.yaml", """\
name: laptop
tasks:
  - {id: a, command: [sh, -c, "echo one > $STORMPROOF_DATA_DIR/a"], memory: 256}
  - {id: b, command: [sh, -c, "cat $STORMPROOF_DATA_DIR/a > out"], depends_on: [a], memory: 256}
""")  # fmt: skip
    done = cli("run", "wf.yaml", "--name", "r", "--quiet", timeout=180)
    assert done.returncode == 0, done.stderr
    status = cli.status("r")
    assert status["state"] == "succeeded"
    (attempt,) = status["tasks"]["b"]["attempts"]
    assert attempt["instance"] in ("0", "1")  # LocalCluster's workers
    assert (
        cli.data_dir / "r" / "tasks" / "b" / "attempt-1" / "work" / "out"
    ).read_text() == "one\n"
