"""Verdicts and how the run then starts (``runtime.rerun``, ``runtime.redrive``), from logs
and workflows built in the test: no processes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from stormproof.config import local_pool
from stormproof.runtime.redrive import fold_past
from stormproof.runtime.rerun import plan_redrive, plan_reuse
from stormproof.runtime.reuse import result_of
from stormproof.runtime.runs import new_context
from stormproof.spec.model import WorkflowSpec
from stormproof.store.base import Row
from stormproof.store.sqlite import SQLiteEventLog


def spec(*tasks: dict[str, Any]) -> WorkflowSpec:
    return WorkflowSpec.model_validate({"name": "wf", "tasks": list(tasks)})


def note(kind: str, **data: Any) -> Row:
    return Row(1, "decision", kind, 0.0, None, data)


def ended(task: str, state: str) -> Row:
    return note("TaskEnded", task_id=task, state=state)


def launched(task: str, n: int) -> Row:
    return note("LaunchAttempt", task_id=task, attempt_id=f"{task}/{n}", number=n)


def attempt_ended(task: str, n: int) -> Row:
    return note("AttemptEnded", task_id=task, attempt_id=f"{task}/{n}", state="failed")


def test_redrive_carries_attempts_and_only_an_unchanged_task_s_checkpoints(tmp_path: Path) -> None:
    old = spec(
        {"id": "a", "command": "a"},
        {"id": "sim", "command": "s", "depends_on": ["a"], "checkpoint_enabled": True},
        {"id": "post", "command": "p", "depends_on": ["a"], "checkpoint_enabled": True},
    )
    ctx = new_context("r1", old, (local_pool(),), tmp_path / "wf.yaml", "local")
    rows = [
        launched("a", 1), attempt_ended("a", 1), ended("a", "succeeded"),
        launched("sim", 1),
        Row(1, "event", "CheckpointCommitted", 0.0, None, {"attempt_id": "sim/1", "seq": 1}),
        Row(1, "event", "CheckpointCommitted", 0.0, None, {"attempt_id": "sim/1", "seq": 2}),
        note("PruneCheckpoints", task_id="sim", keep=[2]),
        attempt_ended("sim", 1), launched("sim", 2), attempt_ended("sim", 2),
        ended("sim", "failed"),
        launched("post", 1),
        Row(1, "event", "CheckpointCommitted", 0.0, None, {"attempt_id": "post/1", "seq": 4}),
        attempt_ended("post", 1), ended("post", "cancelled"),
        note("RunFinished", state="failed"),
    ]  # fmt: skip
    past, final = fold_past(rows)
    assert final == "failed"
    new = spec(
        {"id": "a", "command": "a"},
        {"id": "sim", "command": "s", "depends_on": ["a"], "checkpoint_enabled": True},
        {"id": "post", "command": "p2", "depends_on": ["a"], "checkpoint_enabled": True},
    )
    plan = plan_redrive(ctx, past, new, {}, tmp_path)
    assert [(v.task_id, v.action, v.reason) for v in plan.verdicts] == [
        ("a", "kept", "succeeded in r1"),
        ("sim", "run", "failed in r1"),
        ("post", "run", "command changed"),
    ]
    assert plan.start["kept"] == ["a"]
    # sim is unchanged: it restores its last kept checkpoint; post changed: it starts afresh
    assert plan.start["carried"] == [["sim", 2, [2], 2], ["post", 1, [], 4]]


def test_a_kept_task_whose_outputs_are_gone_and_a_moved_dependency_rerun(tmp_path: Path) -> None:
    old = spec(
        {"id": "a", "command": "a", "outputs": ["a.txt"]},
        {"id": "b", "command": "b"},
        {"id": "c", "command": "c", "depends_on": ["a"]},
    )
    ctx = new_context("r1", old, (local_pool(),), tmp_path / "wf.yaml", "local")
    past, _ = fold_past([ended(t, "succeeded") for t in "abc"])
    new = spec(
        {"id": "a", "command": "a", "outputs": ["a.txt"]},
        {"id": "b", "command": "b"},
        {"id": "c", "command": "c", "depends_on": ["b"]},
    )
    plan = plan_redrive(ctx, past, new, {}, tmp_path)
    assert [(v.task_id, v.action, v.reason) for v in plan.verdicts] == [
        ("a", "run", "output missing: a.txt"),
        ("b", "kept", "succeeded in r1"),
        ("c", "run", "depends_on changed"),
    ]
    (tmp_path / "a.txt").write_text("x")
    plan = plan_redrive(ctx, past, old, {}, tmp_path)
    assert [v.action for v in plan.verdicts] == ["kept", "kept", "kept"]


def test_kept_tasks_are_listed_parents_first_whatever_the_file_order(tmp_path: Path) -> None:
    wf = spec(
        {"id": "child", "command": "c", "depends_on": ["parent"], "outputs": ["c"]},
        {"id": "parent", "command": "p", "outputs": ["p"]},
    )
    data = tmp_path / "runs" / "r0" / "data"
    data.mkdir(parents=True)
    (data / "c").write_text("c")
    (data / "p").write_text("p")
    from stormproof.runtime.fingerprint import definitions

    defs = definitions(wf, {}, None)
    with SQLiteEventLog(tmp_path / "db") as store:
        store.create_run("r0", "wf", {}, 1.0)
        store.put_results(
            [
                result_of("r0", "wf", t.id, d, data, t.outputs, 1.0)
                for t, d in zip(wf.tasks, defs, strict=True)
            ]
        )
        plan = plan_reuse(wf, {}, None, store)
    assert [v.action for v in plan.verdicts] == ["reused", "reused"]
    assert plan.start["kept"] == ["parent", "child"]
    assert [c["task"] for c in plan.start["copy"]] == ["child", "parent"]


def test_the_past_of_each_task_as_the_log_tells_it_segment_by_segment() -> None:
    def event(kind: str, **data: Any) -> Row:
        return Row(1, "event", kind, 0.0, None, data)

    rows = [
        launched("a", 1), launched("a", 2),  # two at once: a and its successor
        attempt_ended("a", 1),
        note("TaskRetrying", task_id="b", delay_s=30, reason="retrier 1: retry 1/3"),
        note("TaskRetrying", task_id="c", delay_s=0, reason="right away"),
        note("TaskReady", task_id="d", reason="parents done"),
        event("CheckpointCommitted", attempt_id="a/2", seq=3),
        event("CheckpointCommitted", attempt_id="a/2", seq=5),
        event("CheckpointCorrupt", task_id="a", seq=7),  # seen corrupt: never used again
        event("CheckpointCorrupt", task_id="a", seq=3),
    ]  # fmt: skip
    past, final = fold_past(rows)
    assert final == "stopped", "no RunFinished: the driver died or was stopped"
    a = past["a"]
    assert (a.state, a.attempts, a.live) == ("running", 2, {"a/2"})
    assert (a.checkpoints, a.top_seq) == ({5}, 7)
    assert [(past[t].state, past[t].reason) for t in "bcd"] == [
        ("backoff", "retrier 1: retry 1/3"),
        ("ready", "right away"),
        ("ready", "parents done"),
    ]
    # a redrive begins a new segment: states start over, attempts and seqs go on
    past, final = fold_past([*rows, note("RunFinished", state="failed"), note("RunRedriven")])
    assert final == "stopped"
    assert (past["a"].state, past["a"].live, past["a"].attempts) == ("waiting", set(), 2)
    assert past["a"].top_seq == 7 and past["b"].reason == ""


def test_only_tasks_that_ran_carry_anything_into_the_next_segment() -> None:
    from stormproof.runtime.redrive import carried

    past, _ = fold_past([note("TaskReady", task_id="never"), launched("ran", 1)])
    checkpointed, _ = fold_past(
        [Row(1, "event", "CheckpointCorrupt", 0.0, None, {"task_id": "bad", "seq": 2})]
    )
    past.update(checkpointed)  # made no attempt this segment, yet used seq 2
    assert carried(past, set(), ["never", "ghost", "ran", "bad"]) == [
        ["ran", 1, [], 0],
        ["bad", 0, [], 2],
    ]


def test_reuse_says_for_each_task_why_it_is_reused_or_runs(tmp_path: Path) -> None:
    from stormproof.runtime.fingerprint import definitions

    then = spec(
        {"id": "prep", "command": "p", "outputs": ["p"]},
        {"id": "sim", "command": "s", "depends_on": ["prep"], "outputs": ["s"]},
        {"id": "post", "command": "o", "depends_on": ["sim"], "outputs": ["o"]},
        {"id": "plot", "command": "l", "outputs": ["l"]},
        {"id": "fit", "command": "f", "inputs": ["params.yaml"], "outputs": ["f"]},
        {"id": "note", "command": "n"},
    )
    data = tmp_path / "runs" / "r0" / "data"
    data.mkdir(parents=True)
    for name in "psolf":
        (data / name).write_text(name)
    inputs = {"params.yaml": "sha256:1"}
    with SQLiteEventLog(tmp_path / "db") as store:
        store.create_run("r0", "wf", {}, 1.0)
        store.put_results(
            [
                result_of("r0", "wf", t.id, d, data, t.outputs, 1.0)
                for t, d in zip(then.tasks, definitions(then, inputs, None), strict=True)
                if t.outputs
            ]
        )
        (data / "l").write_text("a new plot")  # rewritten since
        now = spec(
            *then.model_dump(exclude_none=True)["tasks"][:1],
            {"id": "sim", "command": "s --fast", "depends_on": ["prep"], "outputs": ["s"]},
            *then.model_dump(exclude_none=True)["tasks"][2:],
            {"id": "fresh", "command": "x", "outputs": ["x"]},
        )
        plan = plan_reuse(now, {"params.yaml": "sha256:2"}, None, store)
    assert [(v.task_id, v.action, v.reason) for v in plan.verdicts] == [
        ("prep", "reused", "same fingerprint; outputs as run r0 left them"),
        ("sim", "run", "command changed since run r0"),
        ("post", "run", "parent 'sim' reruns"),
        ("plot", "run", "output changed since run r0: l"),
        ("fit", "run", "input changed since run r0: params.yaml"),
        ("note", "run", "declares no outputs, so it is never reused"),
        ("fresh", "run", "no earlier run in this home has a result for it"),
    ]
    assert plan.run == "r0" and plan.counts() == {"kept": 0, "reused": 1, "run": 6}
    assert (plan.kind, plan.workflow) == ("reuse", "wf")
    assert plan.start["kept"] == ["prep"]
    assert plan.start["kept_why"] == ["same fingerprint; outputs as run r0 left them"]
    assert plan.start["copy"] == [
        {"task": "prep", "run": "r0", "data_dir": str(data), "outputs": ["p"]}
    ]


def test_redrive_says_for_each_task_why_it_is_kept_or_runs(tmp_path: Path) -> None:
    old = spec(
        {"id": "a", "command": "a"},
        {"id": "gone", "command": "g"},
        {"id": "fit", "command": "f", "inputs": ["params.yaml"]},
        {"id": "img", "command": "i", "container_image": "sim:1"},
        {"id": "late", "command": "l"},
        {"id": "skip", "command": "s"},
    )
    ctx = new_context(
        "r1", old, (local_pool(),), tmp_path / "wf.yaml", "local",
        input_hashes={"params.yaml": "sha256:1"}, container={"runtime": "podman"},
    )  # fmt: skip
    rows = [ended(t, "succeeded") for t in ("a", "gone", "fit", "img")]
    rows += [launched("late", 1), ended("skip", "skipped")]
    past, _ = fold_past(rows)
    new = spec(
        {"id": "a", "command": "a"},
        {"id": "fit", "command": "f", "inputs": ["params.yaml"]},
        {"id": "img", "command": "i", "container_image": "sim:2"},
        {"id": "late", "command": "l"},
        {"id": "skip", "command": "s"},
        {"id": "added", "command": "n"},
    )
    plan = plan_redrive(ctx, past, new, {"params.yaml": "sha256:2"}, tmp_path)
    assert [(v.task_id, v.action, v.reason, v.from_run) for v in plan.verdicts] == [
        ("a", "kept", "succeeded in r1", "r1"),
        ("fit", "run", "input changed: params.yaml", None),
        ("img", "run", "container changed", None),  # the run's runtime runs its image
        ("late", "run", "not finished in r1", None),
        ("skip", "run", "skipped in r1", None),
        ("added", "run", "new task", None),
    ]
    assert (plan.kind, plan.workflow, plan.run, plan.removed) == ("redrive", "wf", "r1", ["gone"])
    assert (plan.start["kept"], plan.start["kept_why"]) == (["a"], ["succeeded in r1"])
    assert plan.start["carried"] == [["late", 1, [], 0]]
