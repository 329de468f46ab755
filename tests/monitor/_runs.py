"""Real finished runs to look at, made by the real ``stormproof run``."""

from __future__ import annotations

import sys

from ..cli.conftest import Cli

POOLS = """\
pools:
  - {name: spot, market: spot, vcpus: 2, memory: 2048, price: 0.1, count: 1}
  - {name: ondemand, market: on_demand, vcpus: 2, memory: 2048, price: 0.3, count: 1}
"""
#: Three stages, a retry, a task name that is markup, and output on both streams.
DEMO = """\
name: demo <i>workflow</i>
global_config: {on_failure: continue}
tasks:
  - {id: prepare, name: "prepare <b>inputs</b>", command: "echo preparing; echo careful >&2"}
  - id: flaky
    depends_on: [prepare]
    command: "test -f $STORMPROOF_DATA_DIR/m || { touch $STORMPROOF_DATA_DIR/m; exit 1; }"
    retry: [{error_equals: [States.ALL], interval_seconds: 0, max_attempts: 2}]
  - {id: analyse, command: "echo analysed", depends_on: [flaky]}
  - {id: broken, command: "echo broken >&2; exit 5", depends_on: [prepare], retry_attempts: 0}
"""

#: ~0.4 s of CPU and 96 MiB touched: what the dashboard's CPU figures must show (from wait4).
CRUNCH = (
    "b = bytearray(96 << 20); b[::4096] = b'x' * len(b[::4096]); "
    "import time; t = time.process_time(); "
    "exec('while time.process_time() - t < 0.4: pass')"
)
SMALL = f"""\
name: small
tasks:
  - id: only
    command: [{sys.executable!r}, -c, {CRUNCH!r}]
"""


def make_runs(cli: Cli) -> None:
    """Run ``demo`` (failed: ``broken`` fails, the rest succeeds) and ``small`` (succeeded,
    its one task busy on the CPU with 96 MiB touched)."""
    cli.write("stormproof.yaml", POOLS)
    cli.write("demo.yaml", DEMO)
    cli.write("small.yaml", SMALL)
    for name, wf, code in (("demo", "demo.yaml", 1), ("small", "small.yaml", 0)):
        proc = cli("run", wf, "--name", name, "-q")
        assert proc.returncode == code, proc.stdout + proc.stderr
