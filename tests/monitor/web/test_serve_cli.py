"""``stormproof serve`` as a user starts it: bind rules, the token, cancel through the API."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from typing import Any

import pytest

from ...cli.conftest import Cli, wait_for
from ._browser import serving

pytestmark = pytest.mark.slow
TOKEN = "s3cret-token-for-tests"


def get(url: str, headers: dict[str, str] | None = None, method: str = "GET") -> tuple[int, Any]:
    request = urllib.request.Request(url, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


@pytest.mark.parametrize("host", ["0.0.0.0", "10.1.2.3", "::", "dashboard.example.org"])
def test_a_bind_beyond_loopback_without_a_token_exits_2_and_says_why(cli: Cli, host: str) -> None:
    proc = cli("serve", "--host", host, "--port", "0")
    assert proc.returncode == 2
    assert f"--host {host}: serving beyond this machine needs a token" in proc.stderr
    assert "--token TOKEN or set STORMPROOF_TOKEN" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_short_token_is_refused(cli: Cli) -> None:
    proc = cli("serve", "--port", "0", "--token", "short")
    assert proc.returncode == 2 and "at least 16 characters" in proc.stderr


def test_a_taken_port_is_a_clear_error(cli: Cli) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = cli("serve", "--port", str(port))
    assert proc.returncode == 2
    assert f"--port {port}: cannot listen there" in proc.stderr and "--port (0" in proc.stderr


def test_with_a_token_requests_without_it_get_401(cli: Cli) -> None:
    with serving(cli, "--token", TOKEN) as url:
        assert get(url + "api/runs")[0] == 401
        assert get(url + "metrics")[0] == 401
        assert get(url + "api/runs", {"Authorization": "Bearer " + TOKEN[:-1]})[0] == 401
        assert get(url + "api/runs", {"Authorization": "Bearer " + TOKEN}) == (200, [])


def test_cancel_through_the_dashboard_asks_the_runs_orchestrator(cli: Cli) -> None:
    cli.write("wf.yaml", "name: w\ntasks:\n  - {id: long, command: 'sleep 60'}\n")
    assert cli("run", "wf.yaml", "--name", "c", "--detach").returncode == 0
    wait_for(lambda: cli.status("c")["counts"].get("running") == 1, what="long running")
    with serving(cli) as url:
        assert get(url + "api/runs/c/cancel", method="POST")[0] == 403  # no CSRF header
        assert cli.status("c")["state"] == "running"
        session = get(url + "api/session")[1]
        code, body = get(
            url + "api/runs/c/cancel", {session["csrf_header"]: session["csrf"]}, "POST"
        )
        assert (code, body["requested"]) == (202, True), body
        wait_for(lambda: cli.status("c")["state"] == "cancelled", timeout=30, what="cancelled")
        code, body = get(
            url + "api/runs/c/cancel", {session["csrf_header"]: session["csrf"]}, "POST"
        )
        assert code == 409 and "already cancelled" in body["detail"]
