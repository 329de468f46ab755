"""``plan``, ``simulate``, ``run``, ``status`` and ``fleet`` with delegated pools, in-process,
with the fake batch executor registered under the name ``fake-batch``."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from stormproof.cli import session as session_mod
from stormproof.cli.main import cli
from stormproof.core.defs import Market, PoolDef, Resources
from stormproof.executors.fake import FakeBatchExecutor
from stormproof.runtime.driver import Driver
from stormproof.runtime.home import Home
from stormproof.runtime.runs import new_context
from stormproof.spec.model import WorkflowSpec
from stormproof.store.sqlite import SQLiteEventLog

WORKFLOW = """\
name: batch
global_config: {max_retry_attempts: 0}
tasks:
  - {id: prep, command: ["true"], vcpus: 2, memory: 1024, estimated_runtime: 1h}
  - {id: md, command: ["true"], vcpus: 4, memory: 2048, nodes: 2, estimated_runtime: 2h,
     depends_on: [prep]}
"""
#: As the issue's Slurm example: no shape, no count: the executor tells them.
CONFIG = """\
executor: fake-batch
pools:
  - {name: spot, market: spot, price: 0.01, price_per: vcpu_hour, max_jobs: 4}
  - {name: ondemand, market: on_demand, price: 0.04, price_per: vcpu_hour}
"""
SHAPES = {
    "spot": {"vcpus": 4, "memory": 8192, "count": 3},
    "ondemand": {"vcpus": 4, "memory": 8192, "count": 2},
}


@pytest.fixture
def batch(monkeypatch: pytest.MonkeyPatch) -> None:
    """``executor: fake-batch``, whose pools' shapes come from its options (like sinfo)."""
    builtin = dict(session_mod._BUILTIN_EXECUTORS)
    builtin["fake-batch"] = "stormproof.executors.fake:FakeBatchExecutor"
    monkeypatch.setattr(session_mod, "_BUILTIN_EXECUTORS", builtin)
    monkeypatch.setattr(
        session_mod.Session, "executor_options", lambda self, config=None: {"pools": SHAPES}
    )


def invoke(cwd: Path, *args: str) -> tuple[int, str]:
    old = Path.cwd()
    os.chdir(cwd)
    try:
        result = CliRunner().invoke(cli, list(args), catch_exceptions=True)
    finally:
        os.chdir(old)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(
        result.exception
    )
    return result.exit_code, result.stdout + result.stderr


def test_plan_prices_delegated_pools_per_vcpu_hour_with_the_shape_the_executor_told(
    tmp_path: Path, batch: None
) -> None:
    (tmp_path / "wf.yaml").write_text(WORKFLOW)
    (tmp_path / "stormproof.yaml").write_text(CONFIG)
    code, text = invoke(tmp_path, "plan", "wf.yaml", "--json")
    assert code == 0, text
    plan: dict[str, Any] = json.loads(text)
    # prep: 1 h x 2 vCPUs x 0.01; md: 2 h x 4 vCPUs x 2 nodes x 0.01 (3 spot nodes hold it)
    assert plan["estimate"]["cost_usd"] == pytest.approx(0.02 + 0.16)
    assert plan["tasks"]["md"]["pool"] == "spot"
    assert any("places on its own nodes" in n and "max_jobs 4" in n for n in plan["notes"])


def test_simulate_plays_the_batch_system_of_delegated_pools(tmp_path: Path, batch: None) -> None:
    (tmp_path / "wf.yaml").write_text(WORKFLOW)
    (tmp_path / "stormproof.yaml").write_text(CONFIG)
    code, text = invoke(tmp_path, "simulate", "wf.yaml", "--runs", "3", "--workers", "1", "--json")
    assert code == 0, text
    summary = json.loads(text)
    assert summary["failed"] == summary["unfinished"] == 0
    assert summary["makespan_hours"]["p50"] == pytest.approx(3.0)
    assert summary["cost_usd"]["p50"] == pytest.approx(0.18)


def test_a_task_no_node_shape_holds_is_refused_before_anything_runs(
    tmp_path: Path, batch: None
) -> None:
    (tmp_path / "wf.yaml").write_text(WORKFLOW.replace("nodes: 2", "nodes: 4"))
    (tmp_path / "stormproof.yaml").write_text(CONFIG)
    code, text = invoke(tmp_path, "run", "wf.yaml")
    assert code == 2
    assert "md needs 4 nodes x 4 vCPUs / 2,048 MiB" in text and "3 instances" in text


def test_max_jobs_on_the_local_executor_is_config_that_does_nothing(tmp_path: Path) -> None:
    (tmp_path / "wf.yaml").write_text(WORKFLOW)
    (tmp_path / "stormproof.yaml").write_text(
        "pools:\n  - {name: a, market: spot, vcpus: 8, memory: 8192, count: 2, max_jobs: 5}\n"
    )
    code, text = invoke(tmp_path, "plan", "wf.yaml")
    assert code == 2
    assert "stormproof.yaml:2: pools[0].max_jobs: does nothing on executor 'local'" in text
    assert "remove max_jobs" in text and "Traceback" not in text


def test_a_shape_neither_the_file_nor_the_executor_gives_is_asked_for_by_line(
    tmp_path: Path, batch: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(session_mod.Session, "executor_options", lambda self, config=None: {})
    (tmp_path / "wf.yaml").write_text(WORKFLOW)
    (tmp_path / "stormproof.yaml").write_text(CONFIG)
    code, text = invoke(tmp_path, "plan", "wf.yaml")
    assert code == 2
    assert (
        "stormproof.yaml:3: pools[0].vcpus: executor 'fake-batch' could not tell the vCPUs "
        "per node of pool 'spot': give vcpus, like 4"
    ) in text


def test_status_and_fleet_show_the_nodes_and_refuse_to_scale_a_delegated_pool(
    tmp_path: Path,
) -> None:
    home = Home(tmp_path / ".stormproof")
    home.root.mkdir()
    store = SQLiteEventLog(home.db_path)
    spec = WorkflowSpec.model_validate(
        {"name": "b", "tasks": [{"id": "a", "command": ["true"]}, {"id": "b", "command": "x"}]}
    )
    pools = (PoolDef("spot", Market.SPOT, Resources(4, 8192), 1, 0.01, delegated=True),)
    ctx = new_context("r", spec, pools, tmp_path / "wf.yaml", "fake-batch", seed=1)
    store.create_run("r", "b", ctx.to_meta(), time.time())
    # one job per node: a on n7, b on n8; a ends, b runs on when the orchestrator stops
    fake = FakeBatchExecutor(nodes={"spot": ["n7", "n8"]}, outcome=lambda job: None)

    class StopWhenBRuns:
        def on_decisions(self, decisions: object, now: float) -> None:
            return None

        def tick(self, now: float) -> None:
            if fake.running() == ["a/1", "b/1"]:
                fake.finish("a/1")
            elif fake.running() == ["b/1"] and driver.core.task_state("a").value == "succeeded":
                driver.request_stop("test")

        def resumed(self, core: object) -> None:
            return None

    driver = Driver(home, store, ctx, fake, StopWhenBRuns())  # type: ignore[arg-type]
    assert driver.drive().state == "stopped"
    store.close()

    code, text = invoke(tmp_path, "status", "r")
    assert code == 0, text
    assert "jobs (the batch system picks the nodes): spot 1/100" in text
    code, text = invoke(tmp_path, "fleet", "r", "--json")
    assert json.loads(text) == [
        {"id": "n7", "pool": "spot", "market": "spot", "state": "up", "attempts": []},
        {"id": "n8", "pool": "spot", "market": "spot", "state": "up", "attempts": ["b/1"]},
    ]
    code, text = invoke(tmp_path, "fleet", "r", "--scale", "spot=3")
    assert code == 2 and "placed by the fake-batch batch system" in text


def test_run_submits_to_the_batch_system_and_records_what_it_was_built_with(
    tmp_path: Path, batch: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    options = {"pools": SHAPES, "nodes": {"spot": ["s1", "s2", "s3"], "ondemand": ["o1"]}}
    monkeypatch.setattr(session_mod.Session, "executor_options", lambda self, config=None: options)
    (tmp_path / "wf.yaml").write_text(WORKFLOW)
    (tmp_path / "stormproof.yaml").write_text(
        CONFIG.replace("price_per: vcpu_hour, max_jobs: 4", "interruption_rate: 5")
    )
    code, text = invoke(tmp_path, "run", "wf.yaml", "--name", "r", "-q")
    assert code == 0, text
    code, text = invoke(tmp_path, "status", "r", "--json")
    run = json.loads(text)
    assert run["tasks"]["md"]["attempts"][0]["instances"] == ["s1", "s2"]
    assert {i["id"] for i in run["fleet"]} == {"s1", "s2"}  # nodes the jobs ran on
    store = SQLiteEventLog(tmp_path / ".stormproof" / "stormproof.db")
    meta = store.get_run("r").meta
    store.close()
    assert meta["executor_options"] == options
    assert all(p["delegated"] for p in meta["pools"])
    assert meta["sources"] == []  # a real batch run gets no simulated interruptions


def test_plan_bounds_the_duration_by_the_jobs_the_pools_take(tmp_path: Path, batch: None) -> None:
    wide = "\n".join(
        f"  - {{id: t{k}, command: ['true'], vcpus: 1, memory: 512, estimated_runtime: 1h}}"
        for k in range(6)
    )
    (tmp_path / "wf.yaml").write_text(f"name: fan\ntasks:\n{wide}\n")
    config = CONFIG.replace("max_jobs: 4", "max_jobs: 1").replace(
        "price_per: vcpu_hour}", "price_per: vcpu_hour, max_jobs: 2}"
    )
    (tmp_path / "stormproof.yaml").write_text(config)
    code, text = invoke(tmp_path, "plan", "wf.yaml", "--json")
    assert code == 0, text
    # 6 one-hour tasks, nodes enough for all, but 1 + 2 jobs at once: at least 2 hours
    assert json.loads(text)["estimate"]["duration_s"] == pytest.approx(2 * 3600)
