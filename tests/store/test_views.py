"""A run's stored view (``save_view``/``load_view``), on both stores (``log`` is SQLite, then a
real PostgreSQL): the newer view wins, filters and pages select the same records in the same
order, a redrive's save replaces the run's records, and a run's view goes with the run."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import psycopg
import pytest

from stormproof.errors import RunNotFound
from stormproof.store.base import EventLog, TaskRecord
from stormproof.store.postgres import PostgresEventLog
from stormproof.store.sqlite import SQLiteEventLog

STATES = ("succeeded", "failed", "skipped", "running")


def records(n: int, upto: int = 0) -> list[TaskRecord]:
    """``n`` tasks in 3 stages, their states in turn; ``data`` says which save wrote them."""
    return [
        TaskRecord(f"t{i}", i, i % 3, STATES[i % 4], {"id": f"t{i}", "upto": upto})
        for i in range(n)
    ]


def test_a_view_is_none_until_saved_and_no_run_is_refused(log: EventLog) -> None:
    with pytest.raises(RunNotFound):
        log.load_view("nope")
    with pytest.raises(RunNotFound):
        log.save_view("nope", 1, {"n": 1}, records(2))
    log.create_run("r", "wf", {}, 0.0)
    assert log.load_view("r") is None
    assert log.save_view("r", 5, {"n": 5, "nested": {"a": [1, 2.5, None]}}, records(10))
    stored = log.load_view("r")
    assert stored is not None
    assert (stored.upto_seq, stored.summary) == (5, {"n": 5, "nested": {"a": [1, 2.5, None]}})
    assert stored.tasks == records(10) and stored.matching == 10


def test_the_newer_view_wins_and_records_are_upserted_by_position(log: EventLog) -> None:
    log.create_run("r", "wf", {}, 0.0)
    assert log.save_view("r", 10, {"n": 10}, records(6, upto=10))
    assert not log.save_view("r", 9, {"n": 9}, records(6, upto=9)), "an older view is refused"
    stored = log.load_view("r")
    assert stored is not None and stored.summary == {"n": 10}
    assert {r.data["upto"] for r in stored.tasks} == {10}
    changed = TaskRecord("t2", 2, 2, "succeeded", {"id": "t2", "upto": 12})
    assert log.save_view("r", 12, {"n": 12}, [changed])  # only what changed is written
    stored = log.load_view("r")
    assert stored is not None and stored.upto_seq == 12 and len(stored.tasks) == 6
    assert stored.tasks[2] == changed and stored.tasks[3].data["upto"] == 10
    assert log.save_view("r", 12, {"n": 12, "again": True}, [])  # the same seq: saved again
    assert log.load_view("r", limit=0).summary == {"n": 12, "again": True}  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({}, [f"t{i}" for i in range(20)]),
        ({"states": ["failed"]}, ["t1", "t5", "t9", "t13", "t17"]),
        ({"states": ["failed", "running"], "limit": 3, "offset": 2}, ["t5", "t7", "t9"]),
        ({"stage": 1, "limit": 4}, ["t1", "t4", "t7", "t10"]),
        ({"stage": 2, "states": ["succeeded"]}, ["t8"]),
        ({"ids": ["t19", "t3", "nope"]}, ["t3", "t19"]),
        ({"limit": 5, "offset": 18}, ["t18", "t19"]),
        ({"offset": 25}, []),
        ({"states": []}, []),
    ],
)
def test_filters_and_pages_select_in_workflow_order(
    log: EventLog, filters: dict[str, object], expected: list[str]
) -> None:
    log.create_run("r", "wf", {}, 0.0)
    log.save_view("r", 1, {}, list(reversed(records(20))))
    stored = log.load_view("r", **filters)  # type: ignore[arg-type]
    assert stored is not None
    assert [r.task_id for r in stored.tasks] == expected
    every = [r for r in records(20) if _matches(r, filters)]
    assert stored.matching == len(every), "the count is before offset and limit"


def _matches(r: TaskRecord, filters: dict[str, object]) -> bool:
    states, stage, ids = filters.get("states"), filters.get("stage"), filters.get("ids")
    return (
        (states is None or r.state in states)  # type: ignore[operator]
        and (stage is None or r.stage == stage)
        and (ids is None or r.task_id in ids)  # type: ignore[operator]
    )


def test_limit_zero_reads_the_summary_alone(log: EventLog) -> None:
    log.create_run("r", "wf", {}, 0.0)
    log.save_view("r", 3, {"n": 3}, records(5))
    stored = log.load_view("r", limit=0)
    assert stored is not None and stored.summary == {"n": 3}
    assert (stored.tasks, stored.matching) == ([], 0)


def test_a_replacing_save_leaves_only_its_records(log: EventLog) -> None:
    """A redrive reshapes the run: fewer tasks, at other positions. Its save writes them all
    and no record of the old shape is left to be listed."""
    log.create_run("r", "wf", {}, 0.0)
    log.save_view("r", 5, {}, records(8))
    reshaped = [
        TaskRecord("t7", 0, 0, "waiting", {"id": "t7"}),
        TaskRecord("new", 1, 0, "waiting", {"id": "new"}),
        TaskRecord("t0", 2, 1, "waiting", {"id": "t0"}),
    ]
    assert not log.save_view("r", 4, {}, reshaped, replace=True), "older: nothing dropped"
    assert log.load_view("r").matching == 8  # type: ignore[union-attr]
    assert log.save_view("r", 6, {"shape": 2}, reshaped, replace=True)
    stored = log.load_view("r")
    assert stored is not None and stored.tasks == reshaped and stored.matching == 3
    assert log.load_view("r", ids=["t3"]).tasks == []  # type: ignore[union-attr]
    assert log.save_view("r", 7, {}, [], replace=True)
    assert log.load_view("r").tasks == []  # type: ignore[union-attr]


def test_views_are_kept_per_run_and_go_with_their_run(log: EventLog) -> None:
    log.create_run("a", "wf", {}, 0.0)
    log.create_run("b", "wf", {}, 1.0)
    log.save_view("a", 2, {"run": "a"}, records(3))
    log.save_view("b", 9, {"run": "b"}, records(4, upto=9))
    assert log.load_view("a").summary == {"run": "a"}  # type: ignore[union-attr]
    assert log.load_view("a").matching == 3  # type: ignore[union-attr]
    log.delete_run("a")
    with pytest.raises(RunNotFound):
        log.load_view("a")
    log.create_run("a", "wf", {}, 2.0)
    assert log.load_view("a") is None, "a new run of the same name starts without a view"
    assert log.load_view("b").matching == 4  # type: ignore[union-attr]


def test_an_sqlite_file_from_before_views_gets_them_when_opened(tmp_path: Path) -> None:
    path = tmp_path / "stormproof.db"
    with SQLiteEventLog(path) as log:
        log.create_run("r", "wf", {}, 0.0)
    db = sqlite3.connect(path)
    db.execute("DROP TABLE task_views")
    db.execute("DROP TABLE views")
    db.commit()
    db.close()
    with SQLiteEventLog(path, read_only=True) as log:
        assert log.load_view("r") is None, "read-only: no view, the log is folded"
    with SQLiteEventLog(path) as log:
        assert log.save_view("r", 1, {"n": 1}, records(2))
        assert log.load_view("r").matching == 2  # type: ignore[union-attr]


@pytest.mark.parametrize("backend", ["postgresql"])
def test_a_postgresql_database_from_before_views_gets_them_when_opened(where: str) -> None:
    with PostgresEventLog(where) as log:
        log.create_run("r", "wf", {}, 0.0)
    with psycopg.connect(where, autocommit=True) as db:
        db.execute("DROP TABLE stormproof_task_views")
        db.execute("DROP TABLE stormproof_views")
    with PostgresEventLog(where) as log:
        assert log.load_view("r") is None
        assert log.save_view("r", 1, {"n": 1}, records(2))
        assert log.load_view("r").matching == 2  # type: ignore[union-attr]
