"""The status view's reading of the log, fed rows the real core produced."""

from __future__ import annotations

import pytest

from stormproof.core.decisions import Decision, LaunchAttempt
from stormproof.core.defs import Market, PoolDef, Resources, RunOptions
from stormproof.core.events import AttemptExited, AttemptStarted, Event, InterruptionNotice
from stormproof.core.machine import Workflow
from stormproof.runtime.view import RunView
from stormproof.runtime.view_records import TaskView
from stormproof.store.base import Row

from ..core.builders import begin, dag

SPOT = PoolDef("spot", Market.SPOT, Resources(4, 8192), 2, price_usd_per_h=0.36)
OD = PoolDef("od", Market.ON_DEMAND, Resources(4, 8192), 1, price_usd_per_h=0.72)


def rows_of(event: Event, decisions: list[Decision], seq: int) -> list[Row]:
    """What the driver appends for one event: the event, then the decisions it caused."""
    rows = [Row(seq, "event", event.kind, event.at, None, event.to_dict())]
    rows += [
        Row(seq + k, "decision", d.kind, event.at, seq, d.to_dict())
        for k, d in enumerate(decisions, 1)
    ]
    return rows


def test_interruptions_count_attempts_taken_away_not_notices_to_idle_instances() -> None:
    wf = Workflow(dag({"a": []}, vcpus=4, memory=8192), RunOptions(pools=(SPOT, OD)))
    view = RunView(name="r", workflow="w")
    view.add_task(TaskView("a", "a", 0))
    log: list[Row] = []

    def feed(event: Event) -> list[Decision]:
        out = wf.handle(event)
        log.extend(rows_of(event, out, len(log) + 1))
        return out

    out = begin(wf)  # RunStarted and the fleet coming up, logged as one batch for brevity
    for d in out:
        log.append(Row(len(log) + 1, "decision", d.kind, 0.0, None, d.to_dict()))
    (launch,) = [d for d in out if isinstance(d, LaunchAttempt)]
    assert launch.instances == ("spot-0",)
    feed(AttemptStarted(1, launch.attempt_id, "pid"))
    feed(InterruptionNotice(5, "spot-1", 120, "trace"))  # idle: interrupts nothing
    feed(InterruptionNotice(6, "spot-0", 120, "trace"))  # busy: takes a/1 away
    feed(AttemptExited(7, launch.attempt_id, 143))
    view.apply(log)

    assert view.instance_notices == 2
    assert view.interruptions() == 1
    data = view.to_json()
    assert (data["interruptions"], data["instance_notices"]) == (1, 2)


def test_an_attempt_shows_the_nodes_its_backend_chose_when_the_core_chose_none() -> None:
    """A delegated pool (a Slurm partition): the launch names no instance, the start does;
    the nodes survive the log's round trip as a tuple, as the core compares them."""
    from stormproof.core.events import event_from_dict

    started = AttemptStarted(2.0, "a/1", "4711", ("node-a", "node-b"))
    stored = json_round_trip(started.to_dict())
    assert event_from_dict("AttemptStarted", stored) == started
    launch = LaunchAttempt("a/1", "a", 1, (), "spot", "placed in partition spot")
    view = RunView(name="r", workflow="w")
    view.add_task(TaskView("a", "a", 0))
    view.apply(
        [
            Row(1, "decision", launch.kind, 1.0, None, launch.to_dict()),
            Row(2, "event", started.kind, 2.0, None, stored),
        ]
    )
    attempt = view.to_json()["tasks"]["a"]["attempts"][0]
    assert (attempt["state"], attempt["instance"], attempt["instances"]) == (
        "running",
        "node-a",
        ["node-a", "node-b"],
    )


def json_round_trip(data: dict[str, object]) -> dict[str, object]:
    import json

    loaded: dict[str, object] = json.loads(json.dumps(data))
    return loaded


def test_a_running_attempt_on_a_delegated_pool_costs_from_its_start_not_its_submit() -> None:
    launch = LaunchAttempt("a/1", "a", 1, (), "spot", "submitted to spot", usd_per_h=3.6)
    started = AttemptStarted(100.0, "a/1", "4711", ("n1",))
    view = RunView(name="r", workflow="w", delegated={"spot": 100})
    view.add_task(TaskView("a", "a", 0))
    view.apply([Row(1, "decision", launch.kind, 0.0, None, launch.to_dict())])
    assert view.cost(50.0).spent == 0.0  # queued: nothing billed yet
    assert view.outstanding("spot") == 1
    view.apply([Row(2, "event", started.kind, 100.0, None, started.to_dict())])
    assert view.cost(110.0).spent == pytest.approx(10 * 3.6 / 3600)


def _two_attempts_one_measured() -> RunView:
    """a/1 exits with its CPU time and peak memory measured, b/1 without (a backend that
    does not know): rows of the real core, as the driver logs them."""
    wf = Workflow(dag({"a": [], "b": []}, vcpus=1, memory=512), RunOptions(pools=(OD,)))
    view = RunView(name="r", workflow="w")
    view.add_task(TaskView("a", "a", 0))
    view.add_task(TaskView("b", "b", 0))
    log: list[Row] = []

    def feed(event: Event) -> list[Decision]:
        out = wf.handle(event)
        log.extend(rows_of(event, out, len(log) + 1))
        return out

    out = begin(wf)
    for d in out:
        log.append(Row(len(log) + 1, "decision", d.kind, 0.0, None, d.to_dict()))
    launched = {d.task_id: d.attempt_id for d in out if isinstance(d, LaunchAttempt)}
    assert set(launched) == {"a", "b"}
    feed(AttemptStarted(1, launched["a"], "pid"))
    feed(AttemptStarted(1, launched["b"], "pid"))
    feed(AttemptExited(3, launched["a"], 0, cpu_s=1.5, max_rss_mib=42.0))
    feed(AttemptExited(4, launched["b"], 0))
    return view.apply(log)


def test_an_attempts_cpu_time_and_peak_memory_come_from_its_exit_event() -> None:
    data = _two_attempts_one_measured().to_json()
    a, b = data["tasks"]["a"]["attempts"][0], data["tasks"]["b"]["attempts"][0]
    assert (a["cpu_s"], a["max_rss_mib"]) == (1.5, 42.0)
    assert (b["cpu_s"], b["max_rss_mib"]) == (None, None)
    assert data["resources"] == {"cpu_s": 1.5, "max_rss_mib": 42.0, "attempts_measured": 1}
    assert a["queued"] is not None and a["queued"] <= a["started"]


def test_status_text_shows_cpu_and_peak_memory_and_a_dash_where_unknown() -> None:
    from rich.console import Console

    from stormproof.cli.render import render_run
    from stormproof.runtime.view_query import TaskQuery, select

    view = _two_attempts_one_measured()
    console = Console(record=True, width=200)
    render_run(view, select(view, TaskQuery()), None, console)
    text = console.export_text()
    lines = {line.split("│")[2].strip(): line for line in text.splitlines() if line.count("│") > 3}
    assert "1.5s · 42MiB" in lines["a"]
    assert "— · —" in lines["b"]
    assert "cpu 1.5s · 42MiB (peak of one attempt)" in text


def test_stages_from_the_recorded_spec_are_the_plans_stages() -> None:
    from pathlib import Path

    from stormproof.plan.graph import Dag
    from stormproof.runtime.view import stages_of
    from stormproof.spec.load import load_workflow

    examples = Path(__file__).resolve().parents[2] / "examples"
    for path in sorted(examples.glob("*.yaml")):
        spec = load_workflow(path)
        dag = Dag.from_spec(spec)
        expected: list[list[str]] = [[] for _ in range(max(dag.level, default=0) + 1)]
        for i, tid in enumerate(dag.ids):
            expected[dag.level[i]].append(tid)
        recorded = spec.model_dump(mode="json", exclude_unset=True)["tasks"]
        assert stages_of(recorded) == expected, path.name
    # dependencies listed before the tasks they name, a diamond, and a long chain
    tasks: list[dict[str, object]] = [
        {"id": "d", "depends_on": ["b", "c"]},
        {"id": "a"},
        {"id": "b", "depends_on": ["a"]},
        {"id": "c", "depends_on": ["a", "b"]},
        {"id": "e"},
    ]
    assert stages_of(tasks) == [["a", "e"], ["b"], ["c"], ["d"]]
    chain = [{"id": f"t{i}", "depends_on": [f"t{i + 1}"]} for i in range(5000)] + [{"id": "t5000"}]
    assert len(stages_of(chain)) == 5001


def test_a_redrive_reshapes_the_tasks_and_keeps_each_one_s_attempts() -> None:
    view = RunView(name="r", workflow="w")
    for tid, stage in (("a", 0), ("b", 1), ("gone", 1)):
        view.tasks[tid] = TaskView(tid, tid, stage)

    def note(seq: int, kind: str, **data: object) -> Row:
        return Row(seq, "decision", kind, float(seq), None, dict(data))

    view.apply(
        [
            note(1, "LaunchAttempt", task_id="b", attempt_id="b/1", number=1),
            note(2, "AttemptEnded", attempt_id="b/1", state="failed", error="Task.Failed"),
            note(3, "TaskEnded", task_id="b", state="failed", error="Task.Failed"),
            note(4, "RunFinished", state="failed"),
        ]
    )
    spec = {"tasks": [{"id": "a", "command": "x"}, {"id": "new", "command": "y"},
                      {"id": "b", "command": "z", "name": "B"}]}  # fmt: skip
    stages = [["a", "new"], ["b"]]
    view.apply([Row(5, "event", "RunRedriven", 5.0, None, {"spec": spec, "stages": stages})])
    assert list(view.tasks) == ["a", "new", "b"]  # the new file's order; "gone" is gone
    assert (view.state, view.ended) == ("stopped", None)
    b = view.tasks["b"]
    assert (b.state, b.error, b.name, [a.number for a in b.attempts]) == ("waiting", None, "B", [1])
    view.apply([note(6, "LaunchAttempt", task_id="b", attempt_id="b/2", number=2)])
    assert [a.number for a in view.tasks["b"].attempts] == [1, 2]


def _committed_rows() -> RunView:
    """a/1 commits two checkpoints, one from a log without save times, then ends; a/2 is
    reported by a batch backend with its commit after its end."""
    from stormproof.core.events import CheckpointCommitted

    view = RunView(name="r", workflow="w")
    view.add_task(TaskView("a", "a", 0))
    first = LaunchAttempt("a/1", "a", 1, (), "od", "placed")
    rows = [Row(1, "decision", first.kind, 0.0, None, first.to_dict())]
    old = CheckpointCommitted(2.0, "a/1", 1, 2, 2048).to_dict()
    del old["save_s"]  # as a log from before save times has it
    rows.append(Row(2, "event", "CheckpointCommitted", 2.0, None, old))
    new = CheckpointCommitted(3.0, "a/1", 2, 2, 4096, save_s=0.5)
    rows.append(Row(3, "event", new.kind, 3.0, None, new.to_dict()))
    ended = {"attempt_id": "a/1", "task_id": "a", "state": "interrupted"}
    rows.append(Row(4, "decision", "AttemptEnded", 4.0, 3, ended))
    launch = LaunchAttempt("a/2", "a", 2, (), "od", "retry")
    rows.append(Row(5, "decision", "LaunchAttempt", 5.0, None, launch.to_dict()))
    rows.append(Row(6, "decision", "AttemptEnded", 6.0, 5, {**ended, "attempt_id": "a/2"}))
    late = CheckpointCommitted(6.0, "a/2", 3, 1, 1024, save_s=1.5)
    rows.append(Row(7, "event", late.kind, 6.0, None, late.to_dict()))
    return view.apply(rows)


def test_status_json_lists_each_attempts_checkpoints_and_the_runs_totals() -> None:
    data = _committed_rows().to_json()
    first, second = data["tasks"]["a"]["attempts"]
    assert first["checkpoints"] == [
        {"seq": 1, "files": 2, "bytes": 2048, "save_s": None, "at": 2.0},  # not recorded
        {"seq": 2, "files": 2, "bytes": 4096, "save_s": 0.5, "at": 3.0},
    ]
    assert second["checkpoints"] == [
        {"seq": 3, "files": 1, "bytes": 1024, "save_s": 1.5, "at": 6.0}
    ]
    assert data["checkpoints"] == {
        "count": 3,
        "bytes": 7168,
        "mean_save_s": 1.0,  # over the two recorded
        "max_save_s": 1.5,
    }


def test_a_stored_view_keeps_the_checkpoints_and_status_prints_one_line_of_them() -> None:
    from stormproof.cli.render import checkpoints_line

    view = _committed_rows()
    again = RunView.from_summary("r", view.summary())
    again.add_task(TaskView.from_record(view.tasks["a"].to_record()), counted=True)
    assert again.to_json() == view.to_json()
    assert checkpoints_line(again) == ("checkpoints: 3 saved, 0.0 MiB, save 1.00s mean, 1.50s max")
    assert checkpoints_line(RunView(name="r", workflow="w")) is None
