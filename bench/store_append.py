"""The event log's cost: the SQLite modes by batch size, and PostgreSQL on a 10,000-task run.

The driver appends an event and its decisions, then flushes once per loop
iteration before acting (group commit). Two measurements:

1. **SQLite by batch size**: ``append`` + ``flush`` for batches of 1, 4, 16 and
   100 rows, ``--rows`` per configuration, with rows shaped like the real ones
   (an event, then decisions caused by it), in each durability mode.
2. **A 10,000-task run, SQLite vs PostgreSQL** (``--tasks``): the rows of a real
   run of a layered 10,000-task workflow are recorded flush by flush (the real
   driver and core, with the fake executor, whose attempts end at once), then the
   *same* flushes are replayed into each store: SQLite ``group`` (the default, the
   baseline), SQLite ``full``, PostgreSQL with the server's defaults
   (``synchronous_commit=on``: an fsync per flush) and PostgreSQL with
   ``synchronous_commit=off`` set by the URL. Printed: events and rows per second,
   µs per flush (mean, p50, p99) and the ratio to the baseline's time. The
   PostgreSQL server is started here, as the tests start theirs (Debian's
   ``postgresql``, ``initdb`` into a temporary dir, a free port, durable defaults),
   unless ``--postgres URL`` names one; it is skipped with a note when absent.

Run it on the filesystem the orchestrator will use; a tmpfs or a disk with a
volatile write cache makes fsync look free::

    python bench/store_append.py                   # in a temporary dir under .
    python bench/store_append.py --dir /scratch/me --rows 10000 --tasks 10000 --repeat 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import get_args

from stormproof.store.base import EventLog, Row
from stormproof.store.sqlite import SQLiteEventLog, Synchronous

ROOT = Path(__file__).resolve().parent.parent

BATCH_SIZES = (1, 4, 16, 100)


def batch(size: int, at: float) -> list[Row]:
    """One event and ``size - 1`` decisions it caused, with payloads of a realistic size."""
    event = Row(0, "event", "AttemptExited", at, None, {"attempt_id": "align/3", "exit_code": 0})
    decision = Row(
        0,
        "decision",
        "LaunchAttempt",
        at,
        None,
        {
            "attempt_id": "assemble/1",
            "task_id": "assemble",
            "pool": "spot-c5",
            "reason": "ready; cheapest open pool with room",
        },
    )
    return [event] + [decision] * (size - 1)


def measure(directory: Path, synchronous: Synchronous, size: int, total_rows: int) -> str:
    """Time ``total_rows`` rows appended and flushed ``size`` at a time in a fresh database."""
    with SQLiteEventLog(directory / f"{synchronous}-{size}.db", synchronous=synchronous) as log:
        log.create_run("bench", "bench", {}, 0.0)
        flushes = total_rows // size
        per_flush_s: list[float] = []
        start = time.perf_counter()
        for i in range(flushes):
            t0 = time.perf_counter()
            log.append("bench", batch(size, float(i)))
            log.flush()
            per_flush_s.append(time.perf_counter() - t0)
        elapsed_s = time.perf_counter() - start
    rows = flushes * size
    cuts = statistics.quantiles(per_flush_s, n=100)
    return (
        f"{synchronous:>6} {size:>5} {flushes:>7} {elapsed_s:>8.2f} {rows / elapsed_s:>10,.0f}"
        f" {statistics.fmean(per_flush_s) * 1e6:>9.0f} {cuts[49] * 1e6:>8.0f}"
        f" {cuts[98] * 1e6:>8.0f}"
    )


# -- a 10,000-task run, recorded once, replayed into each store ---------------------------------


class Recorder(SQLiteEventLog):
    """The default store, keeping every flush's rows as the driver appended them."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, synchronous="normal")
        self.flushes: list[list[Row]] = []
        self._since: list[Row] = []

    def append(self, run: str, rows: Sequence[Row]) -> list[Row]:
        self._since.extend(rows)
        return super().append(run, rows)

    def flush(self) -> None:
        if self._since:
            self.flushes.append(self._since)
            self._since = []
        super().flush()


def record_run(folder: Path, tasks: int) -> list[list[Row]]:
    """The flushes of a run of ``tasks`` no-op tasks in layers of 100 (the driver's own)."""
    sys.path.insert(0, str(Path(__file__).parent))
    from overhead import layered  # the workflow bench/overhead.py runs

    from stormproof.config import local_pool
    from stormproof.executors.fake import FakeExecutor
    from stormproof.runtime.driver import Driver
    from stormproof.runtime.home import Home
    from stormproof.runtime.runs import new_context
    from stormproof.spec.model import WorkflowSpec

    deps = layered(tasks, 100)
    spec = WorkflowSpec.model_validate(
        {
            "name": "bench",
            "global_config": {"max_retry_attempts": 0},
            "tasks": [
                {"id": f"t{i}", "command": ["true"], "depends_on": d, "vcpus": 1, "memory": 64}
                for i, d in enumerate(deps)
            ],
        }
    )
    home = Home(folder / "recording")
    home.root.mkdir(parents=True)
    store = Recorder(home.db_path)
    ctx = new_context("bench", spec, (local_pool(),), folder / "wf.yaml", "fake", seed=1)
    store.create_run("bench", spec.name, ctx.to_meta(), time.time())
    result = Driver(home, store, ctx, FakeExecutor()).drive()
    store.close()
    assert result.state == "succeeded", result
    return store.flushes


def replay(store: EventLog, flushes: list[list[Row]]) -> tuple[float, list[float]]:
    """Append and flush the recorded flushes into ``store``; total and per-flush seconds."""
    store.create_run("bench", "bench", {}, 0.0)
    per_flush_s: list[float] = []
    start = time.perf_counter()
    for rows in flushes:
        t0 = time.perf_counter()
        store.append("bench", rows)
        store.flush()
        per_flush_s.append(time.perf_counter() - t0)
    return time.perf_counter() - start, per_flush_s


@contextmanager
def postgres_url(given: str | None, folder: Path) -> Iterator[str | None]:
    """``given``, or a server of our own (durable defaults) for the time of the block."""
    if given:
        yield given
        return
    sys.path.insert(0, str(ROOT))
    from tests.store._postgres import start_server

    try:
        server = start_server(durable=True, parent=folder)
    except BaseException as exc:  # pytest's skip when PostgreSQL is not installed
        print(f"PostgreSQL: not measured ({exc})")
        yield None
        return
    try:
        yield server.url()
    finally:
        server.remove()


def compare_stores(folder: Path, tasks: int, repeat: int, given_url: str | None) -> None:
    print(f"recording a {tasks:,}-task run…", flush=True)
    flushes = record_run(folder, tasks)
    rows = sum(len(f) for f in flushes)
    events = sum(1 for f in flushes for r in f if r.category == "event")
    print(f"{len(flushes):,} flushes, {rows:,} rows ({events:,} events); best of {repeat}")
    with postgres_url(given_url, folder) as url:
        stores: dict[str, Callable[[int], EventLog]] = {
            "sqlite group": lambda k: SQLiteEventLog(folder / f"group-{k}.db"),
            "sqlite full": lambda k: SQLiteEventLog(folder / f"full-{k}.db", synchronous="full"),
        }
        if url is not None:
            stores["postgresql"] = lambda k: _fresh_pg(url, f"on{k}")
            stores["postgresql async"] = lambda k: _fresh_pg(
                url, f"off{k}", "-csynchronous_commit%3Doff"
            )
        best: dict[str, tuple[float, list[float]]] = {}
        for k in range(repeat):  # rounds interleave the stores: the machine's mood hits all
            for name, make in stores.items():
                store = make(k)
                try:
                    took = replay(store, flushes)
                finally:
                    store.close()
                if name not in best or took[0] < best[name][0]:
                    best[name] = took
    base_s = best["sqlite group"][0]
    print("  store               total_s   events/s     rows/s  us/flush  p50_us  p99_us  ×base")
    for name, (total_s, per_flush_s) in best.items():
        cuts = statistics.quantiles(per_flush_s, n=100)
        print(
            f"  {name:<18} {total_s:>8.2f} {events / total_s:>10,.0f} {rows / total_s:>10,.0f}"
            f" {statistics.fmean(per_flush_s) * 1e6:>9.0f} {cuts[49] * 1e6:>7.0f}"
            f" {cuts[98] * 1e6:>7.0f} {total_s / base_s:>6.2f}"
        )


def _fresh_pg(url: str, tag: str, *options: str) -> EventLog:
    """A store in an empty schema of its own, with ``options`` for its sessions (``url`` must
    not have an ``options`` parameter of its own)."""
    import psycopg

    from stormproof.store.postgres import PostgresEventLog

    schema = f"bench_{tag}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")  # type: ignore[arg-type]
        conn.execute(f"CREATE SCHEMA {schema}")  # type: ignore[arg-type]
    settings = "%20".join((f"-csearch_path%3D{schema}", *options))
    return PostgresEventLog(f"{url}{'&' if '?' in url else '?'}options={settings}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=40_000, help="rows per SQLite configuration")
    parser.add_argument("--tasks", type=int, default=10_000, help="tasks of the recorded run")
    parser.add_argument("--repeat", type=int, default=1, help="rounds of the run's replays")
    parser.add_argument("--postgres", metavar="URL", help="a server to use (default: start one)")
    parser.add_argument("--skip-batches", action="store_true", help="only the 10,000-task run")
    parser.add_argument("--dir", type=Path, default=Path("."), help="where to make the databases")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="stormproof-bench-", dir=args.dir) as tmp:
        os.chmod(tmp, 0o755)  # the PostgreSQL server runs as its own user, inside it
        print(f"databases in {Path(tmp).resolve()}")
        if not args.skip_batches:
            print(f"SQLite, {args.rows:,} rows per line")
            print("  sync batch flushes  total_s     rows/s  us/flush   p50_us   p99_us")
            for synchronous in get_args(Synchronous):
                for size in BATCH_SIZES:
                    print(measure(Path(tmp), synchronous, size, args.rows), flush=True)
        compare_stores(Path(tmp), args.tasks, args.repeat, args.postgres)


if __name__ == "__main__":
    main()
