"""Spot capacity with real processes: interruption notices, trace replay, fleet scaling.

The interruption of the README's example is the recipe's "simulate spot
interruption" drill done for real: the production stage gets SIGTERM,
commits its checkpoint within the notice, the orchestrator saves it, the
task resumes on on-demand (the fallback) from that checkpoint, and status
shows the interruption, the fallback and the cost.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from .conftest import Cli, wait_for

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
SHARED_TRACES = ROOT.parent / "shared" / "data" / "spot-traces" / "availability" / "1-node"


def history(cli: Cli, run: str) -> list[dict[str, Any]]:
    proc = cli("history", run, "--json")
    rows: list[dict[str, Any]] = json.loads(proc.stdout) if proc.returncode == 0 else []
    return rows


def running_on(cli: Cli, run: str, task: str) -> str | None:
    proc = cli("fleet", run, "--json")
    if proc.returncode != 0:
        return None
    for inst in json.loads(proc.stdout):
        if any(a.startswith(f"{task}/") for a in inst["attempts"]):
            return str(inst["id"])
    return None


def test_interrupting_the_production_stage_checkpoints_resumes_on_demand_and_bills(
    cli: Cli,
) -> None:
    shutil.copytree(ROOT / "examples", cli.cwd / "examples")
    wf = cli.cwd / "examples" / "molecular-dynamics.yaml"
    config = cli.cwd / "examples" / "spot" / "stormproof.yaml"
    proc = cli("run", str(wf), "--config", str(config), "--name", "md", "--detach")
    assert proc.returncode == 0, proc.stderr

    def commits() -> int:
        return sum(
            r["kind"] == "CheckpointCommitted" and r["data"]["attempt_id"] == "production-run/1"
            for r in history(cli, "md")
        )

    wait_for(lambda: commits() >= 2, timeout=120, what="two production checkpoints")
    instance = running_on(cli, "md", "production-run")
    assert instance is not None and instance.startswith("spot-")
    proc = cli(
        "interrupt", "md", "--config", str(config), "--instance", instance, "--notice", "20s"
    )
    assert proc.returncode == 0, proc.stderr
    assert "reclaimed in 20s" in proc.stdout

    wait_for(lambda: cli.status("md")["state"] == "succeeded", timeout=180, what="the run")
    status = cli.status("md")
    tries = status["tasks"]["production-run"]["attempts"]
    first, second = tries
    assert (first["state"], first["error"], first["budget"]) == (
        "interrupted",
        "Capacity.Interrupted",
        "interruptions",
    )
    assert first["instance"] == instance and first["exit_code"] == 143
    # the fallback: interrupted once, fallback_after_interruptions is 1
    assert (second["market"], second["pool"]) == ("on_demand", "ondemand")
    assert status["tasks"]["production-run"]["budgets_used"] == {"retry": 0, "interruptions": 1}
    rows = history(cli, "md")
    notice = next(i for i, r in enumerate(rows) if r["kind"] == "InterruptionNotice")
    saved = [
        r["data"]["seq"]
        for r in rows[notice:]
        if r["kind"] == "CheckpointCommitted" and r["data"]["attempt_id"] == "production-run/1"
    ]
    assert saved, "the notice made the task commit, and that checkpoint was saved"
    assert second["restored_from"] == saved[-1], "resumed from the checkpoint of the notice"
    out = cli("logs", "md", "production-run", "--attempt", "2", "--stream", "stdout").stdout
    resumed = int(re.search(r"resumed from step (\d+)", out).group(1))  # type: ignore[union-attr]
    log = (cli.data_dir / "md" / "data" / "production.log").read_text().split()
    assert f"{resumed}..2000" in log, "the second attempt computed only what was left"
    cost = status["cost"]
    assert cost["spent"] > 0 and cost["on_demand_equivalent"] > cost["spent"]
    assert cost["saved"] == pytest.approx(cost["on_demand_equivalent"] - cost["spent"], abs=1e-5)
    assert status["interruptions"] == 1
    assert {i["id"]: i["state"] for i in status["fleet"]}[instance] == "gone"


def test_interrupt_and_scale_refuse_what_the_run_does_not_have(cli: Cli) -> None:
    cli.write(
        "stormproof.yaml",
        "pools:\n  - {name: spot, market: spot, vcpus: 1, memory: 512, price: 0.1, count: 1}\n",
    )
    cli.write("wf.yaml", "name: w\ntasks:\n  - {id: a, command: 'sleep 30', memory: 256}\n")
    assert cli("run", "wf.yaml", "--name", "w", "--detach").returncode == 0
    wait_for(lambda: running_on(cli, "w", "a") is not None, what="a to start")
    bad = cli("interrupt", "w", "--instance", "spto-0")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert "'spto-0' does not exist" in bad.stderr and "did you mean 'spot-0'" in bad.stderr
    bad = cli("fleet", "w", "--scale", "spott=2")
    assert bad.returncode == 2 and "has no pool 'spott'" in bad.stderr
    assert "did you mean 'spot'" in bad.stderr
    bad = cli("fleet", "w", "--scale", "spot=-1")
    assert bad.returncode == 2 and "POOL=N" in bad.stderr
    bad = cli("interrupt", "w", "--instance", "spot-0", "--notice", "soon")
    assert bad.returncode == 2 and "--notice 'soon'" in bad.stderr
    # scaling up adds an instance the fleet shows
    assert cli("fleet", "w", "--scale", "spot=2").returncode == 0
    wait_for(
        lambda: any(i["id"] == "spot-1" and i["state"] == "up" for i in fleet(cli, "w")),
        what="spot-1",
    )
    assert cli("cancel", "w").returncode != 2


def fleet(cli: Cli, run: str) -> list[dict[str, Any]]:
    data: list[dict[str, Any]] = json.loads(cli("fleet", run, "--json").stdout)
    return data


def trace_config(cli: Cli, trace: Path, offset: float, scale: float) -> None:
    cli.write(
        "stormproof.yaml",
        "pools:\n"
        f"  - {{name: spot, market: spot, vcpus: 1, memory: 512, price: 0.1, count: 1,\n"
        f"     trace: {trace}, time_scale: {scale}, trace_offset: {offset}, notice: 1s}}\n"
        "policy: {launch_retry: 1s, breaker: {threshold: 100}}\n",
    )


def test_a_pool_follows_a_trace_written_by_the_test(cli: Cli) -> None:
    # 1 s ticks: available for 2 s, gone for 3 s, back after
    trace = cli.write(
        "trace.json",
        json.dumps({"metadata": {"gap_seconds": 1}, "data": [1, 1, 0, 0, 0] + [1] * 50}),
    )
    trace_config(cli, trace, offset=0, scale=1)
    cli.write("wf.yaml", "name: w\ntasks:\n  - {id: a, command: 'sleep 4', memory: 256}\n")
    proc = cli("run", "wf.yaml", "--name", "w", "--quiet", timeout=120)
    assert proc.returncode == 0, proc.stderr
    rows = history(cli, "w")
    kinds = [r["kind"] for r in rows]
    notice = rows[kinds.index("InterruptionNotice")]
    assert notice["data"]["source"] == "trace" and notice["data"]["instance_id"] == "spot-0"
    assert "InstanceLaunchFailed" in kinds, "no capacity while the trace says 0"
    ups = [r for r in rows if r["kind"] == "InstanceUp"]
    assert ups and ups[-1]["at"] - rows[0]["at"] >= 4.5, "capacity came back with the trace"
    tries = cli.status("w")["tasks"]["a"]["attempts"]
    assert [t["state"] for t in tries] == ["interrupted", "succeeded"]
    assert tries[1]["instance"] != "spot-0"


@pytest.mark.skipif(
    not SHARED_TRACES.is_dir(), reason="../shared/data/spot-traces is not on this machine"
)
def test_a_pool_follows_a_real_spot_trace(cli: Cli) -> None:
    """us-west-2a K80 (600 s ticks), replayed at one tick per second from just before a drop."""
    trace = SHARED_TRACES / "aws-10-26-2022" / "us-west-2a_k80_1.json"
    data = json.loads(trace.read_text())
    gap, values = data["metadata"]["gap_seconds"], data["data"]
    drop = next(i for i in range(1, len(values)) if values[i - 1] >= 1 and values[i] == 0)
    trace_config(cli, trace, offset=(drop - 1) * gap, scale=gap)
    cli.write("wf.yaml", "name: w\ntasks:\n  - {id: a, command: 'sleep 3', memory: 256}\n")
    proc = cli("run", "wf.yaml", "--name", "w", "--quiet", timeout=300)
    assert proc.returncode == 0, proc.stderr
    rows = history(cli, "w")
    notices = [r for r in rows if r["kind"] == "InterruptionNotice"]
    assert notices and notices[0]["data"]["source"] == "trace"
    assert notices[0]["at"] - rows[0]["at"] < 3, "the drop one tick in reclaimed the instance"
    outage = next(i for i in range(drop, len(values)) if values[i] >= 1) - drop
    ups = [r for r in rows if r["kind"] == "InstanceUp"]
    assert ups[-1]["at"] - notices[0]["at"] >= outage - 1.5, "no instance while the trace is 0"


def test_a_missing_or_malformed_trace_is_a_clear_error_before_anything_starts(cli: Cli) -> None:
    cli.write("wf.yaml", "name: w\ntasks:\n  - {id: a, command: 'true', memory: 256}\n")
    trace_config(cli, cli.cwd / "nope.json", offset=0, scale=1)
    proc = cli("run", "wf.yaml", "--name", "w")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "pools[0].trace" in proc.stderr and "is not a file" in proc.stderr
    bad = cli.write("bad.json", '{"metadata": {"gap_seconds": 60}, "data": [1, "x"]}')
    trace_config(cli, bad, offset=0, scale=1)
    proc = cli("run", "wf.yaml", "--name", "w")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "bad.json" in proc.stderr
    assert cli("status", "--json").stdout.strip() == "[]", "nothing was created"


def test_the_deadline_policy_of_the_config_drives_a_real_run(cli: Cli) -> None:
    """greedy with a deadline that leaves spot no safe window: everything runs on-demand."""
    cli.write(
        "stormproof.yaml",
        "pools:\n"
        "  - {name: spot, market: spot, vcpus: 1, memory: 512, price: 0.1, count: 1}\n"
        "  - {name: od, market: on_demand, vcpus: 1, memory: 512, price: 0.3, count: 1}\n"
        "policy: {name: greedy, deadline: 90s}\n",
    )
    cli.write(
        "wf.yaml",
        "name: w\ntasks:\n"
        "  - {id: a, command: 'true', memory: 256, estimated_runtime: 60s}\n"
        "  - {id: b, command: 'true', memory: 256, estimated_runtime: 10s, depends_on: [a]}\n",
    )
    proc = cli("run", "wf.yaml", "--name", "w", "--quiet")
    assert proc.returncode == 0, proc.stderr
    tasks = cli.status("w")["tasks"]
    # a: latest start 90 - 70 = 20 s, minus 60 s at risk: spot is never safe -> on-demand.
    assert tasks["a"]["attempts"][0]["market"] == "on_demand"
    # b: ready at about 0 s; latest start 80 s, at risk 10 s: spot is safe -> spot.
    assert tasks["b"]["attempts"][0]["market"] == "spot"


def test_a_fleet_target_capacity_is_launched_diversified_by_weight_at_once(cli: Cli) -> None:
    cli.write(
        "stormproof.yaml",
        "pools:\n"
        "  - {name: large, market: spot, instance: c5.large, vcpus: 1, memory: 512, price: 0.03}\n"
        "  - {name: xlarge, market: spot, instance: c5.xlarge, vcpus: 2, memory: 1024,\n"
        "     price: 0.06, weight: 2}\n"
        "fleet: {target_capacity: 4}\n",
    )
    cli.write("wf.yaml", "name: w\ntasks:\n  - {id: a, command: 'true', memory: 256}\n")
    proc = cli("run", "wf.yaml", "--name", "w", "--quiet")
    assert proc.returncode == 0, proc.stderr
    rows = history(cli, "w")
    asked = [r["data"]["instance_id"] for r in rows if r["kind"] == "LaunchInstance"]
    assert asked == ["large-0", "large-1", "xlarge-0"], "4 units: 2 x weight 1, 1 x weight 2"
    ups = [r for r in rows if r["kind"] == "InstanceUp"]
    assert sorted(r["data"]["instance_id"] for r in ups) == sorted(asked)
    assert max(r["at"] for r in ups) - rows[0]["at"] < 1.0, "the local fleet comes up at once"
    launch = next(r for r in rows if r["kind"] == "LaunchAttempt")
    assert launch["seq"] > max(r["seq"] for r in ups), "placed once the fleet was up"
