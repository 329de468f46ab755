"""The dashboard on a finished 10,000-task run: server time to first byte and payload sizes.

Makes a real run (``stormproof run`` of a layered DAG of no-op tasks, ~10 s), starts a real
``stormproof serve`` on a free loopback port, and times what the runs page and the run's
page ask for: the first request after the server starts (it loads the run once: the view
the run's driver kept in the store, and the rows after it) and the median of later ones
(only the rows appended since are read). The first request is also given in CPU seconds
the server spent from printing its URL to answering it (Linux: ``/proc``), which a loaded
machine inflates less than wall time. The baseline, measured in the same run: reading the
same run's rows straight from SQLite (``SELECT`` + JSON decoding of every row, what a fold
of the log must at least do), and ``SELECT``-ing 100 rows (a page).

    python bench/serve_scale.py                 # 10,000 tasks in a temporary dir under .
    python bench/serve_scale.py --tasks 2000 --dir /dev/shm
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

TARGET_S = 0.5
REPEAT = 7
SELECT = "SELECT seq, category, kind, at, cause, data FROM rows WHERE run = 'big' ORDER BY seq"


def workflow(tasks: int, stages: int = 10) -> str:
    """A layered DAG: each task depends on one task of the stage before."""
    width = max(1, tasks // stages)
    lines = ["name: serve-scale", "tasks:"]
    for i in range(tasks):
        stage = i // width
        deps = f", depends_on: [t{(stage - 1) * width + i % width}]" if stage else ""
        lines.append(f"  - {{id: t{i}, command: 'true', memory: 16, vcpus: 0.01{deps}}}")
    return "\n".join(lines) + "\n"


def make_run(home: Path, tasks: int) -> float:
    wf = home.parent / "wf.yaml"
    wf.write_text(workflow(tasks))
    started = time.perf_counter()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "stormproof",
            "run",
            str(wf),
            "--name",
            "big",
            "-q",
            "--home",
            str(home),
        ],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise SystemExit(f"the run failed: {proc.stderr}")
    return time.perf_counter() - started


def ttfb(host: str, port: int, path: str) -> tuple[float, int]:
    """Seconds from sending the request to the status line and headers; body bytes."""
    conn = http.client.HTTPConnection(host, port, timeout=60)
    started = time.perf_counter()
    conn.request("GET", path)
    response = conn.getresponse()
    first = time.perf_counter() - started
    body = response.read()
    conn.close()
    if response.status != 200:
        raise SystemExit(f"GET {path}: {response.status} {body[:200]!r}")
    return first, len(body)


def baseline(db: Path) -> tuple[float, float, int]:
    """Seconds to read and decode every row of the run; to read 100; and the row count."""
    con = sqlite3.connect(db)
    started = time.perf_counter()
    rows = con.execute(SELECT).fetchall()
    for r in rows:
        json.loads(r[5])
    all_s = time.perf_counter() - started
    started = time.perf_counter()
    con.execute(SELECT + " LIMIT 100").fetchall()
    page_s = time.perf_counter() - started
    con.close()
    return all_s, page_s, len(rows)


PATHS = (
    ("runs page (HTML)", "/"),
    ("runs page data /api/runs", "/api/runs"),
    ("run page (HTML)", "/runs/big"),
    ("run: summary + 100 tasks", "/api/runs/big?limit=100"),
    ("run: timeline (2,000 latest)", "/api/runs/big/timeline"),
    ("run: stages", "/api/runs/big/stages"),
    ("/metrics", "/metrics"),
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--dir", default=".", help="where the temporary home goes")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="serve-scale-", dir=args.dir) as tmp:
        home = Path(tmp) / "home"
        print(f"making a finished {args.tasks:,}-task run …", flush=True)
        took = make_run(home, args.tasks)
        full = subprocess.run(
            [sys.executable, "-m", "stormproof", "status", "big", "--json", "--home", str(home)],
            capture_output=True,
        ).stdout
        all_s, page_s, rows = baseline(home / "stormproof.db")
        print(
            f"  run: {took:.1f} s, {rows:,} log rows; `status big --json`: {len(full) / 1e6:.1f} MB"
        )
        print(f"  baseline: read + decode all rows {all_s * 1000:.0f} ms;", end=" ")
        print(f"100 rows {page_s * 1000:.2f} ms")
        server = subprocess.Popen(
            [sys.executable, "-m", "stormproof", "serve", "--port", "0", "--home", str(home)],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert server.stdout is not None
            found = re.search(r"http://\S+/", server.stdout.readline())
            if found is None:
                raise SystemExit("serve did not start")
            url = urlsplit(found.group(0))
            host, port = url.hostname or "127.0.0.1", url.port or 80
            report(host, port, all_s, server.pid)
        finally:
            server.terminate()
            server.wait()


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a process so far (``None`` where /proc is not)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def report(host: str, port: int, all_s: float, pid: int) -> None:
    cpu_before = cpu_seconds(pid)
    first_run, _ = ttfb(host, port, "/api/runs/big?limit=100")  # the first load, after start
    cpu_after = cpu_seconds(pid)
    cpu = "" if cpu_before is None or cpu_after is None else f"{cpu_after - cpu_before:.2f} s"
    print(
        f"\nfirst request after the server started (loads the run once): {first_run * 1000:.0f} ms"
        f" = {first_run / all_s:.2f}× the baseline of reading every row; server CPU {cpu}"
    )
    print(f"\n| request | TTFB median of {REPEAT} | × baseline (all rows) | payload |", end=" ")
    print(f"target ≤ {TARGET_S} s |")
    print("|---|---|---|---|---|")
    for label, path in PATHS:
        times, size = [], 0
        for _ in range(REPEAT):
            t, size = ttfb(host, port, path)
            times.append(t)
        median = statistics.median(times)
        ok = "met" if median <= TARGET_S else "**missed**"
        cells = [f"{median * 1000:.1f} ms", f"{median / all_s:.3f}×", f"{size / 1024:.1f} KiB"]
        print(f"| {label} | {' | '.join(cells)} | {ok} |")


if __name__ == "__main__":
    main()
