"""Kept and carried tasks (``outcomes.keep``, ``checkpoints.carry``): how a redriven run, or a
run that reuses earlier results, starts from what already succeeded."""

from __future__ import annotations

import pytest

from stormproof.core.decisions import LaunchAttempt, RunFinished, TaskEnded
from stormproof.core.events import (
    AttemptExited,
    AttemptStarted,
    CheckpointCommitted,
    Event,
    InstanceUp,
    RunStarted,
    event_from_dict,
)
from stormproof.core.machine import Workflow
from stormproof.core.states import TaskState

from .builders import dag, workflow

DIAMOND = {"prep": [], "left": ["prep"], "right": ["prep"], "join": ["left", "right"]}


def start(wf: Workflow, event: RunStarted) -> list[object]:
    out: list[object] = list(wf.handle(event))
    for d in list(out):
        if d.__class__.__name__ == "LaunchInstance":
            out += wf.handle(InstanceUp(event.at, d.instance_id))  # type: ignore[attr-defined]
    wf.validate()
    return out


def launched(out: list[object]) -> list[str]:
    return [d.attempt_id for d in out if isinstance(d, LaunchAttempt)]


def test_kept_tasks_end_succeeded_without_an_attempt_and_free_their_children() -> None:
    wf = workflow(dag(DIAMOND))
    out = start(wf, RunStarted(0.0, kept=("prep", "left"), kept_why=("kept", "reused from r0")))
    assert launched(out) == ["right/1"]
    ended = {d.task_id: d.reason for d in out if isinstance(d, TaskEnded)}
    assert ended == {"prep": "kept", "left": "reused from r0"}
    assert wf.task_state("prep") is TaskState.SUCCEEDED
    assert wf.task_state("join") is TaskState.WAITING
    out = wf.handle(AttemptStarted(1.0, "right/1", "1")) + wf.handle(
        AttemptExited(2.0, "right/1", 0)
    )
    assert launched(out) == ["join/1"]  # its kept parent counts as a success
    wf.validate()


def test_every_task_kept_finishes_the_run_succeeded_at_once() -> None:
    wf = workflow(dag(DIAMOND))
    out = start(wf, RunStarted(0.0, kept=tuple(DIAMOND)))
    assert [d.state for d in out if isinstance(d, RunFinished)] == ["succeeded"]
    assert launched(out) == []


def test_a_kept_task_whose_parent_is_not_kept_is_a_bug_named() -> None:
    wf = workflow(dag(DIAMOND))
    with pytest.raises(AssertionError, match="'left' is kept but its parent 'prep' is not"):
        wf.handle(RunStarted(0.0, kept=("left",)))


def test_carried_tasks_number_attempts_and_checkpoints_after_the_earlier_ones() -> None:
    tasks = dag({"sim": []}, overrides={"sim": {"checkpoint_enabled": True}})
    wf = workflow(tasks)
    out = start(wf, RunStarted(0.0, carried=(("sim", 3, (4, 5), 7),)))
    (launch,) = [d for d in out if isinstance(d, LaunchAttempt)]
    assert launch.attempt_id == "sim/4"
    assert launch.restore_from == (5, 4)  # newest first, from before the redrive
    assert wf.next_checkpoint_seq("sim") == 8  # after 7, the highest ever used
    wf.handle(CheckpointCommitted(1.0, "sim/4", 8))
    assert wf.next_checkpoint_seq("sim") == 9


def test_a_changed_task_carries_no_checkpoint_but_never_reuses_a_seq() -> None:
    tasks = dag({"sim": []}, overrides={"sim": {"checkpoint_enabled": True}})
    wf = workflow(tasks)
    out = start(wf, RunStarted(0.0, carried=(("sim", 2, (), 6),)))
    (launch,) = [d for d in out if isinstance(d, LaunchAttempt)]
    assert (launch.attempt_id, launch.restore_from) == ("sim/3", ())
    assert wf.next_checkpoint_seq("sim") == 7


def test_the_event_survives_the_log_and_replays_to_the_same_state() -> None:
    event = RunStarted(5.0, ("prep",), ("kept",), (("left", 2, (1,), 3),))
    stored = event_from_dict("RunStarted", _through_json(event))
    assert stored == event
    first, second = workflow(dag(DIAMOND)), workflow(dag(DIAMOND))
    assert start(first, event) == start(second, stored)


def test_a_log_from_before_kept_existed_reads_as_a_plain_start() -> None:
    assert event_from_dict("RunStarted", {"at": 1.0}) == RunStarted(1.0)


def _through_json(event: Event) -> dict[str, object]:
    import json

    data: dict[str, object] = json.loads(json.dumps(event.to_dict()))
    return data
