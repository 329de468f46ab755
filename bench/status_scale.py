"""How looking at a big finished run scales: ``status`` and ``history --json`` of a 100,000-task
run, against ``sqlite3`` reading the same rows in the same minutes.

The run is made for real, fast: the real driver, core and SQLite store drive a generated
layered workflow (``plan_scale.generate``, 1 % of tasks failing once) with the fake executor,
whose attempts end at once. Then, each in a fresh process, timed start to exit, with peak
RSS (``ru_maxrss`` of the child):

* **baseline**: the ``sqlite3`` shell counting the run's rows and reading every row's data;
* ``stormproof status NAME`` (the summary), ``status NAME --state failed --json``,
  ``status NAME --json`` (the first page, 1,000 tasks), ``status NAME --tasks`` (50 rows);
* ``stormproof history NAME --json`` to /dev/null: its RSS at two sizes shows whether memory
  grows with the run.

Targets (issue 14): ``status NAME`` <= 1 s; ``history --json`` memory flat in the run's size::

    python bench/status_scale.py                   # 10,000 and 100,000 tasks
    python bench/status_scale.py --sizes 20000
    python bench/status_scale.py --other ../main/.venv/bin/python   # A/B, same minutes

``--other PYTHON`` runs each command a second time, right after, with another installation
(another branch's venv) on the same run: an A/B in the same minutes. A command the other
version does not know (exit 2) shows as ``n/a``. The run is made by this tree's driver; a
version without stored views folds its log.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from plan_scale import generate


def make_run(n: int, home: Path) -> None:
    from stormproof.config import local_pool
    from stormproof.executors.fake import FakeExecutor
    from stormproof.runtime.driver import Driver
    from stormproof.runtime.home import Home
    from stormproof.runtime.runs import new_context
    from stormproof.spec.model import WorkflowSpec
    from stormproof.store.sqlite import SQLiteEventLog

    doc = generate(n, seed=1)
    doc["global_config"]["retry_interval"] = 0
    spec = WorkflowSpec.model_validate(doc)
    home.mkdir(parents=True)
    pool = local_pool()
    pool = dataclasses.replace(
        pool, capacity=dataclasses.replace(pool.capacity, vcpus=10**6, memory_mib=10**9)
    )
    store = SQLiteEventLog(home / "stormproof.db")
    ctx = new_context("big", spec, (pool,), home / "wf.json", "local", max_parallel=256, seed=1)
    store.create_run("big", spec.name, ctx.to_meta(), time.time())

    def outcome(job: object) -> int:
        return 1 if job.task_id.endswith("00") and job.number == 1 else 0  # type: ignore[attr-defined]

    Driver(Home(home), store, ctx, FakeExecutor(outcome=outcome)).drive()
    store.close()


def measured(cmd: list[str]) -> tuple[float, float, float] | None:
    """Wall seconds, peak RSS (MiB) and CPU seconds of ``cmd``; ``None`` if it exits 2."""
    probe = (
        "import resource, subprocess, sys, time, json;"
        "t = time.perf_counter();"
        "out = subprocess.DEVNULL;"
        "done = subprocess.run(sys.argv[1:], stdout=out, stderr=out);"
        "done.returncode == 2 and sys.exit(2);"
        "done.check_returncode();"
        "u = resource.getrusage(resource.RUSAGE_CHILDREN);"
        "print(json.dumps([time.perf_counter() - t, u.ru_maxrss / 1024,"
        " u.ru_utime + u.ru_stime]))"
    )
    out = subprocess.run([sys.executable, "-c", probe, *cmd], capture_output=True, text=True)
    if out.returncode == 2:
        return None
    out.check_returncode()
    seconds, rss, cpu = json.loads(out.stdout)
    return float(seconds), float(rss), float(cpu)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--other", metavar="PYTHON", help="also run each command with this")
    args = parser.parse_args()
    sides = {"": [sys.executable, "-m", "stormproof"]}
    if args.other:
        sides["  (other)"] = [args.other, "-m", "stormproof"]
    with tempfile.TemporaryDirectory(prefix="status-scale-") as tmp:
        for n in (int(s) for s in args.sizes.split(",")):
            home = Path(tmp) / f"h{n}"
            t0 = time.perf_counter()
            make_run(n, home)
            print(f"\n{n:,} tasks (run made in {time.perf_counter() - t0:.1f} s)")
            db = str(home / "stormproof.db")
            base = measured(
                ["sqlite3", db, "SELECT count(*), sum(length(data)) FROM rows WHERE run = 'big'"]
            )
            assert base is not None
            base_s, base_rss, base_cpu = base
            print(
                f"  {'baseline: sqlite3 reads every row':44} {base_s:6.2f} s {base_rss:7.0f} MiB"
                f"   CPU {base_cpu:6.2f} s"
            )
            cases = {
                "status big": ["status", "big"],
                "status big --state failed --json": [
                    "status",
                    "big",
                    "--state",
                    "failed",
                    "--json",
                ],
                "status big --json (first 1,000 tasks)": ["status", "big", "--json"],
                "status big --tasks (50 tasks)": ["status", "big", "--tasks"],
                "history big --json": ["history", "big", "--json"],
            }
            for label, extra in cases.items():
                for side, sp in sides.items():
                    found = measured([*sp, *extra, "--home", str(home)])
                    if found is None:
                        print(f"  {label + side:44}    n/a (exit 2: not known there)")
                        continue
                    seconds, rss, cpu = found
                    print(
                        f"  {label + side:44} {seconds:6.2f} s {rss:7.0f} MiB   CPU {cpu:6.2f} s"
                        f"   x{seconds / base_s:5.1f} of the baseline's time",
                        flush=True,
                    )


if __name__ == "__main__":
    main()
