"""The local executor with real processes: what an attempt sees, how it ends, how it is killed."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from stormproof.core.events import AttemptExited, AttemptStarted, AttemptSubmitFailed, Event
from stormproof.executors.base import Executor
from stormproof.executors.local import LocalExecutor
from tests.executors._harness import (
    PYTHON,
    Harness,
    collect,
    finals,
    run_to_end,
    wait_for,
    wait_gone,
)


def exit_code(events: list[Event], attempt_id: str) -> int:
    event = finals(events)[attempt_id]
    assert isinstance(event, AttemptExited), event
    return event.exit_code


def test_is_an_executor(harness: Harness) -> None:
    assert isinstance(harness.executor(), Executor)


def test_exit_codes_of_list_and_string_commands(harness: Harness) -> None:
    ex = harness.executor()
    jobs = [
        harness.job("ok", ["true"]),
        harness.job("false", ["false"]),
        harness.job("three", "exit 3"),
        harness.job("signal", "kill -9 $$"),
    ]
    events = run_to_end(ex, jobs)
    codes = {aid: exit_code(events, aid) for aid in finals(events)}
    assert codes == {"ok/1": 0, "false/1": 1, "three/1": 3, "signal/1": 128 + 9}
    for job in jobs:  # journaled before the event left: a recovery would find the same codes
        status = harness.status(job)
        assert status is not None and status.code == codes[job.attempt_id]


def test_an_attempt_leaves_its_work_dir_and_two_logs_and_no_other_file(harness: Harness) -> None:
    # Per attempt, files are made by the orchestrator only; the shim appends to one journal.
    ex = harness.executor()
    jobs = [harness.job(f"t{i}", "echo out; echo err >&2; exit 2") for i in range(3)]
    events = run_to_end(ex, jobs)
    for job in jobs:
        assert exit_code(events, job.attempt_id) == 2
        assert sorted(p.name for p in job.attempt_dir.iterdir()) == [
            "stderr.log",
            "stdout.log",
            "work",
        ]
        assert list(job.work_dir.iterdir()) == []
        assert (job.stdout_path.read_text(), job.stderr_path.read_text()) == ("out\n", "err\n")
    state = {p.name for p in Path(harness.layout.state_dir).iterdir()}
    assert state <= {"journal", "shim.lock", "shim.log", "shim.pid", "shim.sock", "endpoint"}


def test_started_comes_first_with_the_pid_as_handle(harness: Harness) -> None:
    ex = harness.executor()
    before = time.time()
    events = run_to_end(ex, [harness.job("a", [PYTHON, "-c", "import os; print(os.getpid())"])])
    started, exited = events
    assert isinstance(started, AttemptStarted) and isinstance(exited, AttemptExited)
    job = harness.job("a", [])
    assert started.handle == job.stdout_path.read_text().strip()
    assert before <= started.at <= exited.at <= time.time()


def test_list_runs_without_a_shell_and_string_with_one(harness: Harness) -> None:
    ex = harness.executor()
    listed, shelled = (
        harness.job("list", ["echo", "$HOME", "a  b"]),
        harness.job("sh", "echo $HOME"),
    )
    run_to_end(ex, [listed, shelled])
    assert listed.stdout_path.read_text() == "$HOME a  b\n"
    assert shelled.stdout_path.read_text() == f"{os.environ['HOME']}\n"


def test_environment_cwd_logs_and_session(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FROM_ORCHESTRATOR", "yes")
    monkeypatch.setenv("OVERRIDDEN", "orchestrator")
    ex = harness.executor()
    script = (
        "import os, sys;"
        "print(os.environ['FROM_ORCHESTRATOR'], os.environ['OVERRIDDEN'], os.environ['FROM_JOB']);"
        "print(os.getcwd());"
        "print(os.getsid(0) == os.getpid() == os.getpgid(0));"
        "print('to stderr', file=sys.stderr)"
    )
    job = harness.job("env", [PYTHON, "-c", script], {"FROM_JOB": "1", "OVERRIDDEN": "job"})
    events = run_to_end(ex, [job])
    assert exit_code(events, "env/1") == 0
    out = job.stdout_path.read_text().splitlines()
    assert out == ["yes job 1", os.path.realpath(job.work_dir), "True"]
    assert job.stderr_path.read_text() == "to stderr\n"


def test_relative_command_runs_from_the_work_dir(harness: Harness) -> None:
    ex = harness.executor()
    job = harness.job("rel", ["./run.sh"])
    job.work_dir.mkdir(parents=True)
    (job.work_dir / "run.sh").write_text("#!/bin/sh\necho relative\n")
    (job.work_dir / "run.sh").chmod(0o755)
    events = run_to_end(ex, [job])
    assert exit_code(events, "rel/1") == 0
    assert job.stdout_path.read_text() == "relative\n"


def test_command_not_found_is_127_and_not_executable_is_126(harness: Harness) -> None:
    ex = harness.executor()
    script = harness.run_dir / "not-executable.sh"
    script.parent.mkdir(parents=True)
    script.write_text("#!/bin/sh\necho never\n")
    missing = harness.job("missing", ["no-such-command-anywhere", "x"])
    missing_path = harness.job("missing_path", ["/no/such/file"])
    denied = harness.job("denied", [str(script)])
    events = run_to_end(ex, [missing, missing_path, denied])
    assert exit_code(events, "missing/1") == 127
    assert exit_code(events, "missing_path/1") == 127
    assert exit_code(events, "denied/1") == 126
    assert missing.stderr_path.read_text() == (
        "stormproof: no-such-command-anywhere: command not found\n"
    )
    assert "Permission denied" in denied.stderr_path.read_text()
    status = harness.status(missing)
    assert status is not None and status.code == 127
    assert not any(isinstance(e, AttemptStarted) for e in events)


def test_an_empty_command_is_a_submit_failure(harness: Harness) -> None:
    ex = harness.executor()
    events = run_to_end(ex, [harness.job("empty", [])])
    assert isinstance(finals(events)["empty/1"], AttemptSubmitFailed)


def test_a_command_no_program_can_receive_is_a_submit_failure_not_a_hang(
    harness: Harness,
) -> None:
    # A NUL byte cannot be passed to exec: the shim must say so, whatever fails inside it.
    ex = harness.executor()
    events = run_to_end(ex, [harness.job("nul", ["ech\x00o", "x"])], timeout_s=5.0)
    failed = finals(events)["nul/1"]
    assert isinstance(failed, AttemptSubmitFailed) and "null byte" in failed.message
    after = run_to_end(ex, [harness.job("after", ["true"])])  # the shim carries on
    assert exit_code(after, "after/1") == 0


def test_an_exit_carries_the_cpu_time_and_peak_memory_of_the_attempt(harness: Harness) -> None:
    # 64 MiB touched by a child of the command, and ~0.3 s of CPU: wait4 counts both.
    burn = (
        "import time; b = bytearray(64 << 20); t = time.process_time()\n"
        "while time.process_time() - t < 0.3: pass"
    )
    job = harness.job("burn", f"{PYTHON} -c '{burn}'; true")
    events = run_to_end(harness.executor(), [job])
    exited = finals(events)["burn/1"]
    assert isinstance(exited, AttemptExited) and exited.exit_code == 0
    assert exited.cpu_s is not None and 0.25 <= exited.cpu_s < 30
    assert exited.max_rss_mib is not None and 64 <= exited.max_rss_mib < 1024


def test_a_shim_starter_killed_as_it_starts_is_started_again(harness: Harness) -> None:
    killed: list[int] = []
    stop = threading.Event()
    mark = str(harness.layout.state_dir).encode()

    def kill_first_starter() -> None:
        while not stop.is_set() and not killed:
            for pid in map(int, filter(str.isdigit, os.listdir("/proc"))):
                with contextlib.suppress(OSError):
                    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
                    if b"stormproof.executors._shim" in cmdline and mark in cmdline:
                        os.kill(pid, signal.SIGKILL)
                        killed.append(pid)
                        break

    watcher = threading.Thread(target=kill_first_starter)
    watcher.start()
    try:
        events = run_to_end(harness.executor(), [harness.job("a", ["true"])], timeout_s=20.0)
    finally:
        stop.set()
        watcher.join()
    assert len(killed) == 1
    assert exit_code(events, "a/1") == 0


def test_submit_is_idempotent(harness: Harness) -> None:
    ex = harness.executor()
    job = harness.job("once", "echo ran >> ../ran.txt")
    ex.submit(job)
    ex.submit(job)
    events = collect(ex, lambda evs: "once/1" in finals(evs))
    ex.submit(job)
    events += ex.poll(0.3)
    assert [type(e) for e in events] == [AttemptStarted, AttemptExited]
    assert (job.attempt_dir / "ran.txt").read_text() == "ran\n"


def test_poll_times_out_with_nothing_and_returns_promptly_with_news(harness: Harness) -> None:
    ex = harness.executor()
    t0 = time.monotonic()
    assert ex.poll(0.2) == []
    assert 0.19 <= time.monotonic() - t0 < 1.0
    ex.submit(harness.job("slow", "sleep 0.3"))
    collect(ex, lambda evs: any(isinstance(e, AttemptStarted) for e in evs))
    assert ex.poll(0.1) == []
    t0 = time.monotonic()
    events = ex.poll(5.0)
    assert [type(e) for e in events] == [AttemptExited]
    assert time.monotonic() - t0 < 1.0


def test_kill_sends_term_to_the_group(harness: Harness) -> None:
    ex = harness.executor()
    job = harness.job("term", "sleep 30 & wait")  # the shell and its child share the group
    ex.submit(job)
    started = collect(ex, lambda evs: bool(evs))[0]
    assert isinstance(started, AttemptStarted)
    ex.kill("term/1", 10.0)
    events = collect(ex, lambda evs: "term/1" in finals(evs), 5.0)
    assert exit_code(events, "term/1") == 128 + 15
    assert wait_gone(int(started.handle))


def test_kill_escalates_to_sigkill_after_the_grace(harness: Harness) -> None:
    ex = harness.executor()
    marker = harness.run_dir / "trapped"
    job = harness.job("stubborn", f"trap 'echo TERM > {marker}' TERM; while :; do sleep 0.05; done")
    ex.submit(job)
    collect(ex, lambda evs: bool(evs))
    t0 = time.monotonic()
    ex.kill("stubborn/1", 0.5)
    events = collect(ex, lambda evs: "stubborn/1" in finals(evs), 5.0)
    assert exit_code(events, "stubborn/1") == 128 + 9
    assert time.monotonic() - t0 >= 0.45
    assert marker.read_text() == "TERM\n"


def test_a_killed_leader_takes_its_stubborn_group_with_it(harness: Harness) -> None:
    ex = harness.executor()
    # The leader exits at once on TERM; its background child ignores TERM. The SIGKILL due
    # after the grace goes to the group when the leader ends, not 30 s later.
    job = harness.job(
        "group", "(trap '' TERM; exec sleep 30) & echo $! > bg.pid; trap 'exit 0' TERM; wait"
    )
    ex.submit(job)
    collect(ex, lambda evs: bool(evs))
    wait_for(
        lambda: (
            (job.work_dir / "bg.pid").exists()
            and (job.work_dir / "bg.pid").read_text().endswith("\n")
        )
    )
    background = int((job.work_dir / "bg.pid").read_text())
    ex.kill("group/1", 30.0)
    events = collect(ex, lambda evs: "group/1" in finals(evs), 5.0)
    assert exit_code(events, "group/1") == 0
    assert wait_gone(background, 3.0)


def test_an_attempt_dir_that_cannot_be_made_is_a_submit_failure(harness: Harness) -> None:
    ex = harness.executor()
    blocker = harness.run_dir / "a-file"
    blocker.parent.mkdir(parents=True)
    blocker.write_text("")
    job = harness.job("blocked", ["true"])
    job = dataclasses.replace(job, attempt_dir=blocker / "attempt")
    event = finals(run_to_end(ex, [job]))["blocked/1"]
    assert isinstance(event, AttemptSubmitFailed)
    assert (
        "cannot create the attempt's directory" in event.message and str(blocker) in event.message
    )
    assert harness.status(job) is None and not harness.journal()[1]  # never reached the shim


def test_killing_an_ended_or_unknown_attempt_is_a_no_op(harness: Harness) -> None:
    ex = harness.executor()
    run_to_end(ex, [harness.job("done", ["true"])])
    ex.kill("done/1", 0.0)
    ex.kill("never/1", 0.0)
    assert ex.poll(0.1) == []


def test_attempts_do_not_inherit_the_shims_ignored_sigpipe(harness: Harness) -> None:
    ex = harness.executor()
    # `yes` dies of SIGPIPE when `head` exits; with SIGPIPE ignored it would loop on EPIPE.
    events = run_to_end(ex, [harness.job("pipe", "yes | head -1 >/dev/null")])
    assert exit_code(events, "pipe/1") == 0


def test_a_long_run_dir_gets_a_short_socket(tmp_path: Path) -> None:
    h = Harness(tmp_path / ("x" * 60) / ("y" * 60) / "run")
    try:
        assert len(h.layout.socket) < 108
        assert not h.layout.socket.startswith(str(tmp_path))
        events = run_to_end(h.executor(), [h.job("a", ["true"])])
        assert exit_code(events, "a/1") == 0
    finally:
        h.cleanup()


def test_the_shim_exits_when_idle_and_at_a_final_close(harness: Harness) -> None:
    ex = harness.executor(idle_exit_s=0.3)
    run_to_end(ex, [harness.job("a", ["true"])])
    pid = harness.shim_pid()
    assert pid is not None
    ex.close()
    assert wait_gone(pid, 3.0)
    ex2 = harness.executor(idle_exit_s=60.0)
    run_to_end(ex2, [harness.job("b", ["true"])])
    pid2 = harness.shim_pid()
    assert pid2 is not None and pid2 != pid
    ex2.close(final=True)
    assert wait_gone(pid2, 3.0)


def test_two_executors_share_one_shim(harness: Harness) -> None:
    first, second = harness.executor(), harness.executor()
    run_to_end(first, [harness.job("a", ["true"])])
    pid = harness.shim_pid()
    run_to_end(second, [harness.job("b", ["true"])])
    assert harness.shim_pid() == pid


def test_poll_without_anything_submitted_starts_no_shim(harness: Harness) -> None:
    ex: LocalExecutor = harness.executor()
    assert ex.poll(0.05) == []
    assert ex.recover([]) == []
    assert harness.shim_pid() is None


def test_prepare_starts_the_shim_in_the_background_and_submit_uses_it(
    harness: Harness,
) -> None:
    ex: LocalExecutor = harness.executor()
    ex.prepare()
    deadline = time.monotonic() + 10.0
    while harness.shim_pid() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    pid = harness.shim_pid()
    assert pid is not None  # up before anything was submitted
    ex.prepare()  # again: nothing new starts
    events = run_to_end(ex, [harness.job("a", ["true"])])
    assert exit_code(events, "a/1") == 0
    assert harness.shim_pid() == pid
    assert len(harness.journal()[0]) == 1  # one shim start in the run's journal


def test_a_shim_that_no_driver_ever_connects_to_exits_once_idle(harness: Harness) -> None:
    """``prepare`` starts a shim before anything is submitted; a driver that then has nothing
    to run (``resume`` of a finished run, an error after the start) never connects. That shim
    must still leave after its idle time, not wait for a first client forever."""
    ex: LocalExecutor = harness.executor(idle_exit_s=0.5)
    ex.prepare()
    deadline = time.monotonic() + 10.0
    while harness.shim_pid() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    pid = harness.shim_pid()
    assert pid is not None
    ex.close()  # never connected
    assert wait_gone(pid, 5.0), "the unused shim is still running"


def test_a_prepared_executor_closed_unused_leaves_no_starter_behind(harness: Harness) -> None:
    ex: LocalExecutor = harness.executor()
    ex.prepare()
    starter = ex._starter
    assert starter is not None
    ex.close()
    assert starter.returncode == 0  # waited for: no zombie, no ResourceWarning
    assert ex._starter is None


def test_what_one_loop_iteration_submits_reaches_the_shim_in_one_write(harness: Harness) -> None:
    """Each write wakes the shim (a cross-CPU wake-up): the driver's submits and kills of one
    iteration are queued and sent together by its next ``poll``."""
    ex: LocalExecutor = harness.executor()
    run_to_end(ex, [harness.job("warm", ["true"])])  # connected
    conn = ex._conn
    assert conn is not None
    writes: list[bytes] = []
    real = conn.sock

    class Counting:
        def sendall(self, data: bytes) -> None:
            writes.append(data)
            real.sendall(data)

        def __getattr__(self, name: str) -> object:
            return getattr(real, name)

    conn.sock = Counting()  # type: ignore[assignment]
    jobs = [harness.job(name, ["true"]) for name in ("a", "b", "c")]
    for job in jobs:
        ex.submit(job)
    assert writes == []  # queued, not sent
    ids = {"a/1", "b/1", "c/1"}
    events = collect(ex, lambda evs: ids <= finals(evs).keys())
    assert len(writes) == 1 and writes[0].count(b"\n") == 3
    assert all(exit_code(events, i) == 0 for i in ids)


def test_signal_reaches_the_attempt_without_killing_it(harness: Harness) -> None:
    ex = harness.executor()
    marker = harness.run_dir / "usr1"
    ready = harness.run_dir / "ready"
    job = harness.job(
        "ckpt",
        f"trap 'echo USR1 >> {marker}' USR1; touch {ready}; "
        f"while [ ! -s {marker} ]; do sleep 0.05 || :; done",  # the group's sleep dies too
    )
    ex.submit(job)
    collect(ex, lambda evs: bool(evs))
    wait_for(ready.exists)
    ex.signal("ckpt/1", 10)  # SIGUSR1
    events = collect(ex, lambda evs: "ckpt/1" in finals(evs), 5.0)
    assert exit_code(events, "ckpt/1") == 0  # the handler ran; nothing was killed
    assert marker.read_text() == "USR1\n"
    ex.signal("ckpt/1", 10)  # an ended attempt: a no-op, no error
