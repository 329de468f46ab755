"""The core's checkpoint choices: what to restore, when to ask, what to prune."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from stormproof.core.decisions import (
    AttemptEnded,
    KillAttempt,
    LaunchAttempt,
    PruneCheckpoints,
    RequestCheckpoint,
    StartTimer,
)
from stormproof.core.defs import RetryRule
from stormproof.core.events import (
    AttemptExited,
    AttemptLost,
    AttemptStarted,
    CancelRequested,
    CheckpointCommitted,
    CheckpointCorrupt,
    CheckpointRestored,
    InstanceUp,
    RunStarted,
    TimerFired,
)

from .builders import begin, dag, pool, workflow

CKPT = {"checkpoint_enabled": True, "checkpoint_interval_s": 60.0}


def of(ds: list, kind: type) -> list:  # type: ignore[type-arg]
    return [d for d in ds if isinstance(d, kind)]


def test_a_retry_restores_the_newest_committed_checkpoint_first() -> None:
    wf = workflow(dag({"md": []}, overrides={"md": CKPT}))
    first = of(begin(wf), LaunchAttempt)[0]
    assert first.restore_from == ()
    wf.handle(AttemptStarted(0, "md/1", "1"))
    for seq in (1, 2):
        wf.handle(CheckpointCommitted(10 * seq, "md/1", seq, 3, 100))
    out = wf.handle(AttemptLost(30, "md/1", "node died"))
    assert of(out, LaunchAttempt)[0].restore_from == (2, 1)


def test_corrupt_checkpoints_are_never_offered_again() -> None:
    wf = workflow(dag({"md": []}, overrides={"md": CKPT}))
    begin(wf)
    for seq in (1, 2):
        wf.handle(CheckpointCommitted(seq, "md/1", seq))
    wf.handle(CheckpointCorrupt(3, "md", 2, "state.bin: sha256 mismatch"))
    out = wf.handle(AttemptLost(4, "md/1", "x"))
    assert of(out, LaunchAttempt)[0].restore_from == (1,)
    assert wf.next_checkpoint_seq("md") == 3  # a corrupt seq is never reused


def test_only_the_last_k_are_kept_while_running_and_all_go_on_success() -> None:
    wf = workflow(dag({"md": []}, overrides={"md": {**CKPT, "keep_checkpoints": 2}}))
    begin(wf)
    prunes = []
    for seq in (1, 2, 3):
        prunes += of(wf.handle(CheckpointCommitted(seq, "md/1", seq)), PruneCheckpoints)
    assert [p.keep for p in prunes] == [(2, 3)]
    out = wf.handle(AttemptExited(9, "md/1", 0))
    assert of(out, PruneCheckpoints) == [PruneCheckpoints("md", (), "the workflow succeeded")]


def test_a_success_prunes_checkpoints_even_when_every_one_of_them_was_corrupt() -> None:
    wf = workflow(dag({"md": []}, overrides={"md": CKPT}))
    begin(wf)
    wf.handle(CheckpointCommitted(1, "md/1", 1))
    wf.handle(CheckpointCorrupt(2, "md", 1, "state.bin: sha256 mismatch"))  # the only one
    out = wf.handle(AttemptExited(9, "md/1", 0))
    assert of(out, PruneCheckpoints) == [PruneCheckpoints("md", (), "the workflow succeeded")]


def test_keep_on_success_keeps_them() -> None:
    wf = workflow(dag({"md": []}, overrides={"md": {**CKPT, "keep_checkpoints_on_success": True}}))
    begin(wf)
    wf.handle(CheckpointCommitted(1, "md/1", 1))
    assert of(wf.handle(AttemptExited(9, "md/1", 0)), PruneCheckpoints) == []


def test_interval_asks_running_attempts_to_checkpoint_until_they_end() -> None:
    wf = workflow(dag({"md": []}, overrides={"md": CKPT}))
    begin(wf)
    timer = of(wf.handle(AttemptStarted(5, "md/1", "1")), StartTimer)[0]
    assert (timer.timer_id, timer.fire_at) == ("checkpoint:md/1", 65.0)
    out = wf.handle(TimerFired(65, timer.timer_id))
    assert of(out, RequestCheckpoint) == [RequestCheckpoint("md/1", "every 60s")]
    assert of(out, StartTimer)[0].fire_at == 125.0
    wf.handle(AttemptExited(70, "md/1", 0))
    assert "checkpoint:md/1" not in wf.timers
    assert wf.handle(TimerFired(125, "checkpoint:md/1")) == []


def test_tasks_without_checkpoints_get_no_restore_and_no_requests() -> None:
    wf = workflow(dag({"a": []}, retry=[RetryRule(("States.ALL",), 0, 1, 1)]))
    begin(wf)
    assert of(wf.handle(AttemptStarted(0, "a/1", "1")), StartTimer) == []
    wf.handle(CheckpointCommitted(1, "a/1", 1))  # a stray commit is recorded, never restored
    assert of(wf.handle(AttemptExited(2, "a/1", 1)), LaunchAttempt)[0].restore_from == ()


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(1, 12)), max_size=30), st.integers(0, 4))
def test_restore_candidates_are_newest_first_and_never_corrupt(
    ops: list[tuple[bool, int]], keep: int
) -> None:
    wf = workflow(dag({"md": []}, overrides={"md": {**CKPT, "keep_checkpoints": keep}}))
    begin(wf)
    corrupt: set[int] = set()
    for t, (is_commit, seq) in enumerate(ops):
        if is_commit:
            wf.handle(CheckpointCommitted(t, "md/1", seq))
        else:
            corrupt.add(seq)
            wf.handle(CheckpointCorrupt(t, "md", seq, "bad"))
        wf.validate()
    out = wf.handle(AttemptLost(100, "md/1", "x"))
    restore = of(out, LaunchAttempt)[0].restore_from
    assert list(restore) == sorted(restore, reverse=True)
    assert not corrupt & set(restore)
    if keep:
        assert len(restore) <= keep


def test_a_timeout_kills_with_the_task_s_own_grace() -> None:
    wf = workflow(dag({"md": []}, timeout_s=100, overrides={"md": {"kill_grace_s": 45.0}}))
    begin(wf)
    (timer,) = of(wf.handle(AttemptStarted(5, "md/1", "1")), StartTimer)
    assert (timer.timer_id, timer.fire_at) == ("timeout:md/1", 105.0)
    out = wf.handle(TimerFired(105, "timeout:md/1"))
    assert of(out, KillAttempt) == [KillAttempt("md/1", 45.0, "timeout reached")]


def test_neither_timer_acts_on_an_attempt_already_being_killed() -> None:
    wf = workflow(dag({"md": []}, timeout_s=100, overrides={"md": CKPT}))
    begin(wf)
    wf.handle(AttemptStarted(0, "md/1", "1"))
    wf.handle(CancelRequested(10))  # the cancel's kill is on its way
    assert wf.handle(TimerFired(60, "checkpoint:md/1")) == [], "no checkpoint asked"
    assert wf.handle(TimerFired(100, "timeout:md/1")) == [], "the cancel stays the reason"
    (ended,) = of(wf.handle(AttemptExited(101, "md/1", 143)), AttemptEnded)
    assert ended.state == "cancelled"


def test_pruning_leaves_exactly_the_newest_to_restore_and_keep_0_never_prunes() -> None:
    for keep, offered in ((2, (3, 2)), (0, (3, 2, 1))):
        wf = workflow(dag({"md": []}, overrides={"md": {**CKPT, "keep_checkpoints": keep}}))
        begin(wf)
        prunes = []
        for seq in (1, 2, 3):
            prunes += of(wf.handle(CheckpointCommitted(seq, "md/1", seq)), PruneCheckpoints)
        assert [p.task_id for p in prunes] == (["md"] if keep else [])
        assert of(wf.handle(AttemptLost(4, "md/1", "x")), LaunchAttempt)[0].restore_from == offered


def test_restore_time_is_waste_only_when_a_checkpoint_was_restored() -> None:
    for seq, wasted in ((0, 0.0), (1, 10.0)):
        wf = workflow(dag({"md": []}, overrides={"md": CKPT}))
        begin(wf)
        wf.handle(CheckpointRestored(10, "md/1", seq))  # 0: nothing to restore, a fresh start
        wf.handle(AttemptStarted(10, "md/1", "1"))
        (ended,) = of(wf.handle(AttemptExited(100, "md/1", 0)), AttemptEnded)
        assert ended.wasted_s == wasted


def test_a_redrive_carries_checkpoints_only_into_a_task_that_still_checkpoints() -> None:
    tasks = dag({"a": [], "b": [], "c": []}, overrides={"a": CKPT})
    wf = workflow(tasks, [pool(vcpus=3)])
    # b no longer checkpoints; "gone" was removed from the workflow since
    carried = (("gone", 2, (1,), 1), ("a", 1, (2, 5), 5), ("b", 1, (1,), 3))
    out = wf.handle(RunStarted(0, carried=carried))
    out += wf.handle(InstanceUp(0, "local-0"))
    restore = {d.task_id: d.restore_from for d in of(out, LaunchAttempt)}
    assert restore == {"a": (5, 2), "b": (), "c": ()}
    # seqs go on after every one ever used, and a task that carried none starts at 1
    assert [wf.next_checkpoint_seq(t) for t in ("a", "b", "c")] == [6, 4, 1]


def test_a_corrupt_checkpoint_of_one_task_never_hides_another_task_s_commit() -> None:
    wf = workflow(dag({"a": [], "b": []}, overrides={"a": CKPT, "b": CKPT}), [pool(vcpus=2)])
    begin(wf)
    wf.handle(CheckpointCommitted(1, "a/1", 1))
    wf.handle(CheckpointCorrupt(2, "a", 1, "state.bin: sha256 mismatch"))
    wf.handle(CheckpointCommitted(3, "b/1", 1))  # the same seq, another task
    out = wf.handle(AttemptLost(4, "b/1", "x"))
    assert of(out, LaunchAttempt)[0].restore_from == (1,)


def test_a_commit_logged_before_save_times_were_recorded_reads_as_unknown_save_time() -> None:
    from stormproof.core.events import event_from_dict

    old = {"at": 5.0, "attempt_id": "md/1", "seq": 2, "files": 3, "total_bytes": 100}
    assert event_from_dict("CheckpointCommitted", old) == CheckpointCommitted(
        5.0, "md/1", 2, 3, 100, save_s=0.0
    )
    new = CheckpointCommitted(5.0, "md/1", 2, 3, 100, save_s=1.25)
    assert event_from_dict("CheckpointCommitted", new.to_dict()) == new
