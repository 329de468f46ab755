"""Dask executor overhead: no-op tasks through stormproof vs. the same tasks on plain Dask.

One 2-worker local Dask cluster (a ``LocalCluster`` of processes, 1 thread each, the workers
declaring ``vcpus=1,memory=1024``) serves both, in this one process's lifetime, back to back:

* **plain Dask**: a client submits, in topological order, one task per workflow task that
  runs ``true`` with ``subprocess.run`` (the same subprocess stormproof's wrapper starts), its
  dependencies passed as futures so Dask orders them, and waits for all;
* **stormproof**: ``stormproof run --quiet`` with ``executor: dask`` and ``dask.scheduler``
  set to the same cluster (everything it does per attempt: the event log, the core, a claim
  and a status file per attempt, the start and end events; its own start-up and compile too).

The DAG is ``bench/overhead.py``'s: layers of ``--width`` tasks, each depending on 2 tasks of
the layer before. Printed per round (``--repeat``: plain Dask then stormproof, back to back, so
a round's ratio compares runs made in the same minutes): wall seconds of each, their ratio
(target: at most 1.3 at 10,000 tasks), the peak RSS and CPU of the stormproof orchestrator (its
own process, from ``wait4`` in a small launcher), and the CPU of the workers and the scheduler;
then the median and best ratio over the rounds.
The runs' homes go to a temporary directory on ``--dir`` (default: the repository's disk).

Usage: python bench/dask_overhead.py [--sizes 1000,10000] [--repeat 1] [--json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
from distributed import Client, LocalCluster, wait

sys.path.insert(0, str(Path(__file__).resolve().parent))
from overhead import layered, workflow_file  # the same DAG and file as bench/overhead.py

ROOT = Path(__file__).resolve().parent.parent


def noop() -> int:
    """What a plain Dask task does for one workflow task: start ``true`` and wait for it."""
    return subprocess.run(["true"], check=False).returncode


def noop_after(*deps: int) -> int:
    return noop()


def run_plain(client: Client, ids: list[str], deps: list[list[str]], tag: str) -> float:
    started = time.perf_counter()
    futures = {}
    for task, parents in zip(ids, deps, strict=True):  # ids are in topological order
        futures[task] = client.submit(
            noop_after, *[futures[p] for p in parents], key=f"{tag}-{task}", pure=False
        )
    wait(list(futures.values()))
    took = time.perf_counter() - started
    bad = [f.key for f in futures.values() if f.status != "finished" or f.result() != 0]
    if bad:
        raise SystemExit(f"plain Dask: {len(bad)} tasks failed, like {bad[:3]}")
    client.cancel(list(futures.values()))
    return took


#: Starts the orchestrator and writes its exit code, ``ru_maxrss`` (KiB) and CPU seconds. A
#: small process in between, because Linux carries a forked child's peak RSS across its exec:
#: started from this one (which holds the scheduler), the orchestrator's would read as ours.
_LAUNCHER = """
import json, os, subprocess, sys
proc = subprocess.Popen(sys.argv[2:])
_, status, usage = os.wait4(proc.pid, 0)
used = [os.waitstatus_to_exitcode(status), usage.ru_maxrss, usage.ru_utime + usage.ru_stime]
open(sys.argv[1], "w").write(json.dumps(used))
"""


def run_stormproof(path: Path, home: Path, name: str, address: str) -> tuple[float, float, float]:
    """Wall seconds, the orchestrator's peak RSS in MiB and its CPU seconds."""
    home.mkdir(parents=True)
    (home / "stormproof.yaml").write_text(f"executor: dask\ndask:\n  scheduler: {address}\n")
    cmd = [sys.executable, "-m", "stormproof", "run", str(path), "--name", name, "--quiet"]
    usage = home / "usage.json"
    started = time.perf_counter()
    with open(home / "out.log", "wb") as log:
        launch = [sys.executable, "-c", _LAUNCHER, str(usage), *cmd]
        subprocess.run(launch, cwd=home, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
    took = time.perf_counter() - started
    code, max_rss_kib, cpu = json.loads(usage.read_text())
    if code != 0:
        text = (home / "out.log").read_text()[-2000:]
        raise SystemExit(f"stormproof run failed ({code}):\n{text}")
    return took, max_rss_kib / 1024.0, cpu


def cpu_s(pids: list[int]) -> float:
    """CPU seconds used so far by the workers' processes and their descendants: the commands
    and each worker's spawner (alive, so its own time is read, and the commands' it reaped)."""
    total = 0.0
    for pid in pids:
        worker = psutil.Process(pid)
        for proc in [worker, *worker.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                t = proc.cpu_times()
                total += t.user + t.system + t.children_user + t.children_system
    return total


def own_cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _line(r: dict[str, float]) -> str:
    return (
        f"plain Dask {r['plain_dask_s']:7.2f}s | stormproof {r['stormproof_s']:7.2f}s | "
        f"ratio {r['ratio']:.2f}x | orchestrator peak RSS {r['orchestrator_peak_rss_mib']:.0f} "
        f"MiB, CPU {r['orchestrator_cpu_s']:.1f}s | CPU s, plain/stormproof: workers "
        f"{r['plain_workers_cpu_s']:.1f}/{r['stormproof_workers_cpu_s']:.1f}, scheduler "
        f"{r['plain_scheduler_cpu_s']:.1f}/{r['stormproof_scheduler_cpu_s']:.1f}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="1000,10000")
    ap.add_argument("--width", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--dir", default=str(ROOT), help="where the runs' homes go")
    args = ap.parse_args()
    results = {}
    cluster = LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        resources={"vcpus": 1, "memory": 1024},
        dashboard_address=None,
        host="127.0.0.1",
    )
    client = Client(cluster)
    workers = list(client.run(os.getpid).values())
    try:
        with tempfile.TemporaryDirectory(prefix="stormproof-dask-", dir=args.dir) as tmp:
            folder = Path(tmp)
            for n in (int(x) for x in args.sizes.split(",") if x):
                name = f"layered-{n}"
                ids, deps = [f"t{i}" for i in range(n)], layered(n, args.width)
                path = workflow_file(folder, name, ids, deps)
                rounds: list[dict[str, float]] = []
                for k in range(args.repeat):
                    w0, s0 = cpu_s(workers), own_cpu_s()
                    plain = run_plain(client, ids, deps, f"{name}-{k}")
                    w1, s1 = cpu_s(workers), own_cpu_s()
                    home = folder / f"home-{name}-{k}"
                    address = cluster.scheduler_address
                    took, peak, used = run_stormproof(path, home, f"{name}-{k}", address)
                    w2, s2 = cpu_s(workers), own_cpu_s()
                    rounds.append(
                        {
                            "plain_dask_s": round(plain, 3),
                            "stormproof_s": round(took, 3),
                            "ratio": round(took / plain, 3),
                            "orchestrator_peak_rss_mib": round(peak, 1),
                            "orchestrator_cpu_s": round(used, 2),
                            "plain_workers_cpu_s": round(w1 - w0, 2),
                            "plain_scheduler_cpu_s": round(s1 - s0, 2),
                            "stormproof_workers_cpu_s": round(w2 - w1, 2),
                            "stormproof_scheduler_cpu_s": round(s2 - s1, 2),
                        }
                    )
                    if not args.json:
                        print(f"{name:>15} #{k + 1}: {_line(rounds[-1])}", flush=True)
                ratios = [r["ratio"] for r in rounds]
                results[name] = {
                    "tasks": n,
                    "median_ratio": round(statistics.median(ratios), 3),
                    "best_ratio": min(ratios),
                    "orchestrator_peak_rss_mib": max(
                        r["orchestrator_peak_rss_mib"] for r in rounds
                    ),
                    "rounds": rounds,
                }
                if not args.json and len(rounds) > 1:
                    r = results[name]
                    print(
                        f"{name:>15}: ratio median {r['median_ratio']:.2f}x, best "
                        f"{r['best_ratio']:.2f}x over {len(rounds)} rounds",
                        flush=True,
                    )
    finally:
        client.close()
        cluster.close()
    if args.json:
        print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
