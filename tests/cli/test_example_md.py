"""The README's example, interrupted for real: kill -9 the production stage mid-run.

The retry must restore the last committed checkpoint (a step counter plus the
particles' state) and compute only the steps after it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
from pathlib import Path

import pytest

from .conftest import Cli, wait_for

pytestmark = pytest.mark.slow
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_production_resumes_from_its_checkpoint_after_kill_9(cli: Cli) -> None:
    shutil.copytree(EXAMPLES, cli.cwd / "examples")
    wf = cli.cwd / "examples" / "molecular-dynamics.yaml"
    # the recipe's 30 s first retry delay, shortened so the test does not wait for it
    wf.write_text(
        wf.read_text().replace("global_config:", "global_config:\n  retry_interval: 1s", 1)
    )
    proc = cli.start("run", str(wf), "--name", "md")

    def commits() -> list[dict]:  # type: ignore[type-arg]
        proc = cli("history", "md", "--json")
        rows = json.loads(proc.stdout) if proc.returncode == 0 else []  # not created yet
        return [r for r in rows if r["kind"] in ("CheckpointCommitted", "AttemptStarted")]

    wait_for(
        lambda: sum(r["kind"] == "CheckpointCommitted" for r in commits()) >= 2,
        timeout=120,
        what="two production checkpoints",
    )
    pid = next(
        int(r["data"]["handle"])
        for r in commits()
        if r["kind"] == "AttemptStarted" and r["data"]["attempt_id"] == "production-run/1"
    )
    os.kill(pid, signal.SIGKILL)
    assert proc.wait(timeout=180) == 0, proc.stderr.read()
    status = cli.status("md")
    tries = status["tasks"]["production-run"]["attempts"]
    assert [a["state"] for a in tries] == ["failed", "succeeded"]
    out = cli("logs", "md", "production-run", "--attempt", "2", "--stream", "stdout").stdout
    resumed = int(re.search(r"resumed from step (\d+)", out).group(1))  # type: ignore[union-attr]
    assert resumed >= 400 and resumed % 200 == 0
    log = (cli.data_dir / "md" / "data" / "production.log").read_text().split("\n")
    # attempt 1 died by SIGKILL (no line); attempt 2 computed only the steps after the checkpoint
    assert [ln for ln in log if ln] == [f"production step-range {resumed}..2000"]
    assert (cli.data_dir / "md" / "data" / "results").is_dir()
