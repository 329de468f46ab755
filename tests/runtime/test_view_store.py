"""The run's view kept in the store: what a reader gets from a stored view and the rows after
it is what a fold of the whole log gives, for any point the view was saved at and any
filter or page."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import pytest

from stormproof.cli.render import jobs_line
from stormproof.config import local_pool
from stormproof.core.decisions import LaunchAttempt, LaunchInstance
from stormproof.core.defs import Market, PoolDef, Resources, RunOptions
from stormproof.core.events import (
    AttemptExited,
    AttemptStarted,
    Event,
    InstanceUp,
    InterruptionNotice,
    RunStarted,
)
from stormproof.core.machine import Workflow
from stormproof.executors.fake import FakeExecutor
from stormproof.runtime.driver import Driver
from stormproof.runtime.home import Home
from stormproof.runtime.runs import RunContext, new_context, pool_to_dict
from stormproof.runtime.view import RunView
from stormproof.runtime.view_query import TaskQuery
from stormproof.runtime.view_records import AttemptView
from stormproof.runtime.view_store import (
    ViewKeeper,
    read_view,
    record_of,
    view_for_run,
    whole_view,
)
from stormproof.spec.model import WorkflowSpec
from stormproof.store.base import Row
from stormproof.store.sqlite import SQLiteEventLog

from ..core.builders import dag


def _spec(n: int) -> WorkflowSpec:
    tasks = []
    for i in range(n):
        task = {"id": f"t{i}", "command": ["x"], "retry_attempts": 1}
        if i >= 3:
            task["depends_on"] = [f"t{i - 3}"]
        tasks.append(task)
    return WorkflowSpec.model_validate(
        {
            "name": "w",
            "global_config": {"retry_interval": 0, "on_failure": "continue"},
            "tasks": tasks,
        }
    )


def _fails(job: object) -> int:
    """t…7 fails once then succeeds; t…5 always fails (so its successors are skipped)."""
    task_id, number = job.task_id, job.number  # type: ignore[attr-defined]
    if task_id.endswith("5"):
        return 1
    return 1 if task_id.endswith("7") and number == 1 else 0


@pytest.fixture
def finished(tmp_path: Path) -> tuple[SQLiteEventLog, RunContext]:
    store = SQLiteEventLog(tmp_path / "stormproof.db")
    spec = _spec(40)
    ctx = new_context("r", spec, (local_pool(),), tmp_path / "wf.yaml", "local", seed=1)
    store.create_run("r", spec.name, ctx.to_meta(), time.time())
    Driver(Home(tmp_path), store, ctx, FakeExecutor(outcome=_fails)).drive()
    return store, ctx


def _full_fold(store: SQLiteEventLog, ctx: RunContext) -> RunView:
    return view_for_run(store.get_run("r")).apply(store.read("r"))


def _same(view: RunView, other: RunView) -> None:
    at = other.last_at
    assert view.counts() == other.counts()
    assert view.stages() == other.stages()
    assert view.state == other.state and view.last_seq == other.last_seq
    assert view.to_json(at, [])["cost"] == other.to_json(at, [])["cost"]
    assert view.interruptions() == other.interruptions()


def test_the_driver_leaves_a_view_equal_to_the_fold_of_the_log(
    finished: tuple[SQLiteEventLog, RunContext],
) -> None:
    store, ctx = finished
    full = _full_fold(store, ctx)
    # t5, t15, t25 fail; t35 and every task after a failed one (i + 3k) is skipped
    assert full.counts() == {"succeeded": 14, "failed": 3, "skipped": 23}
    stored = store.load_view("r")
    assert stored is not None and stored.upto_seq == full.last_seq
    view, page = read_view(store, "r", TaskQuery(), writable=False)
    _same(view, full)
    assert [t.to_json(full.last_at) for t in page.tasks] == [
        t.to_json(full.last_at) for t in full.tasks.values()
    ]


@pytest.mark.parametrize(
    "query",
    [
        TaskQuery(),
        TaskQuery(states=("failed",)),
        TaskQuery(states=("skipped", "failed"), limit=3, offset=2),
        TaskQuery(stage=1, limit=4),
        TaskQuery(limit=5, offset=30),
    ],
)
def test_a_view_saved_earlier_plus_the_rows_after_it_is_the_whole_fold(
    finished: tuple[SQLiteEventLog, RunContext], query: TaskQuery
) -> None:
    """As after a kill -9 of the driver: the stored view lags the log by many rows."""
    store, ctx = finished
    rows = list(store.read("r"))
    full = _full_fold(store, ctx)
    expected = [t for t in full.tasks.values() if query.matches(t)]
    end = None if query.limit is None else query.offset + query.limit
    for cut in (0, 7, len(rows) // 3, len(rows) // 2, len(rows) - 5):
        early = view_for_run(store.get_run("r")).apply(rows[:cut])
        with store._transaction():  # the stored view goes back to an earlier point
            store._db.execute("DELETE FROM views")
            store._db.execute("DELETE FROM task_views")
        store.save_view(
            "r", early.last_seq, early.summary(), [record_of(t) for t in early.tasks.values()]
        )
        view, page = read_view(store, "r", query, writable=False)
        _same(view, full)
        assert page.matching == len(expected), cut
        assert [t.id for t in page.tasks] == [t.id for t in expected[query.offset : end]], cut
        assert [t.to_json(full.last_at) for t in page.tasks] == [
            t.to_json(full.last_at) for t in expected[query.offset : end]
        ]


def test_a_reader_that_folds_many_rows_saves_the_view_when_it_can(
    finished: tuple[SQLiteEventLog, RunContext], monkeypatch: pytest.MonkeyPatch
) -> None:
    store, _ = finished
    with store._transaction():
        store._db.execute("DELETE FROM views")
        store._db.execute("DELETE FROM task_views")
    read_view(store, "r", TaskQuery(limit=0), writable=False)
    assert store.load_view("r") is None, "a read-only reader writes nothing"
    read_view(store, "r", TaskQuery(limit=0), writable=True)
    stored = store.load_view("r")
    assert stored is not None and stored.matching == len(stored.tasks) == 40


def test_a_resumed_driver_writes_only_the_tasks_the_rows_after_the_stored_view_touched(
    finished: tuple[SQLiteEventLog, RunContext],
) -> None:
    """After a kill -9 the stored view lags the log. The driver that resumes writes nothing
    when it starts; its first save rewrites exactly the tasks the rows after the stored view
    are about (and the summary), which brings the stored view to the whole fold."""
    store, _ = finished
    info = store.get_run("r")
    rows = list(store.read("r"))
    full = view_for_run(info).apply(rows)
    cut = len(rows) // 2
    early = view_for_run(info).apply(rows[:cut])
    with store._transaction():
        store._db.execute("DELETE FROM views")
        store._db.execute("DELETE FROM task_views")
    store.save_view(
        "r", early.last_seq, early.summary(), [record_of(t) for t in early.tasks.values()]
    )
    keeper = ViewKeeper(store, info, rows)
    assert store.load_view("r", limit=0).upto_seq == early.last_seq  # type: ignore[union-attr]
    touched = {
        str(r.data.get("task_id") or r.data["attempt_id"].rpartition("/")[0])
        for r in rows[cut:]
        if "task_id" in r.data or "attempt_id" in r.data
    }
    assert keeper.view.dirty == touched and 0 < len(touched) < len(full.tasks)
    keeper.save()
    stored = store.load_view("r")
    assert stored is not None and stored.upto_seq == full.last_seq
    assert stored.summary == full.summary()
    assert [r.data for r in stored.tasks] == [t.to_record() for t in full.tasks.values()]


def test_an_attempts_record_leaves_out_the_fields_at_their_defaults() -> None:
    """The driver writes a record per task: what a default says is not written again."""
    record = AttemptView(3, pool="spot", instances=["i-1"], launched=5.0).to_record()
    assert record == {
        "number": 3,
        "pool": "spot",
        "instances": ["i-1"],
        "launched": 5.0,
        "final_cost": None,
    }
    back = AttemptView.from_record(record)
    assert back == AttemptView(3, pool="spot", instances=["i-1"], launched=5.0)
    assert back.instances is not record["instances"]


# -- the dashboard's fields through the stored view ---------------------------------------

SPOT = PoolDef("spot", Market.SPOT, Resources(4, 8192), 2, price_usd_per_h=0.36)
OD = PoolDef("od", Market.ON_DEMAND, Resources(4, 8192), 1, price_usd_per_h=0.72)
BATCH = PoolDef("batch", Market.SPOT, Resources(4, 8192), 2, price_usd_per_h=0.2, delegated=True)


JOBS = "jobs (the batch system picks the nodes):"


def _log_of_a_measured_run() -> list[Row]:
    """A run of the real core, its rows as the driver logs them: attempts that exit with
    their CPU time and peak memory, one taken away by an interruption notice, a notice to an
    idle instance, a task placed on a delegated pool, and the instances' comings and goings."""
    deps = {f"t{i}": ([f"t{i - 2}"] if i >= 2 else []) for i in range(8)}
    tasks = dag(deps, vcpus=2, memory=4096)
    wf = Workflow(tasks, RunOptions(pools=(SPOT, OD, BATCH)))
    log: list[Row] = []
    events: list[Event] = [RunStarted(100.0)]
    launches: list[LaunchAttempt] = []
    clock = 100.0
    noticed: set[str] = set()

    def feed(event: Event) -> None:
        out = wf.handle(event)
        seq = len(log) + 1
        log.append(Row(seq, "event", event.kind, event.at, None, event.to_dict()))
        log.extend(
            Row(seq + k, "decision", d.kind, event.at, seq, d.to_dict())
            for k, d in enumerate(out, 1)
        )
        for d in out:
            if isinstance(d, LaunchInstance):
                events.append(InstanceUp(event.at, d.instance_id))
            elif isinstance(d, LaunchAttempt):
                launches.append(d)

    while events or launches:
        if events:
            feed(events.pop(0))
            continue
        launch = launches.pop(0)
        clock += 1.0
        nodes = ("node-1",) if launch.pool == "batch" else ()
        feed(AttemptStarted(clock, launch.attempt_id, "pid", nodes))
        if launch.instances and launch.instances[0] not in noticed:
            (where,) = launch.instances
            noticed.add(where)
            idle = next(i for i in ("spot-0", "spot-1") if i != where)
            if idle not in noticed:
                noticed.add(idle)
                feed(InterruptionNotice(clock + 0.1, idle, 120, "trace"))
            feed(InterruptionNotice(clock + 0.2, where, 120, "trace"))
            feed(AttemptExited(clock + 0.5, launch.attempt_id, 143, cpu_s=0.25))
            continue
        rss = 10.0 * clock
        feed(AttemptExited(clock + 0.5, launch.attempt_id, 0, cpu_s=1.5, max_rss_mib=rss))
    return log


def _measured_store(tmp_path: Path) -> tuple[SQLiteEventLog, list[Row]]:
    rows = _log_of_a_measured_run()
    spec = {
        "name": "w",
        "tasks": [
            {"id": f"t{i}", **({"depends_on": [f"t{i - 2}"]} if i >= 2 else {})} for i in range(8)
        ],
    }
    pools = [pool_to_dict(p) for p in (SPOT, OD, BATCH)]
    store = SQLiteEventLog(tmp_path / "stormproof.db")
    store.create_run("r", "w", {"spec": spec, "pools": pools}, 0.0)
    store.append("r", [Row(0, r.category, r.kind, r.at, None, r.data) for r in rows])
    store.flush()
    return store, rows


def test_every_field_of_the_dashboard_survives_the_stored_views_round_trip(
    tmp_path: Path,
) -> None:
    """CPU time, peak memory, queue and launch times per attempt, and the run's resources,
    notices, running attempts and delegated jobs: a view saved at any point, read back and
    brought up to date, shows what the fold of the whole log shows (status and dashboard)."""
    store, rows = _measured_store(tmp_path)
    info = store.get_run("r")
    full = view_for_run(info).apply(rows)
    data = full.to_json(full.last_at)
    assert full.counts() == {"succeeded": 8}, "the run must end for the fold to be complete"
    assert data["resources"]["attempts_measured"] == 9 and data["resources"]["max_rss_mib"]
    assert len(data["notices"]) == 2 and full.interruptions() == 1
    attempts = [a for t in data["tasks"].values() for a in t["attempts"]]
    assert all(100 <= a["queued"] <= a["launched"] <= a["started"] for a in attempts)
    assert {a["pool"] for a in attempts} == {"spot", "batch"}
    assert all(a["instances"] == ["node-1"] for a in attempts if a["pool"] == "batch")
    live_at: dict[int, int] = {}
    for cut in range(0, len(rows) + 1):
        early = view_for_run(info).apply(rows[:cut])
        live_at[cut] = early.running_attempts()
        with store._transaction():
            store._db.execute("DELETE FROM views")
            store._db.execute("DELETE FROM task_views")
        store.save_view(
            "r", early.last_seq, early.summary(), [record_of(t) for t in early.tasks.values()]
        )
        # the round trip alone (no rows after it): the early view as it was
        saved = whole_view(store, info, writable=False) if cut == len(rows) else None
        if saved is not None:
            assert saved.to_json(full.last_at) == data
        # a reader of a page (status), and the dashboard's whole view, each brought up to date
        view, page = read_view(store, "r", TaskQuery(), writable=False)
        assert view.to_json(full.last_at, page.tasks) == data, cut
        assert whole_view(store, info, writable=False).to_json(full.last_at) == data, cut
        # what is live at the cut is counted from the stored summary alone
        partial, _ = read_view(store, "r", TaskQuery(limit=0), writable=False)
        if cut and cut < len(rows):
            stored = RunView.from_summary("r", early.summary())
            live_batch = sum(1 for a in early._by_attempt.values() if a.pool == "batch")
            assert stored.running_attempts() == live_at[cut]
            assert jobs_line(stored) == jobs_line(early) == f"{JOBS} batch {live_batch}/100"
            assert stored.resources() == early.resources() and stored.notices == early.notices
        assert partial.running_attempts() == 0 and partial.outstanding("batch") == 0
    assert max(live_at.values()) >= 1, "some cut must fall while an attempt runs"


# -- a redriven run: the view is reshaped at its RunRedriven row ----------------------------


def _redrive_spec() -> WorkflowSpec:
    """The second segment's workflow: t10 and t11 dropped, ``extra`` added first, t5 fixed."""
    tasks: list[dict[str, object]] = [{"id": "extra", "command": ["y"], "depends_on": ["t0"]}]
    for i in range(10):
        task: dict[str, object] = {"id": f"t{i}", "command": ["x"], "retry_attempts": 1}
        if i == 5:
            task["command"] = ["x", "--fixed"]
        if i >= 3:
            task["depends_on"] = [f"t{i - 3}"]
        tasks.append(task)
    return WorkflowSpec.model_validate(
        {
            "name": "w",
            "global_config": {"retry_interval": 0.05, "on_failure": "continue"},
            "tasks": tasks,
        }
    )


@pytest.fixture
def redriven(tmp_path: Path) -> tuple[SQLiteEventLog, WorkflowSpec]:
    """12 tasks fail their way to a failed run (t5 twice, its successors skipped; t7 once,
    retried after a backoff), then a redrive with an edited workflow runs to success:
    attempts carried over, a task dropped, one added, every task moved in the file."""
    from stormproof.plan.graph import Dag
    from stormproof.runtime.fingerprint import hash_inputs
    from stormproof.runtime.redrive import fold_past
    from stormproof.runtime.rerun import plan_redrive

    store = SQLiteEventLog(tmp_path / "stormproof.db")
    first = _spec(12).model_dump(mode="json", exclude_unset=True)
    first["global_config"]["retry_interval"] = 0.05
    spec = WorkflowSpec.model_validate(first)
    ctx = new_context("r", spec, (local_pool(),), tmp_path / "wf.yaml", "local", seed=1)
    store.create_run("r", spec.name, ctx.to_meta(), time.time())

    def outcome(job: object) -> int:
        task_id, number = job.task_id, job.number  # type: ignore[attr-defined]
        return 1 if (task_id == "t5" and number <= 2) or (task_id == "t7" and number == 1) else 0

    home = Home(tmp_path)
    assert Driver(home, store, ctx, FakeExecutor(outcome=outcome)).drive().state == "failed"
    rows = list(store.read("r"))
    past, final = fold_past(rows)
    new = _redrive_spec()
    hashes = hash_inputs(new, tmp_path, str(tmp_path / "wf.yaml"))
    plan = plan_redrive(ctx, past, new, hashes, home.data_dir("r"))
    data = {
        "segment": 1,
        "was": final,
        "workflow_path": str(tmp_path / "wf.yaml"),
        "workflow_dir": str(tmp_path),
        "spec": new.model_dump(mode="json", exclude_unset=True),
        "stages": [[new.tasks[i].id for i in g] for g in Dag.from_spec(new).stage_indexes()],
        "input_hashes": hashes,
        "start": plan.start,
        "verdicts": {v.task_id: [v.action, v.reason] for v in plan.verdicts},
        "removed": plan.removed,
    }
    ctx2 = dataclasses.replace(ctx, spec=new, input_hashes=hashes, start=plan.start, segment=1)
    driver = Driver(home, store, ctx2, FakeExecutor(outcome=outcome))
    driver.redrive, driver.redrive_after_seq = data, rows[-1].seq
    assert driver.drive().state == "succeeded"
    return store, new


def _save_early(store: SQLiteEventLog, early: RunView) -> None:
    """The stored view goes back to ``early`` (as after a kill -9 of the driver)."""
    with store._transaction():
        store._db.execute("DELETE FROM views")
        store._db.execute("DELETE FROM task_views")
    store.save_view(
        "r", early.last_seq, early.summary(), [record_of(t) for t in early.tasks.values()]
    )


@pytest.mark.parametrize(
    "query",
    [
        TaskQuery(),
        TaskQuery(states=("succeeded",), limit=4, offset=3),
        TaskQuery(stage=0),
        TaskQuery(limit=3, offset=9),
    ],
)
def test_a_view_saved_before_or_after_a_redrive_plus_the_rows_after_it_is_the_whole_fold(
    redriven: tuple[SQLiteEventLog, WorkflowSpec], query: TaskQuery
) -> None:
    store, new = redriven
    info = store.get_run("r")
    rows = list(store.read("r"))
    full = view_for_run(info).apply(rows)
    assert list(full.tasks) == [t.id for t in new.tasks] and "t11" not in full.tasks
    assert full.counts() == {"succeeded": 11} and full.state == "succeeded"
    assert [a.number for a in full.tasks["t5"].attempts] == [1, 2, 3]
    at = full.last_at
    expected = [t for t in full.tasks.values() if query.matches(t)]
    end = None if query.limit is None else query.offset + query.limit
    want = full.to_json(at, expected[query.offset : end])
    redrive = next(k for k, r in enumerate(rows) if r.kind == "RunRedriven")
    backoff, waits = next(
        (k + 1, r.data["task_id"])
        for k, r in enumerate(rows)
        if r.kind == "TaskRetrying" and r.data["delay_s"] > 0
    )
    cuts = sorted({0, backoff, redrive - 1, redrive, redrive + 1, redrive + 9, len(rows) - 2})
    for cut in cuts:
        early = view_for_run(info).apply(rows[:cut])
        if cut == backoff:
            assert early.tasks[waits].state == "backoff" and early.tasks[waits].retry_at
        _save_early(store, early)
        view, page = read_view(store, "r", query, writable=False)
        assert page.matching == len(expected), cut
        assert view.to_json(at, page.tasks) == want, cut
        assert whole_view(store, info, writable=False).to_json(at) == full.to_json(at), cut


def test_a_log_that_ends_just_after_its_redrive_reads_as_its_fold(
    redriven: tuple[SQLiteEventLog, WorkflowSpec], tmp_path: Path
) -> None:
    """While the redriven segment starts, the rows after a stored view from before it touch
    few tasks: the reshaping must still see every task (their attempts are kept)."""
    store, _ = redriven
    info = store.get_run("r")
    rows = list(store.read("r"))
    redrive = next(k for k, r in enumerate(rows) if r.kind == "RunRedriven")
    for end in (redrive + 1, redrive + 2, redrive + 4):
        part = SQLiteEventLog(tmp_path / f"part-{end}.db")
        part.create_run("r", info.workflow_name, info.meta, info.created_at)
        part.append("r", [Row(0, r.category, r.kind, r.at, r.cause, r.data) for r in rows[:end]])
        part.flush()
        full = view_for_run(info).apply(rows[:end])
        assert full.tasks["t0"].attempts, "a task of the first segment keeps its attempts"
        _save_early(part, view_for_run(info).apply(rows[: redrive - 3]))
        view, page = read_view(part, "r", TaskQuery(), writable=False)
        assert view.to_json(full.last_at, page.tasks) == full.to_json(full.last_at), end
        part.close()


def test_a_driver_resumed_across_a_redrive_replaces_the_stored_records(
    redriven: tuple[SQLiteEventLog, WorkflowSpec],
) -> None:
    """A stored view from before the redrive holds t10, t11 and the old positions: the
    keeper's first save writes every task of the new shape and drops the rest."""
    store, new = redriven
    info = store.get_run("r")
    rows = list(store.read("r"))
    full = view_for_run(info).apply(rows)
    redrive = next(k for k, r in enumerate(rows) if r.kind == "RunRedriven")
    _save_early(store, view_for_run(info).apply(rows[:redrive]))
    keeper = ViewKeeper(store, info, rows)
    assert keeper.view.reshaped and keeper.view.dirty == set(full.tasks)
    keeper.save()
    stored = store.load_view("r")
    assert stored is not None and stored.upto_seq == full.last_seq
    assert stored.summary == full.summary()
    assert [r.data for r in stored.tasks] == [t.to_record() for t in full.tasks.values()]
    assert stored.matching == len(new.tasks) == 11
    assert store.load_view("r", ids=["t10", "t11"]).tasks == []  # type: ignore[union-attr]
    # after a save past the redrive, a resumed keeper writes only what the rows after touch
    _save_early(store, view_for_run(info).apply(rows[: redrive + 5]))
    assert not ViewKeeper(store, info, rows).view.reshaped


def test_a_reader_reads_again_when_the_driver_saves_while_it_reads(
    redriven: tuple[SQLiteEventLog, WorkflowSpec], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The driver saves every few seconds: a save between the summary and the records a
    reader loads would give it records ahead of its summary (rows folded twice)."""
    store, _ = redriven
    info = store.get_run("r")
    rows = list(store.read("r"))
    full = view_for_run(info).apply(rows)
    cut = len(rows) // 2
    _save_early(store, view_for_run(info).apply(rows[:cut]))
    load = store.load_view
    calls = 0

    def load_and_save(run: str, **kwargs: object) -> object:
        nonlocal calls
        calls += 1
        found = load(run, **kwargs)  # type: ignore[arg-type]
        if calls == 1:  # the driver saves the whole view right after the reader's first look
            later = view_for_run(info).apply(rows)  # (as its keeper after the redrive: replace)
            records = [record_of(t) for t in later.tasks.values()]
            store.save_view("r", later.last_seq, later.summary(), records, replace=True)
        return found

    monkeypatch.setattr(store, "load_view", load_and_save)
    view, page = read_view(store, "r", TaskQuery(), writable=False)
    assert calls == 3, "the page, the records (a newer view: read again), the page again"
    assert view.to_json(full.last_at, page.tasks) == full.to_json(full.last_at)
