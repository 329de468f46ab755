"""The shim killed at its worst moments: no finished attempt is lost, none runs twice.

The worst moments are inside a spawn (see ``_ptrace``): the new attempt exists and will run,
but the shim has not journaled it, nor, when it spawns a held successor, the exit of the
attempt it has just reaped. Killing the shim anywhere else is easier: an attempt that ends
after its shim died still has its exit code recorded (by the keeper, the shim's parent,
which inherits the shim's children), with its CPU time and peak memory.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import socket
from pathlib import Path

from stormproof.core.events import AttemptExited, AttemptStarted
from stormproof.executors._attempt import AttemptRecord
from stormproof.executors._files import Layout, journal_exit_line
from stormproof.executors._shim import Shim
from stormproof.executors.base import AttemptJob
from tests.executors._harness import (
    Harness,
    collect,
    finals,
    keeper_pid,
    kill_shim,
    wait_for,
    wait_gone,
)
from tests.executors._ptrace import SpawnKiller


def successor(harness: Harness, name: str, command: str, after: AttemptJob) -> AttemptJob:
    return dataclasses.replace(harness.job(name, command), after=after.attempt_id)


def runs(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def test_an_attempt_that_ends_after_its_shim_was_killed_keeps_its_exit_code(
    harness: Harness,
) -> None:
    ex = harness.executor()
    job = harness.job("a", "sleep 0.6; exit 3")
    ex.submit(job)
    collect(ex, lambda evs: any(isinstance(e, AttemptStarted) for e in evs))
    kill_shim(harness)
    events = collect(ex, lambda evs: "a/1" in finals(evs))
    exited = finals(events)["a/1"]
    assert isinstance(exited, AttemptExited) and exited.exit_code == 3
    assert exited.cpu_s is not None and exited.max_rss_mib is not None  # the keeper's wait4


def test_a_fresh_executor_learns_the_exit_code_after_shim_and_orchestrator_died(
    harness: Harness,
) -> None:
    first = harness.executor()
    job = harness.job("b", "sleep 0.4; exit 5")
    first.submit(job)
    collect(first, lambda evs: bool(evs))
    first._broken()  # this orchestrator vanishes without a word (as kill -9 would leave it)
    first._live.clear()
    kill_shim(harness)
    wait_for(lambda: harness.status(job) is not None, 10.0)  # written by the keeper
    later = harness.executor()
    (exited,) = later.recover([job])
    assert isinstance(exited, AttemptExited) and exited.exit_code == 5


def test_a_shim_killed_as_it_spawns_a_successor_loses_neither_attempt(
    harness: Harness, tmp_path: Path
) -> None:
    # The shim reaps p/1, then spawns s/1 in its place: it dies inside that spawn.
    side = tmp_path / "side"
    ex = harness.executor()
    first = harness.job("p", f"sleep 0.5; echo p >> {side}")
    second = successor(harness, "s", f"echo s >> {side}", first)
    ex.submit(first)
    ex.submit(second)
    collect(ex, lambda evs: any(isinstance(e, AttemptStarted) for e in evs))
    pid = harness.shim_pid()
    assert pid is not None
    with SpawnKiller(pid) as killer:
        killer.kill_at_next_spawn()
    events = collect(ex, lambda evs: {"p/1", "s/1"} <= finals(evs).keys(), 20.0)
    ended = finals(events)
    assert isinstance(ended["p/1"], AttemptExited) and ended["p/1"].exit_code == 0
    assert isinstance(ended["s/1"], AttemptExited) and ended["s/1"].exit_code == 0
    wait_for(lambda: len(runs(side)) >= 2)
    assert sorted(runs(side)) == ["p", "s"]  # each ran once: nothing dropped that ran


def test_a_shim_killed_inside_a_spawn_reports_what_the_new_process_became(
    harness: Harness, tmp_path: Path
) -> None:
    side = tmp_path / "side"
    ex = harness.executor()
    warm = harness.job("warm", ["true"])
    ex.submit(warm)
    collect(ex, lambda evs: "warm/1" in finals(evs))
    pid = harness.shim_pid()
    assert pid is not None
    job = harness.job("m", f"echo m >> {side}; exit 7")
    with SpawnKiller(pid) as killer:
        ex.submit(job)
        ex.poll(0)  # sends it
        killer.kill_at_next_spawn()
    events = collect(ex, lambda evs: "m/1" in finals(evs), 20.0)
    exited = finals(events)["m/1"]
    assert isinstance(exited, AttemptExited) and exited.exit_code == 7
    ex.submit(job)  # the same attempt again: known, never run twice
    ex.poll(0.3)
    assert runs(side) == ["m"]


def test_a_spawn_the_shim_never_began_is_submitted_again_not_lost(harness: Harness) -> None:
    ex = harness.executor()
    first = harness.job("first", "sleep 30")
    ex.submit(first)
    collect(ex, lambda evs: bool(evs))
    pid = harness.shim_pid()
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)  # it cannot read what comes next
    queued = harness.job("queued", "exit 4")
    ex.submit(queued)
    ex.poll(0)  # written to a shim that never reads it
    os.kill(pid, signal.SIGKILL)
    assert wait_gone(pid)
    events = collect(ex, lambda evs: "queued/1" in finals(evs), 20.0)
    exited = finals(events)["queued/1"]
    assert isinstance(exited, AttemptExited) and exited.exit_code == 4
    ex.kill("first/1", 0.0)
    collect(ex, lambda evs: "first/1" in finals(evs))


def test_keeper_and_shim_both_killed_is_lost_not_rerun(harness: Harness, tmp_path: Path) -> None:
    # Beyond what the keeper covers: with both gone, nobody can learn the exit code.
    side = tmp_path / "side"
    ex = harness.executor()
    job = harness.job("k", f"sleep 0.5; echo k >> {side}")
    ex.submit(job)
    collect(ex, lambda evs: bool(evs))
    keeper = keeper_pid(harness)
    assert keeper is not None
    os.kill(keeper, signal.SIGKILL)
    kill_shim(harness)
    events = collect(ex, lambda evs: "k/1" in finals(evs), 20.0)
    lost = finals(events)["k/1"]
    assert type(lost).__name__ == "AttemptLost"
    assert runs(side) == ["k"]


def test_a_status_written_by_a_keeper_that_leaves_at_once_is_still_found(tmp_path: Path) -> None:
    # The dead shim's keeper journals the last status it owes and exits: a new shim that saw
    # no status yet, then saw the keeper gone, must read the journal once more, not give up.
    # (Found by the chaos suite, seed 101, as a lost attempt whose exit code was journaled.)
    layout = Layout(str(tmp_path / "state"))
    os.makedirs(layout.state_dir)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(tmp_path / "s.sock"))
    shim = Shim(layout, listener, 5.0, 0.0)

    class LeavingKeeper:
        """Writes the status as it is asked whether it lives, then is gone."""

        def is_alive(self) -> bool:
            with open(layout.journal, "ab") as journal:
                journal.write(journal_exit_line('"a/1"', 7, 1.0))
            return False

    rec = AttemptRecord("a/1", str(tmp_path / "a"))
    rec.keeper = LeavingKeeper()  # type: ignore[assignment]
    shim.adoption._await_status(rec)
    assert rec.final is not None and rec.final.startswith('["X"') and ',"a/1",7' in rec.final
    for sock in (listener, shim.wake_r, shim.wake_w):
        sock.close()
    os.close(shim.journal_fd)
