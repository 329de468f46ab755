"""Memory limits through the whole stack: a real process over its memory is killed, the
attempt ends Task.OutOfMemory, and the retry gets the escalated memory."""

from __future__ import annotations

import pytest

from .conftest import Cli

pytestmark = pytest.mark.slow

HOG = (
    "import os; n = 200 * 2**20; b = bytearray(n); "
    "[b.__setitem__(i, 1) for i in range(0, n, 4096)]; "
    "print('limit', os.environ['STORMPROOF_MEMORY_LIMIT_MIB'])"
)


def test_out_of_memory_is_retried_with_escalated_memory(cli: Cli) -> None:
    cli.write(
        "wf.yaml",
        "name: m\n"
        "tasks:\n"
        "  - id: hog\n"
        f'    command: [python3, -c, "{HOG}"]\n'
        "    memory: 64\n"
        "    memory_escalation: 4\n"
        "    retry: [{error_equals: [Task.OutOfMemory], interval_seconds: 0, max_attempts: 2}]\n"
        "  - {id: idle, command: [python3, -c, 'print(1)']}\n",
    )
    proc = cli("run", "wf.yaml", "--name", "m", "--quiet", timeout=120)
    assert proc.returncode == 0, proc.stderr
    tries = cli.status("m")["tasks"]["hog"]["attempts"]
    states = [(t["state"], t["error"], t["exit_code"], t["budget"]) for t in tries]
    assert states[0] == ("failed", "Task.OutOfMemory", 137, "retry")
    assert tries[-1]["state"] == "succeeded"
    assert len(tries) == 2, "64 MiB is too little for 200 MB; 4 x 64 = 256 MiB is enough"
    out = cli("logs", "m", "hog", "--attempt", "2", "--stream", "stdout").stdout
    assert "limit 256" in out
    assert cli.status("m")["tasks"]["idle"]["attempts"][0]["state"] == "succeeded"
