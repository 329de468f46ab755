"""The core's checkpoint choices: what to restore, when to ask, what to prune."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from stormproof.core.decisions import (
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
    CheckpointCommitted,
    CheckpointCorrupt,
    TimerFired,
)

from .builders import begin, dag, workflow

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


def test_a_commit_logged_before_save_times_were_recorded_reads_as_unknown_save_time() -> None:
    from stormproof.core.events import event_from_dict

    old = {"at": 5.0, "attempt_id": "md/1", "seq": 2, "files": 3, "total_bytes": 100}
    assert event_from_dict("CheckpointCommitted", old) == CheckpointCommitted(
        5.0, "md/1", 2, 3, 100, save_s=0.0
    )
    new = CheckpointCommitted(5.0, "md/1", 2, 3, 100, save_s=1.25)
    assert event_from_dict("CheckpointCommitted", new.to_dict()) == new
