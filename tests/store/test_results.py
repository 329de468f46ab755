"""The index of task results across runs (``put_results``, ``find_results``, ``last_results``)
and ``delete_run``, on both stores (``log`` is SQLite, then a real PostgreSQL), and each
store's own matters: the lookup goes through the index, a database from before the index
gets it when opened."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import psycopg
import pytest

from stormproof.errors import LeaseLost, RunNotFound, StormproofError
from stormproof.store import postgres_results
from stormproof.store.base import EventLog, TaskResult
from stormproof.store.postgres import PostgresEventLog
from stormproof.store.sqlite import SQLiteEventLog

from .conftest import OpenLog
from .helpers import event
from .test_contract import lapse


def result(fp: str, run: str, task: str, at: float, **data: object) -> TaskResult:
    return TaskResult(fp, run, task, "wf", at, dict(data), {"parts": {"command": task}})


def make_runs(log: EventLog, *names: str) -> None:
    for k, name in enumerate(names):
        log.create_run(name, "wf", {}, float(k))


def test_the_newest_result_of_each_fingerprint_is_found(log: EventLog) -> None:
    make_runs(log, "r0", "r1")
    log.put_results([result("fa", "r0", "a", 1.0, n=0), result("fb", "r0", "b", 1.0)])
    log.put_results([result("fa", "r1", "a", 2.0, n=1)])
    found = log.find_results(["fa", "fb", "nope"])
    assert set(found) == {"fa", "fb"}
    assert (found["fa"].run, found["fa"].data) == ("r1", {"n": 1})
    assert found["fb"].task_id == "b"


def test_a_run_replaces_its_own_result_for_a_task(log: EventLog) -> None:
    make_runs(log, "r0")
    log.put_results([result("old", "r0", "a", 1.0)])
    log.put_results([result("new", "r0", "a", 2.0)])
    assert log.find_results(["old"]) == {}
    assert log.find_results(["new"])["new"].at == 2.0


def test_more_fingerprints_than_one_query_holds(log: EventLog) -> None:
    make_runs(log, "r0")
    log.put_results([result(f"f{i}", "r0", f"t{i}", 1.0) for i in range(1_200)])
    found = log.find_results([f"f{i}" for i in range(0, 1_200, 2)])
    assert len(found) == 600


def test_last_results_names_the_newest_of_each_task_whatever_its_fingerprint(
    log: EventLog,
) -> None:
    make_runs(log, "r0", "r1")
    log.put_results([result("f0", "r0", "a", 1.0), result("f1", "r1", "a", 2.0)])
    log.put_results([TaskResult("g", "r1", "a2", "other", 3.0, {})])
    last = log.last_results("wf", ["a", "a2"])["a"]
    assert (last.fingerprint, last.definition) == ("f1", {"parts": {"command": "a"}})
    assert log.find_results(["f1"])["f1"].definition is None  # the lookup leaves it
    assert "a2" not in log.last_results("wf", ["a", "a2"])


def test_duplicates_in_one_put_keep_the_last_and_empty_calls_are_fine(log: EventLog) -> None:
    make_runs(log, "r0")
    log.put_results([result("f0", "r0", "a", 1.0, n=0), result("f1", "r0", "a", 2.0, n=1)])
    log.put_results([])
    assert set(log.find_results(["f0", "f1"])) == {"f1"}
    assert log.find_results([]) == {} and log.last_results("wf", []) == {}


def test_a_result_of_a_run_that_is_not_there_is_refused_and_nothing_is_put(
    log: EventLog,
) -> None:
    make_runs(log, "r0")
    with pytest.raises(RunNotFound, match="no run named 'gone'"):
        log.put_results([result("f", "r0", "a", 1.0), result("g", "gone", "a", 1.0)])
    assert log.find_results(["f", "g"]) == {}


def test_a_deleted_run_s_name_can_be_driven_again_with_a_token_that_kept_growing(
    log: EventLog,
) -> None:
    """A frozen orchestrator of the deleted run must never pass the fence of the new one."""
    make_runs(log, "r0")
    with log.driver_lease("r0") as lease:
        old_token = lease.token
        log.delete_run("r0")
        assert not log.is_driven("r0")
    log.create_run("r0", "wf", {}, 5.0)
    with log.driver_lease("r0") as lease:
        assert lease.token > old_token


def test_delete_run_by_a_holder_that_was_taken_over_deletes_nothing(
    open_log: OpenLog, backend: str, db_path: Path
) -> None:
    old, new = open_log(lease_s=0.5), open_log()
    make_runs(old, "r0")
    old.put_results([result("f", "r0", "a", 1.0)])
    with old.driver_lease("r0"):
        lapse(backend, db_path, "r0")
        with new.driver_lease("r0"), pytest.raises(LeaseLost, match="taken over"):
            old.delete_run("r0")
    assert [r.name for r in new.list_runs()] == ["r0"]
    assert set(new.find_results(["f"])) == {"f"}


def test_the_lookup_goes_through_the_fingerprint_index(db_path: Path) -> None:
    with SQLiteEventLog(db_path):
        pass
    db = sqlite3.connect(db_path)
    plan = db.execute(
        "EXPLAIN QUERY PLAN SELECT * FROM results WHERE fingerprint IN (?, ?) ORDER BY at",
        ("a", "b"),
    ).fetchall()
    db.close()
    assert any("results_by_fingerprint" in str(step) for step in plan), plan


def test_delete_run_forgets_its_record_rows_requests_and_results(log: EventLog) -> None:
    make_runs(log, "r0", "r1")
    log.append("r0", [event("RunStarted")])
    log.flush()
    log.post_request("r0", "cancel", 1.0)
    log.put_results([result("f", "r0", "a", 1.0), result("g", "r1", "a", 1.0)])
    log.delete_run("r0")
    assert [r.name for r in log.list_runs()] == ["r1"]
    assert set(log.find_results(["f", "g"])) == {"g"}
    with pytest.raises(RunNotFound):
        log.read("r0")
    with pytest.raises(RunNotFound):
        log.delete_run("r0")
    log.create_run("r0", "wf", {}, 5.0)  # the name is free again, its log empty
    assert list(log.read("r0")) == []


def test_a_database_from_before_the_index_gets_it_when_opened(db_path: Path) -> None:
    with SQLiteEventLog(db_path) as log:
        log.create_run("r0", "wf", {}, 1.0)
    db = sqlite3.connect(db_path)
    db.execute("DROP TABLE results")
    db.commit()
    db.close()
    with SQLiteEventLog(db_path) as log:
        log.put_results([result("f", "r0", "a", 1.0)])
        assert set(log.find_results(["f"])) == {"f"}


def test_a_damaged_stored_result_is_a_clear_error_not_a_traceback(
    backend: str, where: str, log: EventLog
) -> None:
    make_runs(log, "r0")
    log.put_results([result("fa", "r0", "a", 1.0)])
    damage = "UPDATE {} SET data = '{{not json' WHERE fingerprint = 'fa'"
    if backend == "sqlite":
        with sqlite3.connect(where) as db:
            db.execute(damage.format("results"))
    else:
        with psycopg.connect(where, autocommit=True) as db:
            db.execute(damage.format("stormproof_results"))  # type: ignore[arg-type]
    with pytest.raises(StormproofError, match="a stored result is damaged"):
        log.find_results(["fa"])
    with pytest.raises(StormproofError, match="a stored result is damaged"):
        log.last_results("wf", ["a"])


# -- PostgreSQL's own ---------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["postgresql"])
def test_postgresql_answers_the_lookup_from_the_fingerprint_index(where: str) -> None:
    with PostgresEventLog(where) as log:
        make_runs(log, "r0")
        log.put_results([result(f"f{i}", "r0", f"t{i}", 1.0) for i in range(5_000)])
    with psycopg.connect(where, autocommit=True) as db:
        db.execute("ANALYZE stormproof_results")
        plan = db.execute("EXPLAIN " + postgres_results.FIND, (["f1", "f2"],)).fetchall()
    assert any("stormproof_results_by_fingerprint" in step for (step,) in plan), plan


@pytest.mark.parametrize("backend", ["postgresql"])
def test_a_postgresql_database_from_before_the_index_gets_it_when_opened(where: str) -> None:
    with PostgresEventLog(where) as log:
        make_runs(log, "r0")
    with psycopg.connect(where, autocommit=True) as db:  # as the first version made it
        db.execute("DROP TABLE stormproof_results")
        db.execute(
            "ALTER TABLE stormproof_leases ADD CONSTRAINT stormproof_leases_run_fkey"
            " FOREIGN KEY (run) REFERENCES stormproof_runs (name)"
        )
    with PostgresEventLog(where) as log:
        log.put_results([result("f", "r0", "a", 1.0)])
        assert set(log.find_results(["f"])) == {"f"}
        with log.driver_lease("r0"):
            log.delete_run("r0")  # its lease row stays: the old foreign key would refuse
        assert log.list_runs() == []
