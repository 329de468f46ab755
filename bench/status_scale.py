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


def measured(cmd: list[str]) -> tuple[float, float]:
    probe = (
        "import resource, subprocess, sys, time, json;"
        "t = time.perf_counter();"
        "out = subprocess.DEVNULL;"
        "subprocess.run(sys.argv[1:], stdout=out, stderr=out, check=True);"
        "print(json.dumps([time.perf_counter() - t,"
        " resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe, *cmd], capture_output=True, text=True, check=True
    )
    seconds, rss = json.loads(out.stdout)
    return float(seconds), float(rss)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="10000,100000")
    args = parser.parse_args()
    sp = [sys.executable, "-m", "stormproof"]
    with tempfile.TemporaryDirectory(prefix="status-scale-") as tmp:
        for n in (int(s) for s in args.sizes.split(",")):
            home = Path(tmp) / f"h{n}"
            t0 = time.perf_counter()
            make_run(n, home)
            print(f"\n{n:,} tasks (run made in {time.perf_counter() - t0:.1f} s)")
            db = str(home / "stormproof.db")
            base_s, base_rss = measured(
                ["sqlite3", db, "SELECT count(*), sum(length(data)) FROM rows WHERE run = 'big'"]
            )
            print(f"  {'baseline: sqlite3 reads every row':44} {base_s:6.2f} s {base_rss:7.0f} MiB")
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
                seconds, rss = measured([*sp, *extra, "--home", str(home)])
                print(
                    f"  {label:44} {seconds:6.2f} s {rss:7.0f} MiB   "
                    f"x{seconds / base_s:5.1f} of the baseline's time"
                )


if __name__ == "__main__":
    main()
