"""Slurm's states and the job's own status to the core's events: the table of ``states``.

The real cluster tests cause the common ends for real (exit codes, scancel, a node DOWN,
preemption); these cover every row, including the ones a test cluster cannot produce in CI
time (TIMEOUT is enforced a minute late at best, OUT_OF_MEMORY needs cgroups).
"""

from __future__ import annotations

import pytest

from stormproof.core.events import AttemptExited, AttemptLost, AttemptPreempted, Event
from stormproof.executors.slurm.states import JobRecord, ended, normal_state, requeued

AID = "task/1"


def record(state: str, **fields: object) -> JobRecord:
    return JobRecord(job_id="42", state=state, partition="spot", nodes="n1", **fields)  # type: ignore[arg-type]


def end(rec: JobRecord | None, status: int | None, killed: bool = False) -> Event:
    return ended(AID, 1.0, rec, status, killed)


def test_the_status_file_is_the_truth_about_the_code() -> None:
    assert end(record("COMPLETED"), 0) == AttemptExited(at=1.0, attempt_id=AID, exit_code=0)
    assert end(record("FAILED"), 3) == AttemptExited(at=1.0, attempt_id=AID, exit_code=3)
    # a status 0 wins over anything that happened to the job after the command finished
    for state in ("PREEMPTED", "NODE_FAIL", "CANCELLED", "TIMEOUT"):
        assert end(record(state), 0) == AttemptExited(at=1.0, attempt_id=AID, exit_code=0)


@pytest.mark.parametrize("state", ["TIMEOUT", "DEADLINE"])
def test_a_time_limit_is_task_timeout(state: str) -> None:
    event = end(record(state), None)
    assert isinstance(event, AttemptExited) and event.timed_out and event.exit_code == 137
    assert end(record(state), 143) == AttemptExited(
        at=1.0, attempt_id=AID, exit_code=143, timed_out=True
    )


def test_out_of_memory_is_task_out_of_memory() -> None:
    event = end(record("OUT_OF_MEMORY"), 137)
    assert isinstance(event, AttemptExited) and event.out_of_memory and event.exit_code == 137


def test_preemption_whether_killed_at_the_grace_end_or_ended_within_it() -> None:
    killed_at_end = end(record("PREEMPTED"), None)
    within_grace = end(record("FAILED", preempted=True), 143)
    for event in (killed_at_end, within_grace):
        assert isinstance(event, AttemptPreempted)
        assert event.reason == "Slurm job 42 on n1 was preempted in partition spot"


def test_a_failed_node_and_a_stranger_s_cancel_are_lost_with_the_reason() -> None:
    lost = end(record("NODE_FAIL"), None)
    assert isinstance(lost, AttemptLost) and "NODE_FAIL: its node failed" in lost.reason
    cancelled = end(record("CANCELLED"), None)
    assert isinstance(cancelled, AttemptLost)
    assert "cancelled outside stormproof" in cancelled.reason


def test_what_stormproof_killed_ends_with_the_code_it_left() -> None:
    assert end(record("CANCELLED"), 143, killed=True) == AttemptExited(
        at=1.0, attempt_id=AID, exit_code=143
    )
    assert end(record("CANCELLED"), None, killed=True) == AttemptExited(
        at=1.0, attempt_id=AID, exit_code=137
    )
    assert end(None, None, killed=True) == AttemptExited(at=1.0, attempt_id=AID, exit_code=137)


def test_an_end_without_a_status_is_lost_not_a_success() -> None:
    """A second run of the same job (slurmctld lost its state) leaves the claim's exit 0 and
    no status: that must not pass for the command's success."""
    event = end(record("COMPLETED"), None)
    assert isinstance(event, AttemptLost) and "without the exit status" in event.reason
    forgotten = end(None, None)
    assert isinstance(forgotten, AttemptLost) and "no record" in forgotten.reason
    assert end(None, 5) == AttemptExited(at=1.0, attempt_id=AID, exit_code=5)
    from_accounting = end(record("FAILED", exit_code=2), None)
    assert from_accounting == AttemptExited(at=1.0, attempt_id=AID, exit_code=2)


def test_a_requeued_job_is_preempted_or_lost() -> None:
    assert record("PENDING", restarts=1).requeued and record("REQUEUE_HOLD").requeued
    assert not record("PENDING").requeued
    preempted = requeued(AID, 1.0, record("PENDING", restarts=1, preempted=True))
    assert isinstance(preempted, AttemptPreempted)
    lost = requeued(AID, 1.0, record("REQUEUED", restarts=1))
    assert isinstance(lost, AttemptLost) and "requeued by Slurm" in lost.reason


def test_state_names_are_normalised() -> None:
    assert normal_state("CANCELLED by 1000") == "CANCELLED"
    assert normal_state("running+") == "RUNNING"
