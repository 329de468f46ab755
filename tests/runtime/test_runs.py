"""What a run records of itself (``runtime.runs``), so that a resume decides as it did."""

from __future__ import annotations

from pathlib import Path

from stormproof.config import local_pool
from stormproof.runtime.compile import compile_tasks
from stormproof.runtime.runs import RunContext, new_context
from stormproof.spec.model import ASSUMED_RUNTIME_S, WorkflowSpec

SPEC = WorkflowSpec.model_validate({"name": "wf", "tasks": [{"id": "a", "command": "x"}]})


def test_a_new_run_assumes_what_plan_assumes_and_an_older_one_keeps_its_minute(
    tmp_path: Path,
) -> None:
    ctx = new_context("r", SPEC, (local_pool(),), tmp_path / "wf.yaml", "local")
    assert ctx.default_runtime_s == ASSUMED_RUNTIME_S
    assert RunContext.from_meta("r", ctx.to_meta()).default_runtime_s == ASSUMED_RUNTIME_S
    older = {k: v for k, v in ctx.to_meta().items() if k != "default_runtime_s"}
    before = RunContext.from_meta("r", older)
    assert before.default_runtime_s == 60.0  # what the scheduler assumed when it started
    (task,) = compile_tasks(before.spec, default_runtime_s=before.default_runtime_s)
    assert task.estimated_s == 60.0
