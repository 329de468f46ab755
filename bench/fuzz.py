"""The full pass of the front door's fuzz test (``tests/cli/test_fuzz.py``).

CI runs a short pass (``STORMPROOF_FUZZ_EXAMPLES`` unset: 120 inputs per test). This runs
the same tests with ``--examples`` inputs each (3 Hypothesis tests: workflow structures,
workflow bytes, CLI arguments; plus 4 samples through a real process under a 1 GiB cap),
and prints the inputs tried, the time and pytest's verdict::

    python bench/fuzz.py                   # 3 x 3,400 = 10,200 inputs
    python bench/fuzz.py --examples 500
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--examples", type=int, default=3400, help="inputs per fuzz test")
    args = parser.parse_args()
    env = dict(os.environ, STORMPROOF_FUZZ_EXAMPLES=str(args.examples))
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/cli/test_fuzz.py"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    took = time.perf_counter() - start
    print(proc.stdout[-3000:])
    print(f"inputs: {3 * args.examples:,} through the CLI in-process, 4 through a real process")
    print(f"time: {took:.0f} s ({took / (3 * args.examples) * 1000:.1f} ms per input)")
    print("verdict:", "every input exited 0 or 2" if proc.returncode == 0 else "FAILURES above")
    sys.exit(proc.returncode)


if __name__ == "__main__":
    main()
