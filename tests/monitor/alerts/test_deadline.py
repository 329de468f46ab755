"""deadline_at_risk: the simulator's estimate of what is left, and a real run that is late."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stormproof.config import local_pool
from stormproof.monitor.alerts.deadline import estimate
from stormproof.monitor.alerts.rules import Progress
from stormproof.runtime.runs import RunContext, new_context
from stormproof.spec.load import load_workflow

from ...cli.conftest import Cli, wait_for
from .._webhook import receiver

CHAIN = """\
name: chain
tasks:
  - {id: a, command: 'true', estimated_runtime: 100}
  - {id: b, command: 'true', estimated_runtime: 200, depends_on: [a]}
  - {id: c, command: 'true', estimated_runtime: 50}
"""


def context(tmp_path: Path) -> RunContext:
    path = tmp_path / "chain.yaml"
    path.write_text(CHAIN)
    return new_context("r", load_workflow(path), (local_pool(),), path, "local", seed=1)


def test_the_estimate_leaves_out_what_ended_and_shortens_what_runs(tmp_path: Path) -> None:
    ctx = context(tmp_path)
    now = 1000.0
    assert estimate(ctx, Progress(started_at=now), now).remaining_s == pytest.approx(300)
    a_done = Progress(started_at=900.0, ended={"a", "c"})
    assert estimate(ctx, a_done, now).remaining_s == pytest.approx(200)
    b_running = Progress(started_at=900.0, ended={"a", "c"}, running={"b": now - 50})
    found = estimate(ctx, b_running, now)
    assert found.remaining_s == pytest.approx(150) and found.simulations >= 1
    assert estimate(ctx, Progress(ended={"a", "b", "c"}), now).remaining_s == 0


@pytest.mark.slow
def test_a_run_that_will_miss_its_deadline_alerts_once(cli: Cli) -> None:
    gate = "while [ ! -f $STORMPROOF_DATA_DIR/go ]; do sleep 0.1; done"
    cli.write(
        "wf.yaml",
        f'name: late\ntasks:\n  - {{id: long, command: "{gate}", estimated_runtime: 2h}}\n',
    )
    with receiver() as r:
        cli.write(
            "stormproof.yaml",
            f'alerts:\n  - {{on: deadline_at_risk, deadline: 1h, every: 1s, notify: "{r.url}"}}\n',
        )
        assert cli("run", "wf.yaml", "--name", "late", "--detach").returncode == 0
        wait_for(lambda: len(r.received) == 1, timeout=30, what="the deadline alert")

        def estimates() -> list[dict[str, object]]:
            rows = json.loads(cli("history", "late", "--json").stdout)
            return [row["data"] for row in rows if row["kind"] == "DeadlineEstimated"]

        wait_for(lambda: len(estimates()) >= 3, timeout=30, what="three estimates")
        (cli.data_dir / "late" / "data" / "go").touch()
        wait_for(lambda: cli.status("late")["state"] == "succeeded", what="the run's end")
        titles = r.titles()
    assert titles == ["stormproof: run late may miss its deadline"]
    first = estimates()[0]
    assert first["remaining_s"] == pytest.approx(7200, abs=60)
    assert float(str(first["finish_at"])) > float(str(first["deadline_at"]))
    assert "2.0h" in r.received[0]["message"]
