"""The event-log contract, run against both stores (SQLite and a real PostgreSQL).

Whatever a backend is, the driver and the commands rely on these: seqs 1, 2, 3 …
per run, nothing durable before ``flush``, causes resolved the same way, runs
newest first, requests taken once, and a driver lease whose fencing token stops
a holder that was taken over at its next flush.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from stormproof.errors import LeaseLost, RunExists, RunLocked, RunNotFound, StormproofError
from stormproof.store.base import EventLog, Row

from .conftest import OpenLog
from .helpers import decision, event


def seqs(rows: Iterator[Row] | list[Row]) -> list[int]:
    return [r.seq for r in rows]


def causes(rows: list[Row]) -> list[int | None]:
    return [r.cause for r in rows]


def test_it_is_an_event_log(log: EventLog) -> None:
    store: EventLog = log  # checked by mypy; here it only has to construct
    assert store is log


# -- rows and seqs ------------------------------------------------------------------


def test_rows_round_trip_with_seqs_continuing_across_appends_flushes_and_reopen(
    open_log: OpenLog,
) -> None:
    data = {"attempt_id": "align/1", "nested": {"list": [1, 2.5, None]}, "text": "µs → ✓"}
    with open_log() as log:
        log.create_run("r", "wf", {}, 1.0)
        first = log.append("r", [event("A", at=5.0, **data), decision("Launch")])
        second = log.append("r", [event("B")])
        log.flush()
        third = log.append("r", [event("C"), decision("D"), decision("D")])
        log.flush()
    assert seqs(first + second + third) == [1, 2, 3, 4, 5, 6]
    with open_log() as log:
        stored = list(log.read("r"))
        assert stored == first + second + third
        assert stored[0] == Row(1, "event", "A", 5.0, None, data)
        assert seqs(log.append("r", [event("E")])) == [7]


def test_seqs_are_per_run(log: EventLog) -> None:
    log.create_run("a", "wf", {}, 1.0)
    log.create_run("b", "wf", {}, 2.0)
    log.append("a", [event(), event()])
    log.append("b", [event()])
    log.append("a", [event()])
    log.flush()
    assert seqs(log.read("a")) == [1, 2, 3]
    assert seqs(log.read("b")) == [1]


def test_only_flushed_rows_are_read(log: EventLog) -> None:
    log.create_run("r", "wf", {}, 1.0)
    log.append("r", [event()])
    assert list(log.read("r")) == []
    log.flush()
    log.append("r", [event()])
    assert seqs(log.read("r")) == [1]


def test_read_after_seq_streams_a_lazy_iterator(log: EventLog) -> None:
    log.create_run("r", "wf", {}, 1.0)
    for _ in range(5):  # more than one page of either store's reads
        log.append("r", [event() for _ in range(1000)])
        log.flush()
    rows = log.read("r", after_seq=500)
    assert not isinstance(rows, list)
    assert seqs(rows) == list(range(501, 5001))
    assert list(log.read("r", after_seq=5000)) == []


def test_reading_or_appending_an_unknown_run_says_so(log: EventLog) -> None:
    with pytest.raises(RunNotFound):
        log.read("nope")
    with pytest.raises(RunNotFound):
        log.append("nope", [event()])


def test_close_is_not_a_flush(open_log: OpenLog) -> None:
    with open_log() as log:
        log.create_run("r", "wf", {}, 1.0)
        log.append("r", [event()])
    with open_log() as log:
        assert list(log.read("r")) == []
        assert seqs(log.append("r", [event()])) == [1]


def test_flush_with_nothing_buffered_does_nothing(log: EventLog) -> None:
    log.flush()
    log.create_run("r", "wf", {}, 1.0)
    log.flush()
    assert list(log.read("r")) == []


def test_a_second_writer_without_the_lease_is_refused_at_flush(open_log: OpenLog) -> None:
    with open_log() as one, open_log() as two:
        one.create_run("r", "wf", {}, 1.0)
        one.append("r", [event()])
        two.append("r", [event()])
        one.flush()
        with pytest.raises(StormproofError, match="without holding its driver lease"):
            two.flush()
        with pytest.raises(StormproofError):
            two.flush()  # the rows stay buffered: nothing is dropped silently
        assert [r.kind for r in one.read("r")] == ["E"]


# -- runs, requests and rows together-----------------------------------------------------


def test_append_returns_what_read_gives_back(log: EventLog) -> None:
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
    log: EventLog, rows: list[Row], message: str
) -> None:
    log.create_run("r", "wf", {}, 1.0)
    log.append("r", [event(), event(), event(), event()])
    with pytest.raises(ValueError, match=message):
        log.append("r", rows)
    assert seqs(log.append("r", [event()])) == [5]


# -- runs -------------------------------------------------------------------------


def test_runs_round_trip_newest_first(log: EventLog) -> None:
    log.create_run("old", "wf-a", {"spec": {"tasks": 3}}, 100.0)
    log.create_run("new", "wf-b", {}, 300.0)
    log.create_run("mid", "wf-a", {}, 200.0)
    log.create_run("mid-twin", "wf-a", {}, 200.0)
    assert [r.name for r in log.list_runs()] == ["new", "mid-twin", "mid", "old"]
    old = log.get_run("old")
    assert (old.created_at, old.workflow_name, old.meta) == (100.0, "wf-a", {"spec": {"tasks": 3}})


def test_a_taken_name_says_how_to_continue(log: EventLog) -> None:
    log.create_run("md-2025", "wf", {}, 1.0)
    with pytest.raises(RunExists) as caught:
        log.create_run("md-2025", "other", {}, 2.0)
    assert str(caught.value) == (
        "run 'md-2025' exists; continue it with `stormproof resume md-2025` or pick another --name"
    )
    assert log.get_run("md-2025").workflow_name == "wf"


def test_an_unknown_name_suggests_close_ones(log: EventLog, where: str) -> None:
    log.create_run("md-2025", "wf", {}, 1.0)
    log.create_run("qm-large", "wf", {}, 1.0)
    with pytest.raises(RunNotFound) as caught:
        log.get_run("md-2026")
    place = where.split("?")[0] if "://" in where else str(Path(where).parent.resolve())
    assert str(caught.value) == (
        f"no run named 'md-2026' in {place} (did you mean 'md-2025'?); "
        "`stormproof status` lists runs"
    )
    with pytest.raises(RunNotFound, match=r"in \S+; `stormproof status` lists runs"):
        log.get_run("zzz")


@pytest.mark.parametrize("name", ["../escape", "a/b", ".hidden", ""])
def test_names_that_could_leave_the_home_are_refused(log: EventLog, name: str) -> None:
    with pytest.raises(StormproofError, match="is not allowed"):
        log.create_run(name, "wf", {}, 1.0)
    with pytest.raises(StormproofError, match="is not allowed"):
        log.driver_lease(name)
    with pytest.raises(StormproofError, match="is not allowed"):
        log.is_driven(name)


# -- inbox ------------------------------------------------------------------------


def test_requests_are_taken_once_oldest_first_per_run(log: EventLog) -> None:
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


def test_a_request_for_an_unknown_run_says_so(log: EventLog) -> None:
    log.create_run("md-2025", "wf", {}, 1.0)
    with pytest.raises(RunNotFound, match="did you mean 'md-2025'"):
        log.post_request("md-2026", "cancel", 1.0)


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
    log: EventLog, data: dict[object, object]
) -> None:
    """orjson writes infinities and NaN as null and refuses non-str keys and huge ints; such a
    row must come back as ``json`` would have kept it, never with a value silently nulled."""
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


# -- the driver lease and its fencing token ---------------------------------------------------


def lapse(backend: str, db_path: Path, run: str) -> None:
    """End a held lease without its holder letting go: SQLite's lock file deleted behind its
    back; PostgreSQL's lease left to lapse (the holders here take it for 0.5 s)."""
    if backend == "sqlite":
        (db_path.parent / "locks" / f"{run}.lock").unlink()
    else:
        time.sleep(0.7)


def test_the_token_grows_with_every_holder(open_log: OpenLog) -> None:
    one, two = open_log(), open_log()
    one.create_run("r", "wf", {}, 1.0)
    with one.driver_lease("r") as lease:
        first = lease.token
    with one.driver_lease("r") as lease:
        assert lease.token == first + 1
    with two.driver_lease("r") as lease:
        assert lease.token == first + 2


def test_a_held_lease_refuses_another_holder_and_says_who_holds_it(open_log: OpenLog) -> None:
    one, two = open_log(), open_log()
    one.create_run("r", "wf", {}, 1.0)
    with one.driver_lease("r") as held:
        assert two.is_driven("r")
        with pytest.raises(RunLocked) as caught, two.driver_lease("r"):
            pass
        holder = caught.value.holder
        assert (holder.pid, holder.token) == (os.getpid(), held.token)  # type: ignore[attr-defined]
        assert f"pid {os.getpid()}" in str(caught.value)
    assert not two.is_driven("r")
    with two.driver_lease("r") as lease:  # let go at the end of the block: free at once
        assert lease.token == held.token + 1


def test_a_holder_that_was_taken_over_writes_nothing_more_and_is_told(
    open_log: OpenLog, backend: str, db_path: Path
) -> None:
    old, new = open_log(lease_s=0.5), open_log()
    old.create_run("r", "wf", {}, 1.0)
    with old.driver_lease("r") as old_lease:
        old.append("r", [event("before")])
        old.flush()
        lapse(backend, db_path, "r")
        with new.driver_lease("r") as new_lease:
            assert new_lease.token == old_lease.token + 1
            old.append("r", [event("stale"), decision("Launch")])
            with pytest.raises(LeaseLost) as caught:
                old.flush()
            assert f"lease token {new_lease.token}; this one held {old_lease.token}" in str(
                caught.value
            )
            assert "acts on nothing more" in str(caught.value)
            with pytest.raises(LeaseLost):
                old_lease.renew()
            new.post_request("r", "cancel", 2.0)
            with contextlib.suppress(LeaseLost):  # either way, left for the new holder:
                assert old.take_requests("r") == []
            assert new.take_requests("r") == ["cancel"]
            assert [r.kind for r in new.read("r")] == ["before"]
            assert seqs(new.append("r", [event("after")])) == [2]
            new.flush()
            new_lease.renew()
    assert [r.kind for r in new.read("r")] == ["before", "after"]
