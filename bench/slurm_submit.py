"""1,000 no-op jobs on a real Slurm cluster: stormproof vs a plain ``sbatch`` loop vs one array.

The tests' cluster (``tests/executors/slurm/_cluster.py``: two slurmd nodes of 4 declared CPUs
on this machine, a 2-second scheduler interval), started afresh with the same configuration
for each way (``measure`` says why), runs one after the other in the same run the same N
no-op jobs three ways:

* **loop**: a shell loop of ``sbatch --wrap true``, one job per iteration (what a user's
  script does);
* **array**: one ``sbatch --array=1-N`` (the fastest submission Slurm offers);
* **stormproof**: ``stormproof run`` of a workflow of N independent ``true`` tasks, on the
  same partition (one pool, ``ondemand``), with the default polling and ``max_jobs``.

Every Slurm client is called through a counting shim on ``PATH`` (a script that notes its name
and time, then execs the real one), so the figures count what each way asked of slurmctld,
inside the jobs too (stormproof runs each command as an ``srun`` step). The baselines' end is
read from the jobcomp file (no status query is made on their behalf); stormproof's end is its
exit. Printed: submit time and rate, end-to-end time, and calls per job, with stormproof's
end-to-end as a ratio of the faster baseline (target ≤ 1.2×) and its status queries
(``squeue``, ``sacct``, ``scontrol``) per job (target ≤ 0.05)::

    python bench/slurm_submit.py              # 1,000 jobs each
    python bench/slurm_submit.py --jobs 200   # quicker
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.executors.slurm import _cluster  # noqa: E402 - the repo root is on the path now

CLIENTS = ("sbatch", "squeue", "scancel", "sacct", "scontrol", "sinfo", "srun")
STATUS = ("squeue", "sacct", "scontrol")
#: The baselines' partition, and the default polling. (With the spot pool too, stormproof
#: would put half the jobs on spot, where the on-demand half preempts them: not the same jobs.)
CONFIG = """\
executor: slurm
pools: [{name: ondemand, market: on_demand, partition: ondemand, price: 0.04}]
"""


@dataclass
class Result:
    name: str
    submit_s: float
    end_to_end_s: float
    calls: Counter[str] = field(default_factory=Counter)
    #: stormproof: how long its first 100 ``sbatch`` calls took (the others wait for room).
    burst_s: float | None = None


def make_shims(shim_dir: Path, log: Path) -> None:
    """One script per client: note the call, then exec the real program."""
    shim_dir.mkdir(parents=True, exist_ok=True)
    for name in CLIENTS:
        real = shutil.which(name)
        if real is None:
            continue
        path = shim_dir / name
        path.write_text(f'#!/bin/sh\necho "{name} $(date +%s.%N)" >> {log}\nexec {real} "$@"\n')
        path.chmod(0o755)


def calls(log: Path, since: int) -> tuple[Counter[str], list[float], int]:
    """Client calls logged after line ``since``: counts, sbatch times, and the new line count."""
    lines = log.read_text().splitlines() if log.exists() else []
    counts: Counter[str] = Counter()
    sbatch_times: list[float] = []
    for line in lines[since:]:
        name, _, at = line.partition(" ")
        counts[name] += 1
        if name == "sbatch":
            sbatch_times.append(float(at))
    return counts, sbatch_times, len(lines)


def wait_completions(cluster: _cluster.Cluster, prefix: str, n: int, timeout_s: float) -> float:
    """Until the jobcomp file holds ``n`` jobs named ``prefix…``; when the last one came."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        done = sum(r.get("Name", "").startswith(prefix) for r in cluster.completions())
        if done >= n:
            return time.monotonic()
        time.sleep(0.1)
    raise RuntimeError(f"{prefix}: not all {n} jobs ended within {timeout_s:.0f}s")


def run_loop(
    cluster: _cluster.Cluster, env: dict[str, str], n: int, work: Path, turn: int
) -> float:
    script = work / "loop.sh"
    script.write_text(
        f"for i in $(seq {n}); do\n"
        "  sbatch --quiet --partition=ondemand --cpus-per-task=1 --mem=50 "
        f'--job-name="loop{turn}-$i" --output=/dev/null --wrap=true\n'
        "done\n"
    )
    t0 = time.monotonic()
    subprocess.run(["sh", str(script)], env=env, check=True, cwd=work)
    return time.monotonic() - t0


def run_array(
    cluster: _cluster.Cluster, env: dict[str, str], n: int, work: Path, turn: int
) -> float:
    t0 = time.monotonic()
    subprocess.run(
        ["sbatch", "--quiet", "--partition=ondemand", "--cpus-per-task=1", "--mem=50",
         f"--array=1-{n}", f"--job-name=array{turn}", "--output=/dev/null", "--wrap=true"],
        env=env, check=True, cwd=work,
    )  # fmt: skip
    return time.monotonic() - t0


def run_stormproof(env: dict[str, str], n: int, work: Path, run: str) -> None:
    tasks = "".join(f"  - {{id: t{i:05d}, command: 'true', memory: 50}}\n" for i in range(n))
    (work / "wf.yaml").write_text(f"name: bench\ntasks:\n{tasks}")
    (work / "stormproof.yaml").write_text(CONFIG)
    subprocess.run(
        [sys.executable, "-m", "stormproof", "run", "wf.yaml", "--name", run, "-q"],
        env=env, check=True, cwd=work,
    )  # fmt: skip


WAYS = ("loop", "array", "stormproof")


def measure(n: int, root: Path, rounds: int) -> list[Result]:
    """Every way once per round, the order rotated from one round to the next, each on a
    fresh cluster: slurmctld keeps finished jobs for ``MinJobAge`` (600 s here), and every
    scheduling pass walks them, so a way run after another on the same controller is slower
    (a loop run third took twice as long as the same loop run first)."""
    log, shims = root / "calls.log", root / "shims"
    make_shims(shims, log)
    results = []
    seen = 0
    order = [WAYS[(i + r) % len(WAYS)] for r in range(rounds) for i in range(len(WAYS))]
    for turn, name in enumerate(order):
        cluster = _cluster.start(root / f"cluster-{turn}")
        env = cluster.env()
        env["PATH"] = f"{shims}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
        try:
            work = root / f"{turn}-{name}"
            work.mkdir()
            t0 = time.monotonic()
            if name == "loop":
                submit_s = run_loop(cluster, env, n, work, turn)
                end = wait_completions(cluster, f"loop{turn}-", n, 3600)
            elif name == "array":
                submit_s = run_array(cluster, env, n, work, turn)
                end = wait_completions(cluster, f"array{turn}", n, 3600)
            else:
                run_stormproof(env, n, work, f"bench{turn}")
                end = time.monotonic()
            counts, sbatch_times, seen = calls(log, seen)
            burst_s = None
            if name == "stormproof" and sbatch_times:
                # from its first sbatch to its last (the pool's max_jobs paces it), and the
                # first max_jobs (default 100) submitted at once
                submit_s = max(sbatch_times) - min(sbatch_times)
                first = sorted(sbatch_times)[: min(100, len(sbatch_times))]
                burst_s = first[-1] - first[0]
            results.append(Result(name, submit_s, end - t0, counts, burst_s))
        finally:
            cluster.stop()
    return results


def report(results: list[Result], n: int) -> None:
    print(f"{n:,} no-op jobs on a 2-node test cluster (8 job slots), one way after the other\n")
    print(f"{'':<11}{'submit':>9}{'jobs/s':>9}{'end-to-end':>12}  calls per job")
    for r in results:
        rate = n / r.submit_s if r.submit_s > 0 else float("inf")
        per = ", ".join(f"{c} {r.calls[c] / n:.3f}" for c in CLIENTS if r.calls[c])
        burst = ""
        if r.burst_s:
            k = min(100, n)
            burst = f"  (its first {k} in {r.burst_s:.2f}s: {k / r.burst_s:.0f}/s)"
        print(f"{r.name:<11}{r.submit_s:>8.2f}s{rate:>9.0f}{r.end_to_end_s:>11.1f}s  {per}{burst}")
    rounds = len(results) // len(WAYS)
    for i in range(rounds):
        ours, *plain = sorted(results[i * 3 : i * 3 + 3], key=lambda r: r.name != "stormproof")
        best = min(plain, key=lambda r: r.end_to_end_s)
        ratio = ours.end_to_end_s / best.end_to_end_s
        status = sum(ours.calls[c] for c in STATUS)
        print(
            f"\nround {i + 1}: stormproof end-to-end / {best.name}'s: {ratio:.2f}x "
            f"(target <= 1.2x); status queries (squeue, sacct, scontrol) {status} = "
            f"{status / n:.3f} per job (target <= 0.05)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=1, help="every way once per round")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args()
    if _cluster.missing_programs():
        sys.exit(f"Slurm is not installed: {', '.join(_cluster.missing_programs())} missing")
    root = Path(tempfile.mkdtemp(prefix="slurm-bench-"))
    try:
        report(measure(args.jobs, root, args.rounds), args.jobs)
    finally:
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
