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


def _big_run(cli: Cli) -> None:
    """60 tasks in 3 stages of 20 (t20+i depends on ti); t7 and t17 fail (on_failure:
    continue), so t27, t37 (stage 2) and t47, t57 (stage 3) are skipped."""
    lines = ["name: big", "global_config: {on_failure: continue, max_retry_attempts: 0}", "tasks:"]
    for i in range(60):
        command = "exit 1" if i in (7, 17) else "true"
        deps = f", depends_on: [t{i - 20}]" if i >= 20 else ""
        lines.append(f"  - {{id: t{i}, command: '{command}', retry_attempts: 0{deps}}}")
    cli.write("big.yaml", "\n".join(lines) + "\n")
    proc = cli("run", "big.yaml", "--name", "big", "--quiet")
    assert proc.returncode == 1, proc.stderr


def test_status_of_a_big_run_is_a_summary_with_its_failures_and_pages_the_rest(cli: Cli) -> None:
    _big_run(cli)
    text = cli("status", "big").stdout
    assert "2 failed, 4 skipped, 54 succeeded" in text
    assert "stage 1: 2 failed, 18 succeeded" in text
    assert "stage 3: 2 skipped, 18 succeeded" in text
    flat = " ".join(text.split())
    assert "2 failed task(s) listed above; 60 tasks in all: `--tasks` lists them" in flat
    assert " t7 " in text and " t17 " in text and " t0 " not in text  # failures, not the rest
    paged = cli("status", "big", "--tasks", "--limit", "5", "--offset", "10").stdout
    assert [f" t{i} " in paged for i in (9, 10, 14, 15)] == [False, True, True, False]
    assert "tasks 11-15 of 60: `--offset 15` shows the next ones" in paged


def test_status_json_pages_and_filters_with_a_documented_shape(cli: Cli) -> None:
    _big_run(cli)
    whole = cli.status("big")
    assert len(whole["tasks"]) == 60
    assert whole["page"] == {"offset": 0, "limit": 1000, "total": 60, "next_offset": None}
    assert whole["stages"][0] == {"stage": 1, "counts": {"failed": 2, "succeeded": 18}}
    proc = cli("status", "big", "--json", "--state", "skipped", "--limit", "3")
    skipped = json.loads(proc.stdout)
    assert list(skipped["tasks"]) == ["t27", "t37", "t47"]
    assert skipped["page"] == {"offset": 0, "limit": 3, "total": 4, "next_offset": 3}
    assert skipped["counts"] == whole["counts"] and skipped["cost"] == whole["cost"]
    assert skipped["tasks"]["t27"] == whole["tasks"]["t27"]
    stage = json.loads(cli("status", "big", "--json", "--stage", "3", "--state", "skipped").stdout)
    assert list(stage["tasks"]) == ["t47", "t57"]
    bad = cli("status", "big", "--stage", "9")
    assert bad.returncode == 2 and "has 3 stage(s), not 9" in bad.stderr
