"""What durability costs the SQLite event log: synchronous normal vs group vs full, by batch size.

The driver appends an event and its decisions, then flushes once per loop
iteration before acting (group commit). This measures ``append`` + ``flush``
for batches of 1, 4, 16 and 100 rows, 40,000 rows per configuration, with rows
shaped like the real ones (an event, then decisions caused by it).

Run it on the filesystem the orchestrator will use; a tmpfs or a disk with a
volatile write cache makes fsync look free::

    python bench/store_append.py                   # in a temporary dir under .
    python bench/store_append.py --dir /scratch/me --rows 10000
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import get_args

from stormproof.store.base import Row
from stormproof.store.sqlite import SQLiteEventLog, Synchronous

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=40_000, help="rows per configuration")
    parser.add_argument("--dir", type=Path, default=Path("."), help="where to make the databases")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="stormproof-bench-", dir=args.dir) as tmp:
        print(f"databases in {Path(tmp).resolve()}, {args.rows:,} rows per line")
        print("  sync batch flushes  total_s     rows/s  us/flush   p50_us   p99_us")
        for synchronous in get_args(Synchronous):
            for size in BATCH_SIZES:
                print(measure(Path(tmp), synchronous, size, args.rows), flush=True)


if __name__ == "__main__":
    main()
