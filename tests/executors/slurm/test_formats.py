"""Slurm's text formats and ours: host lists, status file names, times, GRES, squeue lines."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from stormproof.executors.slurm import script
from stormproof.executors.slurm.commands import _sacct_record, _squeue_record
from stormproof.executors.slurm.options import SlurmOptions, run_comment, time_limit
from stormproof.executors.slurm.partitions import gres_gpus, parse_time

from .helpers import make_job


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("n1", ("n1",)),
        ("n[1-3,5]", ("n1", "n2", "n3", "n5")),
        ("gpu[08-10],login1", ("gpu08", "gpu09", "gpu10", "login1")),
        ("r[1-2]n[1-2]", ("r1n1", "r1n2", "r2n1", "r2n2")),
        ("", ()),
    ],
)
def test_host_lists_expand_like_scontrol_show_hostnames(text: str, names: tuple[str, ...]) -> None:
    assert script.expand_hostlist(text) == names


def test_status_file_names_round_trip_and_temporary_files_are_ignored() -> None:
    name = script.status_name("pre.process_1/12")
    assert name == "pre.process_1@12"
    assert script.attempt_of(name + ".X") == ("pre.process_1/12", ".X")
    assert script.attempt_of(name + ".S") == ("pre.process_1/12", ".S")
    for other in (name + ".claim", name + ".r0", "stray.X", name + ".X.tmp"):
        assert script.attempt_of(other) is None


def test_the_step_writes_the_code_and_outlives_the_signals_slurm_sends(tmp_path: Path) -> None:
    """The ``sh`` the script puts around the command, run here without Slurm: it reports the
    command's code, 143 after a SIGTERM the command did not handle."""
    job = make_job(tmp_path, "t", "kill -TERM $$; sleep 5", pool="spot")
    text = script.script_text(job, tmp_path)
    srun_line = next(line for line in text.splitlines() if line.startswith("srun "))
    step = srun_line.split(" -- ", 1)[1]  # what srun would run
    env = {"STORMPROOF_SLURM_STATUS": str(tmp_path / "t@1"), "PATH": "/usr/bin:/bin"}
    proc = subprocess.run(["/bin/sh", "-c", step], env=env, timeout=30)
    assert proc.returncode == 143
    assert (tmp_path / "t@1.X").read_text() == "143\n"


def test_on_demand_the_script_runs_the_command_itself_and_passes_signals_on(
    tmp_path: Path,
) -> None:
    """No step on an on-demand pool: the batch script claims, starts, runs the command, outlives
    a SIGTERM sent to both (what ``scancel --full --signal=TERM`` does), and writes the code;
    run here without Slurm, as the script itself."""
    job = make_job(
        tmp_path,
        "t",
        "trap 'echo term > got; exit 7' TERM; touch ready; sleep 30 & wait",
        {"GREETING": "hi"},
    )
    assert not script.runs_as_step(job)
    text = script.script_text(job, tmp_path)
    assert "srun" not in text
    (tmp_path / "work").mkdir()
    env = {"SLURM_JOB_ID": "77", "SLURM_JOB_NODELIST": "n[1-2]", "PATH": "/usr/bin:/bin"}
    proc = subprocess.Popen(["/bin/sh", "-c", text], env=env, cwd=tmp_path / "work")
    deadline = time.monotonic() + 20
    while not (tmp_path / "work" / "ready").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    for pid in _descendants(proc.pid, []):  # the batch script and the command: the job
        os.kill(pid, signal.SIGTERM)
    assert proc.wait(timeout=20) == 7
    assert (tmp_path / "work" / "got").read_text() == "term\n"
    assert (tmp_path / "t@1.X").read_text() == "7\n"
    assert (tmp_path / "t@1.S").read_text() == "77 n[1-2]\n"
    assert (tmp_path / "t@1.claim").read_text() == "77\n"
    again = subprocess.run(["/bin/sh", "-c", text], env=env, cwd=tmp_path / "work", text=True,
                           capture_output=True)  # fmt: skip
    assert again.returncode == 0 and "was started before (by job 77)" in again.stderr


def _descendants(pid: int, found: list[int]) -> list[int]:
    found.append(pid)
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        _descendants(int(child), found)
    return found


def test_time_limits_carry_the_margin() -> None:
    assert time_limit(100, 60) == "0-00:02:40"
    assert time_limit(36 * 3600, 60) == "1-15:36:00"  # 10 % of a long timeout is more


def test_sbatch_gets_what_the_task_asks_and_nothing_requeues(tmp_path: Path) -> None:
    job = make_job(tmp_path, "t", "true", vcpus=0.5, memory_mib=300, gpus=2, nodes=3, pool="gpu")
    options = SlurmOptions.from_dict(
        {"partitions": {"gpu": "a100"}, "qos": "long", "sbatch_args": ["--constraint=ib"]}
    )
    args = options.sbatch_args_for(job, "stormproof:r:1")
    for expected in (
        "--job-name=t/1",
        "--partition=a100",
        "--nodes=3",
        "--cpus-per-task=1",
        "--mem=300M",
        "--gres=gpu:2",
        "--no-requeue",
        "--open-mode=append",
        "--qos=long",
    ):
        assert expected in args
    assert args[-1] == "--constraint=ib" and not any(a.startswith("--time") for a in args)


def test_two_homes_with_a_run_of_one_name_have_different_comments(tmp_path: Path) -> None:
    assert run_comment(tmp_path / "a" / "md") != run_comment(tmp_path / "b" / "md")
    assert run_comment(tmp_path / "a" / "md").startswith("stormproof:md:")


def test_slurm_times_and_gres() -> None:
    assert parse_time("infinite") is None and parse_time("UNLIMITED") is None
    assert parse_time("1-02:03:04") == 93784 and parse_time("30:00") == 1800
    assert parse_time("2-12") == 2 * 86400 + 12 * 3600 and parse_time("45") == 2700
    assert gres_gpus("gpu:2") == 2 and gres_gpus("gpu:a100:4(S:0-1),mps:100") == 4
    assert gres_gpus("(null)") == 0


def test_squeue_and_sacct_lines() -> None:
    rec = _squeue_record("17|FAILED|spot|2026-01-01T00:00:00|0|n[1-2]|stormproof:r:x|a/1")
    assert rec is not None and rec.preempted and rec.nodes == "n[1-2]" and rec.name == "a/1"
    rec = _squeue_record("18|PENDING|spot|N/A|1||b|c/2")
    assert rec is not None and rec.requeued and not rec.preempted and rec.name == "c/2"
    done = _sacct_record("19|CANCELLED by 0|3:0|n1|spot|d/1")
    assert done is not None and (done.state, done.exit_code) == ("CANCELLED", 3)
    assert _sacct_record("19.batch|COMPLETED|0:0|n1|spot|batch") is None


def test_a_status_file_being_written_reads_as_absent(tmp_path: Path) -> None:
    """One line per file, no rename: a line without its newline is not there yet."""
    exited, started = tmp_path / "a@1.X", tmp_path / "a@1.S"
    exited.write_text("3")
    started.write_text("12 n1")
    assert script.read_exited(exited) is None and script.read_started(started) is None
    exited.write_text("3\n")
    started.write_text("12 n[1-2]\n")
    assert script.read_exited(exited) == (3, exited.stat().st_mtime)
    assert script.read_started(started) == ("12", "n[1-2]", started.stat().st_mtime)
    assert script.read_exited(tmp_path / "none.X") is None
