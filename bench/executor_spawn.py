"""Per-attempt overhead of the local executor, measured against ``xargs -P 2``.

Runs N ``true`` attempts through ``LocalExecutor`` with at most two in flight (submit, then
``poll`` until one ends, then submit the next), and in the same run ``seq N | xargs -P 2 -I{}
true``. It prints both wall times and their ratio.

Each measurement is repeated (``--repeat``, default 3, interleaved) and the best is kept,
because a shared machine adds noise that is never in our favour. CPU time is printed as well
(for the executor: this process + the shim + the attempts; for xargs: xargs + its children).
It depends much less on what else the machine is doing.

A third figure, "floor", shows the same spawns *and the same files* (work dir, two logs, and
an exit status line appended to one journal) done by one plain loop with no shim and no
socket. It is the least any executor that honours the attempt layout can cost. ``xargs``
creates no files at all, so on a filesystem where creating files is slow the floor, not the
executor, is what pulls the ratio up.

    .venv/bin/python bench/executor_spawn.py                  # N = 2000 and 10000, in a temp dir
    .venv/bin/python bench/executor_spawn.py -n 2000 --dir /dev/shm/sp   # on tmpfs
    .venv/bin/python bench/executor_spawn.py --limited   # every attempt has a memory limit

Note for ext4 without a journal: deleting many files makes creating files for the next few
minutes much slower (the allocator skips recently deleted inodes). Repeated runs in a row
therefore measure each other's cleanup. Leave a few minutes between them, or use tmpfs.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from stormproof.core.events import AttemptExited, AttemptLost, AttemptSubmitFailed
from stormproof.executors.base import AttemptJob
from stormproof.executors.local import ENV_MEMORY_LIMIT_MIB, LocalExecutor

FINAL = (AttemptExited, AttemptLost, AttemptSubmitFailed)


def job(run_dir: Path, i: int, limited: bool = False) -> AttemptJob:
    env = {"STORMPROOF_ATTEMPT": f"t{i}/1"}
    if limited:  # the shim then samples the memory of every attempt (see executors/_memory)
        env[ENV_MEMORY_LIMIT_MIB] = "64"
    return AttemptJob(
        run="bench",
        attempt_id=f"t{i}/1",
        task_id=f"t{i}",
        number=1,
        command=["true"],
        env=env,
        attempt_dir=run_dir / "attempts" / f"t{i}" / "1",
        memory_mib=64,
    )


def _own_cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def _children_cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def _process_cpu_s(pid: int) -> float:
    """CPU of a process and of its reaped children (the shim and its attempts)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def time_xargs(n: int) -> tuple[float, float]:
    c0, t0 = _children_cpu_s(), time.perf_counter()
    subprocess.run(f"seq {n} | xargs -P 2 -I{{}} true", shell=True, check=True)
    return time.perf_counter() - t0, _children_cpu_s() - c0


def time_executor(run_dir: Path, n: int, limited: bool = False) -> tuple[float, float]:
    ex = LocalExecutor(run_dir, {"idle_exit_s": 2.0})
    ex.submit(job(run_dir, -1))  # start the shim outside the timed part: that is once per run
    while not any(isinstance(e, FINAL) for e in ex.poll(10.0)):
        pass
    shim_pid = int((run_dir / "local-executor" / "shim.pid").read_text())
    c0 = _own_cpu_s() + _process_cpu_s(shim_pid)
    t0 = time.perf_counter()
    submitted = done = in_flight = failed = 0
    while done < n:
        while in_flight < 2 and submitted < n:
            ex.submit(job(run_dir, submitted, limited))
            submitted += 1
            in_flight += 1
        for event in ex.poll(10.0):
            if isinstance(event, FINAL):
                done += 1
                in_flight -= 1
                failed += not (isinstance(event, AttemptExited) and event.exit_code == 0)
    elapsed = time.perf_counter() - t0
    cpu = _own_cpu_s() + _process_cpu_s(shim_pid) - c0
    ex.close(final=True)
    if failed:
        sys.exit(f"{failed} attempts failed")
    return elapsed, cpu


def time_floor(run_dir: Path, n: int) -> tuple[float, float]:
    """The same spawns and files as the executor, from one loop with no shim and no socket."""
    env = dict(os.environ)
    true = shutil.which("true") or "/bin/true"
    flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC
    in_flight: dict[int, str] = {}
    run_dir.mkdir(parents=True, exist_ok=True)
    journal = os.open(str(run_dir / "journal"), flags, 0o644)

    def reap() -> None:
        pid, _ = os.waitpid(-1, 0)
        os.write(journal, f'["X","{in_flight.pop(pid)}",0,{time.time()!r}]\n'.encode())

    c0, t0 = _own_cpu_s() + _children_cpu_s(), time.perf_counter()
    for i in range(n):
        if len(in_flight) >= 2:
            reap()
        d = str(run_dir / "attempts" / f"t{i}" / "1")
        os.makedirs(d + "/work")
        os.chdir(d + "/work")
        out = os.open(d + "/stdout.log", flags, 0o644)
        err = os.open(d + "/stderr.log", flags, 0o644)
        acts = [(os.POSIX_SPAWN_DUP2, out, 1), (os.POSIX_SPAWN_DUP2, err, 2)]
        pid = os.posix_spawn(true, ["true"], env, file_actions=acts, setsid=True)
        os.close(out)
        os.close(err)
        in_flight[pid] = d
    while in_flight:
        reap()
    os.close(journal)
    os.chdir("/")
    return time.perf_counter() - t0, _own_cpu_s() + _children_cpu_s() - c0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, action="append", help="attempts (repeatable)")
    parser.add_argument("--dir", type=Path, help="where the run dirs go (default: a temp dir)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each; best is kept")
    parser.add_argument("--no-floor", action="store_true", help="skip the no-shim floor")
    parser.add_argument("--keep", action="store_true", help="do not delete the run dirs")
    parser.add_argument("--limited", action="store_true", help="give every attempt a memory limit")
    args = parser.parse_args()
    if args.dir is not None:  # a fresh folder inside it: a run dir used before would answer
        args.dir.mkdir(parents=True, exist_ok=True)  # every submit from its journal
    base = Path(tempfile.mkdtemp(prefix="stormproof-bench-", dir=args.dir))
    print(f"run dirs under {base} ({os.cpu_count()} cpus, best of {args.repeat})")
    try:
        for n in args.n or [2000, 10000]:
            xs, es, fs = [], [], []
            for r in range(args.repeat):
                xs.append(time_xargs(n))
                es.append(time_executor(base / f"exec-{n}-{r}", n, args.limited))
                if not args.no_floor:
                    fs.append(time_floor(base / f"floor-{n}-{r}", n))
            (xw, xc), (ew, ec) = min(xs), min(es)
            line = (
                f"N={n:6d}  xargs -P2 {xw:6.2f}s  executor {ew:6.2f}s  ratio {ew / xw:4.2f}x"
                f"  | cpu xargs {xc:6.2f}s  executor {ec:6.2f}s  ratio {ec / xc:4.2f}x"
            )
            if fs:
                fw, fc = min(fs)
                line += f"  | floor {fw:6.2f}s ({fw / xw:4.2f}x) cpu {fc / xc:4.2f}x"
            print(line, flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
