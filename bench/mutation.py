"""Mutation testing with mutmut, one module at a time, within a time budget (not in CI).

A mutant is the code with one small change (``<`` for ``<=``, ``False`` for ``True``,
an argument dropped …); a test suite *kills* it when some test fails. What survives
shows behaviour no test pins down. The whole suite on every mutant of ``core/``,
``runtime/`` and ``checkpoints/`` would take days on two cores, so this runs one
module at a time, with only the tests given (the fast ones that exercise it), and
stops at ``--budget`` seconds; mutmut keeps every verdict in the work directory, so
running the same command again carries on where it stopped.

mutmut (3.x) rather than cosmic-ray: it compiles every mutant of a module into one
copy behind a switch and runs each in a process forked from a warmed-up pytest, with
only the tests that reach the mutated function, where cosmic-ray imports the module
afresh for each mutant and runs the whole selected suite.

It works in a copy of ``src/``, ``tests/`` and ``pyproject.toml`` (default under
``/tmp/stormproof-mutation/``), never in the repository. Usage::

    pip install mutmut==3.8.1
    python bench/mutation.py core/breaker.py --tests tests/core --budget 900
    python bench/mutation.py runtime/compile.py --tests tests/runtime/test_compile.py
    python bench/mutation.py checkpoints/fsspec_store.py \\
        --tests "tests/checkpoints/test_store.py -k local" --budget 1800
    python bench/mutation.py runtime/compile.py --tests … --survivors   # after adding tests

Printed: killed, survived, timed out and untested mutants, and the score
``killed / (killed + survived)``; the surviving mutants' names go to
``survivors.txt`` in the work directory (``mutmut show NAME`` there shows one).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "src" / "stormproof"
COPIED = ("src", "tests", "pyproject.toml")


def prepare(workdir: Path, module: str, tests: list[str]) -> None:
    """A fresh copy of the code and tests beside mutmut's state (kept: it is the cache)."""
    workdir.mkdir(parents=True, exist_ok=True)
    for name in COPIED:
        target = workdir / name
        if target.is_dir():
            shutil.rmtree(target)
        source = ROOT / name
        if source.is_dir():
            ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
            shutil.copytree(source, target, ignore=ignore)
        else:
            shutil.copy2(source, target)
    selection = "\n    ".join(tests)
    (workdir / "setup.cfg").write_text(
        "[mutmut]\n"
        "source_paths = src\n"
        f"only_mutate = src/stormproof/{module}\n"
        f"pytest_add_cli_args_test_selection =\n    {selection}\n"
        "pytest_add_cli_args =\n    -p\n    no:cacheprovider\n    -q\n"
    )


def run(workdir: Path, budget_s: float, children: int, names: list[str]) -> bool:
    """``mutmut run`` until done or out of time; True if it finished."""
    # On sys.path before anything is imported, and existing then: Python skips for good a
    # path entry that was not a directory at its first import, and the tests would import
    # the unmutated package (installed in development mode) instead.
    mutated = workdir / "mutants" / "src"
    mutated.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(mutated)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "mutmut", "run", "--max-children", str(children), *names],
        cwd=workdir,
        env=env,
        start_new_session=True,
    )
    try:
        proc.wait(timeout=budget_s)
        return proc.returncode == 0
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGINT)  # mutmut saves what it has on Ctrl-C
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        return False


def report(workdir: Path, module: str, finished: bool, took_s: float) -> None:
    subprocess.run(
        [sys.executable, "-m", "mutmut", "export-cicd-stats"],
        cwd=workdir,
        check=False,
        capture_output=True,
    )
    stats_file = workdir / "mutants" / "mutmut-cicd-stats.json"
    stats = json.loads(stats_file.read_text()) if stats_file.exists() else {}
    killed, survived = int(stats.get("killed", 0)), int(stats.get("survived", 0))
    results = subprocess.run(
        [sys.executable, "-m", "mutmut", "results"],
        cwd=workdir,
        check=False,
        capture_output=True,
        text=True,
    ).stdout
    survivors = [line.split(":")[0].strip() for line in results.splitlines() if "survived" in line]
    (workdir / "survivors.txt").write_text("\n".join(survivors) + "\n")
    scored = killed + survived
    score = f"{killed / scored:.1%}" if scored else "n/a"
    print(
        f"{module}: {'finished' if finished else 'stopped at the budget'} after {took_s:.0f} s; "
        f"killed {killed}, survived {survived}, timeout {stats.get('timeout', 0)}, "
        f"no tests {stats.get('no_tests', 0)}, not checked {stats.get('not_checked', 0)}, "
        f"total {stats.get('total', 0)}; score {score}"
    )
    print(f"survivors: {workdir / 'survivors.txt'} ({len(survivors)})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("module", help="a module under src/stormproof, like core/breaker.py")
    parser.add_argument(
        "--tests",
        action="append",
        help="tests to run (a path, or pytest arguments in quotes); repeatable",
    )
    parser.add_argument("--budget", type=float, default=1800.0, help="seconds (default 1800)")
    parser.add_argument("--children", type=int, default=2, help="mutants at a time (cores)")
    parser.add_argument("--workdir", type=Path, help="default /tmp/stormproof-mutation/<module>")
    parser.add_argument(
        "--survivors",
        action="store_true",
        help="run again only the mutants that survived last time (after adding tests)",
    )
    args = parser.parse_args()
    if not (PACKAGE / args.module).is_file():
        parser.error(f"no module src/stormproof/{args.module}")
    tests = [word for t in (args.tests or ["tests/core"]) for word in shlex.split(t)]
    slug = args.module.replace("/", "-").removesuffix(".py")
    workdir = args.workdir or Path("/tmp/stormproof-mutation") / slug
    names: list[str] = []
    if args.survivors:
        names = (workdir / "survivors.txt").read_text().split()
        print(f"running again the {len(names)} mutants that survived", flush=True)
    prepare(workdir, args.module, tests)
    started = time.monotonic()
    finished = run(workdir, args.budget, args.children, names)
    report(workdir, args.module, finished, time.monotonic() - started)


if __name__ == "__main__":
    main()
