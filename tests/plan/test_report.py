"""build_plan's JSON (a stable API) and render_plan's page."""

from __future__ import annotations

import io
import json
from pathlib import Path

from rich.console import Console

from stormproof.config import Config, load_config
from stormproof.plan.measured import Declared, Measured, TaskMeasure, Why
from stormproof.plan.report import DETAIL_LIMIT, PlanReport, build_plan, render_plan
from stormproof.spec.model import ASSUMED_RUNTIME_S, WorkflowSpec
from tests.recipe_sample import RECIPE_SAMPLE

from .builders import diamond, task, workflow

POOLS_YAML = """
pools:
  - {name: spot-c5,  market: spot,      vcpus: 4, memory: 8192, price: 0.068, count: 4}
  - {name: ondemand, market: on_demand, vcpus: 4, memory: 8192, price: 0.17,  count: 2}
policy: {fallback_after_interruptions: 2, deadline: 36h}
"""
#: Room for the recipe's sample (8 nodes x 16 vCPUs).
BIG_POOLS_YAML = """
pools:
  - {name: big, market: on_demand, vcpus: 16, memory: 65536, price: 1.0, count: 8}
"""


def config(tmp_path: Path, text: str = POOLS_YAML) -> Config:
    (tmp_path / "stormproof.yaml").write_text(text)
    return load_config(None, tmp_path, {})


def rendered(report: PlanReport) -> str:
    out = io.StringIO()
    render_plan(report, Console(file=out, width=200, color_system=None))
    return out.getvalue()


def test_json_shape_and_numbers(tmp_path: Path) -> None:
    spec = diamond()
    report = build_plan(spec, config(tmp_path), None)
    data = report.to_json()
    json.dumps(data)  # JSON-ready
    assert list(data) == [
        "workflow", "tasks_total", "stages", "critical_path", "tasks", "estimate", "problems",
        "notes", "checkpoint_advice", "from_run",
    ]  # fmt: skip
    assert data["workflow"] == "test"
    assert data["tasks_total"] == 4
    assert data["stages"] == [["a"], ["b", "c"], ["d"]]
    assert data["critical_path"] == {"tasks": ["a", "b", "d"], "duration_s": 37.0}
    assert data["tasks"]["c"] == {
        "stage": 1,
        "earliest_start_s": 10.0,
        "earliest_finish_s": 15.0,
        "estimated_runtime_s": 5.0,
        "runtime_s": 5.0,
        "runtime_assumed": False,
        "source": "declared",
        "pool": "spot-c5",
        # 1 vCPU / 1024 MiB of a 4 vCPU / 8192 MiB instance: a quarter of $0.068/h for 5 s
        "cost_usd": round(5 / 3600 * 0.25 * 0.068, 6),
    }
    est = data["estimate"]
    assert est["duration_s"] == 37.0
    assert est["cost_usd"] == round(42 / 3600 * 0.25 * 0.068, 6)
    assert est["on_demand_cost_usd"] == round(42 / 3600 * 0.25 * 0.17, 6)
    assert est["lower_bound"] is False
    assert est["tasks_without_runtime"] == 0
    assert data["problems"] == []


def test_recipe_sample_default_pool(tmp_path: Path) -> None:
    spec = WorkflowSpec.model_validate(RECIPE_SAMPLE)
    report = build_plan(spec, load_config(None, tmp_path, {}), None)
    data = report.to_json()
    assert len(data["stages"]) == 4
    assert data["estimate"]["lower_bound"] is True
    assert data["estimate"]["tasks_without_runtime"] == 4
    assert {p.split(" ")[0] for p in data["problems"]} >= {"equilibration", "production-run"}
    container_notes = [n for n in data["notes"] if "container_image" in n]
    assert container_notes == [
        "container_image is set on 4 tasks but no container runtime is configured: commands "
        "run directly on the host (set `container:` in stormproof.yaml to apptainer, docker or "
        "podman)"
    ]
    assert any("no pools are configured" in n for n in data["notes"])
    assert any("4 of 4 tasks have no estimated_runtime" in n for n in data["notes"])


def test_a_task_without_estimated_runtime_is_assumed_the_recipe_s_30_minutes_and_says_so(
    tmp_path: Path,
) -> None:
    spec = WorkflowSpec.model_validate(RECIPE_SAMPLE)
    report = build_plan(spec, config(tmp_path, BIG_POOLS_YAML), None)
    data = report.to_json()
    assert data["problems"] == []
    task = data["tasks"]["production-run"]
    assert (task["estimated_runtime_s"], task["runtime_s"], task["runtime_assumed"]) == (
        None,
        1800.0,
        True,
    )
    est = data["estimate"]
    assert est["duration_s"] == 4 * 1800.0  # four stages in a chain, 30 minutes each
    assert est["cost_usd"] > 0 and est["lower_bound"] is False
    assert est["assumed_runtime_s"] == 1800.0
    text = rendered(report)
    assert text.count("30m 00s assumed") == 4  # per task
    assert "assumes 30m 00s for each of 4 tasks without estimated_runtime" in text
    assert "the plan assumes 30m 00s each (the recipe's own assumption" in text


def test_plan_and_simulate_assume_the_same_runtime(tmp_path: Path) -> None:
    from stormproof.runtime.compile import compile_tasks
    from stormproof.sim.build import build

    spec = WorkflowSpec.model_validate(RECIPE_SAMPLE)
    built = build(spec, config(tmp_path, BIG_POOLS_YAML), tmp_path, {})
    assert [m.runtime_s for m in built.sim.models] == [ASSUMED_RUNTIME_S] * 4
    assert {t.estimated_s for t in compile_tasks(spec)} == {ASSUMED_RUNTIME_S}
    plan = build_plan(spec, config(tmp_path, BIG_POOLS_YAML), None).to_json()
    assert {t["runtime_s"] for t in plan["tasks"].values()} == {ASSUMED_RUNTIME_S}


def test_no_container_note_with_a_runtime(tmp_path: Path) -> None:
    spec = WorkflowSpec.model_validate(RECIPE_SAMPLE)
    report = build_plan(spec, config(tmp_path), "apptainer")
    assert not any("container_image" in n for n in report.notes)


def test_recipe_sample_on_configured_pools_costs(tmp_path: Path) -> None:
    raw = json.loads(json.dumps(RECIPE_SAMPLE))
    for t, runtime in zip(raw["tasks"], ["30m", "2h", "10h", "1h"], strict=True):
        t["estimated_runtime"] = runtime
    # Make production-run fit the 4-instance spot pool: 4 nodes x 4 vCPUs / 8 GiB.
    raw["tasks"][2].update(vcpus=4, memory=8192, nodes=4)
    raw["tasks"][1].update(vcpus=4, memory=8192, nodes=4)
    spec = WorkflowSpec.model_validate(raw)
    data = build_plan(spec, config(tmp_path), "docker").to_json()
    tasks = data["tasks"]
    assert [tasks[t]["pool"] for t in tasks] == ["spot-c5"] * 4
    # data-preprocessing: 0.5 h x 1 node x max(2/4, 4096/8192)=0.5 x $0.068
    assert tasks["data-preprocessing"]["cost_usd"] == round(0.5 * 0.5 * 0.068, 6)
    # equilibration: 2 h x 4 nodes x 1.0 x $0.068; production: 10 h x 4 x 1.0 x $0.068
    assert tasks["equilibration"]["cost_usd"] == round(2 * 4 * 0.068, 6)
    assert tasks["production-run"]["cost_usd"] == round(10 * 4 * 0.068, 6)
    # analysis: 1 h x 2 nodes x max(4/4, 8192/8192) x $0.068
    assert tasks["analysis"]["cost_usd"] == round(1 * 2 * 0.068, 6)
    total = 0.5 * 0.5 + 2 * 4 + 10 * 4 + 2
    assert data["estimate"]["cost_usd"] == round(total * 0.068, 6)
    # On demand: equilibration and production need 4 instances, the on-demand pool has 2, so
    # they count at their spot price (and a note says so); the other two pay $0.17.
    on_demand = 0.5 * 0.5 * 0.17 + (2 * 4 + 10 * 4) * 0.068 + 1 * 2 * 0.17
    assert data["estimate"]["on_demand_cost_usd"] == round(on_demand, 6)
    assert any(n.startswith("2 tasks fit no on_demand pool") for n in data["notes"])
    assert data["estimate"]["duration_s"] == 13.5 * 3600
    assert data["estimate"]["vcpu_hours"] == 0.5 * 2 + 2 * 16 + 10 * 16 + 1 * 8


def test_deadline_note(tmp_path: Path) -> None:
    spec = workflow(task("long", runtime="40h", vcpus=1, memory=512))
    report = build_plan(spec, config(tmp_path), None)
    assert "the estimated duration 1d 16h is longer than policy.deadline 1d 12h" in report.notes


def test_render_small_plan(tmp_path: Path) -> None:
    spec = workflow(
        task("prep", runtime=3900, name="Prepare"),
        task("solve", ["prep"], "2h", vcpus=4, memory=8192, nodes=2),
        task("huge", ["prep"], "1h", vcpus=64, memory=1024),
    )
    text = rendered(build_plan(spec, config(tmp_path), None))
    assert "Plan test — 3 tasks in 2 stages" in text
    assert "Stage 1" in text and "Stage 2" in text
    assert "Prepare" in text and "1h 05m" in text
    assert "4×2" in text and "8,192" in text
    assert "◆ Critical path (3h 05m): prep → solve" in text
    assert "Duration  3h 05m (lower bound)" in text
    assert "% less than all on-demand" in text
    assert "✗ huge needs 64 vCPUs / 1,024 MiB" in text
    assert "no fit" in text


def test_render_huge_plan_shows_stages_not_tasks(tmp_path: Path) -> None:
    width = 60
    tasks = [task(f"s0-{j}", runtime=60, vcpus=1, memory=512) for j in range(width)]
    for level in range(1, 5):
        tasks += [
            task(
                f"s{level}-{j}",
                [f"s{level - 1}-{j}", f"s{level - 1}-{(j + 1) % width}"],
                60,
                vcpus=1,
                memory=512,
            )
            for j in range(width)
        ]
    spec = workflow(*tasks)
    assert len(spec.tasks) > DETAIL_LIMIT
    text = rendered(build_plan(spec, config(tmp_path), None))
    assert "one row per stage" in text
    assert "s2-17" not in text  # no row per task
    assert "spot-c5 ×60" in text
    assert "◆ Critical path (5m 00s): s0-0 → s1-0 → s2-0 → s3-0 → s4-0" in text


def test_render_long_critical_path_is_elided(tmp_path: Path) -> None:
    spec = workflow(
        task("t0", runtime=1, vcpus=1, memory=512),
        *(task(f"t{i}", [f"t{i - 1}"], 1, vcpus=1, memory=512) for i in range(1, 300)),
    )
    text = rendered(build_plan(spec, config(tmp_path), None))
    assert "t0 → t1 → t2 → t3 → t4 → … 290 more … → t295" in text
    assert "200 stages" in text  # 300 stages, 100 shown


def test_plan_suggests_dalys_checkpoint_interval_on_the_tasks_pool(tmp_path: Path) -> None:
    cfg = config(
        tmp_path,
        "pools:\n"
        "  - {name: spot, market: spot, vcpus: 4, memory: 8192, price: 0.07, count: 2,"
        " interruption_rate: 0.16666666666666666}\n",
    )
    spec = WorkflowSpec.model_validate(
        {
            "name": "w",
            "tasks": [
                {
                    "id": "sim",
                    "command": ["x"],
                    "checkpoint_enabled": True,
                    "checkpoint_cost": "5m",
                },
                {"id": "unknown", "command": ["x"], "checkpoint_enabled": True},
                {"id": "plain", "command": ["x"]},
            ],
        }
    )
    report = build_plan(spec, cfg, None)
    sim = report.checkpoint_advice["sim"]
    assert sim["pool"] == "spot" and sim["status"] == "daly"
    assert abs(sim["interval_s"] / 60 - 57) < 0.5  # Daly (2006): M = 6 h, delta = 5 min
    assert report.checkpoint_advice["unknown"]["status"] == "unknown_cost"
    assert "plain" not in report.checkpoint_advice
    assert any(n.startswith("sim: checkpoint every 56m") for n in report.notes)
    assert report.to_json()["checkpoint_advice"]["sim"]["interval_s"] == sim["interval_s"]


# --- plan --from-run: measured figures in place of declared ones ---------------------------


def _measured_diamond() -> Measured:
    """b took 2 s instead of 20 and saved its checkpoints in 3 s; c changed; d never
    finished; a new task of the file is not in the run."""
    return Measured(
        "r1",
        {"a": TaskMeasure(10.0), "b": TaskMeasure(2.0, save_s=3.0), "d": TaskMeasure(None, 4.0)},
        {
            "c": Declared(Why.CHANGED, "command changed"),
            "d": Declared(Why.UNFINISHED, "no successful attempt in run r1"),
        },
    )


def test_measured_runtimes_replace_the_declared_ones_and_each_task_says_its_source(
    tmp_path: Path,
) -> None:
    spec = diamond()
    declared = build_plan(spec, config(tmp_path), None)
    report = build_plan(spec, config(tmp_path), None, _measured_diamond())
    assert declared.estimate.critical_path_s == 37.0  # a 10 + b 20 + d 7
    # b measured at 2 s: the critical path is now a, c, d (10 + 5 + 7)
    assert report.estimate.critical_path_s == 22.0
    data = report.to_json()
    tasks = data["tasks"]
    assert {t: tasks[t]["source"] for t in tasks} == {
        "a": "measured",
        "b": "measured",
        "c": "declared",
        "d": "declared",  # only a save time: its runtime stays declared
    }
    assert (tasks["b"]["runtime_s"], tasks["b"]["estimated_runtime_s"]) == (2.0, 20.0)
    assert data["from_run"] == {
        "run": "r1",
        "runtime_measured": 2,
        "runtime_declared": 2,
        "checkpoint_save_measured": 2,
        "declared": {
            "c": {"why": "changed", "reason": "command changed"},
            "d": {"why": "no successful attempt", "reason": "no successful attempt in run r1"},
        },
    }
    page = rendered(report)
    assert "runtime: measured in r1 for 2 of 4 tasks, declared for 2 (changed: c; no " in page
    assert "2s measured" in page


def test_a_measured_task_without_estimated_runtime_is_no_longer_assumed(tmp_path: Path) -> None:
    spec = workflow(task("a"), task("b", ["a"]))
    report = build_plan(spec, config(tmp_path), None, Measured("r1", {"a": TaskMeasure(60.0)}))
    data = report.to_json()
    assert data["tasks"]["a"]["runtime_assumed"] is False
    assert data["tasks"]["b"]["runtime_assumed"] is True
    assert data["estimate"]["tasks_without_runtime"] == 1
    assert report.estimate.critical_path_s == 60.0 + ASSUMED_RUNTIME_S


def test_the_checkpoint_advice_uses_the_measured_save_time_and_says_so(tmp_path: Path) -> None:
    cfg = config(
        tmp_path,
        "pools:\n  - {name: spot, market: spot, vcpus: 4, memory: 8192, price: 0.07, count: 2,"
        " interruption_rate: 0.16666666666666666}\n",
    )
    spec = workflow(
        task("sim", checkpoint_enabled=True, checkpoint_cost="5m"),
        task("fresh", checkpoint_enabled=True),
    )
    measured = Measured("r1", {"sim": TaskMeasure(7200.0, save_s=0.5)}, {})
    advice = build_plan(spec, cfg, None, measured).checkpoint_advice
    assert advice["sim"]["checkpoint_cost_s"] == 0.5
    assert advice["sim"]["checkpoint_cost_source"] == "measured"
    assert advice["sim"]["status"] == "daly"
    assert advice["sim"]["interval_s"] < 5 * 60  # half a second per save: far more often
    assert advice["fresh"]["status"] == "unknown_cost"  # nothing measured, nothing declared
    notes = build_plan(spec, cfg, None, measured).notes
    assert any("a checkpoint takes 0.50s as measured in run r1" in n for n in notes), notes
    assert any("fresh" in n and "run r1 saved no checkpoint of it" in n for n in notes), notes
    plain = build_plan(spec, cfg, None).checkpoint_advice["sim"]
    assert (plain["checkpoint_cost_s"], plain["checkpoint_cost_source"]) == (300.0, "declared")
