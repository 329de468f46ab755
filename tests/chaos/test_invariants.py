"""The chaos suite's checks can fail: each kind of violation, planted in a made-up run."""

from __future__ import annotations

from typing import Any

from tests.chaos.invariants import newest_checkpoints, violations


def exited(attempt: str, code: int) -> tuple[str, str, dict[str, Any]]:
    return ("event", "AttemptExited", {"attempt_id": attempt, "exit_code": code})


def event(kind: str, attempt: str, **data: Any) -> tuple[str, str, dict[str, Any]]:
    return ("event", kind, {"attempt_id": attempt, **data})


def succeeded(task: str) -> tuple[str, str, dict[str, Any]]:
    return ("decision", "TaskEnded", {"task_id": task, "state": "succeeded"})


CLEAN_EFFECTS = ["start a/1", "end a/1 3", "start a/2", "end a/2 0", "start b/1", "end b/1 0"]
CLEAN_ROWS = [exited("a/1", 3), exited("a/2", 0), succeeded("a"), exited("b/1", 0)]


def test_a_clean_run_has_no_violation() -> None:
    assert violations(CLEAN_EFFECTS, CLEAN_ROWS) == []


def test_each_planted_violation_is_found() -> None:
    cases = {
        "ran 2 times": ([*CLEAN_EFFECTS, "start b/1"], CLEAN_ROWS),
        "was lost": (CLEAN_EFFECTS, [*CLEAN_ROWS, event("AttemptLost", "c/1", reason="x")]),
        "reported dropped, but it ran": (
            [*CLEAN_EFFECTS, "start c/1"],
            [*CLEAN_ROWS, event("AttemptDropped", "c/1")],
        ),
        "the log never heard": ([*CLEAN_EFFECTS, "start c/1", "end c/1 0"], CLEAN_ROWS),
        "the log says AttemptExited 1": (
            [*CLEAN_EFFECTS, "start c/1", "end c/1 0"],
            [*CLEAN_ROWS, exited("c/1", 1)],
        ),
        "ended 2 times": (CLEAN_EFFECTS, [*CLEAN_ROWS, exited("b/1", 0)]),
        "counted as succeeded 2 times": (CLEAN_EFFECTS, [*CLEAN_ROWS, succeeded("a")]),
        "ran again after attempt 2 succeeded": (
            [*CLEAN_EFFECTS, "start a/3", "end a/3 0"],
            [*CLEAN_ROWS, exited("a/3", 0)],
        ),
        "restore found damaged content": ([*CLEAN_EFFECTS, "restored b/1 BAD"], CLEAN_ROWS),
        "reported corrupt": (
            CLEAN_EFFECTS,
            [*CLEAN_ROWS, ("event", "CheckpointCorrupt", {"task_id": "b", "seq": 1})],
        ),
    }
    for fragment, (effects, rows) in cases.items():
        found = violations(effects, rows)
        assert len(found) == 1 and fragment in found[0], (fragment, found)


def test_a_killed_attempt_may_end_after_its_line_with_a_signal_code() -> None:
    effects = [*CLEAN_EFFECTS, "start c/1", "end c/1 0"]
    kill = ("decision", "KillAttempt", {"attempt_id": "c/1"})
    assert violations(effects, [*CLEAN_ROWS, kill, exited("c/1", 143)]) == []
    assert violations(effects, [*CLEAN_ROWS, exited("c/1", 143)])  # no kill was decided


def test_only_unfinished_tasks_checkpoints_are_checked_and_only_the_newest() -> None:
    rows = [
        event("CheckpointCommitted", "a/1", seq=1),
        event("CheckpointCommitted", "a/2", seq=2),
        event("CheckpointCommitted", "b/1", seq=1),
        succeeded("b"),
    ]
    assert newest_checkpoints(rows) == {"a": 2}
