"""The JSON API in-process (Starlette's TestClient), over real runs made by the CLI."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import TypeAdapter

from stormproof.monitor.web import models
from stormproof.monitor.web.app import Reader, create_app
from stormproof.monitor.web.security import CSRF_HEADER, Guard
from stormproof.runtime.home import Home
from stormproof.store.sqlite import SQLiteEventLog

from ...cli.conftest import Cli
from .._runs import make_runs

TOKEN = "t" * 24


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cli]:
    cli = Cli(tmp_path_factory.mktemp("api"), [])
    make_runs(cli)
    yield cli


def client(home: Path, token: str | None = None) -> TestClient:
    h = Home(home)
    reader = Reader(lambda: SQLiteEventLog(h.db_path), h)
    app = create_app(reader, Guard(token, loopback_only=True))
    return TestClient(app, base_url="http://127.0.0.1:8765")


@pytest.fixture
def api(made: Cli) -> Iterator[TestClient]:
    with client(made.cwd / ".stormproof") as c:
        yield c


def cli_json(cli: Cli, *args: str) -> Any:
    proc = cli(*args, "--json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_the_api_sends_what_the_cli_prints_with_json(made: Cli, api: TestClient) -> None:
    assert api.get("/api/runs").json() == cli_json(made, "status")
    one = api.get("/api/runs/demo", params={"limit": 1000}).json()
    assert one == cli_json(made, "status", "demo")
    assert one["page"] == {"offset": 0, "limit": 1000, "total": 4, "next_offset": None}
    filtered = {"state": ["succeeded", "failed"], "stage": 2, "limit": 1, "offset": 0}
    args = ("--state", "succeeded", "--state", "failed", "--stage", "2", "--limit", "1")
    assert api.get("/api/runs/demo", params=filtered).json() == cli_json(
        made, "status", "demo", *args
    )
    assert api.get("/api/runs/demo/events", params={"limit": 5000}).json() == cli_json(
        made, "history", "demo"
    )


def test_every_payload_is_described_by_the_openapi_document(api: TestClient) -> None:
    def check(url: str, shape: Any, **params: Any) -> Any:
        response = api.get(url, params=params)
        assert response.status_code == 200, response.text
        return TypeAdapter(shape).validate_python(response.json())

    check("/api/runs", list[models.RunSummaryShape])
    run = check("/api/runs/demo", models.RunShape, limit=2)
    assert len(run.tasks) == 2
    check("/api/runs/demo/tasks", models.TasksShape, state="succeeded")
    check("/api/runs/demo/tasks/flaky", models.OneTaskShape)
    check("/api/runs/demo/tasks/flaky/attempts", list[models.AttemptShape])
    check("/api/runs/demo/events", list[models.HistoryRowShape], after=3, limit=10)
    timeline = check("/api/runs/demo/timeline", models.TimelineShape)
    assert timeline.total_attempts == 5 and len(timeline.attempts) == 5
    check("/api/runs/demo/stages", list[models.StageShape])
    check("/api/session", models.SessionShape)
    document = api.get("/api/openapi.json").json()
    assert {
        "/api/runs",
        "/api/runs/{name}",
        "/api/runs/{name}/tasks",
        "/api/runs/{name}/tasks/{task}/attempts",
        "/api/runs/{name}/events",
        "/api/runs/{name}/tasks/{task}/attempts/{number}/logs/{stream}",
        "/api/runs/{name}/cancel",
        "/metrics",
    } <= set(document["paths"])
    run_schema = document["paths"]["/api/runs/{name}"]["get"]["responses"]["200"]
    assert run_schema["content"]["application/json"]["schema"]["$ref"].endswith("/RunShape")


def test_tasks_are_paged_and_filtered_never_sent_all_at_once(api: TestClient) -> None:
    page = api.get("/api/runs/demo/tasks", params={"offset": 1, "limit": 2}).json()
    assert list(page["tasks"]) == ["flaky", "analyse"]
    assert page["page"] == {"offset": 1, "limit": 2, "total": 4, "next_offset": 3}
    failed = api.get("/api/runs/demo/tasks", params={"state": "failed"}).json()
    assert list(failed["tasks"]) == ["broken"]
    second = api.get("/api/runs/demo/tasks", params={"stage": 2}).json()
    assert list(second["tasks"]) == ["flaky", "broken"]
    assert api.get("/api/runs/demo").json()["page"]["limit"] == 100
    assert api.get("/api/runs/demo/tasks", params={"limit": 100_000}).status_code == 422
    assert api.get("/api/runs/demo/tasks", params={"state": "bogus"}).status_code == 422
    beyond = api.get("/api/runs/demo/tasks", params={"stage": 9})
    assert beyond.status_code == 400 and "has 3 stage(s), not 9" in beyond.json()["detail"]
    assert api.get("/api/runs/demo/events", params={"after": 10, "limit": 3}).json()[0]["seq"] == 11


def test_an_attempts_cpu_time_and_peak_memory_come_from_the_local_executor(
    made: Cli, api: TestClient
) -> None:
    """``small``'s task spends ~0.4 s of CPU with 96 MiB touched: the local executor's
    ``wait4`` figures reach the attempt, the run's resources, and ``status`` alike."""
    (only,) = api.get("/api/runs/small/tasks/only").json()["attempts"]
    assert 0.3 <= only["cpu_s"] < 30 and 90 <= only["max_rss_mib"] < 1024
    resources = api.get("/api/runs/small").json()["resources"]
    assert resources["cpu_s"] == pytest.approx(only["cpu_s"], abs=0.01)
    assert resources["max_rss_mib"] == only["max_rss_mib"]
    assert cli_json(made, "status", "small")["resources"] == resources
    shown = made("status", "small")
    assert f"{only['max_rss_mib']:.0f}MiB" in shown.stdout, shown.stdout


def test_one_task_its_attempts_and_the_tails_of_their_logs(api: TestClient) -> None:
    flaky = api.get("/api/runs/demo/tasks/flaky").json()
    assert [a["state"] for a in flaky["attempts"]] == ["failed", "succeeded"]
    assert flaky["attempts"][0]["exit_code"] == 1
    assert all(a["cpu_s"] is None or a["cpu_s"] >= 0 for a in flaky["attempts"])
    out = api.get("/api/runs/demo/tasks/prepare/attempts/1/logs/stdout")
    err = api.get("/api/runs/demo/tasks/prepare/attempts/1/logs/stderr")
    assert (out.text, err.text) == ("preparing\n", "careful\n")
    assert out.headers["content-type"].startswith("text/plain")
    for bad in (
        "/api/runs/demo/tasks/nope/attempts/1/logs/stdout",
        "/api/runs/demo/tasks/prepare/attempts/7/logs/stdout",
        "/api/runs/demo/tasks/prepare/attempts/1/logs/environ",
        "/api/runs/nope/tasks/prepare/attempts/1/logs/stdout",
        "/api/runs/demo/tasks/..%2F..%2F..%2Fstormproof.db/attempts/1/logs/stdout",
    ):
        response = api.get(bad)
        assert response.status_code == 404, (bad, response.text)
        assert response.json()["detail"]


def test_logs_are_read_only_from_the_runs_own_directory(made: Cli, api: TestClient) -> None:
    """A task that replaces its log by a link to another file does not get it served."""
    secret = made.cwd / "secret.txt"
    secret.write_text("not for the dashboard\n")
    log = made.data_dir / "demo" / "tasks" / "analyse" / "attempt-1" / "stdout.log"
    saved = log.read_text()
    log.unlink()
    os.symlink(secret, log)
    try:
        response = api.get("/api/runs/demo/tasks/analyse/attempts/1/logs/stdout")
        assert response.status_code == 404
        assert "not for the dashboard" not in response.text
        # a link inside the run's directory is refused the same way: no link is followed
        os.unlink(log)
        os.symlink(log.parent.parent.parent / "prepare" / "attempt-1" / "stdout.log", log)
        assert api.get("/api/runs/demo/tasks/analyse/attempts/1/logs/stdout").status_code == 404
    finally:
        os.unlink(log)
        log.write_text(saved)
    assert api.get("/api/runs/demo/tasks/analyse/attempts/1/logs/stdout").text == saved


def test_with_a_token_every_request_without_it_gets_401(made: Cli) -> None:
    with client(made.cwd / ".stormproof", TOKEN) as c:
        for url in (
            "/",
            "/runs/demo",
            "/api/runs",
            "/metrics",
            "/api/openapi.json",
            "/static/dashboard.js",
        ):
            response = c.get(url)
            assert response.status_code == 401, url
            assert response.headers["www-authenticate"].startswith("Bearer")
        assert (
            c.get("/api/runs", headers={"Authorization": "Bearer wrong" + TOKEN}).status_code == 401
        )
        assert c.get("/api/runs", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
        assert c.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
        # a browser opens a page once with ?token=: a cookie, and the URL loses the token
        first = c.get(f"/runs/demo?token={TOKEN}", follow_redirects=False)
        assert first.status_code == 303 and first.headers["location"] == "/runs/demo"
        assert "httponly" in first.headers["set-cookie"].lower()
        assert "samesite=strict" in first.headers["set-cookie"].lower()
        assert c.get("/api/runs").status_code == 200  # the cookie now
        assert c.get("/runs/demo").status_code == 200


def test_cancel_needs_the_csrf_header_from_a_page_of_the_same_origin(api: TestClient) -> None:
    session = api.get("/api/session").json()
    assert session["csrf_header"] == CSRF_HEADER
    url = "/api/runs/demo/cancel"
    assert api.post(url).status_code == 403
    assert api.post(url, headers={CSRF_HEADER: "guess"}).status_code == 403
    foreign = {CSRF_HEADER: session["csrf"], "Origin": "http://evil.example"}
    assert api.post(url, headers=foreign).status_code == 403
    ours = {CSRF_HEADER: session["csrf"], "Origin": "http://127.0.0.1:8765"}
    response = api.post(url, headers=ours)
    assert response.status_code == 409  # past the guard: the run has already ended
    assert "has already failed" in response.json()["detail"]
    assert api.get(url).status_code == 405


def test_pages_answer_only_to_loopback_host_names_and_carry_a_strict_policy(
    api: TestClient,
) -> None:
    assert api.get("/", headers={"Host": "evil.example:8765"}).status_code == 400
    page = api.get("/runs/demo")
    assert page.status_code == 200 and "dashboard.js" in page.text
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert page.headers["x-content-type-options"] == "nosniff"
    assert api.get("/runs/nope").status_code == 404
    assert api.get("/api/runs/bad%20name").status_code == 400
    assert api.get("/docs").status_code == 404  # its assets would come from a CDN
