"""Memory limits with real processes: who is killed, what is reported, what survives a restart.

Every attempt that should be killed holds its memory far longer than the tests wait, so without
enforcement the test times out instead of passing by luck; every attempt that must live holds
its memory for many sampling intervals and then exits 0.
"""

from __future__ import annotations

import dataclasses
import shlex
from pathlib import Path

import pytest

from stormproof.core.events import AttemptExited, Event
from stormproof.executors._files import (
    ExitStatus,
    journal_boot_line,
    journal_exit_line,
    journal_launch_line,
    read_exit_status_file,
    read_journal,
)
from stormproof.executors.base import AttemptJob
from stormproof.executors.local import ENV_MEMORY_LIMIT, ENV_MEMORY_LIMIT_MIB
from tests.executors._harness import (
    PYTHON,
    Harness,
    collect,
    finals,
    kill_shim,
    run_to_end,
    wait_for,
    wait_gone,
)

#: argv: MiB to allocate and touch, seconds to hold it, and optionally "own-group". It leaves
#: ``started.<pid>`` in its cwd before it allocates anything.
ALLOC = """
import os, sys, time
if sys.argv[3:] == ["own-group"]:
    os.setpgid(0, 0)
with open(f"started.{os.getpid()}", "w") as f:
    f.write(f"{os.getpid()}\\n")
n = int(sys.argv[1]) << 20
block = bytearray(n)
for i in range(0, n, 4096):
    block[i] = 1
time.sleep(float(sys.argv[2]))
"""
HOLD_FOREVER = "60"  # longer than any test waits: only the limit ends it
HOLD_A_WHILE = "1.0"  # ten sampling intervals


def alloc(mib: int, hold: str, *extra: str) -> list[str]:
    return [PYTHON, "-c", ALLOC, str(mib), hold, *extra]


def limited(
    harness: Harness,
    name: str,
    command: list[str] | str,
    memory_mib: int,
    nodes: int = 1,
    declared: bool = True,
) -> AttemptJob:
    env = {ENV_MEMORY_LIMIT_MIB: str(memory_mib)} if declared else {}
    job = harness.job(name, command, env)
    return dataclasses.replace(job, memory_mib=memory_mib, nodes=nodes)


def exited(events: list[Event], attempt_id: str) -> AttemptExited:
    event = finals(events)[attempt_id]
    assert isinstance(event, AttemptExited), event
    return event


def assert_killed_for_memory(
    harness: Harness, events: list[Event], job: AttemptJob, limit_mib: int
) -> None:
    event = exited(events, job.attempt_id)
    assert (event.exit_code, event.out_of_memory) == (128 + 9, True)
    status = harness.status(job)  # what a recovery would read: the verdict with the code
    assert status is not None and (status.code, status.out_of_memory) == (137, True)
    note = job.stderr_path.read_text().splitlines()[-1]
    assert note.startswith("stormproof: killed: it used ")
    assert note.endswith(f"over its limit of {limit_mib} MiB")


def assert_ran_to_the_end(harness: Harness, events: list[Event], job: AttemptJob) -> None:
    event = exited(events, job.attempt_id)
    assert (event.exit_code, event.out_of_memory) == (0, False)
    status = harness.status(job)
    assert status is not None and (status.code, status.out_of_memory) == (0, False)


def test_over_the_limit_is_killed_under_it_is_not(harness: Harness) -> None:
    over = limited(harness, "over", alloc(200, HOLD_FOREVER), memory_mib=64)
    under = limited(harness, "under", alloc(16, HOLD_A_WHILE), memory_mib=256)
    events = run_to_end(harness.executor(), [over, under], timeout_s=20.0)
    assert_killed_for_memory(harness, events, over, 64)
    assert_ran_to_the_end(harness, events, under)


def test_the_whole_session_counts_and_is_killed(harness: Harness) -> None:
    # Two grandchildren under a shell, one in a process group of its own. Each stays under the
    # limit alone (60 MiB + the interpreter); together they are over it.
    first, second = alloc(60, HOLD_FOREVER, "own-group"), alloc(60, HOLD_FOREVER)
    script = f"{shlex.join(first)} & {shlex.join(second)} & wait"
    job = limited(harness, "family", script, memory_mib=96)
    ex = harness.executor()
    ex.submit(job)
    events = collect(ex, lambda evs: job.attempt_id in finals(evs), timeout_s=20.0)
    assert_killed_for_memory(harness, events, job, 96)
    # Over the limit only once both allocate: both had started, and both are gone.
    grandchildren = [int(p.read_text()) for p in job.work_dir.glob("started.*")]
    assert len(grandchildren) == 2
    assert all(wait_gone(pid) for pid in grandchildren)


#: A parent that touches 60 MiB, then forks three children that share it copy-on-write.
SHARED = """
import os, time
n = 60 << 20
block = bytearray(n)
for i in range(0, n, 4096):
    block[i] = 1
children = []
for _ in range(3):
    pid = os.fork()
    if pid == 0:  # a child: hold the shared pages a while
        time.sleep(1.0)
        os._exit(0)
    children.append(pid)
for pid in children:
    os.waitpid(pid, 0)
"""


def test_pages_shared_by_forked_processes_count_once(harness: Harness) -> None:
    # Four processes each show the 60 MiB in their RSS (240 MiB in all), but use it once.
    shared = limited(harness, "shared", [PYTHON, "-c", SHARED], memory_mib=128)
    over = limited(harness, "over", alloc(200, HOLD_FOREVER), memory_mib=64)
    events = run_to_end(harness.executor(), [shared, over], timeout_s=20.0)
    assert_killed_for_memory(harness, events, over, 64)
    assert_ran_to_the_end(harness, events, shared)


def test_only_attempts_with_the_variable_are_limited(harness: Harness) -> None:
    declared = limited(harness, "declared", alloc(200, HOLD_FOREVER), memory_mib=64)
    undeclared = limited(
        harness, "undeclared", alloc(200, HOLD_A_WHILE), memory_mib=64, declared=False
    )
    events = run_to_end(harness.executor(), [declared, undeclared], timeout_s=20.0)
    assert_killed_for_memory(harness, events, declared, 64)
    assert_ran_to_the_end(harness, events, undeclared)


def test_a_gang_attempt_may_use_its_memory_times_its_nodes(harness: Harness) -> None:
    one_node = limited(harness, "one", alloc(96, HOLD_FOREVER), memory_mib=64)
    two_nodes = limited(harness, "two", alloc(96, HOLD_A_WHILE), memory_mib=64, nodes=2)
    events = run_to_end(harness.executor(), [one_node, two_nodes], timeout_s=20.0)
    assert_killed_for_memory(harness, events, one_node, 64)
    assert_ran_to_the_end(harness, events, two_nodes)


@pytest.mark.parametrize("how", ["option", "environment"])
def test_a_run_can_opt_out(harness: Harness, monkeypatch: pytest.MonkeyPatch, how: str) -> None:
    if how == "option":
        opted_out = harness.executor(memory_limit=False)
    else:
        monkeypatch.setenv(ENV_MEMORY_LIMIT, "off")
        opted_out = harness.executor()
        monkeypatch.delenv(ENV_MEMORY_LIMIT)
    enforcing = harness.executor()  # the same shim: the choice is the submitting run's
    free = limited(harness, "free", alloc(200, HOLD_A_WHILE), memory_mib=64)
    opted_out.submit(free)
    kept = limited(harness, "kept", alloc(200, HOLD_FOREVER), memory_mib=64)
    assert_killed_for_memory(harness, run_to_end(enforcing, [kept], timeout_s=20.0), kept, 64)
    events = collect(opted_out, lambda evs: free.attempt_id in finals(evs))
    assert_ran_to_the_end(harness, events, free)


@pytest.mark.parametrize("shim_dies", [False, True], ids=["shim-alive", "shim-killed"])
def test_the_verdict_is_recovered_after_a_restart(harness: Harness, shim_dies: bool) -> None:
    job = limited(harness, "oom", alloc(200, HOLD_FOREVER), memory_mib=64)
    first = harness.executor()
    first.submit(job)
    first.poll(0.0)  # sends what submit queued
    wait_for(lambda: harness.status(job) is not None, 20.0)  # journaled
    first.close()  # the orchestrator goes without hearing of it
    if shim_dies:
        kill_shim(harness)
    recovered = harness.executor().recover([job])
    assert len(recovered) == 1
    assert isinstance(recovered[0], AttemptExited)
    assert (recovered[0].exit_code, recovered[0].out_of_memory) == (128 + 9, True)


def test_exit_status_lines_and_the_files_of_earlier_versions(tmp_path: Path) -> None:
    journal = tmp_path / "journal"
    journal.write_bytes(
        journal_boot_line("boot", 1)
        + journal_launch_line('"a/1"', 10, 1.5, 2.0)
        + journal_exit_line('"a/1"', 137, 3.0, out_of_memory=True)
        + journal_exit_line('"b/1"', 127, 4.0)  # not found: a status without a launch
        + journal_launch_line('"c/1"', 11, 1.5, 2.0)
        + journal_exit_line('"c/1"', 5, 5.0)[:-4]  # torn: no status yet
    )
    records = read_journal(str(journal))
    assert records["a/1"].status == ExitStatus(137, 3.0, True)
    assert records["a/1"].pid == 10
    assert records["b/1"].status == ExitStatus(127, 4.0, False)
    assert records["c/1"].status is None and records["c/1"].pid == 11
    # A run started by an earlier version has exit_status files instead; resume reads them.
    (tmp_path / "exit_status").write_text("137 oom\n")
    status = read_exit_status_file(str(tmp_path))
    assert status is not None and (status.code, status.out_of_memory) == (137, True)
    (tmp_path / "exit_status").write_text("5\n")
    status = read_exit_status_file(str(tmp_path))
    assert status is not None and (status.code, status.out_of_memory) == (5, False)
    (tmp_path / "exit_status").write_text("137 o")  # torn: no status yet
    assert read_exit_status_file(str(tmp_path)) is None
