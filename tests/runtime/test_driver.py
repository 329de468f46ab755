"""The driver with the fake executor and the real SQLite log: outbox order, resume, requests."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from stormproof.capacity.local import LocalFleet
from stormproof.config import local_pool
from stormproof.core.decisions import Decision, KillAttempt, LaunchAttempt, LaunchInstance
from stormproof.core.events import AttemptExited, AttemptStarted, Event
from stormproof.core.machine import Workflow
from stormproof.errors import LeaseLost
from stormproof.executors.base import AttemptJob
from stormproof.executors.fake import FakeExecutor
from stormproof.runtime.driver import Driver
from stormproof.runtime.home import Home
from stormproof.runtime.runs import RunContext, load_context, new_context
from stormproof.spec.model import WorkflowSpec
from stormproof.store.sqlite import SQLiteEventLog

CHAIN = {
    "name": "chain",
    "tasks": [
        {"id": "a", "command": ["true"]},
        {"id": "b", "command": ["true"], "depends_on": ["a"]},
        {
            "id": "c",
            "command": "echo ${STORMPROOF_TASK}-${STORMPROOF_ATTEMPT} $HOME",
            "depends_on": ["b"],
            "environment": {"OUT": "${STORMPROOF_DATA_DIR}/out"},
        },
    ],
}


@pytest.fixture
def home(tmp_path: Path) -> Home:
    h = Home(tmp_path / ".stormproof")
    h.root.mkdir()
    return h


@pytest.fixture
def store(home: Home) -> SQLiteEventLog:
    s = SQLiteEventLog(home.db_path)
    yield s
    s.close()


def make_run(store: SQLiteEventLog, tmp_path: Path, spec: dict = CHAIN) -> RunContext:  # type: ignore[type-arg]
    ctx = new_context(
        "r",
        WorkflowSpec.model_validate(spec),
        (local_pool(),),
        tmp_path / "wf.yaml",
        "fake",
        seed=1,
    )
    store.create_run("r", ctx.spec.name, ctx.to_meta(), time.time())
    return ctx


class StopAt:
    """A reporter that stops the driver once ``attempt_id`` is launched (a controlled crash)."""

    def __init__(self, attempt_id: str) -> None:
        self.attempt_id = attempt_id
        self.driver: Driver | None = None

    def on_decisions(self, decisions: Sequence[Decision], now: float) -> None:
        if any(isinstance(d, LaunchAttempt) and d.attempt_id == self.attempt_id for d in decisions):
            assert self.driver is not None
            self.driver.request_stop("test")

    def tick(self, now: float) -> None:
        return None

    def resumed(self, core: Workflow) -> None:
        return None


class Silent(FakeExecutor):
    """Accepts jobs; says nothing about those in ``quiet`` (they 'run' forever)."""

    def __init__(self, quiet: Sequence[str] = ("a/1", "b/1", "c/1")) -> None:
        super().__init__()
        self.quiet = set(quiet)

    def submit(self, job: AttemptJob) -> None:
        if job.attempt_id in self.quiet:
            self.jobs[job.attempt_id] = job
        else:
            super().submit(job)


class Recovering(FakeExecutor):
    def __init__(self, answer: dict[str, list[Event]]) -> None:
        super().__init__()
        self.answer = answer
        self.asked: list[str] = []

    def recover(self, jobs: Sequence[AttemptJob]) -> list[Event]:
        self.asked = [j.attempt_id for j in jobs]
        return [e for j in jobs for e in self.answer.get(j.attempt_id, [])]


def test_launch_is_durable_before_the_executor_hears_of_it(
    home: Home, store: SQLiteEventLog, tmp_path: Path
) -> None:
    ctx = make_run(store, tmp_path)
    reader = SQLiteEventLog(home.db_path)

    class Checking(FakeExecutor):
        def submit(self, job: AttemptJob) -> None:
            kinds = [(r.kind, r.data.get("attempt_id")) for r in reader.read("r")]
            assert ("LaunchAttempt", job.attempt_id) in kinds
            super().submit(job)

    ex = Checking()
    assert Driver(home, store, ctx, ex).drive().state == "succeeded"
    assert list(ex.jobs) == ["a/1", "b/1", "c/1"]
    reader.close()


def test_placeholders_expand_in_commands_and_environment_only_for_stormproof_names(
    home: Home, store: SQLiteEventLog, tmp_path: Path
) -> None:
    ctx = make_run(store, tmp_path)
    ex = FakeExecutor()
    Driver(home, store, ctx, ex).drive()
    job = ex.jobs["c/1"]
    assert job.command == "echo c-1 $HOME"
    assert job.env["OUT"] == str(home.data_dir("r") / "out")
    assert job.env["STORMPROOF_RUN"] == "r" and job.env["STORMPROOF_ATTEMPT"] == "1"
    assert job.attempt_dir == home.attempt_dir("r", "c", 1)


def test_resume_adopts_an_attempt_that_finished_while_no_driver_ran(
    home: Home, store: SQLiteEventLog, tmp_path: Path
) -> None:
    ctx = make_run(store, tmp_path)
    first = Driver(home, store, ctx, Silent(["b/1"]), StopAt("b/1"))
    first.reporter.driver = first  # type: ignore[union-attr]
    result = first.drive()
    assert (result.state, result.live_attempts) == ("stopped", 1)

    now = time.time()
    ex = Recovering({"b/1": [AttemptStarted(now, "b/1", "9"), AttemptExited(now, "b/1", 0)]})
    result = Driver(home, store, load_context(store, "r"), ex).drive()
    assert result.state == "succeeded"
    assert ex.asked == ["b/1"]
    assert list(ex.jobs) == ["c/1"]  # a and b were never launched again


def test_resume_relaunches_a_decided_launch_the_executor_never_heard_of(
    home: Home, store: SQLiteEventLog, tmp_path: Path
) -> None:
    ctx = make_run(store, tmp_path)

    class Deaf(FakeExecutor):
        def submit(self, job: AttemptJob) -> None:  # the orchestrator "died" before submitting
            if job.attempt_id != "b/1":
                super().submit(job)

    first = Driver(home, store, ctx, Deaf(), StopAt("b/1"))
    first.reporter.driver = first  # type: ignore[union-attr]
    first.drive()
    ex = Recovering({})
    assert Driver(home, store, load_context(store, "r"), ex).drive().state == "succeeded"
    assert list(ex.jobs) == ["b/1", "c/1"]  # same attempt id, no new attempt number


def test_resume_drops_a_launch_the_executor_never_heard_of_that_was_to_be_killed(
    home: Home, store: SQLiteEventLog, tmp_path: Path
) -> None:
    # b/1 was decided and logged, then its instance was interrupted (a kill decided), and the
    # orchestrator died before the executor heard of b/1: it never ran, so it is dropped (no
    # budget used), not lost (which would count an interruption it never had).
    ctx = make_run(store, tmp_path)

    class Deaf(FakeExecutor):
        def submit(self, job: AttemptJob) -> None:
            if job.attempt_id != "b/1":
                super().submit(job)

    class InterruptThenStop(StopAt):
        def on_decisions(self, decisions: Sequence[Decision], now: float) -> None:
            assert self.driver is not None
            for d in decisions:
                if isinstance(d, LaunchAttempt) and d.attempt_id == "b/1":
                    request = json.dumps({"instance": d.instances[0], "notice_s": 0})
                    store.post_request("r", f"interrupt:{request}", now)
                if isinstance(d, KillAttempt) and d.attempt_id == "b/1":
                    self.driver.request_stop("test")

    first = Driver(home, store, ctx, Deaf(), InterruptThenStop("b/1"))
    first.reporter.driver = first  # type: ignore[union-attr]
    first.drive()
    ex = Recovering({})
    assert Driver(home, store, load_context(store, "r"), ex).drive().state == "succeeded"
    ended = {r.data["attempt_id"]: r.data for r in store.read("r") if r.kind == "AttemptEnded"}
    assert ended["b/1"]["state"] == "dropped"
    assert "b/1" not in ex.jobs and "b/2" in ex.jobs


def test_resume_counts_a_vanished_running_attempt_as_lost_and_retries_it(
    home: Home, store: SQLiteEventLog, tmp_path: Path
) -> None:
    ctx = make_run(store, tmp_path)

    class StartsOnly(FakeExecutor):
        def submit(self, job: AttemptJob) -> None:
            if job.attempt_id == "b/1":
                self.jobs[job.attempt_id] = job
                self._news.append(AttemptStarted(time.time(), job.attempt_id, "1"))
            else:
                super().submit(job)

    first = Driver(home, store, ctx, StartsOnly())

    class StopWhenRunning(StopAt):
        def on_decisions(self, decisions: Sequence[Decision], now: float) -> None:
            return None

        def tick(self, now: float) -> None:
            assert self.driver is not None
            if "b/1" in {a.id for a in self.driver.core.attempts.values()}:
                self.driver.request_stop("test")

    stopper = StopWhenRunning("b/1")
    stopper.driver = first
    first.reporter = stopper
    first.drive()
    ex = Recovering({})
    assert Driver(home, store, load_context(store, "r"), ex).drive().state == "succeeded"
    assert list(ex.jobs) == ["b/2", "c/1"]
    lost = [r for r in store.read("r") if r.kind == "AttemptEnded" and r.data["state"] == "lost"]
    assert lost and lost[0].data["budget"] == "interruptions"


def test_a_finished_run_resumes_to_its_result_without_launching(
    home: Home, store: SQLiteEventLog, tmp_path: Path
) -> None:
    ctx = make_run(store, tmp_path)
    Driver(home, store, ctx, FakeExecutor()).drive()
    ex = FakeExecutor()
    assert Driver(home, store, load_context(store, "r"), ex).drive().state == "succeeded"
    assert ex.jobs == {}


def test_cancel_request_from_another_process_cancels_the_run(
    home: Home, store: SQLiteEventLog, tmp_path: Path
) -> None:
    ctx = make_run(store, tmp_path)
    ex = Silent()

    class CancelOnLaunch(StopAt):
        def on_decisions(self, decisions: Sequence[Decision], now: float) -> None:
            if any(isinstance(d, LaunchAttempt) for d in decisions):
                other = SQLiteEventLog(home.db_path)
                other.post_request("r", "cancel", now)
                other.close()

    class KillReports(Silent):
        def kill(self, attempt_id: str, grace_s: float) -> None:
            super().kill(attempt_id, grace_s)
            self._news.append(AttemptExited(time.time(), attempt_id, 143))

    ex = KillReports()
    result = Driver(home, store, ctx, ex, CancelOnLaunch("a/1")).drive()
    assert result.state == "cancelled"
    assert ex.killed == ["a/1"]
    states = {r.data["task_id"]: r.data["state"] for r in store.read("r") if r.kind == "TaskEnded"}
    assert states == {"a": "cancelled", "b": "cancelled", "c": "cancelled"}


def test_retry_timer_survives_a_restart(home: Home, store: SQLiteEventLog, tmp_path: Path) -> None:
    spec = {
        "name": "r",
        "tasks": [
            {
                "id": "a",
                "command": ["false"],
                "retry": [
                    {"error_equals": ["States.ALL"], "interval_seconds": 0.2, "max_attempts": 1}
                ],
            }
        ],
    }
    ctx = make_run(store, tmp_path, spec)
    first = Driver(home, store, ctx, FakeExecutor(outcome=lambda j: 1))

    class StopOnRetry(StopAt):
        def on_decisions(self, decisions: Sequence[Decision], now: float) -> None:
            if any(d.kind == "TaskRetrying" for d in decisions):
                first.request_stop("test")

    first.reporter = StopOnRetry("")
    assert first.drive().state == "stopped"
    ex = FakeExecutor(outcome=lambda j: 0)
    assert Driver(home, store, load_context(store, "r"), ex).drive().state == "succeeded"
    assert list(ex.jobs) == ["a/2"]


class CountingFleet(LocalFleet):
    """The local fleet, remembering every launch it was asked for and how it was closed."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: list[str] = []
        self.closed: list[bool] = []

    def launch(self, instance_id: str, pool: str) -> None:
        self.asked.append(instance_id)
        super().launch(instance_id, pool)

    def close(self, final: bool) -> None:
        self.closed.append(final)


class GiveUpAfter(StopAt):
    """Stops the driver after ``limit_s`` of waiting, so a run that hangs fails the test."""

    def __init__(self, limit_s: float) -> None:
        super().__init__("")
        self.until = time.monotonic() + limit_s

    def tick(self, now: float) -> None:
        if time.monotonic() > self.until and self.driver is not None:
            self.driver.request_stop("gave up: the run hangs")


def test_resume_asks_again_for_instances_whose_launch_was_never_answered(
    home: Home, store: SQLiteEventLog, tmp_path: Path
) -> None:
    ctx = make_run(store, tmp_path)

    class StopOnFleet(StopAt):
        def on_decisions(self, decisions: Sequence[Decision], now: float) -> None:
            if any(isinstance(d, LaunchInstance) for d in decisions):
                assert self.driver is not None
                self.driver.request_stop("test")  # dies before the fleet answers

    stopped = CountingFleet()
    first = Driver(home, store, ctx, FakeExecutor(), StopOnFleet(""), fleet=stopped)
    first.reporter.driver = first  # type: ignore[union-attr]
    assert first.drive().state == "stopped"
    assert stopped.closed == [False]  # a cloud fleet keeps its instances for the resume
    assert [r.kind for r in store.read("r") if r.kind == "InstanceUp"] == []
    fleet = CountingFleet()
    guard = GiveUpAfter(10.0)
    second = Driver(home, store, load_context(store, "r"), FakeExecutor(), guard, fleet=fleet)
    guard.driver = second
    assert second.drive().state == "succeeded"
    assert fleet.asked == ["local-0"]
    assert fleet.closed == [True]  # the run's end: a cloud fleet terminates what it holds
    rows = list(store.read("r"))
    assert [r.data["instance_id"] for r in rows if r.kind == "LaunchInstance"] == ["local-0"]
    assert [r.data["instance_id"] for r in rows if r.kind == "InstanceUp"] == ["local-0"]


def test_resume_never_launches_an_instance_that_is_already_up(
    home: Home, store: SQLiteEventLog, tmp_path: Path
) -> None:
    ctx = make_run(store, tmp_path)
    first = Driver(home, store, ctx, Silent(["b/1"]), StopAt("b/1"))
    first.reporter.driver = first  # type: ignore[union-attr]
    assert first.drive().state == "stopped"
    fleet = CountingFleet()
    now = time.time()
    ex = Recovering({"b/1": [AttemptStarted(now, "b/1", "9"), AttemptExited(now, "b/1", 0)]})
    assert Driver(home, store, load_context(store, "r"), ex, fleet=fleet).drive().state == (
        "succeeded"
    )
    assert fleet.asked == []
    ups = [r.data["instance_id"] for r in store.read("r") if r.kind == "InstanceUp"]
    assert ups == ["local-0"]


def test_a_resumed_run_shows_its_progress_from_where_its_history_left_it(
    home: Home, store: SQLiteEventLog, tmp_path: Path
) -> None:
    """The replay decides nothing new, so without ``Reporter.resumed`` the live display of a
    resumed run would show its finished tasks as waiting and count none of its attempts."""
    import io

    from rich.console import Console

    from stormproof.cli.progress import LiveProgress

    ctx = make_run(store, tmp_path)
    first = Driver(home, store, ctx, Silent(["b/1"]), StopAt("b/1"))
    first.reporter.driver = first  # type: ignore[union-attr]
    assert first.drive().state == "stopped"

    resumed_ctx = load_context(store, "r")
    progress = LiveProgress(resumed_ctx, Console(file=io.StringIO(), width=100), home)
    seen: list[dict[str, int]] = []

    class Watching(Recovering):
        def recover(self, jobs: Sequence[AttemptJob]) -> list[Event]:
            seen.extend(dict(c) for c in progress.counts)  # what resume starts from
            return super().recover(jobs)

    now = time.time()
    ex = Watching({"b/1": [AttemptStarted(now, "b/1", "9"), AttemptExited(now, "b/1", 0)]})
    driver = Driver(home, store, resumed_ctx, ex)
    driver.reporter = progress
    assert driver.drive().state == "succeeded"
    assert [c["succeeded"] for c in seen] == [1, 0, 0], "a had succeeded before the stop"
    assert [c["running"] for c in seen] == [0, 1, 0], "b was running when it stopped"
    assert progress.attempts == 3 and "b/1" not in progress.running
    assert [c["succeeded"] for c in progress.counts] == [1, 1, 1]


def test_a_driver_taken_over_stops_at_its_next_flush_and_touches_nothing_more(
    home: Home, store: SQLiteEventLog, tmp_path: Path
) -> None:
    """Another orchestrator takes the run's lease while this one drives it (its lock broken
    behind its back): the next flush is refused with LeaseLost, nothing after it is logged or
    launched, and the executor is not even closed (its queued messages must not go out)."""
    ctx = make_run(store, tmp_path)
    other = SQLiteEventLog(home.db_path)
    taken: list[object] = []

    class Closing(FakeExecutor):
        closed = False

        def close(self, final: bool = False) -> None:
            self.closed = True

    class TakeOverAfterFirstLaunch:
        def on_decisions(self, decisions: Sequence[Decision], now: float) -> None:
            if not taken and any(isinstance(d, LaunchAttempt) for d in decisions):
                (home.root / "locks" / "r.lock").unlink()  # the lock, broken behind its back
                lease = other.driver_lease("r")
                lease.__enter__()
                taken.append(lease)

        def tick(self, now: float) -> None:
            return None

        def resumed(self, core: Workflow) -> None:
            return None

    ex = Closing()
    driver = Driver(home, store, ctx, ex, reporter=TakeOverAfterFirstLaunch())
    with pytest.raises(LeaseLost, match="this one stops now and acts on nothing more"):
        driver.drive()
    assert list(ex.jobs) == ["a/1"]  # launched before the takeover; b never
    assert driver.abandoned and not ex.closed
    kinds = [r.kind for r in other.read("r")]
    assert kinds[-1] == "LaunchAttempt"  # a's start and exit were never logged by the old holder
    other.close()
