"""Scenario tests of the pure core: no processes, no clock, events in and decisions out."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable

import pytest

from stormproof.core.decisions import (
    AttemptEnded,
    BreakerChanged,
    Decision,
    KillAttempt,
    LaunchAttempt,
    RunFinished,
    StartTimer,
    TaskEnded,
    TaskRetrying,
)
from stormproof.core.defs import BreakerRule, OnFailure, RetryRule, RunOptions
from stormproof.core.events import (
    AttemptExited,
    AttemptLost,
    AttemptPreempted,
    AttemptStarted,
    AttemptSubmitFailed,
    CancelRequested,
    InstanceUp,
    RunResumed,
    RunStarted,
    StopRequested,
    TimerFired,
)
from stormproof.core.machine import Workflow
from stormproof.core.states import TaskState

from .builders import begin, dag, pool, workflow

RECIPE_TIER_1 = RetryRule(("States.ALL",), 30.0, 3, 2.0)
RECIPE_TIER_2 = RetryRule(("States.ALL",), 60.0, 2, 3.0)


def launches(ds: list[Decision]) -> list[str]:
    return [d.attempt_id for d in ds if isinstance(d, LaunchAttempt)]


def of(ds: list[Decision], kind: type) -> list:  # type: ignore[type-arg]
    return [d for d in ds if isinstance(d, kind)]


def run_ok(wf: Workflow, attempt_id: str, at: float) -> list[Decision]:
    out = wf.handle(AttemptStarted(at, attempt_id, "1"))
    out += wf.handle(AttemptExited(at + 1, attempt_id, 0))
    wf.validate()
    return out


def test_chain_runs_in_dependency_order_and_finishes() -> None:
    wf = workflow(dag({"a": [], "b": ["a"], "c": ["b"]}))
    assert launches(begin(wf)) == ["a/1"]
    assert launches(run_ok(wf, "a/1", 1)) == ["b/1"]
    assert launches(run_ok(wf, "b/1", 3)) == ["c/1"]
    out = run_ok(wf, "c/1", 5)
    assert of(out, RunFinished) == [RunFinished("succeeded", "all 3 tasks ended")]
    assert wf.finished


def test_task_starts_as_soon_as_its_own_parents_succeed_not_at_stage_barriers() -> None:
    # a -> c ; b (slow) ; c must not wait for b, which is in the same "stage" as a.
    wf = workflow(dag({"a": [], "b": [], "c": ["a"]}), [pool(vcpus=4)])
    assert sorted(launches(begin(wf))) == ["a/1", "b/1"]
    wf.handle(AttemptStarted(0, "b/1", "2"))
    assert launches(run_ok(wf, "a/1", 1)) == ["c/1"]
    assert wf.task_state("b") is TaskState.RUNNING


def test_capacity_limits_parallel_attempts_by_vcpus_and_memory() -> None:
    tasks = dag({t: [] for t in "abcd"}, vcpus=1, memory=1000)
    wf = workflow(tasks, [pool(vcpus=8, memory=2500)])
    assert len(launches(begin(wf))) == 2  # memory allows two
    wf.validate()


def test_max_parallel_caps_live_attempts() -> None:
    wf = workflow(dag({t: [] for t in "abcde"}), [pool(vcpus=64, memory=10**6)], max_parallel=3)
    assert len(launches(begin(wf))) == 3
    assert len(launches(run_ok(wf, "a/1", 1))) == 1


def test_ready_tasks_run_longest_remaining_path_first() -> None:
    tasks = dag({"short": [], "long": []}, overrides={"long": {"priority": 10.0}})
    wf = workflow(tasks, [pool(vcpus=1)])
    assert launches(begin(wf)) == ["long/1"]


def test_recipe_retry_tiers_back_off_30_60_120_then_60_180() -> None:
    wf = workflow(dag({"a": []}, retry=[RECIPE_TIER_1, RECIPE_TIER_2]))
    begin(wf)
    delays = []
    for n in range(1, 7):
        wf.handle(AttemptStarted(n * 1000, f"a/{n}", "1"))
        out = wf.handle(AttemptExited(n * 1000 + 1, f"a/{n}", 1))
        retry = of(out, TaskRetrying)
        if not retry:
            assert of(out, TaskEnded)[0].state == "failed"
            break
        delays.append(retry[0].delay_s)
        timer = of(out, StartTimer)[0]
        assert wf.task_state("a") is TaskState.BACKOFF
        assert launches(wf.handle(TimerFired(timer.fire_at, timer.timer_id))) == [f"a/{n + 1}"]
    assert delays == [30.0, 60.0, 120.0, 60.0, 180.0]
    assert wf.finished


def test_full_jitter_is_deterministic_and_below_the_computed_delay() -> None:
    rule = RetryRule(("States.ALL",), 100.0, 5, 2.0, jitter=True)

    def first_delay(seed: int) -> float:
        wf = workflow(dag({"a": []}, retry=[rule]), seed=seed)
        begin(wf)
        return of(wf.handle(AttemptExited(1, "a/1", 1)), TaskRetrying)[0].delay_s

    assert first_delay(7) == first_delay(7)
    assert 0 <= first_delay(7) < 100
    assert len({first_delay(s) for s in range(10)}) > 5


def test_max_delay_caps_backoff() -> None:
    rule = RetryRule(("States.ALL",), 10.0, 5, 10.0, max_delay_s=50.0)
    wf = workflow(dag({"a": []}, retry=[rule]))
    begin(wf)
    wf.handle(AttemptExited(1, "a/1", 1))
    wf.handle(TimerFired(11, "retry:a:1"))
    assert of(wf.handle(AttemptExited(12, "a/2", 1)), TaskRetrying)[0].delay_s == 50.0


def test_timeout_kills_then_counts_as_task_timeout_for_retriers() -> None:
    only_failed = RetryRule(("Task.Failed",), 1.0, 3, 2.0)
    wf = workflow(dag({"a": []}, retry=[only_failed], timeout_s=5.0))
    begin(wf)
    out = wf.handle(AttemptStarted(0, "a/1", "1"))
    timer = of(out, StartTimer)[0]
    assert timer.fire_at == 5.0
    kill = of(wf.handle(TimerFired(5.0, timer.timer_id)), KillAttempt)
    assert kill and kill[0].attempt_id == "a/1"
    out = wf.handle(AttemptExited(6, "a/1", 143))
    ended = of(out, AttemptEnded)[0]
    assert (ended.state, ended.error) == ("timed_out", "Task.Timeout")
    assert of(out, TaskEnded)[0].error == "Task.Timeout"  # Task.Failed retrier does not match


def test_states_task_failed_does_not_match_a_timeout_but_states_all_does() -> None:
    assert not RetryRule(("States.TaskFailed",), 1, 1, 1).matches("Task.Timeout")
    assert RetryRule(("States.TaskFailed",), 1, 1, 1).matches("Task.Failed")
    assert RetryRule(("States.ALL",), 1, 1, 1).matches("Task.Timeout")


def test_lost_attempts_use_the_interruption_budget_not_retries() -> None:
    wf = workflow(dag({"a": []}, retry=[RetryRule(("States.ALL",), 1, 1, 1)], max_interruptions=2))
    begin(wf)
    for n in (1, 2):
        out = wf.handle(AttemptLost(n, f"a/{n}", "node died"))
        assert of(out, TaskRetrying)[0].budget == "interruptions"
        assert launches(out) == [f"a/{n + 1}"]  # requeued at once, no backoff
    out = wf.handle(AttemptLost(3, "a/3", "node died"))
    assert of(out, TaskEnded)[0].error == "Node.Lost"  # the retry budget was never touched
    assert wf.retries_used.get(0, [0]) == [0]


def test_a_preempted_attempt_is_an_interruption_and_a_fault_of_its_pool() -> None:
    retry = [RetryRule(("States.ALL",), 1, 1, 1)]
    tasks = dag({"a": []}, retry=retry, max_interruptions=1)
    options = RunOptions(pools=(pool(),), breaker=BreakerRule(threshold=2))
    wf = Workflow(tasks, options)
    begin(wf)
    wf.handle(AttemptStarted(1, "a/1", "41", ("node1",)))
    out = wf.handle(AttemptPreempted(2, "a/1", "PREEMPTED by a higher-priority job"))
    ended = of(out, AttemptEnded)[0]
    assert (ended.state, ended.error, ended.budget) == (
        "interrupted",
        "Capacity.Interrupted",
        "interruptions",
    )
    assert "PREEMPTED by a higher-priority job" in ended.reason
    assert launches(out) == ["a/2"]  # requeued at once, no backoff
    assert len(wf.breakers["local"].faults) == 1
    out = wf.handle(AttemptPreempted(3, "a/2", "PREEMPTED"))
    assert of(out, TaskEnded)[0].error == "Capacity.Interrupted"  # budget of 1 spent
    assert of(out, BreakerChanged)[0].state == "open"  # the second fault in the window
    assert wf.retries_used.get(0, [0]) == [0]
    wf.validate()


def test_the_backends_time_limit_is_a_task_timeout() -> None:
    wf = workflow(dag({"a": []}, retry=[RetryRule(("Task.Timeout",), 1, 1, 1)]))
    begin(wf)
    out = wf.handle(AttemptExited(1, "a/1", 143, timed_out=True))
    assert of(out, AttemptEnded)[0].state == "timed_out"
    assert of(out, TaskRetrying)[0].error == "Task.Timeout"


def test_submit_failure_is_a_task_failure() -> None:
    wf = workflow(dag({"a": []}))
    begin(wf)
    out = wf.handle(AttemptSubmitFailed(1, "a/1", "sbatch: invalid partition"))
    assert of(out, TaskEnded)[0].error == "Task.Failed"


def test_on_failure_continue_runs_independent_tasks_and_skips_descendants() -> None:
    tasks = dag({"a": [], "b": ["a"], "c": ["b"], "x": []}, on_failure=OnFailure.CONTINUE)
    wf = workflow(tasks, [pool(vcpus=4)])
    begin(wf)
    out = wf.handle(AttemptExited(1, "a/1", 2))
    assert {(e.task_id, e.state) for e in of(out, TaskEnded)} == {
        ("a", "failed"),
        ("b", "skipped"),
        ("c", "skipped"),
    }
    assert wf.task_state("x") is TaskState.RUNNING
    out = run_ok(wf, "x/1", 2)
    assert of(out, RunFinished)[0].state == "failed"


def test_on_failure_fail_kills_running_attempts_and_skips_the_rest() -> None:
    tasks = dag({"a": [], "x": [], "y": ["x"]})
    wf = workflow(tasks, [pool(vcpus=4)])
    begin(wf)
    out = wf.handle(AttemptExited(1, "a/1", 1))
    assert [k.attempt_id for k in of(out, KillAttempt)] == ["x/1"]
    assert wf.task_state("y") is TaskState.SKIPPED
    out = wf.handle(AttemptExited(2, "x/1", 143))
    assert of(out, AttemptEnded)[0].state == "cancelled"
    assert of(out, RunFinished)[0].state == "failed"


def test_on_failure_finish_lets_running_attempts_complete() -> None:
    tasks = dag({"a": [], "x": []}, on_failure=OnFailure.FINISH)
    wf = workflow(tasks, [pool(vcpus=4)])
    begin(wf)
    out = wf.handle(AttemptExited(1, "a/1", 1))
    assert not of(out, KillAttempt)
    out = wf.handle(AttemptExited(2, "x/1", 0))
    assert wf.task_state("x") is TaskState.SUCCEEDED
    assert of(out, RunFinished)[0].state == "failed"


def test_cancel_kills_live_attempts_and_cancels_the_rest() -> None:
    wf = workflow(dag({"a": [], "b": ["a"]}))
    begin(wf)
    out = wf.handle(CancelRequested(1))
    assert [k.attempt_id for k in of(out, KillAttempt)] == ["a/1"]
    assert wf.task_state("b") is TaskState.CANCELLED
    out = wf.handle(AttemptLost(2, "a/1", "killed"))
    assert of(out, RunFinished)[0].state == "cancelled"


def test_a_cancel_gives_each_task_its_own_grace_and_ends_ready_and_backoff_tasks() -> None:
    retry = [RetryRule(("States.ALL",), 30.0, 2, 1.0)]
    tasks = dag(
        {"slow": [], "quick": [], "retrying": [], "next": [], "last": []},
        retry=retry,
        overrides={"slow": {"kill_grace_s": 90.0}, "quick": {"kill_grace_s": 5.0}},
    )
    wf = workflow(tasks, [pool(vcpus=3)])
    begin(wf)  # slow, quick and retrying run; next and last wait ready for a place
    out = wf.handle(AttemptExited(1, "retrying/1", 1))  # it backs off 30 s; next takes its place
    assert launches(out) == ["next/1"] and "retry:retrying:1" in wf.timers
    out = wf.handle(CancelRequested(2))
    wf.validate()  # the ready count went down with "last"
    assert {(k.attempt_id, k.grace_s) for k in of(out, KillAttempt)} == {
        ("slow/1", 90.0),
        ("quick/1", 5.0),
        ("next/1", 10.0),
    }
    assert [wf.task_state(t) for t in ("retrying", "last")] == [TaskState.CANCELLED] * 2
    assert "retry:retrying:1" not in wf.timers, "the backoff's timer goes with its task"


def test_an_attempt_s_timeout_timer_goes_when_it_ends() -> None:
    wf = workflow(dag({"a": [], "b": ["a"]}, timeout_s=100))
    begin(wf)
    wf.handle(AttemptStarted(0, "a/1", "1"))
    assert wf.timers["timeout:a/1"] == 100
    wf.handle(AttemptExited(5, "a/1", 0))
    assert "timeout:a/1" not in wf.timers


def test_stop_launches_nothing_until_resumed() -> None:
    wf = workflow(dag({"a": [], "b": ["a"]}))
    begin(wf)
    wf.handle(StopRequested(1))
    assert launches(wf.handle(AttemptExited(2, "a/1", 0))) == []
    assert wf.task_state("b") is TaskState.READY
    assert launches(wf.handle(RunResumed(3))) == ["b/1"]


def test_task_too_big_for_every_pool_fails_with_capacity_unavailable() -> None:
    tasks = dag({"big": [], "after": ["big"]}, overrides={"big": {"nodes": 3}})
    wf = workflow(tasks, [pool(count=2)])
    out = begin(wf)
    assert [(e.task_id, e.state, e.error) for e in of(out, TaskEnded)] == [
        ("big", "failed", "Capacity.Unavailable"),
        ("after", "skipped", None),
    ]
    assert of(out, RunFinished)[0].state == "failed"


def test_gang_task_takes_distinct_instances_all_or_nothing() -> None:
    tasks = dag({"mpi": [], "solo": []}, vcpus=2, overrides={"mpi": {"nodes": 3, "priority": 5.0}})
    wf = workflow(tasks, [pool(vcpus=2, count=3)])
    out = begin(wf)
    launch = of(out, LaunchAttempt)
    assert [x.attempt_id for x in launch] == ["mpi/1"]
    assert len(set(launch[0].instances)) == 3
    assert launches(run_ok(wf, "mpi/1", 1)) == ["solo/1"]


def test_spot_disabled_tasks_never_land_on_spot_pools() -> None:
    from stormproof.core.defs import Market

    tasks = dag({"a": [], "b": []}, overrides={"b": {"spot_enabled": False}})
    pools = [pool("spot", vcpus=4, market=Market.SPOT), pool("od", vcpus=4)]
    out = begin(workflow(tasks, pools))
    assert {d.task_id: d.pool for d in of(out, LaunchAttempt)} == {"a": "spot", "b": "od"}


def test_news_of_unknown_or_ended_attempts_is_ignored() -> None:
    wf = workflow(dag({"a": []}))
    begin(wf)
    run_ok(wf, "a/1", 1)
    assert wf.handle(AttemptExited(5, "a/1", 1)) == []
    assert wf.handle(AttemptExited(5, "zzz/9", 1)) == []


def test_replaying_the_same_events_gives_the_same_decisions() -> None:
    events = [
        RunStarted(0),
        InstanceUp(0, "local-0"),
        AttemptStarted(0, "a/1", "1"),
        AttemptExited(1, "a/1", 1),
        TimerFired(31, "retry:a:1"),
        AttemptExited(32, "a/2", 0),
        AttemptExited(40, "b/1", 0),
    ]
    tasks = dag({"a": [], "b": ["a"]}, retry=[RECIPE_TIER_1])
    first = workflow(tasks).handle_all(events)
    second = workflow(tasks).handle_all(events)
    assert first == second
    assert of(first, RunFinished)


@pytest.mark.parametrize(
    "event",
    [AttemptExited(1, "a/1", 0), AttemptLost(1, "a/1", "x"), AttemptPreempted(1, "a/1", "x")],
)
def test_attempt_news_before_started_is_accepted(event: object) -> None:
    # A backend may report the end before we saw the start (fast task, recovery).
    wf = workflow(dag({"a": []}))
    begin(wf)
    wf.handle(event)  # type: ignore[arg-type]
    wf.validate()


def test_every_kind_of_event_has_its_entry_in_the_door_table() -> None:
    """``handle`` finds what to do by the event's exact class: an event class added without
    an entry would be a TypeError at run time, in the middle of somebody's run."""
    from stormproof.core import events
    from stormproof.core.machine import _ON

    kinds = {
        cls
        for cls in vars(events).values()
        if isinstance(cls, type) and issubclass(cls, events.Event) and cls is not events.Event
    }
    assert len(kinds) >= 19
    assert kinds == set(_ON)


def test_handle_all_returns_the_decisions_of_every_event_in_order() -> None:
    events = [AttemptStarted(1, "a/1", "1"), AttemptExited(2, "a/1", 0)]
    one, many = (workflow(dag({"a": [], "b": ["a"]})) for _ in range(2))
    begin(one)
    begin(many)
    expected = [d for e in events for d in one.handle(e)]
    assert expected and many.handle_all(events) == expected


def _running_pair() -> Workflow:
    """a and b running on one instance; c (a child of a) waiting."""
    wf = workflow(dag({"a": [], "b": [], "c": ["a"]}), [pool(vcpus=2)], max_parallel=2)
    begin(wf)
    wf.validate()
    return wf


def _not_running(wf: Workflow) -> None:
    wf.state[0] = TaskState.BACKOFF


def _not_current(wf: Workflow) -> None:
    wf.current[0] = wf.current[1]


def _unlisted(wf: Workflow) -> None:
    (iid,) = wf.attempts["a/1"].instances
    wf.capacity.instances[iid].attempts.discard("a/1")


def _queued_drift(wf: Workflow) -> None:
    wf._queued += 1


def _over_max_parallel(wf: Workflow) -> None:
    wf.options = dataclasses.replace(wf.options, max_parallel=1)


def _running_drift(wf: Workflow) -> None:
    wf.state[2] = TaskState.RUNNING


def _ready_drift(wf: Workflow) -> None:
    wf._ready += 1


def _unfinished_drift(wf: Workflow) -> None:
    wf.unfinished -= 1


def _ready_before_parent(wf: Workflow) -> None:
    wf.state[2] = TaskState.READY
    wf._ready += 1


@pytest.mark.parametrize(
    ("corrupt", "says"),
    [
        (_not_running, "a/1 is live but its task is"),
        (_not_current, "a/1 is not its task's current attempt"),
        (_unlisted, "a/1 holds a place on local-0 that does not list it"),
        (_queued_drift, "0 queued successors, but the count says 1"),
        (_over_max_parallel, "2 attempts hold places, max_parallel is 1"),
        (_running_drift, "3 tasks running but 2 attempts live"),
        (_ready_drift, "0 tasks ready but the queues count 1"),
        (_unfinished_drift, "the unfinished count drifted"),
        (_ready_before_parent, "c is ready but parent a is running"),
    ],
)
def test_validate_catches_each_violation_it_exists_for(
    corrupt: Callable[[Workflow], None], says: str
) -> None:
    """The property tests and the simulator trust ``validate`` after every event: each
    invariant it names must fail when broken."""
    wf = _running_pair()
    corrupt(wf)
    with pytest.raises(AssertionError, match=re.escape(says)):
        wf.validate()
