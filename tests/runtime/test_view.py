"""The status view's reading of the log, fed rows the real core produced."""

from __future__ import annotations

import pytest

from stormproof.core.decisions import Decision, LaunchAttempt
from stormproof.core.defs import Market, PoolDef, Resources, RunOptions
from stormproof.core.events import AttemptExited, AttemptStarted, Event, InterruptionNotice
from stormproof.core.machine import Workflow
from stormproof.runtime.view import RunView, TaskView
from stormproof.store.base import Row

from ..core.builders import begin, dag

SPOT = PoolDef("spot", Market.SPOT, Resources(4, 8192), 2, price_usd_per_h=0.36)
OD = PoolDef("od", Market.ON_DEMAND, Resources(4, 8192), 1, price_usd_per_h=0.72)


def rows_of(event: Event, decisions: list[Decision], seq: int) -> list[Row]:
    """What the driver appends for one event: the event, then the decisions it caused."""
    rows = [Row(seq, "event", event.kind, event.at, None, event.to_dict())]
    rows += [
        Row(seq + k, "decision", d.kind, event.at, seq, d.to_dict())
        for k, d in enumerate(decisions, 1)
    ]
    return rows


def test_interruptions_count_attempts_taken_away_not_notices_to_idle_instances() -> None:
    wf = Workflow(dag({"a": []}, vcpus=4, memory=8192), RunOptions(pools=(SPOT, OD)))
    view = RunView(name="r", workflow="w")
    view.tasks["a"] = TaskView("a", "a", 0)
    log: list[Row] = []

    def feed(event: Event) -> list[Decision]:
        out = wf.handle(event)
        log.extend(rows_of(event, out, len(log) + 1))
        return out

    out = begin(wf)  # RunStarted and the fleet coming up, logged as one batch for brevity
    for d in out:
        log.append(Row(len(log) + 1, "decision", d.kind, 0.0, None, d.to_dict()))
    (launch,) = [d for d in out if isinstance(d, LaunchAttempt)]
    assert launch.instances == ("spot-0",)
    feed(AttemptStarted(1, launch.attempt_id, "pid"))
    feed(InterruptionNotice(5, "spot-1", 120, "trace"))  # idle: interrupts nothing
    feed(InterruptionNotice(6, "spot-0", 120, "trace"))  # busy: takes a/1 away
    feed(AttemptExited(7, launch.attempt_id, 143))
    view.apply(log)

    assert view.instance_notices == 2
    assert view.interruptions() == 1
    data = view.to_json()
    assert (data["interruptions"], data["instance_notices"]) == (1, 2)


def test_an_attempt_shows_the_nodes_its_backend_chose_when_the_core_chose_none() -> None:
    """A delegated pool (a Slurm partition): the launch names no instance, the start does;
    the nodes survive the log's round trip as a tuple, as the core compares them."""
    from stormproof.core.events import event_from_dict

    started = AttemptStarted(2.0, "a/1", "4711", ("node-a", "node-b"))
    stored = json_round_trip(started.to_dict())
    assert event_from_dict("AttemptStarted", stored) == started
    launch = LaunchAttempt("a/1", "a", 1, (), "spot", "placed in partition spot")
    view = RunView(name="r", workflow="w")
    view.tasks["a"] = TaskView("a", "a", 0)
    view.apply(
        [
            Row(1, "decision", launch.kind, 1.0, None, launch.to_dict()),
            Row(2, "event", started.kind, 2.0, None, stored),
        ]
    )
    attempt = view.to_json()["tasks"]["a"]["attempts"][0]
    assert (attempt["state"], attempt["instance"], attempt["instances"]) == (
        "running",
        "node-a",
        ["node-a", "node-b"],
    )


def json_round_trip(data: dict[str, object]) -> dict[str, object]:
    import json

    loaded: dict[str, object] = json.loads(json.dumps(data))
    return loaded


def test_a_running_attempt_on_a_delegated_pool_costs_from_its_start_not_its_submit() -> None:
    launch = LaunchAttempt("a/1", "a", 1, (), "spot", "submitted to spot", usd_per_h=3.6)
    started = AttemptStarted(100.0, "a/1", "4711", ("n1",))
    view = RunView(name="r", workflow="w", delegated={"spot": 100})
    view.tasks["a"] = TaskView("a", "a", 0)
    view.apply([Row(1, "decision", launch.kind, 0.0, None, launch.to_dict())])
    assert view.cost(50.0).spent == 0.0  # queued: nothing billed yet
    assert view.outstanding("spot") == 1
    view.apply([Row(2, "event", started.kind, 100.0, None, started.to_dict())])
    assert view.cost(110.0).spent == pytest.approx(10 * 3.6 / 3600)
