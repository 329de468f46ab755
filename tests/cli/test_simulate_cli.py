"""``stormproof simulate`` as a user types it: output, determinism, the timeline, bad input."""

from __future__ import annotations

import json
from pathlib import Path

from .conftest import Cli

POOLS = """\
pools:
  - {name: spot, market: spot, vcpus: 2, memory: 4096, price: 0.1, count: 2, interruption_rate: 2}
  - {name: od, market: on_demand, vcpus: 2, memory: 4096, price: 0.3, count: 4}
policy: {fallback_after_interruptions: 2}
"""
WORKFLOW = """\
name: sim
global_config: {checkpoint_interval: 10m}
tasks:
  - {id: prep, command: 'true', estimated_runtime: 30m}
  - {id: run-a, command: 'true', estimated_runtime: 2h, depends_on: [prep],
     checkpoint_enabled: true, checkpoint_cost: 1m}
  - {id: run-b, command: 'true', estimated_runtime: 90m, depends_on: [prep]}
  - {id: report, command: 'true', depends_on: [run-a, run-b]}
"""


def setup(cli: Cli) -> None:
    cli.write("pools.yaml", POOLS)
    cli.write("wf.yaml", WORKFLOW)


def test_json_summary_is_complete_and_the_same_for_the_same_seed(cli: Cli) -> None:
    setup(cli)
    args = ("simulate", "wf.yaml", "--pools", "pools.yaml", "--runs", "60", "--json")
    first = cli(*args, "--seed", "3", "--deadline", "4h", "--policy", "greedy")
    again = cli(*args, "--seed", "3", "--deadline", "4h", "--policy", "greedy")
    other = cli(*args, "--seed", "4", "--deadline", "4h", "--policy", "greedy")
    assert first.returncode == 0, first.stderr
    assert first.stdout == again.stdout, "same seed, same result, byte for byte"
    assert first.stdout != other.stdout
    data = json.loads(first.stdout)
    assert data["runs"] == 60 and data["succeeded"] == 60 and data["policy"] == "greedy"
    assert set(data["makespan_hours"]) == {"mean", "p50", "p90", "p99"}
    assert data["makespan_hours"]["p50"] <= data["makespan_hours"]["p99"]
    assert data["deadline_met_rate"] == 1.0, "greedy never misses a feasible deadline"
    assert data["interrupted_attempts_mean"] > 0
    assert data["tasks_without_runtime"] == ["report"]
    assert set(data["suggested_checkpoint_interval_s"]) == {"run-a"}
    expected = data["on_demand_equivalent_usd"] - data["cost_usd"]["mean"]
    assert abs(data["saved_usd"] - expected) < 2e-4


def test_on_demand_costs_more_and_saves_nothing(cli: Cli) -> None:
    setup(cli)
    args = ("simulate", "wf.yaml", "--pools", "pools.yaml", "--runs", "20", "--json")
    od = json.loads(cli(*args, "--policy", "on_demand").stdout)
    spot = json.loads(cli(*args, "--policy", "spot_first").stdout)
    assert od["spot_hours_mean"] == 0 and od["saved_usd"] == 0
    assert spot["cost_usd"]["mean"] < od["cost_usd"]["mean"]


def test_interruptions_are_attempts_taken_away_and_notices_apart(cli: Cli) -> None:
    """on_demand never runs on spot: no attempt is interrupted, though the idle spot
    instances still get their notices (which used to be reported as interruptions)."""
    setup(cli)
    args = ("simulate", "wf.yaml", "--pools", "pools.yaml", "--runs", "20")
    data = json.loads(cli(*args, "--json", "--policy", "on_demand").stdout)
    assert data["interrupted_attempts_mean"] == 0 and data["instance_notices_mean"] > 0
    assert "interruptions_mean" not in data
    text = " ".join(cli(*args, "--policy", "on_demand").stdout.split())
    notices = f"{data['instance_notices_mean']:.2f}"
    assert f"attempts interrupted 0.00 per run (instance notices {notices}" in text


def test_the_table_and_the_timeline(cli: Cli) -> None:
    setup(cli)
    proc = cli("simulate", "wf.yaml", "--pools", "pools.yaml", "--runs", "10", "--gantt", "g.html")
    assert proc.returncode == 0, proc.stderr
    assert "makespan (h)" in proc.stdout and "timeline of run 0: g.html" in proc.stdout
    html = (cli.cwd / "g.html").read_text()
    assert html.startswith("<!doctype html>") and "<svg" in html
    for task in ("prep", "run-a", "run-b", "report"):
        assert f"{task}/1 on" in html, f"a bar for {task}"


def test_bad_input_is_one_clear_line(cli: Cli) -> None:
    setup(cli)
    cases = [
        (["--trace", "spott=t.json"], "there is no pool 'spott'"),
        (["--trace", "nonsense"], "expected POOL=FILE"),
        (["--trace", "spot=missing.json"], "'missing.json' is not a file"),
        (["--policy", "greedy"], "needs a deadline"),
        (["--deadline", "soon"], "--deadline 'soon'"),
        (["--gantt", "out.gif"], "give a .html, .svg or .png file"),
    ]
    for extra, message in cases:
        proc = cli("simulate", "wf.yaml", "--pools", "pools.yaml", "--runs", "2", *extra)
        assert proc.returncode == 2, (extra, proc.stdout, proc.stderr)
        assert message in proc.stderr and "Traceback" not in proc.stderr, (extra, proc.stderr)


def test_a_trace_drives_the_spot_pool(cli: Cli, tmp_path: Path) -> None:
    setup(cli)
    always = cli.write("up.json", json.dumps({"metadata": {"gap_seconds": 600}, "data": [2] * 10}))
    never = cli.write("down.json", json.dumps({"metadata": {"gap_seconds": 600}, "data": [0] * 10}))
    args = ("simulate", "wf.yaml", "--pools", "pools.yaml", "--runs", "5", "--json")
    up = json.loads(cli(*args, "--trace", f"spot={always}").stdout)
    down = json.loads(cli(*args, "--trace", f"spot={never}").stdout)
    assert down["spot_hours_mean"] == 0, "no spot while the trace says none"
    assert up["spot_hours_mean"] > 0


def test_a_png_timeline(cli: Cli) -> None:
    setup(cli)
    proc = cli("simulate", "wf.yaml", "--pools", "pools.yaml", "--runs", "3", "--gantt", "g.png")
    assert proc.returncode == 0, proc.stderr
    data = (cli.cwd / "g.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


def test_a_task_that_fits_no_pool_is_refused_as_run_refuses_it(cli: Cli) -> None:
    """Not "2 failed runs, $0": the same refusal as ``run``, before any run is simulated."""
    setup(cli)
    cli.write(
        "huge.yaml",
        "name: huge\ntasks:\n"
        "  - {id: prep, command: 'true', estimated_runtime: 30m}\n"
        "  - {id: huge, command: 'true', estimated_runtime: 1h, vcpus: 64, depends_on: [prep]}\n",
    )
    sim = cli("simulate", "huge.yaml", "--pools", "pools.yaml", "--runs", "2")
    run = cli("run", "huge.yaml", "--config", "pools.yaml", "--name", "h")
    for proc in (sim, run):
        assert proc.returncode == 2, (proc.stdout, proc.stderr)
        assert "Traceback" not in proc.stderr and proc.stderr.count("error:") == 1
        assert "huge needs 64 vCPUs" in proc.stderr and "or lower vcpus" in proc.stderr
    assert sim.stderr == run.stderr
    assert "makespan" not in sim.stdout


def test_help_names_every_timeline_format(cli: Cli) -> None:
    proc = cli("simulate", "--help")
    assert proc.returncode == 0
    text = " ".join(proc.stdout.split())
    assert "--gantt OUT" in text and ".html" in text and ".svg" in text and ".png" in text
    assert "matplotlib" in text
