"""The run's view kept in the store: what a reader gets from a stored view and the rows after
it is what a fold of the whole log gives, for any point the view was saved at and any
filter or page."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from stormproof.config import local_pool
from stormproof.executors.fake import FakeExecutor
from stormproof.runtime.driver import Driver
from stormproof.runtime.home import Home
from stormproof.runtime.runs import RunContext, new_context
from stormproof.runtime.view import RunView
from stormproof.runtime.view_query import TaskQuery
from stormproof.runtime.view_store import read_view, record_of, view_for_run
from stormproof.spec.model import WorkflowSpec
from stormproof.store.base import TaskRecord
from stormproof.store.sqlite import SQLiteEventLog


def _spec(n: int) -> WorkflowSpec:
    tasks = []
    for i in range(n):
        task = {"id": f"t{i}", "command": ["x"], "retry_attempts": 1}
        if i >= 3:
            task["depends_on"] = [f"t{i - 3}"]
        tasks.append(task)
    return WorkflowSpec.model_validate(
        {
            "name": "w",
            "global_config": {"retry_interval": 0, "on_failure": "continue"},
            "tasks": tasks,
        }
    )


def _fails(job: object) -> int:
    """t…7 fails once then succeeds; t…5 always fails (so its successors are skipped)."""
    task_id, number = job.task_id, job.number  # type: ignore[attr-defined]
    if task_id.endswith("5"):
        return 1
    return 1 if task_id.endswith("7") and number == 1 else 0


@pytest.fixture
def finished(tmp_path: Path) -> tuple[SQLiteEventLog, RunContext]:
    store = SQLiteEventLog(tmp_path / "stormproof.db")
    spec = _spec(40)
    ctx = new_context("r", spec, (local_pool(),), tmp_path / "wf.yaml", "local", seed=1)
    store.create_run("r", spec.name, ctx.to_meta(), time.time())
    Driver(Home(tmp_path), store, ctx, FakeExecutor(outcome=_fails)).drive()
    return store, ctx


def _full_fold(store: SQLiteEventLog, ctx: RunContext) -> RunView:
    return view_for_run(store.get_run("r")).apply(store.read("r"))


def _same(view: RunView, other: RunView) -> None:
    at = other.last_at
    assert view.counts() == other.counts()
    assert view.stages() == other.stages()
    assert view.state == other.state and view.last_seq == other.last_seq
    assert view.to_json(at, [])["cost"] == other.to_json(at, [])["cost"]
    assert view.interruptions() == other.interruptions()


def test_the_driver_leaves_a_view_equal_to_the_fold_of_the_log(
    finished: tuple[SQLiteEventLog, RunContext],
) -> None:
    store, ctx = finished
    full = _full_fold(store, ctx)
    # t5, t15, t25 fail; t35 and every task after a failed one (i + 3k) is skipped
    assert full.counts() == {"succeeded": 14, "failed": 3, "skipped": 23}
    stored = store.load_view("r")
    assert stored is not None and stored.upto_seq == full.last_seq
    view, page = read_view(store, "r", TaskQuery(), writable=False)
    _same(view, full)
    assert [t.to_json(full.last_at) for t in page.tasks] == [
        t.to_json(full.last_at) for t in full.tasks.values()
    ]


@pytest.mark.parametrize(
    "query",
    [
        TaskQuery(),
        TaskQuery(states=("failed",)),
        TaskQuery(states=("skipped", "failed"), limit=3, offset=2),
        TaskQuery(stage=1, limit=4),
        TaskQuery(limit=5, offset=30),
    ],
)
def test_a_view_saved_earlier_plus_the_rows_after_it_is_the_whole_fold(
    finished: tuple[SQLiteEventLog, RunContext], query: TaskQuery
) -> None:
    """As after a kill -9 of the driver: the stored view lags the log by many rows."""
    store, ctx = finished
    rows = list(store.read("r"))
    full = _full_fold(store, ctx)
    expected = [t for t in full.tasks.values() if query.matches(t)]
    end = None if query.limit is None else query.offset + query.limit
    for cut in (0, 7, len(rows) // 3, len(rows) // 2, len(rows) - 5):
        early = view_for_run(store.get_run("r")).apply(rows[:cut])
        with store._transaction():  # the stored view goes back to an earlier point
            store._db.execute("DELETE FROM views")
            store._db.execute("DELETE FROM task_views")
        store.save_view(
            "r", early.last_seq, early.summary(), [record_of(t) for t in early.tasks.values()]
        )
        view, page = read_view(store, "r", query, writable=False)
        _same(view, full)
        assert page.matching == len(expected), cut
        assert [t.id for t in page.tasks] == [t.id for t in expected[query.offset : end]], cut
        assert [t.to_json(full.last_at) for t in page.tasks] == [
            t.to_json(full.last_at) for t in expected[query.offset : end]
        ]


def test_a_reader_that_folds_many_rows_saves_the_view_when_it_can(
    finished: tuple[SQLiteEventLog, RunContext], monkeypatch: pytest.MonkeyPatch
) -> None:
    store, _ = finished
    with store._transaction():
        store._db.execute("DELETE FROM views")
        store._db.execute("DELETE FROM task_views")
    read_view(store, "r", TaskQuery(limit=0), writable=False)
    assert store.load_view("r") is None, "a read-only reader writes nothing"
    read_view(store, "r", TaskQuery(limit=0), writable=True)
    stored = store.load_view("r")
    assert stored is not None and stored.matching == len(stored.tasks) == 40


def test_save_view_keeps_the_newer_view(tmp_path: Path) -> None:
    store = SQLiteEventLog(tmp_path / "db")
    store.create_run("r", "w", {}, 0.0)
    task = TaskRecord("a", 0, 0, "running", {"x": 1})
    assert store.save_view("r", 10, {"n": 10}, [task])
    assert not store.save_view("r", 9, {"n": 9}, [TaskRecord("a", 0, 0, "waiting", {})])
    stored = store.load_view("r")
    assert stored is not None and stored.summary == {"n": 10}
    assert stored.tasks == [task]
    assert store.load_view("r", states=["waiting"]).matching == 0  # type: ignore[union-attr]
