"""Whole runs on the real test cluster, through the ``stormproof`` command as a user runs it.

Every fault is caused for real: ``scancel`` from outside, a job exiting 3, a job submitted to
the high-priority partition that preempts a spot job, a node set DOWN, ``kill -9`` of the
orchestrator, ``stormproof cancel``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from collections import Counter

import pytest

from tests.executors.slurm._cluster import Cluster

from .helpers import CONFIG, ROOT, Cli, wait_until

pytestmark = pytest.mark.slow
EXAMPLES = ROOT / "examples"


def workflow(name: str, tasks: str, global_config: str = "retry_interval: 1s") -> str:
    return f"name: {name}\nglobal_config: {{{global_config}}}\ntasks:\n{tasks}"


def attempts(cli: Cli, run: str, task: str) -> list[dict[str, object]]:
    tries: list[dict[str, object]] = cli.status(run)["tasks"][task]["attempts"]
    return tries


def test_the_example_runs_on_slurm_with_the_same_results_as_locally(cli: Cli) -> None:
    shutil.copytree(EXAMPLES, cli.cwd / "examples")
    wf = str(cli.cwd / "examples" / "molecular-dynamics.yaml")
    cli.write("local.yaml", "# the defaults: the local executor\n")
    local = cli.start("run", wf, "--name", "md-local", "--config", "local.yaml", "-q")
    on_slurm = cli("run", wf, "--name", "md-slurm", "-q")
    assert on_slurm.returncode == 0, on_slurm.stderr
    assert local.wait(timeout=180) == 0, local.communicate()[1]
    runs = cli.cwd / ".stormproof" / "runs"
    for name in ("results.json", "report.txt"):
        slurm_bytes = (runs / "md-slurm" / "data" / "results" / name).read_bytes()
        assert slurm_bytes == (runs / "md-local" / "data" / "results" / name).read_bytes()
    status = cli.status("md-slurm")
    assert status["state"] == "succeeded"
    for task in status["tasks"].values():
        assert [a["state"] for a in task["attempts"]] == ["succeeded"]
    jobs = {
        j["name"]: j for j in cli.cluster.jobs() if j["comment"].startswith("stormproof:md-slurm:")
    }
    assert sorted(jobs) == [
        "analysis/1",
        "data-preprocessing/1",
        "equilibration/1",
        "production-run/1",
    ]
    assert {j["state"] for j in jobs.values()} == {"COMPLETED"}


def test_a_job_cancelled_from_outside_is_retried(cli: Cli) -> None:
    tasks = (
        "  - id: victim\n"
        "    command: 'if [ \"$STORMPROOF_ATTEMPT\" = 1 ]; then sleep 120; fi'\n"
        "    retry_attempts: 0\n"
    )
    cli.write("wf.yaml", workflow("scancel", tasks))
    proc = cli.start("run", "wf.yaml", "--name", "sc", "-q")
    job = wait_until(lambda: cli.job_of("sc", "victim/1"), what="victim/1 to start")
    cli.cluster.run("scancel", job["handle"])
    assert proc.wait(timeout=120) == 0, proc.communicate()[1]
    first, second = attempts(cli, "sc", "victim")
    assert first["error"] == "Node.Lost" and first["budget"] == "interruptions"
    assert "cancelled outside stormproof" in str(first["reason"])
    assert second["state"] == "succeeded"


def test_a_job_exiting_3_is_task_failed_with_code_3(cli: Cli) -> None:
    cli.write(
        "wf.yaml", workflow("three", "  - {id: three, command: 'exit 3', retry_attempts: 0}\n")
    )
    proc = cli("run", "wf.yaml", "--name", "three", "-q")
    assert proc.returncode == 1
    (only,) = attempts(cli, "three", "three")
    assert (only["state"], only["error"], only["exit_code"]) == ("failed", "Task.Failed", 3)


def test_a_preempted_spot_task_checkpoints_in_the_grace_and_resumes(cli: Cli) -> None:
    """The spot market on Slurm: a job submitted to the high-priority partition takes the
    node; the spot task gets SIGTERM at the start of the grace, commits its checkpoint, the
    retry restores it, and the interruption is not charged to the retry budget."""
    shutil.copytree(EXAMPLES / "checkpointing", cli.cwd / "checkpointing")
    tasks = (
        "  - id: count\n"
        '    command: [bash, "${STORMPROOF_WORKFLOW_DIR}/checkpointing/counter.sh"]\n'
        "    environment: {COUNT_TO: 60, CHECKPOINT_EVERY: 1000, STEP_SECONDS: 0.25}\n"
        "    vcpus: 4\n"
        "    checkpoint_enabled: true\n"
        "    retry_attempts: 0\n"
    )
    cli.write("wf.yaml", workflow("preempt", tasks, "retry_interval: 1s, checkpoint_interval: 0"))
    proc = cli.start("run", "wf.yaml", "--name", "pre", "-q")
    job = wait_until(lambda: cli.job_of("pre", "count/1"), what="count/1 to start")
    wait_until(lambda: "step 8" in cli.logs("pre", "count", 1), what="a few steps")
    node = job["nodes"][0]
    cli.cluster.run(
        "sbatch",
        "--quiet",
        "--partition=ondemand",
        "--cpus-per-task=4",
        f"--nodelist={node}",
        "--output=/dev/null",
        "--wrap=sleep 3",
    )
    assert proc.wait(timeout=180) == 0, proc.communicate()[1]
    status = cli.status("pre")
    first, second = status["tasks"]["count"]["attempts"]
    assert (first["state"], first["error"], first["budget"]) == (
        "interrupted",
        "Capacity.Interrupted",
        "interruptions",
    )
    assert "preempted in partition spot" in str(first["reason"])
    assert status["tasks"]["count"]["budgets_used"] == {"retry": 0, "interruptions": 1}
    committed = [
        r
        for r in cli.history("pre")
        if r["kind"] == "CheckpointCommitted" and r["data"]["attempt_id"] == "count/1"
    ]
    assert len(committed) == 1  # CHECKPOINT_EVERY is out of reach: the SIGTERM's checkpoint
    resumed = re.search(r"resumed from step (\d+)", cli.logs("pre", "count", 2))
    assert resumed is not None and int(resumed.group(1)) >= 8
    assert second["state"] == "succeeded"


def test_interrupt_names_a_node_and_its_attempts_checkpoint_and_resume(cli: Cli) -> None:
    """``stormproof interrupt RUN --instance NODE``: the node an attempt landed on (learned
    when it started, shown by ``fleet``) gets the notice; the attempt there is signalled
    through Slurm, commits its checkpoint, is cancelled after the notice if still there, and
    the retry restores the checkpoint."""
    shutil.copytree(EXAMPLES / "checkpointing", cli.cwd / "checkpointing")
    tasks = (
        "  - id: count\n"
        '    command: [bash, "${STORMPROOF_WORKFLOW_DIR}/checkpointing/counter.sh"]\n'
        "    environment: {COUNT_TO: 60, CHECKPOINT_EVERY: 1000, STEP_SECONDS: 0.25}\n"
        "    checkpoint_enabled: true\n"
        "    retry_attempts: 0\n"
    )
    cli.write("wf.yaml", workflow("drill", tasks, "retry_interval: 1s, checkpoint_interval: 0"))
    proc = cli.start("run", "wf.yaml", "--name", "drill", "-q")
    job = wait_until(lambda: cli.job_of("drill", "count/1"), what="count/1 to start")
    wait_until(lambda: "step 8" in cli.logs("drill", "count", 1), what="a few steps")
    node = job["nodes"][0]
    fleet = json.loads(cli("fleet", "drill", "--json").stdout)
    assert any(i["id"] == node and "count/1" in i["attempts"] for i in fleet)
    said = cli("interrupt", "drill", "--instance", node, "--notice", "20s")
    assert said.returncode == 0, said.stderr
    assert proc.wait(timeout=180) == 0, proc.communicate()[1]
    status = cli.status("drill")
    first, second = status["tasks"]["count"]["attempts"]
    assert (first["state"], first["error"], first["instance"]) == (
        "interrupted",
        "Capacity.Interrupted",
        node,
    )
    assert status["tasks"]["count"]["budgets_used"] == {"retry": 0, "interruptions": 1}
    resumed = re.search(r"resumed from step (\d+)", cli.logs("drill", "count", 2))
    assert resumed is not None and int(resumed.group(1)) >= 8
    assert second["state"] == "succeeded"


def test_a_node_set_down_mid_job_is_node_lost_and_retried(cli: Cli) -> None:
    tasks = (
        "  - id: long\n"
        "    command: 'if [ \"$STORMPROOF_ATTEMPT\" = 1 ]; then sleep 120; fi'\n"
        "    retry_attempts: 0\n"
    )
    cli.write("wf.yaml", workflow("down", tasks))
    proc = cli.start("run", "wf.yaml", "--name", "down", "-q")
    job = wait_until(lambda: cli.job_of("down", "long/1"), what="long/1 to start")
    cli.cluster.set_node(job["nodes"][0], "down", reason="test: node lost")
    assert proc.wait(timeout=120) == 0, proc.communicate()[1]
    first, second = attempts(cli, "down", "long")
    assert (first["error"], first["budget"]) == ("Node.Lost", "interruptions")
    assert "NODE_FAIL" in str(first["reason"])
    assert second["state"] == "succeeded"


def test_resume_after_kill_9_adopts_every_job_and_submits_none_twice(cli: Cli) -> None:
    tasks = "".join(
        f"  - {{id: t{i:02d}, command: 'sleep 6', vcpus: 1, memory: 100}}\n" for i in range(12)
    )
    cli.write("wf.yaml", workflow("kill9", tasks))
    proc = cli.start("run", "wf.yaml", "--name", "k9", "-q")

    def ours() -> list[dict[str, str]]:
        return [j for j in cli.cluster.live_jobs() if j["comment"].startswith("stormproof:k9:")]

    wait_until(lambda: len(ours()) >= 10, what="10 jobs pending or running")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert len(ours()) >= 10  # they outlive the orchestrator
    rows = len(cli.history("k9"))
    dead = cli.cwd / "dead.conf"
    dead.write_text(re.sub(r"SlurmctldPort=\d+", "SlurmctldPort=9", cli.cluster.conf.read_text()))
    cli.cluster_conf = dead  # a resume that cannot reach slurmctld: one line, the log as it was
    refused = cli("resume", "k9", "-q")
    cli.cluster_conf = None
    assert refused.returncode == 2 and "slurmctld does not answer" in refused.stderr
    assert "Traceback" not in refused.stderr and len(cli.history("k9")) == rows
    resumed = cli("resume", "k9", "-q")
    assert resumed.returncode == 0, resumed.stderr
    status = cli.status("k9")
    assert status["state"] == "succeeded"
    assert {len(t["attempts"]) for t in status["tasks"].values()} == {1}
    names = [r.get("Name", "") for r in cli.cluster.completions()]
    ended = [n for n in names if re.fullmatch(r"t\d\d/\d+", n)]
    assert Counter(ended) == Counter(f"t{i:02d}/1" for i in range(12))  # each exactly once


def test_cancel_leaves_nothing_in_the_queue(cli: Cli) -> None:
    tasks = "".join(f"  - {{id: c{i}, command: 'sleep 120', vcpus: 2}}\n" for i in range(6))
    cli.write("wf.yaml", workflow("cancel", tasks))
    proc = cli("run", "wf.yaml", "--name", "cx", "--detach")
    assert proc.returncode == 0, proc.stderr
    wait_until(lambda: len(cli.cluster.live_jobs()) == 6, what="6 jobs queued")
    done = cli("cancel", "cx")
    assert done.returncode == 1 and "cancelled" in done.stdout, done.stderr
    wait_until(lambda: not cli.cluster.live_jobs(), timeout_s=30, what="an empty queue")
    assert cli.status("cx")["state"] == "cancelled"


BAD = {
    "no_sbatch": "executor: slurm: sbatch, squeue, scancel, scontrol, sinfo are not on PATH",
    "unreachable": "slurmctld does not answer (`scontrol ping`: Slurmctld(primary) at",
    "partition": (
        "stormproof.yaml:3: pools[1].partition: Slurm has no partition 'ondemnd' "
        "(did you mean 'ondemand'?)"
    ),
    "account": "stormproof.yaml:4: slurm.account: Slurm refuses account 'nobody' in partition",
    "too_big": "task huge needs 16 CPUs / 1024 MiB on one node, which no partition it may use",
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_configuration_exits_2_with_one_line_before_anything_is_submitted(
    cli: Cli, slurm: Cluster, case: str
) -> None:
    vcpus = 16 if case == "too_big" else 1
    cli.write("wf.yaml", workflow("bad", f"  - {{id: huge, command: 'true', vcpus: {vcpus}}}\n"))
    config = CONFIG
    env = cli.env()
    if case == "no_sbatch":
        env["PATH"] = str(cli.cwd / "empty")
    elif case == "unreachable":
        dead = cli.cwd / "dead.conf"
        dead.write_text(re.sub(r"SlurmctldPort=\d+", "SlurmctldPort=9", slurm.conf.read_text()))
        config = config.replace("max_poll_interval: 2}", f"slurm_conf: {dead}}}")
    elif case == "partition":
        config = config.replace("partition: ondemand", "partition: ondemnd")
    elif case == "account":
        config = config.replace("max_poll_interval: 2}", "max_poll_interval: 2, account: nobody}")
    cli.write("stormproof.yaml", config)
    before = slurm.jobs()
    proc = subprocess.run(
        [sys.executable, "-m", "stormproof", "run", "wf.yaml", "--name", "bad", "-q"],
        cwd=cli.cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error: ") and "Traceback" not in proc.stderr
    assert BAD[case] in " ".join(proc.stderr.split())
    assert slurm.jobs() == before  # nothing submitted
    assert "no run named" in cli("status", "bad").stderr.lower()  # and no run was made
