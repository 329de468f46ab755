"""Attempts outlive the orchestrator, and a new one learns what became of them.

The orchestrator runs in a separate Python process that submits jobs, waits until they have
started, prints their pids, and is then ``kill -9``ed for real. A fresh ``LocalExecutor`` in
the test process then calls ``recover``. The shim is killed as well where a case needs it.
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
from collections.abc import Iterator, Sequence

import pytest

from stormproof.core.events import AttemptExited, AttemptLost, AttemptStarted, Event
from stormproof.executors._files import boot_id
from stormproof.executors.base import AttemptJob
from tests.executors._harness import (
    PYTHON,
    Harness,
    collect,
    finals,
    keeper_pid,
    kill_shim,
    run_to_end,
    wait_for,
    wait_gone,
)

ORCHESTRATOR = r"""
import json, sys, time
from pathlib import Path
from stormproof.core.events import AttemptStarted
from stormproof.executors.base import AttemptJob
from stormproof.executors.local import LocalExecutor

run_dir, options, jobs = Path(sys.argv[1]), json.loads(sys.argv[2]), json.loads(sys.argv[3])
ex = LocalExecutor(run_dir, options)
for j in jobs:
    ex.submit(AttemptJob(run="test", attempt_id=j["id"], task_id=j["task"], number=1,
                         command=j["command"], env={}, attempt_dir=Path(j["dir"])))
started = {}
while len(started) < len(jobs):
    for event in ex.poll(5.0):
        if isinstance(event, AttemptStarted):
            started[event.attempt_id] = int(event.handle)
print(json.dumps(started), flush=True)
time.sleep(60)
"""


Procs = list[subprocess.Popen[bytes]]


@pytest.fixture
def orchestrators() -> Iterator[Procs]:
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for p in procs:
        p.kill()
        p.wait()
        if p.stdout:
            p.stdout.close()


def crash_after_start(
    harness: Harness,
    procs: list[subprocess.Popen[bytes]],
    jobs: Sequence[AttemptJob],
    idle_exit_s: float = 30.0,
) -> dict[str, int]:
    """Run an orchestrator that submits ``jobs``, then kill -9 it once all have started."""
    spec = [
        {"id": j.attempt_id, "task": j.task_id, "command": j.command, "dir": str(j.attempt_dir)}
        for j in jobs
    ]
    options = json.dumps({"idle_exit_s": idle_exit_s})
    p = subprocess.Popen(
        [PYTHON, "-c", ORCHESTRATOR, str(harness.run_dir), options, json.dumps(spec)],
        stdout=subprocess.PIPE,
    )
    procs.append(p)
    assert p.stdout is not None
    with selectors.DefaultSelector() as sel:
        sel.register(p.stdout, selectors.EVENT_READ)
        assert sel.select(20.0), "the orchestrator never reported its attempts started"
    pids: dict[str, int] = json.loads(p.stdout.readline())
    p.send_signal(signal.SIGKILL)
    p.wait()
    return pids


def by_id(events: list[Event]) -> dict[str, Event]:
    out = {e.attempt_id: e for e in events if hasattr(e, "attempt_id")}
    assert len(out) == len(events), f"more than one event per attempt: {events}"
    return out


def test_still_running_is_adopted_then_reported_when_it_ends(
    harness: Harness, orchestrators: Procs
) -> None:
    job = harness.job("a", "sleep 0.8; exit 5")
    pids = crash_after_start(harness, orchestrators, [job])
    ex = harness.executor()
    recovered = by_id(ex.recover([job]))
    started = recovered["a/1"]
    assert isinstance(started, AttemptStarted) and started.handle == str(pids["a/1"])
    events = collect(ex, lambda evs: "a/1" in finals(evs))
    assert [(type(e), getattr(e, "exit_code", None)) for e in events] == [(AttemptExited, 5)]
    ex.submit(job)  # adopted: submitting it again does nothing
    assert ex.poll(0.2) == []


@pytest.mark.parametrize("shim_lingers", [True, False], ids=["shim-alive", "shim-gone"])
def test_ended_while_no_orchestrator_was_there(
    harness: Harness, orchestrators: Procs, shim_lingers: bool
) -> None:
    job = harness.job("b", "sleep 0.2; exit 3")
    crash_after_start(harness, orchestrators, [job], idle_exit_s=30.0 if shim_lingers else 0.2)
    wait_for(lambda: harness.status(job) is not None)
    if not shim_lingers:
        pid = harness.shim_pid()
        assert pid is None or wait_gone(pid)
    ex = harness.executor()
    exited = by_id(ex.recover([job]))["b/1"]
    assert isinstance(exited, AttemptExited) and exited.exit_code == 3
    ex.submit(job)  # finished: submitting it again does not run it again
    assert ex.poll(0.2) == []


def test_shim_killed_then_attempt_killed_reports_the_signal(
    harness: Harness, orchestrators: Procs
) -> None:
    job = harness.job("c", "sleep 30")
    pids = crash_after_start(harness, orchestrators, [job])
    kill_shim(harness)
    os.killpg(pids["c/1"], signal.SIGKILL)
    assert wait_gone(pids["c/1"])
    wait_for(lambda: harness.status(job) is not None)  # the keeper reaped it
    exited = by_id(harness.executor().recover([job]))["c/1"]
    assert isinstance(exited, AttemptExited) and exited.exit_code == 128 + signal.SIGKILL


def test_shim_and_its_keeper_killed_then_attempt_killed_is_lost(
    harness: Harness, orchestrators: Procs
) -> None:
    job = harness.job("c1", "sleep 30")
    pids = crash_after_start(harness, orchestrators, [job])
    keeper = keeper_pid(harness)
    assert keeper is not None
    os.kill(keeper, signal.SIGKILL)
    kill_shim(harness)
    os.killpg(pids["c1/1"], signal.SIGKILL)
    assert wait_gone(pids["c1/1"])
    lost = by_id(harness.executor().recover([job]))["c1/1"]
    assert isinstance(lost, AttemptLost) and "exit status is unknown" in lost.reason


def test_shim_killed_attempt_running_is_adopted_then_reports_its_exit_code(
    harness: Harness, orchestrators: Procs
) -> None:
    job = harness.job("c2", "sleep 0.8; exit 6")
    crash_after_start(harness, orchestrators, [job])
    kill_shim(harness)
    ex = harness.executor()
    assert isinstance(by_id(ex.recover([job]))["c2/1"], AttemptStarted)
    events = collect(ex, lambda evs: "c2/1" in finals(evs))
    assert [type(e) for e in events] == [AttemptExited]  # its keeper learned the code
    assert isinstance(events[0], AttemptExited) and events[0].exit_code == 6


def test_never_submitted_gets_nothing_and_can_then_be_submitted(
    harness: Harness, orchestrators: Procs
) -> None:
    ran, never = harness.job("d", "sleep 30"), harness.job("never", ["true"])
    crash_after_start(harness, orchestrators, [ran])
    ex = harness.executor()
    recovered = by_id(ex.recover([ran, never]))
    assert set(recovered) == {"d/1"}
    events = run_to_end(ex, [never])
    assert [type(e) for e in events] == [AttemptStarted, AttemptExited]


def test_the_attempt_keeps_running_and_runs_once(harness: Harness, orchestrators: Procs) -> None:
    job = harness.job("e", "sleep 0.4; echo done >> side-effect.txt")
    pids = crash_after_start(harness, orchestrators, [job])
    side_effect = job.work_dir / "side-effect.txt"
    assert not side_effect.exists()
    wait_for(lambda: harness.status(job) is not None)
    assert not wait_gone(pids["e/1"], 0) or side_effect.read_text() == "done\n"
    ex = harness.executor()
    exited = by_id(ex.recover([job]))["e/1"]
    assert isinstance(exited, AttemptExited) and exited.exit_code == 0
    ex.submit(job)
    assert ex.poll(0.3) == []
    assert side_effect.read_text() == "done\n"


@pytest.mark.parametrize("ended", [True, False], ids=["ended-first", "still-running"])
def test_a_submit_to_a_new_shim_never_runs_what_a_dead_one_launched(
    harness: Harness, orchestrators: Procs, ended: bool
) -> None:
    # The attempt's directory exists either way (the orchestrator makes it before the shim
    # hears of it): only the dead shim's journal can tell the new one it was launched.
    job = harness.job("r", "sleep 0.6; echo done >> side-effect.txt")
    pids = crash_after_start(harness, orchestrators, [job])
    if ended:
        wait_for(lambda: harness.status(job) is not None)
    kill_shim(harness)
    ex = harness.executor()
    ex.submit(job)  # no recover first: the same attempt id, submitted again
    events = collect(ex, lambda evs: "r/1" in finals(evs))
    if ended:
        assert [type(e) for e in events] == [AttemptExited]
        assert isinstance(events[0], AttemptExited) and events[0].exit_code == 0
    else:  # adopted, then its exit code, which the dead shim's keeper learned
        assert [type(e) for e in events] == [AttemptStarted, AttemptExited]
        assert isinstance(events[0], AttemptStarted) and events[0].handle == str(pids["r/1"])
    assert wait_gone(pids["r/1"], 5.0)
    assert (job.work_dir / "side-effect.txt").read_text() == "done\n"  # it ran once


def test_a_run_left_by_a_version_with_exit_status_files_resumes_from_them(
    harness: Harness,
) -> None:
    # Earlier versions journaled launches but kept each exit code in <attempt>/exit_status.
    job, other = harness.job("old", ["true"]), harness.job("older", ["true"])
    os.makedirs(job.work_dir)
    (job.attempt_dir / "exit_status").write_text("4\n")
    os.makedirs(harness.layout.state_dir)
    # Recorded as spawned at boot time 0: whatever holds pid 999999 now started later.
    with open(harness.layout.journal, "w") as journal:
        journal.write(
            f'["B","{boot_id()}",1]\n["L","old/1",999999,0.0,1.0]\n["L","older/1",999999,0.0,1.0]\n'
        )
    ex = harness.executor()
    recovered = by_id(ex.recover([job, other]))
    exited = recovered["old/1"]
    assert isinstance(exited, AttemptExited) and exited.exit_code == 4
    lost = recovered["older/1"]  # launched, no status anywhere, not running: lost, not rerun
    assert isinstance(lost, AttemptLost)


def test_kill_after_grace_happens_even_if_the_orchestrator_dies(
    harness: Harness, orchestrators: Procs
) -> None:
    trapped = harness.run_dir / "trapped"
    job = harness.job("g", f"trap '' TERM; touch {trapped}; sleep 30")
    crash_after_start(harness, orchestrators, [job])
    ex = harness.executor()
    assert isinstance(by_id(ex.recover([job]))["g/1"], AttemptStarted)
    wait_for(trapped.exists, 5.0)  # started is not trapped yet: a TERM before the trap kills it
    ex.kill("g/1", 0.3)
    ex.close()  # this orchestrator goes away too: the shim still owes the SIGKILL
    wait_for(lambda: harness.status(job) is not None, 5.0)
    status = harness.status(job)
    assert status is not None and status.code == 128 + 9


def test_shim_killed_under_a_connected_executor_heals(harness: Harness) -> None:
    ex = harness.executor()
    running = harness.job("h", "sleep 0.5")
    ex.submit(running)
    collect(ex, lambda evs: bool(evs))
    kill_shim(harness)
    events = collect(ex, lambda evs: "h/1" in finals(evs))
    healed = finals(events)["h/1"]
    assert isinstance(healed, AttemptExited) and healed.exit_code == 0
    after = run_to_end(ex, [harness.job("after", "exit 4")])  # a new shim took over
    ended = finals(after)["after/1"]
    assert isinstance(ended, AttemptExited) and ended.exit_code == 4
