"""The SQLite event log's own matters: its file, WAL, durability modes, damage, the token."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from stormproof.errors import StoreFault, StormproofError
from stormproof.store.base import Row
from stormproof.store.sqlite import SQLiteEventLog
from stormproof.store.sqlite_file import SCHEMA_VERSION

from .helpers import decision, event


def seqs(rows: Iterator[Row] | list[Row]) -> list[int]:
    return [r.seq for r in rows]


@pytest.fixture
def backend() -> str:
    """These tests are about the SQLite file itself (the contract is in ``test_contract.py``)."""
    return "sqlite"


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


def test_plain_rows_are_written_compact_and_read_back_equal(log: SQLiteEventLog) -> None:
    log.create_run("r", "w", {}, 0.0)
    data = {"attempt_id": "t/1", "instances": ["i-1"], "usd": 0.1, "ok": True, "none": None}
    log.append("r", [event("E", 1.0, **data), decision("D", **{"text": "naïve ✓"})])
    log.flush()
    rows = list(log.read("r"))
    assert [r.data for r in rows] == [data, {"text": "naïve ✓"}]
    raw = sqlite3.connect(log.path).execute("SELECT data FROM rows ORDER BY seq").fetchall()
    assert raw[1][0] == '{"text":"naïve ✓"}'  # UTF-8, not \u escapes; no spaces


def test_a_database_locked_past_the_busy_timeout_is_a_store_fault(db_path: Path) -> None:
    """Another process holding the write lock too long: a fault that passes (the run stops
    resumably), not damage; the rows stay buffered for the flush after it."""
    with SQLiteEventLog(db_path, busy_timeout_s=0.2) as log:
        log.create_run("r", "wf", {}, 1.0)
        other = sqlite3.connect(db_path, isolation_level=None)
        other.execute("BEGIN EXCLUSIVE")
        log.append("r", [event("waits")])
        with pytest.raises(StoreFault, match="another process holds it for writing"):
            log.flush()
        other.execute("ROLLBACK")
        other.close()
        log.flush()
        assert [r.kind for r in log.read("r")] == ["waits"]
