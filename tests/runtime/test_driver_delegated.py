"""The driver on delegated pools (DELEGATED.md), end to end in-process: a fake batch system
places the attempts and reports their nodes; preemptions, notices and a crashed orchestrator
take the same paths as on a real cluster. The real SQLite log and a real checkpoint store."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from stormproof.checkpoints import protocol
from stormproof.checkpoints.open import local_store
from stormproof.core.decisions import Decision
from stormproof.core.defs import Market, PoolDef, Resources
from stormproof.core.machine import Workflow
from stormproof.executors.fake import FakeBatchExecutor
from stormproof.runtime.checkpointing import Checkpointing
from stormproof.runtime.driver import Driver
from stormproof.runtime.home import Home
from stormproof.runtime.runs import RunContext, load_context, new_context
from stormproof.runtime.view_store import view_for_run
from stormproof.spec.model import WorkflowSpec
from stormproof.store.sqlite import SQLiteEventLog

SPOT = PoolDef("spot", Market.SPOT, Resources(4, 8192), 2, 0.01, delegated=True, max_jobs=2)
OD = PoolDef("od", Market.ON_DEMAND, Resources(4, 8192), 1, 0.04, delegated=True, max_jobs=3)
NODES = {"spot": ["s1", "s2"], "od": ["o1"]}


@pytest.fixture
def home(tmp_path: Path) -> Home:
    h = Home(tmp_path / ".stormproof")
    h.root.mkdir()
    return h


@pytest.fixture
def store(home: Home) -> SQLiteEventLog:
    s = SQLiteEventLog(home.db_path)
    yield s
    s.close()


def make_run(store: SQLiteEventLog, tmp_path: Path, tasks: list[dict[str, object]]) -> RunContext:
    spec = WorkflowSpec.model_validate({"name": "batch", "tasks": tasks})
    ctx = new_context("r", spec, (SPOT, OD), tmp_path / "wf.yaml", "fake-batch", seed=1)
    store.create_run("r", ctx.spec.name, ctx.to_meta(), time.time())
    return ctx


class Hands:
    """A reporter that lets the test act on the batch system from inside the driver's loop."""

    def __init__(self, act: Callable[[Driver], None]) -> None:
        self.act = act
        self.driver: Driver | None = None

    def on_decisions(self, decisions: Sequence[Decision], now: float) -> None:
        return None

    def tick(self, now: float) -> None:
        assert self.driver is not None
        self.act(self.driver)

    def resumed(self, core: Workflow) -> None:
        return None


def drive(home: Home, store: SQLiteEventLog, ctx: RunContext, fake: FakeBatchExecutor,
          act: Callable[[Driver], None] | None = None, ckpt: bool = False) -> str:  # fmt: skip
    driver = Driver(home, store, ctx, fake)  # type: ignore[arg-type]
    if act is not None:
        hands = Hands(act)
        hands.driver = driver
        driver.reporter = hands
    if ckpt:
        ckpt_store = local_store(home.root / "checkpoints")
        driver.checkpointing = Checkpointing(ckpt_store, ctx.name, driver.core.next_checkpoint_seq)
    return driver.drive().state


def rows(store: SQLiteEventLog, kind: str) -> list[dict[str, object]]:
    return [r.data for r in store.read("r") if r.kind == kind]


def test_a_run_on_delegated_pools_succeeds_within_max_jobs_and_shows_its_nodes(
    home: Home, store: SQLiteEventLog, tmp_path: Path
) -> None:
    tasks: list[dict[str, object]] = [{"id": f"t{k}", "command": ["true"]} for k in range(6)]
    tasks.append({"id": "wide", "command": ["true"], "nodes": 2, "depends_on": ["t0"]})
    ctx = make_run(store, tmp_path, tasks)
    fake = FakeBatchExecutor(nodes=NODES)
    assert drive(home, store, ctx, fake) == "succeeded"

    launches = rows(store, "LaunchAttempt")
    assert all(d["instances"] == [] for d in launches)  # the batch system picks the node
    assert {d["pool"] for d in launches} == {"spot", "od"}
    assert not rows(store, "LaunchInstance") and not rows(store, "TerminateInstance")
    outstanding: dict[str, int] = {}
    for r in store.read("r"):  # in log order: never more than max_jobs at once
        if r.kind in ("LaunchAttempt", "AttemptEnded"):
            pool = str(r.data["pool"])
            outstanding[pool] = outstanding.get(pool, 0) + (1 if r.kind == "LaunchAttempt" else -1)
            assert outstanding[pool] <= {"spot": 2, "od": 3}[pool], r
    assert fake.held["wide/1"].nodes == ("s1", "s2")

    info = store.get_run("r")
    view = view_for_run(info).apply(store.read("r"))
    assert set(view.instances) == {"s1", "s2", "o1"}  # nodes learned, then gone with the run
    assert view.tasks["wide"].attempts[0].instances == ["s1", "s2"]
    assert view.delegated == {"spot": 2, "od": 3}


def test_a_preempted_attempt_commits_and_its_retry_restores_the_checkpoint(
    home: Home, store: SQLiteEventLog, tmp_path: Path
) -> None:
    ctx = make_run(
        store, tmp_path, [{"id": "sim", "command": ["true"], "checkpoint_enabled": True}]
    )
    fake = FakeBatchExecutor(nodes=NODES, outcome=lambda job: None)  # jobs run until told

    def act(driver: Driver) -> None:
        if fake.running("s1") == ["sim/1"]:
            fake.preempt("s1")  # Slurm preempts: SIGTERM, commit within the grace, PREEMPTED
        elif "sim/2" in fake.running():
            fake.finish("sim/2")

    assert drive(home, store, ctx, fake, act, ckpt=True) == "succeeded"
    retry = fake.held["sim/2"].job
    assert retry.env[protocol.ENV_RESTORED] == "1"
    restored = Path(retry.env[protocol.ENV_CHECKPOINT_DIR]) / "state"
    assert restored.read_text() == "progress of sim/1\n"
    (first, _) = rows(store, "AttemptEnded")
    assert (first["error"], first["budget"]) == ("Capacity.Interrupted", "interruptions")
    (fault,) = [r for r in store.read("r") if r.kind == "AttemptPreempted"]
    assert fault.data["attempt_id"] == "sim/1"


def test_an_interrupt_naming_a_node_stops_its_attempts_with_the_notice_as_grace(
    home: Home, store: SQLiteEventLog, tmp_path: Path
) -> None:
    ctx = make_run(store, tmp_path, [{"id": "a", "command": ["true"]}])
    fake = FakeBatchExecutor(nodes=NODES, outcome=lambda job: None)
    asked: list[str] = []

    def act(driver: Driver) -> None:
        if fake.running("s1") == ["a/1"] and not asked:  # `stormproof interrupt --instance s1`
            asked.append("s1")
            payload = json.dumps({"instance": "s1", "notice_s": 30.0})
            store.post_request("r", f"interrupt:{payload}", time.time())
        elif "a/2" in fake.running():
            fake.finish("a/2")

    assert drive(home, store, ctx, fake, act) == "succeeded"
    assert ("a/1", 30.0) in fake.killed
    assert rows(store, "AttemptEnded")[0]["error"] == "Capacity.Interrupted"


def test_a_crashed_orchestrator_resumes_adopting_every_job_and_submits_none_twice(
    home: Home, store: SQLiteEventLog, tmp_path: Path
) -> None:
    tasks: list[dict[str, object]] = [{"id": t, "command": ["true"]} for t in ("a", "b", "c")]
    tasks.append({"id": "d", "command": ["true"], "depends_on": ["a", "b", "c"]})
    ctx = make_run(store, tmp_path, tasks)
    fake = FakeBatchExecutor(nodes=NODES, outcome=lambda job: None)

    class Crash(Exception):
        """kill -9: the driver stops in the middle of its loop, with no goodbye in the log."""

    def crash_when_all_run(driver: Driver) -> None:
        if len(fake.running()) == 3:
            raise Crash

    with pytest.raises(Crash):
        drive(home, store, ctx, fake, crash_when_all_run)
    assert not any(r.kind == "StopRequested" for r in store.read("r"))
    fake.finish("a/1")  # ends while no orchestrator watches

    def finish_all(driver: Driver) -> None:
        for attempt_id in fake.running():
            fake.finish(attempt_id)

    assert drive(home, store, load_context(store, "r"), fake, finish_all) == "succeeded"
    assert fake.submissions == {"a/1": 1, "b/1": 1, "c/1": 1, "d/1": 1}
