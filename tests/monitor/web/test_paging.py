"""One paging of a run's tasks: the API's page is `status --json`'s, on a run of 1,200 tasks.

`status NAME --json` pages the view the driver keeps in the store (SQL, and the rows after
it); the dashboard pages the whole view it loaded once. The same filters must give the same
answer, page object included, also when the stored view lags the log (a driver killed
before its last save).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient

from stormproof.cli import main as cli_main
from stormproof.config import local_pool
from stormproof.executors.fake import FakeExecutor
from stormproof.monitor.web.app import Reader, create_app
from stormproof.monitor.web.security import Guard
from stormproof.runtime.driver import Driver
from stormproof.runtime.home import Home
from stormproof.runtime.runs import new_context
from stormproof.runtime.view_store import record_of, view_for_run
from stormproof.spec.model import WorkflowSpec
from stormproof.store.sqlite import SQLiteEventLog

TASKS = 1200
STAGE = 400


def _fails(job: Any) -> int:
    """Every 97th task of the first stage fails; its successors are skipped."""
    index = int(job.task_id[1:])
    return 1 if index < STAGE and index % 97 == 0 else 0


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("paging")
    tasks: list[dict[str, Any]] = [
        {"id": f"t{i}", "command": ["x"], "retry_attempts": 0}
        | ({"depends_on": [f"t{i - STAGE}"]} if i >= STAGE else {})
        for i in range(TASKS)
    ]
    spec = WorkflowSpec.model_validate(
        {"name": "big", "global_config": {"on_failure": "continue"}, "tasks": tasks}
    )
    store = SQLiteEventLog(Home(root).db_path)
    ctx = new_context("big", spec, (local_pool(),), root / "wf.yaml", "local", seed=1)
    store.create_run("big", spec.name, ctx.to_meta(), time.time())
    Driver(Home(root), store, ctx, FakeExecutor(outcome=_fails)).drive()
    store.close()
    return root


def status_json(home: Path, *args: str) -> Any:
    result = CliRunner().invoke(
        cli_main.cli, ["status", "big", "--json", "--home", str(home), *args]
    )
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


@pytest.fixture
def api(home: Path) -> Iterator[TestClient]:
    h = Home(home)
    reader = Reader(lambda: SQLiteEventLog(h.db_path), h)
    with TestClient(create_app(reader, Guard(None, True)), base_url="http://127.0.0.1") as c:
        yield c


#: (the API's query, the same filters for `status --json`)
FILTERS: list[tuple[dict[str, Any], list[str]]] = [
    ({"limit": 1000}, []),
    ({"limit": 1000, "offset": 1000}, ["--offset", "1000"]),
    (
        {"state": ["failed", "skipped"], "limit": 3, "offset": 2},
        ["--state", "failed", "--state", "skipped", "--limit", "3", "--offset", "2"],
    ),
    (
        {"stage": 2, "limit": 250, "offset": 300},
        ["--stage", "2", "--limit", "250", "--offset", "300"],
    ),
    (
        {"state": "succeeded", "stage": 3, "limit": 7},
        ["--state", "succeeded", "--stage", "3", "--limit", "7"],
    ),
]


def _same_answers(api: TestClient, home: Path) -> None:
    for query, args in FILTERS:
        from_api = api.get("/api/runs/big", params=query).json()
        from_cli = status_json(home, *args)
        assert from_api["page"] == from_cli["page"], query
        assert from_api == from_cli, query
        tasks = api.get("/api/runs/big/tasks", params=query).json()
        assert tasks == {"tasks": from_cli["tasks"], "page": from_cli["page"]}


def test_the_apis_page_is_status_jsons_page_for_the_same_filters(
    home: Path, api: TestClient
) -> None:
    first = status_json(home)
    assert len(first["tasks"]) == 1000
    assert first["page"] == {"offset": 0, "limit": 1000, "total": TASKS, "next_offset": 1000}
    failed = [f"t{i}" for i in range(0, STAGE, 97)]
    assert first["counts"] == {
        "failed": len(failed),
        "skipped": 2 * len(failed),
        "succeeded": TASKS - 3 * len(failed),
    }
    _same_answers(api, home)
    picked = api.get("/api/runs/big", params={"state": ["failed", "skipped"], "limit": 3}).json()
    assert list(picked["tasks"]) == ["t0", "t97", "t194"]
    assert picked["page"] == {"offset": 0, "limit": 3, "total": 15, "next_offset": 3}


def test_they_agree_when_the_stored_view_lags_the_log(home: Path) -> None:
    """As after a kill -9 of the driver: the stored view is of an early point; `status`
    folds the rows after it into its page, the dashboard into its whole view."""
    store = SQLiteEventLog(Home(home).db_path)
    try:
        rows = list(store.read("big"))
        early = view_for_run(store.get_run("big")).apply(rows[: len(rows) // 3])
        with store._transaction():
            store._db.execute("DELETE FROM views")
            store._db.execute("DELETE FROM task_views")
        records = [record_of(t) for t in early.tasks.values()]
        store.save_view("big", early.last_seq, early.summary(), records)
        h = Home(home)
        reader = Reader(lambda: SQLiteEventLog(h.db_path), h)
        with TestClient(create_app(reader, Guard(None, True)), base_url="http://127.0.0.1") as c:
            _same_answers(c, home)
    finally:
        store.close()
