"""Successors on the real shim: held until the predecessor ends, dropped when killed or orphaned."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from stormproof.core.events import AttemptDropped, AttemptExited, AttemptStarted, Event
from stormproof.executors.base import AttemptJob
from stormproof.executors.local import LocalExecutor
from tests.executors._harness import Harness, collect, finals, kill_shim


def successor(harness: Harness, name: str, command: str, after: AttemptJob) -> AttemptJob:
    return dataclasses.replace(harness.job(name, command), after=after.attempt_id)


def started(events: list[Event], attempt_id: str) -> AttemptStarted | None:
    return next(
        (e for e in events if isinstance(e, AttemptStarted) and e.attempt_id == attempt_id), None
    )


def journal_kinds(harness: Harness, attempt_id: str) -> list[str]:
    lines = Path(harness.layout.journal).read_text().splitlines()
    return [item[0] for item in map(json.loads, lines) if item[0] != "B" and item[1] == attempt_id]


def held(
    harness: Harness, first_cmd: str, second_cmd: str = "touch ran"
) -> tuple[LocalExecutor, AttemptJob, AttemptJob]:
    """A predecessor ``p/1`` running, and ``s/1`` submitted behind it (held by the shim)."""
    ex = harness.executor()
    first = harness.job("p", first_cmd)
    second = successor(harness, "s", second_cmd, first)
    ex.submit(first)
    ex.submit(second)
    collect(ex, lambda evs: started(evs, "p/1") is not None)
    return ex, first, second


def test_a_successor_starts_as_its_predecessor_exits(harness: Harness) -> None:
    ex = harness.executor()
    first = harness.job("p", "sleep 0.4")
    second = successor(harness, "s", "exit 3", first)
    ex.submit(first)
    ex.submit(second)
    events = collect(ex, lambda evs: started(evs, "p/1") is not None)
    events += ex.poll(0.1)
    # held: its logs exist already, it has not started
    assert (second.attempt_dir / "stdout.log").exists() and started(events, "s/1") is None
    events += collect(ex, lambda evs: "s/1" in finals(evs))
    ended = finals(events)
    p_exit, s_start = ended["p/1"], started(events, "s/1")
    assert isinstance(p_exit, AttemptExited) and p_exit.exit_code == 0
    assert s_start is not None and s_start.at >= p_exit.at
    assert s_start.at - p_exit.at < 0.5  # the shim spawned it, no round trip
    s_exit = ended["s/1"]
    assert isinstance(s_exit, AttemptExited) and s_exit.exit_code == 3
    order = [e.attempt_id for e in events if e.attempt_id in ("p/1", "s/1")]  # type: ignore[attr-defined]
    assert order.index("s/1") > order.index("p/1")
    # held, about to spawn, spawned, ended (its usage line "R" may still wait for company)
    assert [k for k in journal_kinds(harness, "s/1") if k != "R"] == ["Q", "I", "L", "X"]


def test_a_successor_of_an_ended_or_unknown_attempt_starts_at_once(harness: Harness) -> None:
    ex = harness.executor()
    orphan = successor(harness, "o", "exit 0", harness.job("nobody", "true"))
    ex.submit(orphan)
    events = collect(ex, lambda evs: "o/1" in finals(evs))
    assert isinstance(finals(events)["o/1"], AttemptExited)


def test_killing_a_held_successor_drops_it_unstarted(harness: Harness) -> None:
    ex, _, second = held(harness, "sleep 0.5")
    ex.kill("s/1", 10.0)
    events = collect(ex, lambda evs: "s/1" in finals(evs))
    assert isinstance(finals(events)["s/1"], AttemptDropped)
    events += collect(ex, lambda evs: "p/1" in finals(evs))
    events += ex.poll(0.3)
    assert started(events, "s/1") is None
    assert not (second.work_dir / "ran").exists()
    assert harness.status(second) is None


def test_a_held_successor_of_a_killed_shim_is_reported_dropped(harness: Harness) -> None:
    _, first, second = held(harness, "sleep 30")
    kill_shim(harness)
    fresh = harness.executor()
    news = {e.attempt_id: e for e in fresh.recover([first, second])}  # type: ignore[attr-defined]
    assert isinstance(news["p/1"], AttemptStarted)  # adopted: it outlived its shim
    dropped = news["s/1"]
    assert isinstance(dropped, AttemptDropped) and "shim died" in dropped.reason
    assert journal_kinds(harness, "s/1") == ["Q"]
    fresh.kill("p/1", 0.0)
    collect(fresh, lambda evs: "p/1" in finals(evs))
    assert not (second.work_dir / "ran").exists()


def test_a_stopping_driver_drops_held_successors(harness: Harness) -> None:
    ex, first, second = held(harness, "sleep 0.5")
    ex.close()  # not final: the driver stops
    fresh = harness.executor()
    news = {e.attempt_id: e for e in fresh.recover([first, second])}  # type: ignore[attr-defined]
    assert isinstance(news["s/1"], AttemptDropped)
    if not isinstance(news["p/1"], AttemptExited):
        collect(fresh, lambda evs: "p/1" in finals(evs))
    assert not (second.work_dir / "ran").exists()
    assert harness.status(first) is not None


def test_withdraw_drops_a_held_successor_but_never_touches_a_started_one(
    harness: Harness,
) -> None:
    ex = harness.executor()
    first = harness.job("p", "sleep 0.3")
    second = successor(harness, "s", "sleep 0.3; touch ran", first)
    third = successor(harness, "t", "touch ran", second)
    for job in (first, second):
        ex.submit(job)
    events = collect(ex, lambda evs: started(evs, "p/1") is not None)
    events += collect(ex, lambda evs: started(evs, "s/1") is not None)  # p ended: s started
    ex.withdraw("s/1")  # too late: it runs on
    ex.submit(third)
    ex.withdraw("t/1")  # still held behind s/1: dropped
    events += collect(ex, lambda evs: {"s/1", "t/1"} <= finals(evs).keys())
    s_exit = finals(events)["s/1"]
    assert isinstance(s_exit, AttemptExited) and s_exit.exit_code == 0
    assert isinstance(finals(events)["t/1"], AttemptDropped)
    assert (second.work_dir / "ran").exists() and not (third.work_dir / "ran").exists()
