"""What ``status`` and ``history`` show of a run's breakers and money, through the real CLI."""

from __future__ import annotations

import json
from typing import Any

import pytest

from .conftest import Cli

CONFIG = """\
pools:
  - {name: spot, market: spot, vcpus: 1, memory: 512, price: 0.1, count: 1}
  - {name: od, market: on_demand, vcpus: 1, memory: 512, price: 0.3, count: 1}
"""
# a fails once (its first attempt finds no marker), then succeeds; b just succeeds
WORKFLOW = """\
name: w
tasks:
  - id: a
    command: 'm="$STORMPROOF_DATA_DIR/marker"; test -e "$m" || { touch "$m"; exit 1; }'
    memory: 256
    retry: [{error_equals: [States.ALL], interval_seconds: 0, max_attempts: 1}]
  - {id: b, command: 'true', memory: 256}
"""


def run(cli: Cli) -> None:
    cli.write("stormproof.yaml", CONFIG)
    cli.write("wf.yaml", WORKFLOW)
    proc = cli("run", "wf.yaml", "--name", "r", "--quiet")
    assert proc.returncode == 0, proc.stderr


def test_status_shows_every_pools_breaker_even_before_any_trip(cli: Cli) -> None:
    run(cli)
    closed = {"state": "closed", "until": None, "trips": 0, "reason": "no trips yet"}
    assert cli.status("r")["breakers"] == {"spot": closed, "od": closed}
    text = cli("status", "r").stdout
    assert "breakers: od closed, spot closed" in text
    assert "breaker od: closed" in cli("fleet", "r").stdout


def test_history_json_settles_cost_per_attempt_task_and_run_as_status_does(cli: Cli) -> None:
    run(cli)
    rows: list[dict[str, Any]] = json.loads(cli("history", "r", "--json").stdout)
    status = cli.status("r")
    keys = {"spent", "on_demand_equivalent", "saved", "wasted", "wasted_seconds"}
    attempts = [r for r in rows if r["kind"] == "AttemptEnded"]
    assert sorted(r["data"]["attempt_id"] for r in attempts) == ["a/1", "a/2", "b/1"]
    for r in attempts:
        cost = r["cost"]
        assert set(cost) == keys
        assert cost["spent"] == pytest.approx(r["data"]["cost_usd"], abs=1e-6)
        assert cost["saved"] == pytest.approx(
            cost["on_demand_equivalent"] - cost["spent"], abs=2e-6
        )
        if r["data"]["pool"] == "spot":
            assert cost["saved"] > 0, "spot at a third of the on-demand price"
        number = int(r["data"]["attempt_id"].split("/")[1])
        shown = status["tasks"][r["data"]["task_id"]]["attempts"][number - 1]["cost"]
        assert cost == shown
    for r in rows:
        if r["kind"] == "TaskEnded":
            task = r["data"]["task_id"]
            assert r["cost"] == status["tasks"][task]["cost"]
            mine = [a["cost"]["spent"] for a in attempts if a["data"]["task_id"] == task]
            assert r["cost"]["spent"] == pytest.approx(sum(mine), abs=1e-5)
    (finished,) = [r for r in rows if r["kind"] == "RunFinished"]
    assert finished["cost"] == status["cost"]
    assert "cost" not in next(r for r in rows if r["kind"] == "RunStarted")
