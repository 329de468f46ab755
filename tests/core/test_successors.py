"""Successor placement: a ready task queued behind a running attempt, to start as it ends."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import pytest

from stormproof.core.decisions import (
    AttemptEnded,
    Decision,
    KillAttempt,
    LaunchAttempt,
    StartTimer,
    TaskEnded,
    TaskReady,
    WithdrawAttempt,
)
from stormproof.core.defs import Market, OnFailure, PoolDef, Resources, RunOptions, TaskDef
from stormproof.core.events import (
    AttemptDropped,
    AttemptExited,
    AttemptLost,
    AttemptPreempted,
    AttemptStarted,
    CancelRequested,
    Event,
    InstanceLost,
    InterruptionNotice,
    RunResumed,
    StopRequested,
    TimerFired,
)
from stormproof.core.machine import Workflow
from stormproof.core.successors import note_run_time

from .builders import begin, dag, pool


def make(
    tasks: Sequence[TaskDef],
    pools: Sequence[PoolDef] | None = None,
    successors: int = 1,
    max_parallel: int | None = None,
) -> tuple[Workflow, list[Decision]]:
    options = RunOptions(
        pools=tuple(pools or [pool(vcpus=2)]), successors=successors, max_parallel=max_parallel
    )
    wf = Workflow(tasks, options)
    out = begin(wf)
    wf.validate()
    return wf, out


def launches(out: Sequence[Decision]) -> dict[str, str]:
    """attempt id -> the attempt it is queued behind ("" when placed on free capacity)."""
    return {d.attempt_id: d.after for d in out if isinstance(d, LaunchAttempt)}


def feed(wf: Workflow, *events: object) -> list[Decision]:
    out: list[Decision] = []
    for e in events:
        out += wf.handle(e)  # type: ignore[arg-type]
        wf.validate()
    return out


FLAT = {t: [] for t in "abcde"}


def test_a_successor_is_queued_only_when_free_capacity_is_full() -> None:
    wf, out = make(dag({"a": [], "b": [], "c": []}))
    assert launches(out) == {"a/1": "", "b/1": "", "c/1": "a/1"}
    assert not wf.attempts["c/1"].holds
    _, out = make(dag({"a": [], "b": [], "c": []}), [pool(vcpus=4)])
    assert launches(out) == {"a/1": "", "b/1": "", "c/1": ""}  # never instead of free room


def test_off_by_default_and_at_zero() -> None:
    _, out = make(dag({"a": [], "b": [], "c": []}), successors=0)
    assert launches(out) == {"a/1": "", "b/1": ""}


def test_the_reservation_moves_to_the_successor_when_its_predecessor_ends() -> None:
    tasks = dag({"a": [], "b": [], "c": [], "d": []})
    wf, out = make(tasks)
    assert launches(out) == {"a/1": "", "b/1": "", "c/1": "a/1", "d/1": "b/1"}
    inst = wf.capacity.instances["local-0"]
    out = feed(wf, AttemptStarted(1, "a/1", "1"), AttemptExited(2, "a/1", 0))
    assert launches(out) == {}  # nothing new launched: c/1 took a/1's place
    assert wf.attempts["c/1"].holds and inst.attempts == {"b/1", "c/1"}
    assert inst.free == Resources(0, 4096 - 200, 0)
    assert wf.attempts["c/1"].launched_at == 2  # billed from when it holds the place


def test_a_smaller_successor_leaves_the_rest_free_and_a_larger_task_never_queues() -> None:
    tasks = dag(
        {"big": [], "small": [], "huge": []},
        overrides={
            "big": {"resources": Resources(2, 100)},
            "huge": {"resources": Resources(2, 200)},
        },
    )
    wf, out = make(tasks)
    assert launches(out) == {"big/1": "", "small/1": "big/1"}  # huge needs more memory
    out = feed(wf, AttemptExited(1, "big/1", 0))
    assert wf.capacity.instances["local-0"].free == Resources(1, 4096 - 100, 0)


def test_chains_are_as_deep_as_the_option_allows() -> None:
    one_slot = [pool(vcpus=1)]
    _, out = make(dag(FLAT), one_slot, successors=1)
    assert launches(out) == {"a/1": "", "b/1": "a/1"}
    wf, out = make(dag(FLAT), one_slot, successors=2)
    assert launches(out) == {"a/1": "", "b/1": "a/1"}  # no run time known yet: one deep
    out = feed(wf, AttemptStarted(0.0, "a/1", "1"), AttemptExited(0.1, "a/1", 0))
    assert launches(out) == {"c/1": "b/1", "d/1": "c/1"}  # a ran 0.1 s: two deep now
    out = feed(wf, AttemptStarted(0.1, "b/1", "2"), AttemptExited(0.2, "b/1", 0))
    assert launches(out) == {"e/1": "d/1"}  # c holds the place now: d is one deep, e two
    assert wf.attempts["c/1"].holds and not wf.attempts["d/1"].holds


def test_chains_stay_one_deep_behind_attempts_that_run_long() -> None:
    """A deep queue saves a round trip per task; behind long attempts it would only hold
    ready tasks back (a higher-ranked one that becomes ready could not pass them)."""
    one_slot = [pool(vcpus=1)]
    wf, _ = make(dag({f"t{i:02}": [] for i in range(20)}), one_slot, successors=3)
    out = feed(wf, AttemptStarted(0.0, "t00/1", "1"), AttemptExited(5.0, "t00/1", 0))
    assert launches(out) == {"t02/1": "t01/1"}  # t00 ran 5 s, longer than the 1 s patience
    queued = []
    now = 5.0
    for i in range(1, 12):  # short attempts from now on: the moving average comes down
        queued.append(sum(not a.holds for a in wf.attempts.values()))
        feed(wf, AttemptStarted(now, f"t{i:02}/1", "x"), AttemptExited(now + 0.01, f"t{i:02}/1", 0))
        now += 0.01
    assert queued[:3] == [1, 1, 1]  # one short run does not outweigh a long one at once
    assert queued[-1] == 3  # then three queue behind the one place


def test_max_parallel_counts_places_not_queued_successors() -> None:
    _, out = make(dag(FLAT), [pool(vcpus=4)], max_parallel=2)
    assert launches(out) == {"a/1": "", "b/1": "", "c/1": "a/1", "d/1": "b/1"}


def test_no_successors_on_spot_or_on_pools_that_can_be_interrupted() -> None:
    spot = PoolDef("spot", Market.SPOT, Resources(2, 4096), 1)
    _, out = make(dag({"a": [], "b": [], "c": []}), [spot])
    assert launches(out) == {"a/1": "", "b/1": ""}
    rated = PoolDef("od", Market.ON_DEMAND, Resources(2, 4096), 1, interruptible=True)
    _, out = make(dag({"a": [], "b": [], "c": []}), [rated])
    assert launches(out) == {"a/1": "", "b/1": ""}


def test_multi_node_and_checkpointed_tasks_never_queue() -> None:
    tasks = dag(
        {"a": [], "b": [], "c": [], "d": []},
        overrides={"c": {"checkpoint_enabled": True}, "d": {"nodes": 2}},
    )
    _, out = make(tasks, [pool(vcpus=1, count=2)])
    assert "c/1" not in launches(out) and launches(out).get("d/1", "") == ""


def test_a_lost_instance_sends_its_queued_successor_back_to_ready_at_no_cost() -> None:
    wf, out = make(dag({"a": [], "b": []}), [pool(vcpus=1)])
    assert launches(out) == {"a/1": "", "b/1": "a/1"}
    out = feed(wf, AttemptStarted(1, "a/1", "1"), InstanceLost(2, "local-0", "gone"))
    kills = [d.attempt_id for d in out if isinstance(d, KillAttempt)]
    assert kills[:2] == ["b/1", "a/1"]  # the queued one first: it must never start
    ended = {d.attempt_id: d for d in out if isinstance(d, AttemptEnded)}
    assert ended["b/1"].state == "dropped" and ended["b/1"].budget is None
    assert ended["b/1"].cost_usd == 0
    assert ended["a/1"].state == "lost"
    b = wf.index["b"]
    assert wf.interruptions[b] == 0 and not any(wf.retries_used.get(b, []))
    assert any(isinstance(d, TaskReady) and d.task_id == "b" for d in out)


def test_a_lost_instance_during_a_cancel_ends_the_attempt_and_its_successor_cancelled() -> None:
    wf, _ = make(dag({"a": [], "b": []}), [pool(vcpus=1)])
    out = feed(wf, AttemptStarted(1, "a/1", "1"), CancelRequested(2))
    out = feed(wf, InstanceLost(3, "local-0", "gone"))
    ended = {d.attempt_id: d.state for d in out if isinstance(d, AttemptEnded)}
    assert ended == {"b/1": "cancelled", "a/1": "cancelled"}
    assert not launches(out) and wf.final == "cancelled"


def test_an_interruption_notice_kills_the_queued_successor_which_returns_to_ready() -> None:
    wf, _ = make(dag({"a": [], "b": []}), [pool(vcpus=1)])
    out = feed(wf, AttemptStarted(1, "a/1", "1"), InterruptionNotice(2, "local-0", 30, "cli"))
    kills = [d.attempt_id for d in out if isinstance(d, KillAttempt)]
    assert kills == ["b/1", "a/1"]
    # the predecessor dies of its kill first: the successor cannot take a place that is going
    out = feed(wf, AttemptExited(3, "a/1", 143))
    assert not wf.attempts["b/1"].holds
    out = feed(wf, AttemptDropped(3, "b/1", "killed while queued"))
    assert wf.task_state("b").value == "ready"
    assert wf.interruptions[wf.index["b"]] == 0


@pytest.mark.parametrize(
    ("reported", "why"),
    [
        (AttemptExited(3, "b/1", 143), "killed as a queued successor (exit 143)"),
        (AttemptLost(3, "b/1", "its shim died"), "lost as a queued successor: its shim died"),
        (AttemptPreempted(3, "b/1", "PREEMPTED"), "preempted as a queued successor: PREEMPTED"),
    ],
)
def test_a_killed_queued_successor_ends_dropped_however_its_end_is_reported(
    reported: Event, why: str
) -> None:
    """A backend may report the kill of a queued successor as an exit, a loss or a preemption
    (the kill raced its start): it still ran nothing the core counts, so no budget is drawn."""
    wf, _ = make(dag({"a": [], "b": []}), [pool(vcpus=1)])
    feed(wf, AttemptStarted(1, "a/1", "1"), InterruptionNotice(2, "local-0", 30, "cli"))
    feed(wf, AttemptExited(3, "a/1", 143))
    out = feed(wf, reported)
    (ended,) = [d for d in out if isinstance(d, AttemptEnded) and d.attempt_id == "b/1"]
    assert (ended.state, ended.error, ended.budget, ended.reason) == ("dropped", None, None, why)
    assert ended.exit_code is None and ended.cost_usd == 0
    b = wf.index["b"]
    assert wf.task_state("b").value in ("ready", "running")
    assert wf.interruptions[b] == 0 and not any(wf.retries_used.get(b, []))


def test_a_queued_successor_that_finished_before_its_kill_arrived_succeeded() -> None:
    wf, _ = make(dag({"a": [], "b": []}), [pool(vcpus=1)])
    feed(wf, AttemptStarted(1, "a/1", "1"), InterruptionNotice(2, "local-0", 30, "cli"))
    out = feed(wf, AttemptExited(3, "a/1", 143), AttemptExited(3, "b/1", 0))
    ended = {d.attempt_id: d.state for d in out if isinstance(d, AttemptEnded)}
    assert ended["b/1"] == "succeeded"
    assert wf.task_state("b").value == "succeeded"


def test_on_stop_dropped_successors_are_ready_again_and_placed_afresh_on_resume() -> None:
    wf, _ = make(dag({"a": [], "b": []}), [pool(vcpus=1)])
    out = feed(wf, StopRequested(1), AttemptDropped(1, "b/1", "the run stopped"))
    assert launches(out) == {} and wf.task_state("b").value == "ready"
    assert not any(wf.retries_used.get(wf.index["b"], [])) and wf.interruptions[1] == 0
    out = feed(wf, RunResumed(2))
    assert launches(out) == {"b/2": "a/1"}


def test_cancel_kills_queued_successors_first_and_their_drop_ends_them_cancelled() -> None:
    wf, _ = make(dag({"a": [], "b": []}), [pool(vcpus=1)])
    out = feed(wf, CancelRequested(1))
    assert [d.attempt_id for d in out if isinstance(d, KillAttempt)] == ["b/1", "a/1"]
    out = feed(wf, AttemptDropped(2, "b/1", "killed while queued"), AttemptExited(2, "a/1", 143))
    ended = {d.task_id: d.state for d in out if isinstance(d, TaskEnded)}
    assert ended == {"b": "cancelled", "a": "cancelled"}
    assert wf.final == "cancelled"


def test_a_failing_predecessor_still_hands_its_place_over() -> None:
    wf, _ = make(dag({"a": [], "b": []}, on_failure=OnFailure.CONTINUE), [pool(vcpus=1)])
    out = feed(wf, AttemptStarted(1, "a/1", "1"), AttemptExited(2, "a/1", 1))
    assert wf.attempts["b/1"].holds
    out = feed(wf, AttemptStarted(2, "b/1", "2"), AttemptExited(3, "b/1", 0))
    assert wf.final == "failed"
    assert {d.task_id: d.state for d in out if isinstance(d, TaskEnded)} == {"b": "succeeded"}


def test_a_successor_stuck_behind_a_long_attempt_is_withdrawn_when_a_place_frees() -> None:
    wf, out = make(dag({"long": [], "short": [], "c": []}))
    assert launches(out) == {"long/1": "", "short/1": "", "c/1": "long/1"}
    feed(wf, AttemptStarted(0, "long/1", "1"), AttemptStarted(0, "short/1", "2"))
    out = feed(wf, AttemptExited(0.4, "short/1", 0))  # a place is free, but only just
    assert not [d for d in out if isinstance(d, WithdrawAttempt)]
    timers = [d for d in out if isinstance(d, StartTimer) and d.timer_id == "withdraw"]
    assert [t.fire_at for t in timers] == [1.0]  # long/1's patience (1 s) is over then
    out = feed(wf, TimerFired(1.0, "withdraw"))
    assert [d.attempt_id for d in out if isinstance(d, WithdrawAttempt)] == ["c/1"]
    out = feed(wf, AttemptDropped(1.01, "c/1", "withdrawn"))
    assert launches(out) == {"c/2": ""}  # on the free place, no budget used
    assert not any(wf.retries_used.get(wf.index["c"], [])) and wf.interruptions[2] == 0


def test_a_withdrawn_successor_that_started_first_simply_runs() -> None:
    wf, _ = make(dag({"long": [], "short": [], "c": []}))
    feed(wf, AttemptStarted(0, "long/1", "1"), AttemptStarted(0, "short/1", "2"))
    out = feed(wf, AttemptExited(5, "short/1", 0))
    assert [d.attempt_id for d in out if isinstance(d, WithdrawAttempt)] == ["c/1"]
    # the predecessor ended and the shim started c/1 before the withdrawal arrived
    out = feed(wf, AttemptExited(5.001, "long/1", 0), AttemptStarted(5.001, "c/1", "3"))
    assert wf.attempts["c/1"].holds and wf.attempts["c/1"].kill_reason is None
    out = feed(wf, AttemptExited(6, "c/1", 0))
    assert wf.final == "succeeded"


def test_no_withdrawal_while_max_parallel_holds_every_place() -> None:
    wf, out = make(dag({"a": [], "b": []}), [pool(vcpus=4)], max_parallel=1)
    assert launches(out) == {"a/1": "", "b/1": "a/1"}
    out = feed(wf, AttemptStarted(0, "a/1", "1"), TimerFired(50, "nothing"))
    out = feed(wf, RunResumed(60))  # any event: dispatch looks again
    assert not [d for d in out if isinstance(d, (WithdrawAttempt, StartTimer))]


def test_patience_counts_from_when_the_predecessor_started_not_from_its_launch() -> None:
    wf, _ = make(dag({"long": [], "short": [], "c": []}))
    feed(wf, AttemptStarted(0.6, "long/1", "1"), AttemptStarted(0, "short/1", "2"))
    out = feed(wf, AttemptExited(0.7, "short/1", 0))
    timers = [d for d in out if isinstance(d, StartTimer) and d.timer_id == "withdraw"]
    assert [t.fire_at for t in timers] == [1.6]  # 1 s after long/1 started
    out = feed(wf, TimerFired(1.6, "withdraw"))
    (withdraw,) = [d for d in out if isinstance(d, WithdrawAttempt)]
    assert withdraw.reason == "a place is free and long/1 has held it for 1s"


def test_a_max_parallel_with_a_place_to_spare_still_withdraws() -> None:
    wf, out = make(dag({"long": [], "short": [], "c": []}), max_parallel=2)
    assert launches(out) == {"long/1": "", "short/1": "", "c/1": "long/1"}
    feed(wf, AttemptStarted(0, "long/1", "1"), AttemptStarted(0, "short/1", "2"))
    out = feed(wf, AttemptExited(5, "short/1", 0))  # one place in use of the two allowed
    assert [d.attempt_id for d in out if isinstance(d, WithdrawAttempt)] == ["c/1"]


def test_the_typical_run_time_moves_a_quarter_of_the_way_to_each_new_one() -> None:
    wf, _ = make(dag({"a": []}))
    note_run_time(wf, 8.0)  # the first is taken as it is
    note_run_time(wf, 4.0)
    assert wf._typical_run_s == 7.0


def _unlinked(wf: Workflow) -> None:
    wf.attempts["a/1"].successor = None


def _moved(wf: Workflow) -> None:
    wf.attempts["c/1"].instances = ("elsewhere",)


def _grown(wf: Workflow) -> None:
    c = wf.attempts["c/1"]
    c.need = dataclasses.replace(c.need, vcpus=c.need.vcpus + 1)


def _too_deep(wf: Workflow) -> None:
    wf.options = dataclasses.replace(wf.options, successors=0)


def _interruptible(wf: Workflow) -> None:
    wf._steady = frozenset()


@pytest.mark.parametrize(
    ("corrupt", "says"),
    [
        (_unlinked, "which is not live"),
        (_moved, "does not fit the place of a/1"),
        (_grown, "does not fit the place of a/1"),
        (_too_deep, "queued deeper than 0"),
        (_interruptible, "which may be interrupted"),
    ],
)
def test_the_queued_successor_invariant_catches_each_violation(
    corrupt: Callable[[Workflow], None], says: str
) -> None:
    """The property tests call ``validate`` after every event; it must catch each of these."""
    wf, out = make(dag({"a": [], "b": [], "c": []}))
    assert launches(out)["c/1"] == "a/1"
    corrupt(wf)
    with pytest.raises(AssertionError, match=says):
        wf.validate()


def test_a_successor_is_withdrawn_once_and_its_timer_armed_once() -> None:
    wf, _ = make(dag({"long": [], "short": [], "c": []}))
    feed(wf, AttemptStarted(0, "long/1", "1"), AttemptStarted(0, "short/1", "2"))
    feed(wf, AttemptExited(0.4, "short/1", 0))  # the timer is armed for 1.0
    out = feed(wf, RunResumed(0.5))  # dispatch looks again: the same timer stands
    assert not [d for d in out if isinstance(d, StartTimer)]
    out = feed(wf, TimerFired(1.0, "withdraw"))
    assert [d.attempt_id for d in out if isinstance(d, WithdrawAttempt)] == ["c/1"]
    out = feed(wf, RunResumed(1.1))  # the withdrawal is on its way: not asked again
    assert not [d for d in out if isinstance(d, WithdrawAttempt)]
