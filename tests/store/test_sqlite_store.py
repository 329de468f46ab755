"""The SQLite event log within one process: rows, causes, runs, inbox, bad files."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from stormproof.errors import RunExists, RunNotFound, StormproofError
from stormproof.store.base import EventLog, Row
from stormproof.store.sqlite import SCHEMA_VERSION, SQLiteEventLog, number_rows

from .helpers import decision, event


def seqs(rows: Iterator[Row] | list[Row]) -> list[int]:
    return [r.seq for r in rows]


def test_it_is_an_event_log(log: SQLiteEventLog) -> None:
    store: EventLog = log  # checked by mypy; here it only has to construct
    assert store is log


# -- rows and seqs ------------------------------------------------------------------


def test_rows_round_trip_with_seqs_continuing_across_appends_flushes_and_reopen(
    db_path: Path,
) -> None:
    data = {"attempt_id": "align/1", "nested": {"list": [1, 2.5, None]}, "text": "µs → ✓"}
    with SQLiteEventLog(db_path) as log:
        log.create_run("r", "wf", {}, 1.0)
        first = log.append("r", [event("A", at=5.0, **data), decision("Launch")])
        second = log.append("r", [event("B")])
        log.flush()
        third = log.append("r", [event("C"), decision("D"), decision("D")])
        log.flush()
    assert seqs(first + second + third) == [1, 2, 3, 4, 5, 6]
    with SQLiteEventLog(db_path) as log:
        stored = list(log.read("r"))
        assert stored == first + second + third
        assert stored[0] == Row(1, "event", "A", 5.0, None, data)
        assert seqs(log.append("r", [event("E")])) == [7]


def test_seqs_are_per_run(log: SQLiteEventLog) -> None:
    log.create_run("a", "wf", {}, 1.0)
    log.create_run("b", "wf", {}, 2.0)
    log.append("a", [event(), event()])
    log.append("b", [event()])
    log.append("a", [event()])
    log.flush()
    assert seqs(log.read("a")) == [1, 2, 3]
    assert seqs(log.read("b")) == [1]


def test_only_flushed_rows_are_read(log: SQLiteEventLog) -> None:
    log.create_run("r", "wf", {}, 1.0)
    log.append("r", [event()])
    assert list(log.read("r")) == []
    log.flush()
    log.append("r", [event()])
    assert seqs(log.read("r")) == [1]


def test_read_after_seq_streams_a_lazy_iterator(log: SQLiteEventLog) -> None:
    log.create_run("r", "wf", {}, 1.0)
    for _ in range(3):
        log.append("r", [event() for _ in range(1000)])
        log.flush()
    rows = log.read("r", after_seq=2500)
    assert not isinstance(rows, list)
    assert seqs(rows) == list(range(2501, 3001))
    assert list(log.read("r", after_seq=3000)) == []


def test_reading_or_appending_an_unknown_run_says_so(log: SQLiteEventLog) -> None:
    with pytest.raises(RunNotFound):
        log.read("nope")
    with pytest.raises(RunNotFound):
        log.append("nope", [event()])


def test_close_is_not_a_flush(db_path: Path) -> None:
    with SQLiteEventLog(db_path) as log:
        log.create_run("r", "wf", {}, 1.0)
        log.append("r", [event()])
    with SQLiteEventLog(db_path) as log:
        assert list(log.read("r")) == []
        assert seqs(log.append("r", [event()])) == [1]


def test_flush_with_nothing_buffered_does_nothing(log: SQLiteEventLog) -> None:
    log.flush()
    log.create_run("r", "wf", {}, 1.0)
    log.flush()
    assert list(log.read("r")) == []


def test_a_second_writer_without_the_lease_is_refused_at_flush(db_path: Path) -> None:
    with SQLiteEventLog(db_path) as one, SQLiteEventLog(db_path) as two:
        one.create_run("r", "wf", {}, 1.0)
        one.append("r", [event()])
        two.append("r", [event()])
        one.flush()
        with pytest.raises(StormproofError, match="without holding its driver lease"):
            two.flush()
        with pytest.raises(StormproofError):
            two.flush()  # the rows stay buffered: nothing is dropped silently
        assert [r.kind for r in one.read("r")] == ["E"]


# -- causes -------------------------------------------------------------------------


def causes(rows: list[Row]) -> list[int | None]:
    return [r.cause for r in rows]


def test_a_decision_without_cause_gets_the_nearest_preceding_event_of_its_append() -> None:
    rows = [event(), decision(), decision(), event(), decision()]
    assert causes(number_rows(rows, 10)) == [None, 10, 10, None, 13]


def test_a_negative_cause_counts_back_within_the_append() -> None:
    rows = [event(), event(), decision(cause=-2), decision(cause=-2)]
    assert causes(number_rows(rows, 1)) == [None, None, 1, 2]


def test_a_positive_cause_is_an_absolute_seq() -> None:
    assert causes(number_rows([decision(cause=3), event(), decision(cause=8)], 7)) == [3, None, 8]


def test_append_returns_what_read_gives_back(log: SQLiteEventLog) -> None:
    log.create_run("r", "wf", {}, 1.0)
    log.append("r", [event(), decision()])
    returned = log.append("r", [event(), decision(), decision(cause=-2), decision(cause=1)])
    log.flush()
    assert causes(returned) == [None, 3, 3, 1]
    assert list(log.read("r", after_seq=2)) == returned


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([decision()], "no event precedes it"),
        ([event(), decision(cause=-2)], "before the start of this append"),
        ([event(), decision(), decision(cause=-1)], "must be caused by an event"),
        ([event(), decision(cause=6)], "must be an earlier seq"),
        ([event(), decision(cause=0)], "must be an earlier seq"),
        ([event(), decision(), decision(cause=6)], "must be caused by an event"),
        ([Row(3, "event", "E", 1.0, None, {})], "seq is assigned by append"),
    ],
)
def test_malformed_rows_are_refused_and_nothing_is_buffered(
    log: SQLiteEventLog, rows: list[Row], message: str
) -> None:
    log.create_run("r", "wf", {}, 1.0)
    log.append("r", [event(), event(), event(), event()])
    with pytest.raises(ValueError, match=message):
        log.append("r", rows)
    assert seqs(log.append("r", [event()])) == [5]


# -- runs -------------------------------------------------------------------------


def test_runs_round_trip_newest_first(log: SQLiteEventLog) -> None:
    log.create_run("old", "wf-a", {"spec": {"tasks": 3}}, 100.0)
    log.create_run("new", "wf-b", {}, 300.0)
    log.create_run("mid", "wf-a", {}, 200.0)
    log.create_run("mid-twin", "wf-a", {}, 200.0)
    assert [r.name for r in log.list_runs()] == ["new", "mid-twin", "mid", "old"]
    old = log.get_run("old")
    assert (old.created_at, old.workflow_name, old.meta) == (100.0, "wf-a", {"spec": {"tasks": 3}})


def test_a_taken_name_says_how_to_continue(log: SQLiteEventLog) -> None:
    log.create_run("md-2025", "wf", {}, 1.0)
    with pytest.raises(RunExists) as caught:
        log.create_run("md-2025", "other", {}, 2.0)
    assert str(caught.value) == (
        "run 'md-2025' exists; continue it with `stormproof resume md-2025` or pick another --name"
    )
    assert log.get_run("md-2025").workflow_name == "wf"


def test_an_unknown_name_suggests_close_ones(log: SQLiteEventLog, db_path: Path) -> None:
    log.create_run("md-2025", "wf", {}, 1.0)
    log.create_run("qm-large", "wf", {}, 1.0)
    with pytest.raises(RunNotFound) as caught:
        log.get_run("md-2026")
    assert str(caught.value) == (
        f"no run named 'md-2026' in {db_path.parent.resolve()} (did you mean 'md-2025'?); "
        "`stormproof status` lists runs"
    )
    with pytest.raises(RunNotFound, match=r"in \S+; `stormproof status` lists runs"):
        log.get_run("zzz")


@pytest.mark.parametrize("name", ["../escape", "a/b", ".hidden", ""])
def test_names_that_could_leave_the_home_are_refused(log: SQLiteEventLog, name: str) -> None:
    with pytest.raises(StormproofError, match="is not allowed"):
        log.create_run(name, "wf", {}, 1.0)
    with pytest.raises(StormproofError, match="is not allowed"):
        log.driver_lease(name)
    with pytest.raises(StormproofError, match="is not allowed"):
        log.is_driven(name)


# -- inbox ------------------------------------------------------------------------


def test_requests_are_taken_once_oldest_first_per_run(log: SQLiteEventLog) -> None:
    log.create_run("a", "wf", {}, 1.0)
    log.create_run("b", "wf", {}, 1.0)
    assert log.take_requests("a") == []
    log.post_request("a", "cancel", 5.0)
    log.post_request("b", "cancel", 6.0)
    log.post_request("a", "stop", 7.0)
    assert log.take_requests("a") == ["cancel", "stop"]
    assert log.take_requests("a") == []
    log.post_request("a", "cancel", 8.0)
    assert log.take_requests("a") == ["cancel"]
    assert log.take_requests("b") == ["cancel"]


def test_a_request_for_an_unknown_run_says_so(log: SQLiteEventLog) -> None:
    log.create_run("md-2025", "wf", {}, 1.0)
    with pytest.raises(RunNotFound, match="did you mean 'md-2025'"):
        log.post_request("md-2026", "cancel", 1.0)


# -- the file -----------------------------------------------------------------------


def test_the_default_home_is_created_in_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with SQLiteEventLog() as log:
        log.create_run("r", "wf", {}, 1.0)
    assert (tmp_path / ".stormproof" / "stormproof.db").is_file()


def test_the_database_is_in_wal_mode_with_a_schema_version(log: SQLiteEventLog) -> None:
    raw = sqlite3.connect(log.path)
    try:
        assert raw.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        version = raw.execute("SELECT value FROM store_info WHERE key = 'schema_version'")
        assert version.fetchone() == (str(SCHEMA_VERSION),)
    finally:
        raw.close()


def test_synchronous_is_normal_group_or_full(db_path: Path) -> None:
    with SQLiteEventLog(db_path, synchronous="normal") as log:
        assert log.synchronous == "normal"
    with SQLiteEventLog(db_path) as log:
        assert log.synchronous == "group"
    with pytest.raises(ValueError, match="'normal', 'group' or 'full'"):
        SQLiteEventLog(db_path, synchronous="off")  # type: ignore[arg-type]


def test_group_mode_fsyncs_the_wal_at_most_every_interval_and_on_close(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import stormproof.store.sqlite as mod

    synced: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(mod.os, "fsync", lambda fd: synced.append(fd) or real_fsync(fd))
    clock = [1000.0]
    monkeypatch.setattr(mod.time, "monotonic", lambda: clock[0])
    log = SQLiteEventLog(db_path)
    log.create_run("r", "wf", {}, 0.0)
    for i in range(5):  # five flushes within one interval: no fsync of ours
        log.append("r", [event(f"E{i}")])
        log.flush()
    assert synced == []
    clock[0] += mod.GROUP_FSYNC_S
    log.append("r", [event("late")])
    log.flush()
    assert len(synced) == 1
    log.append("r", [event("last")])
    log.flush()
    log.close()  # the tail written since the last fsync is made durable on close
    assert len(synced) == 2


def test_a_file_that_is_not_sqlite_is_a_clear_error(db_path: Path) -> None:
    db_path.parent.mkdir(parents=True)
    db_path.write_bytes(b"these are my notes, not a database\n" * 200)
    with pytest.raises(StormproofError, match=r"is not a database.*move it away") as caught:
        SQLiteEventLog(db_path)
    assert str(db_path) in str(caught.value)


def test_someone_elses_sqlite_database_is_left_alone(db_path: Path) -> None:
    db_path.parent.mkdir(parents=True)
    raw = sqlite3.connect(db_path)
    raw.execute("CREATE TABLE photos (id INTEGER)")
    raw.commit()
    raw.close()
    with pytest.raises(StormproofError, match=r"not a stormproof one.*photos"):
        SQLiteEventLog(db_path)


def test_a_newer_schema_asks_for_an_upgrade(db_path: Path) -> None:
    SQLiteEventLog(db_path).close()
    raw = sqlite3.connect(db_path)
    raw.execute("UPDATE store_info SET value = '99' WHERE key = 'schema_version'")
    raw.commit()
    raw.close()
    with pytest.raises(StormproofError, match=r"newer stormproof.*version 99.*pip install -U"):
        SQLiteEventLog(db_path)


def test_damaged_pages_are_a_clear_error_not_a_traceback(db_path: Path) -> None:
    with SQLiteEventLog(db_path) as log:
        log.create_run("r", "wf", {}, 1.0)
        log.append("r", [event(payload="x" * 200) for _ in range(2000)])
        log.flush()
    page = 4096
    with db_path.open("r+b") as f:  # keep page 1 (the schema), spoil the rest
        size = f.seek(0, 2)
        f.seek(page)
        f.write(b"\xa5" * (size - page))
    with (
        pytest.raises(StormproofError, match=r"malformed.*restore it from a backup"),
        SQLiteEventLog(db_path) as log,
    ):
        for _ in log.read("r"):
            pass


def test_a_directory_in_the_way_is_a_clear_error(db_path: Path) -> None:
    db_path.mkdir(parents=True)
    with pytest.raises(StormproofError, match="unable to open"):
        SQLiteEventLog(db_path)


@pytest.mark.parametrize(
    "data",
    [
        {"fire_at": float("inf"), "until": None},
        {"nested": {"x": [1.0, float("-inf")]}},
        {"value": float("nan")},
        {1: "a non-str key"},
        {"big": 2**70},
    ],
)
def test_rows_orjson_cannot_write_faithfully_round_trip_through_json(
    log: SQLiteEventLog, data: dict[object, object]
) -> None:
    """orjson writes infinities and NaN as null and refuses non-str keys and huge ints; such a
    row must come back as ``json`` would have kept it, never with a value silently nulled."""
    import json
    import math

    log.create_run("r", "w", {}, 0.0)
    log.append("r", [event("E", 1.0, **{"payload": data})])
    log.flush()
    (row,) = log.read("r")
    expected = json.loads(json.dumps({"payload": data}))
    got = row.data["payload"]
    if "value" in data:
        assert math.isnan(got["value"])
    else:
        assert got == expected["payload"]


def test_plain_rows_are_written_compact_and_read_back_equal(log: SQLiteEventLog) -> None:
    log.create_run("r", "w", {}, 0.0)
    data = {"attempt_id": "t/1", "instances": ["i-1"], "usd": 0.1, "ok": True, "none": None}
    log.append("r", [event("E", 1.0, **data), decision("D", **{"text": "naïve ✓"})])
    log.flush()
    rows = list(log.read("r"))
    assert [r.data for r in rows] == [data, {"text": "naïve ✓"}]
    raw = sqlite3.connect(log.path).execute("SELECT data FROM rows ORDER BY seq").fetchall()
    assert raw[1][0] == '{"text":"naïve ✓"}'  # UTF-8, not \u escapes; no spaces
