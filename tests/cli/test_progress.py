"""The live progress display: counters follow the core's notes; running attempts show output."""

from __future__ import annotations

import io
from pathlib import Path

from rich.console import Console

from stormproof.cli.progress import LiveProgress, last_line
from stormproof.config import local_pool
from stormproof.core.decisions import AttemptEnded, LaunchAttempt, TaskEnded, TaskReady
from stormproof.runtime.home import Home
from stormproof.runtime.runs import new_context
from stormproof.spec.model import WorkflowSpec

SPEC = WorkflowSpec.model_validate(
    {
        "name": "w",
        "tasks": [
            {"id": "a", "command": ["x"]},
            {"id": "b", "command": ["x"], "depends_on": ["a"]},
        ],
    }
)


def test_counts_per_stage_follow_decisions_and_running_rows_show_last_output(
    tmp_path: Path,
) -> None:
    home = Home(tmp_path)
    ctx = new_context("r", SPEC, (local_pool(),), tmp_path / "wf.yaml", "local", seed=0)
    buf = io.StringIO()
    progress = LiveProgress(ctx, Console(file=buf, width=100), home)
    progress.on_decisions([TaskReady("a"), LaunchAttempt("a/1", "a", 1, ("local-0",), "local")], 0)
    log = home.attempt_dir("r", "a", 1) / "stdout.log"
    log.parent.mkdir(parents=True)
    log.write_text("step 1\nstep 2 of 3\n\n")
    assert progress.counts[0]["running"] == 1 and progress.counts[1]["waiting"] == 1
    Console(file=buf, width=100).print(progress.table())
    assert "step 2 of 3" in buf.getvalue()
    progress.on_decisions([AttemptEnded("a/1", "a", "succeeded"), TaskEnded("a", "succeeded")], 1)
    assert progress.counts[0] == {
        "waiting": 0,
        "running": 0,
        "succeeded": 1,
        "failed": 0,
        "other": 0,
    }
    assert progress.running == {}


def test_last_line_reads_only_the_tail_and_handles_carriage_returns(tmp_path: Path) -> None:
    f = tmp_path / "out.log"
    f.write_text("x" * 10_000 + "\nprogress 10%\rprogress 90%\r")
    assert last_line(f) == "progress 90%"
    assert last_line(tmp_path / "missing.log") == ""
