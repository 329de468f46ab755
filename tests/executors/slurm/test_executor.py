"""The Slurm executor against a real cluster: submitting, states, kills, signals, recovery."""

from __future__ import annotations

import re
import signal
import time
from pathlib import Path

import pytest

from stormproof.core.events import AttemptExited, AttemptLost, AttemptPreempted
from stormproof.executors.slurm import SlurmExecutor, script
from tests.executors.slurm._cluster import Cluster

from .helpers import began, collect, ended, executor, finals, make_job, started, wait_file

pytestmark = pytest.mark.slow

TRAP_TERM = (
    "trap 'echo term >> got; sleep 1; exit 143' TERM; echo ready > ready; "
    "while :; do sleep 0.1; done"
)


def job_fields(cluster: Cluster, job_id: str) -> dict[str, str]:
    out = cluster.run("scontrol", "show", "job", job_id, "--oneliner")
    return dict(re.findall(r"(\w[\w:/]*)=(\S*)", out))


def test_exit_codes_environment_and_where_it_ran(slurm: Cluster, run_dir: Path) -> None:
    ex = executor(run_dir)
    ok = make_job(
        run_dir,
        "ok",
        ["sh", "-c", 'echo "$GREETING" from $SLURMD_NODENAME'],
        {"GREETING": "it's me"},
    )
    three = make_job(run_dir, "three", "exit 3")
    for job in (ok, three):
        ex.submit(job)
        ex.submit(job)  # twice: a no-op
    events = collect(ex, ended("ok/1", "three/1"))
    done = finals(events)
    assert isinstance(done["ok/1"], AttemptExited) and done["ok/1"].exit_code == 0
    assert isinstance(done["three/1"], AttemptExited) and done["three/1"].exit_code == 3
    runs = started(events)
    assert runs["ok/1"].nodes[0] in ("n1", "n2") and runs["ok/1"].handle.isdigit()
    node = runs["ok/1"].nodes[0]
    assert (ok.attempt_dir / "stdout.log").read_text() == f"it's me from {node}\n"
    mine = [j for j in slurm.jobs() if j["name"] in ("ok/1", "three/1")]
    assert sorted(j["name"] for j in mine) == ["ok/1", "three/1"]  # one job each
    assert {j["comment"] for j in mine} == {ex.comment}
    ex.close(final=True)


def test_resources_and_limits_reach_sbatch(slurm: Cluster, run_dir: Path) -> None:
    ex = executor(run_dir, account="physics")
    job = make_job(
        run_dir, "big", "sleep 60", vcpus=1.5, memory_mib=300, gpus=1, timeout_s=100, pool="spot"
    )
    ex.submit(job)
    events = collect(ex, began("big/1"))
    fields = job_fields(slurm, started(events)["big/1"].handle)
    assert fields["JobName"] == "big/1" and fields["Partition"] == "spot"
    assert fields["NumCPUs"] == "2" and fields["MinMemoryNode"] == "300M"
    assert fields["TresPerNode"] == "gres:gpu:1" and fields["Account"] == "physics"
    assert fields["TimeLimit"] == "00:03:00"  # 100 s + the 60 s margin, in minutes
    assert fields["Requeue"] == "0"  # Slurm never re-runs an attempt on its own
    assert fields["StdOut"] == str(job.attempt_dir / "stdout.log")
    ex.kill("big/1", 0)
    collect(ex, ended("big/1"))
    ex.close(final=True)


def test_a_task_on_two_nodes_runs_once_on_each(slurm: Cluster, run_dir: Path) -> None:
    ex = executor(run_dir)
    job = make_job(run_dir, "mpi", 'echo "rank $SLURM_NODEID of $SLURM_NNODES"', nodes=2)
    ex.submit(job)
    events = collect(ex, ended("mpi/1"))
    assert started(events)["mpi/1"].nodes == ("n1", "n2")
    assert finals(events)["mpi/1"] == AttemptExited(
        at=finals(events)["mpi/1"].at, attempt_id="mpi/1", exit_code=0
    )
    lines = sorted((job.attempt_dir / "stdout.log").read_text().splitlines())
    assert lines == ["rank 0 of 2", "rank 1 of 2"]
    ex.close(final=True)


def test_a_job_cancelled_from_outside_is_lost_naming_it(slurm: Cluster, run_dir: Path) -> None:
    ex = executor(run_dir)
    ex.submit(make_job(run_dir, "victim", "sleep 60"))
    job_id = started(collect(ex, began("victim/1")))["victim/1"].handle
    slurm.run("scancel", job_id)
    lost = finals(collect(ex, ended("victim/1")))["victim/1"]
    assert isinstance(lost, AttemptLost)
    assert f"Slurm job {job_id}" in lost.reason and "cancelled outside stormproof" in lost.reason
    ex.close(final=True)


@pytest.mark.parametrize("pool", ["spot", "ondemand"])  # as a step, and in the batch script
def test_kill_gives_the_command_its_grace_then_cancels(
    slurm: Cluster, run_dir: Path, pool: str
) -> None:
    ex = executor(run_dir)
    polite = make_job(run_dir, "polite", TRAP_TERM, pool=pool)
    stubborn = make_job(
        run_dir, "stubborn", "trap '' TERM; echo ready > ready; sleep 60", pool=pool
    )
    for job in (polite, stubborn):
        ex.submit(job)
    collect(ex, began("polite/1", "stubborn/1"))
    for job in (polite, stubborn):
        wait_file(job.work_dir / "ready")
    t0 = time.monotonic()
    ex.kill("polite/1", 20.0)
    ex.kill("stubborn/1", 2.0)
    done = finals(collect(ex, ended("polite/1", "stubborn/1")))
    assert done["polite/1"] == AttemptExited(
        at=done["polite/1"].at, attempt_id="polite/1", exit_code=143
    )
    assert (polite.work_dir / "got").read_text() == "term\n"
    assert isinstance(done["stubborn/1"], AttemptExited) and done["stubborn/1"].exit_code == 137
    assert time.monotonic() - t0 < 20  # the polite one did not wait for its whole grace
    ex.close(final=True)


@pytest.mark.parametrize("pool", ["spot", "ondemand"])
def test_signal_reaches_the_running_command(slurm: Cluster, run_dir: Path, pool: str) -> None:
    ex = executor(run_dir)
    job = make_job(
        run_dir,
        "ckpt",
        "trap 'echo usr1 >> got' USR1; echo ready > ready; "
        "while [ ! -s got ]; do sleep 0.1; done; exit 0",
        pool=pool,
    )
    ex.submit(job)
    collect(ex, began("ckpt/1"))
    wait_file(job.work_dir / "ready")
    ex.signal("ckpt/1", signal.SIGUSR1)
    done = finals(collect(ex, ended("ckpt/1")))
    assert isinstance(done["ckpt/1"], AttemptExited) and done["ckpt/1"].exit_code == 0
    assert (job.work_dir / "got").read_text() == "usr1\n"
    ex.close(final=True)


def test_a_node_set_down_loses_the_attempt_on_it(slurm: Cluster, run_dir: Path) -> None:
    ex = executor(run_dir)
    ex.submit(make_job(run_dir, "doomed", "sleep 60"))
    run = started(collect(ex, began("doomed/1")))["doomed/1"]
    slurm.set_node(run.nodes[0], "down", reason="test: node failure")
    lost = finals(collect(ex, ended("doomed/1")))["doomed/1"]
    assert isinstance(lost, AttemptLost)
    assert "NODE_FAIL" in lost.reason and run.nodes[0] in lost.reason
    ex.close(final=True)


def test_a_spot_job_preempted_gets_sigterm_at_once_and_ends_preempted(
    slurm: Cluster, run_dir: Path
) -> None:
    ex = executor(run_dir)
    job = make_job(run_dir, "cheap", TRAP_TERM, vcpus=4, pool="spot")
    ex.submit(job)
    node = started(collect(ex, began("cheap/1")))["cheap/1"].nodes[0]
    wait_file(job.work_dir / "ready")
    t0 = time.monotonic()
    slurm.run(
        "sbatch",
        "--quiet",
        "-p",
        "ondemand",
        "-c",
        "4",
        f"--nodelist={node}",
        "--output=/dev/null",
        "--wrap",
        "sleep 1",
    )
    wait_file(job.work_dir / "got")
    assert time.monotonic() - t0 < 8  # at the start of the 10 s grace, not its end
    event = finals(collect(ex, ended("cheap/1")))["cheap/1"]
    assert isinstance(event, AttemptPreempted) and "preempted in partition spot" in event.reason
    ex.close(final=True)


def test_recover_adopts_what_runs_and_submits_nothing_again(slurm: Cluster, run_dir: Path) -> None:
    first = executor(run_dir)
    jobs = [make_job(run_dir, f"long{i}", "sleep 60") for i in range(3)]
    jobs.append(make_job(run_dir, "quick", "exit 4"))
    jobs.append(make_job(run_dir, "hog", "sleep 60", vcpus=4, pool="spot"))
    for job in jobs[:3] + jobs[3:4]:
        first.submit(job)
    collect(
        first,
        lambda evs: (
            {"long0/1", "long1/1", "long2/1"} <= started(evs).keys() and "quick/1" in finals(evs)
        ),
    )
    # the orchestrator dies here (nothing closed); a new one takes over
    never = make_job(run_dir, "never", "true")
    second = executor(run_dir)
    events = second.recover([*jobs, never])
    # adopted (started, no end), and one that ended meanwhile (where it ran, and how it ended)
    assert set(started(events)) == {"long0/1", "long1/1", "long2/1", "quick/1"}
    assert set(finals(events)) == {"quick/1"}
    assert finals(events)["quick/1"] == AttemptExited(
        at=finals(events)["quick/1"].at, attempt_id="quick/1", exit_code=4
    )
    assert not {"never/1", "hog/1"} & {getattr(e, "attempt_id", "") for e in events}  # unknown
    for job in jobs[:3]:
        second.submit(job)  # what the runtime does for adopted attempts: a no-op
    for job in jobs[:3]:
        second.kill(job.attempt_id, 0)
    collect(second, ended("long0/1", "long1/1", "long2/1"))
    names = [j["name"] for j in slurm.jobs()]
    assert sorted(n for n in names if n.startswith("long")) == ["long0/1", "long1/1", "long2/1"]
    second.close(final=True)


def test_a_second_job_for_one_attempt_never_runs_its_command(slurm: Cluster, run_dir: Path) -> None:
    ex = executor(run_dir)
    job = make_job(
        run_dir,
        "once",
        'echo ran >> "$STORMPROOF_TEST_LOG"; sleep 3',
        {"STORMPROOF_TEST_LOG": str(run_dir / "runs.log")},
    )
    ex.submit(job)
    first = started(collect(ex, began("once/1")))["once/1"].handle
    script_path = job.attempt_dir / script.SCRIPT_NAME
    dup = slurm.run(
        "sbatch",
        "--parsable",
        "--job-name=once/1",
        f"--comment={ex.comment}",
        "-p",
        "ondemand",
        f"--output={run_dir / 'dup.out'}",
        str(script_path),
    ).strip()
    events = collect(ex, ended("once/1"))
    assert finals(events)["once/1"].exit_code == 0  # type: ignore[attr-defined]
    assert (run_dir / "runs.log").read_text() == "ran\n"
    wait = time.monotonic() + 20
    while time.monotonic() < wait and any(
        j["id"] == dup and j["state"] in ("PENDING", "RUNNING", "COMPLETING") for j in slurm.jobs()
    ):
        ex.poll(0.25)
    # cancelled as a stray before it ran, or it ran and left the command alone
    dup_state = next(j["state"] for j in slurm.jobs() if j["id"] == dup)
    out = run_dir / "dup.out"
    said = out.read_text() if out.exists() else ""
    assert dup_state == "CANCELLED" or f"was started before (by job {first})" in said
    ex.close(final=True)


def test_closing_a_finished_run_leaves_nothing_in_the_queue(slurm: Cluster, run_dir: Path) -> None:
    ex = executor(run_dir)
    for i in range(6):
        ex.submit(make_job(run_dir, f"w{i}", "sleep 60", vcpus=2))
    collect(ex, lambda evs: len(started(evs)) >= 2)
    ex.close(final=True)
    deadline = time.monotonic() + 20
    while slurm.live_jobs() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert slurm.live_jobs() == []


def test_a_fan_out_asks_slurmctld_once_per_cycle_for_all_jobs(
    slurm: Cluster, run_dir: Path
) -> None:
    """40 short jobs: starts and successes come from the status files; ``squeue`` is asked
    once per cycle for all of them, at an interval that grows while they just succeed."""
    ex = SlurmExecutor(run_dir, {"poll_interval_s": 0.5})
    calls: list[str] = []
    real = ex.slurm.call

    def counted(*args: str) -> str:
        calls.append(args[0])
        return real(*args)

    ex.slurm.call = counted  # type: ignore[method-assign]
    jobs = [make_job(run_dir, f"f{i:02d}", "true", memory_mib=50) for i in range(40)]
    for job in jobs:
        ex.submit(job)
    events = collect(ex, ended(*(j.attempt_id for j in jobs)), timeout_s=120)
    assert all(e.exit_code == 0 for e in finals(events).values())  # type: ignore[attr-defined]
    assert calls.count("sbatch") == 40
    assert calls.count("squeue") <= 8, calls.count("squeue")  # every 0.5 s would be ~20
    assert not {"sacct", "scontrol"} & set(calls)
    ex.close(final=True)
