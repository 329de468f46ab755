"""The verdict table of `--plan` (``cli.rerun_cmds.render_rerun``): every task up to a page, by
reason above it."""

from __future__ import annotations

from rich.console import Console

from stormproof.cli.rerun_cmds import TABLE_LIMIT, render_rerun
from stormproof.runtime.rerun import RerunPlan, Verdict


def rendered(plan: RerunPlan) -> str:
    console = Console(record=True, width=160)
    render_rerun(plan, console, "run of wf.yaml with --reuse")
    return console.export_text()


def test_a_small_plan_lists_every_task_with_its_verdict_and_reason() -> None:
    plan = RerunPlan(
        "reuse",
        "wf",
        [
            Verdict("prep", "reused", "same fingerprint; outputs as run r0 left them", "r0"),
            Verdict("sim", "run", "output missing: sim.nc"),
            Verdict("plot", "run", "parent 'sim' reruns"),
        ],
    )
    text = rendered(plan)
    assert text.splitlines()[0] == "run of wf.yaml with --reuse: 1 reused, 2 will run"
    rows = {line.split()[0]: line for line in text.splitlines()[2:] if line.strip()}
    assert "reused from run r0" in rows["prep"]
    assert "will run" in rows["sim"] and "output missing: sim.nc" in rows["sim"]


def test_a_big_plan_groups_tasks_by_verdict_and_reason_with_examples() -> None:
    n = TABLE_LIMIT * 3
    verdicts = [Verdict("t0", "run", "command changed since run r0")]
    verdicts += [Verdict(f"t{i}", "run", f"parent 't{i - 1}' reruns") for i in range(1, n // 2)]
    verdicts += [
        Verdict(f"u{i}", "reused", "same fingerprint; outputs as run r0 left them", "r0")
        for i in range(n - len(verdicts))
    ]
    text = rendered(RerunPlan("reuse", "wf", verdicts))
    assert f"{n // 2:,} reused, {n // 2:,} will run" in text
    assert "a parent reruns" in text and f"{n // 2 - 1:,}" in text  # one line for all of them
    assert "command changed since run r0" in text
    assert "t1, t2, t3, t4, t5 …" in text
    assert len(text.splitlines()) < 12
    assert "add --json" in text
