"""Bad input and faults on executor aws_batch: each is one clear line naming the resource
and the fix, exit 2, and nothing lost from the run's log."""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from stormproof.aws import clients
from stormproof.aws.clients import Aws, AwsError, boto3_module, explain
from stormproof.errors import ConfigError
from tests.aws._moto import BatchHosts, Moto
from tests.aws.fixtures import PROJECT, Project, config_text, run_cli

WF = "name: one\ntasks:\n  - {id: a, command: ['true']}\n"


def _bare_env(moto: Moto) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.pop("STORMPROOF_HOME", None)
    env.update(moto.env())
    return env


def test_no_credentials_is_one_line_naming_the_fix(moto: Moto, tmp_path: Path) -> None:
    (tmp_path / "stormproof.yaml").write_text(config_text())
    (tmp_path / "wf.yaml").write_text(WF)
    env = _bare_env(moto)
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        env.pop(key)
    env.update(
        AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"), AWS_CONFIG_FILE=str(tmp_path / "none")
    )
    proc = run_cli(tmp_path, env, "run", "wf.yaml", "--name", "r")
    assert proc.returncode == 2, proc.stderr
    assert "no AWS credentials found" in proc.stderr and "AWS_PROFILE" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_region_that_does_not_exist_is_named_with_a_suggestion(
    moto: Moto, tmp_path: Path
) -> None:
    (tmp_path / "stormproof.yaml").write_text(
        config_text().replace("aws:\n", "aws:\n  region: us-east-9\n")
    )
    (tmp_path / "wf.yaml").write_text(WF)
    proc = run_cli(tmp_path, _bare_env(moto), "run", "wf.yaml", "--name", "r")
    assert proc.returncode == 2, proc.stderr
    assert "AWS region 'us-east-9' does not exist (did you mean 'us-east-" in proc.stderr


def test_queues_never_set_up_are_named_with_the_command_that_makes_them(
    moto: Moto, tmp_path: Path
) -> None:
    (tmp_path / "stormproof.yaml").write_text(config_text())
    (tmp_path / "wf.yaml").write_text(WF)
    proc = run_cli(tmp_path, _bare_env(moto), "run", "wf.yaml", "--name", "r")
    assert proc.returncode == 2, proc.stderr
    assert f"job queue '{PROJECT}-spot' does not exist; run `stormproof aws setup`" in proc.stderr


def test_a_compute_environment_stuck_invalid_stops_the_run_before_it_submits_and_loses_nothing(
    project: Project, hosts: BatchHosts, monkeypatch: pytest.MonkeyPatch
) -> None:
    from moto.batch.models import BatchBackend

    describe = BatchBackend.describe_compute_environments
    reason = "CLIENT_ERROR - The specified subnet subnet-0abc does not exist."

    def invalid(self: Any, *args: Any, **kwargs: Any) -> list[dict[str, Any]]:
        envs = describe(self, *args, **kwargs)
        for env in envs:
            if env["computeEnvironmentName"] == f"{PROJECT}-spot-ce":
                env.update(status="INVALID", statusReason=reason)
        return envs

    monkeypatch.setattr(BatchBackend, "describe_compute_environments", invalid)
    project.cwd.joinpath("wf.yaml").write_text(WF)
    proc = project("run", "wf.yaml", "--name", "r")
    assert proc.returncode == 2, proc.stderr
    assert f"compute environment '{PROJECT}-spot-ce' is INVALID: {reason}" in proc.stderr
    assert "Traceback" not in proc.stderr
    monkeypatch.setattr(BatchBackend, "describe_compute_environments", describe)
    resumed = project("resume", "r", "-q")  # fixed: the run carries on from its log
    assert resumed.returncode == 0, resumed.stderr


def test_an_image_that_does_not_exist_fails_the_task_with_a_message_naming_it(
    project: Project, hosts: BatchHosts
) -> None:
    hosts.pullable = {"example.org/stormproof:latest"}
    project.cwd.joinpath("wf.yaml").write_text(
        "name: img\ntasks:\n"
        "  - {id: a, command: ['true'], container_image: 'lab/nope:1', retry_attempts: 0}\n"
    )
    proc = project("run", "wf.yaml", "--name", "img", "-q")
    assert proc.returncode == 1, proc.stderr
    status = json.loads(project("status", "img", "--json").stdout)
    attempt = status["tasks"]["a"]["attempts"][0]
    assert attempt["error"] == "Task.Failed"
    assert "image 'lab/nope:1'" in json.dumps(status) and "CannotPullContainerError" in json.dumps(
        status
    )


class _Throttling(BaseHTTPRequestHandler):
    requests = 0

    def log_message(self, *args: Any) -> None:
        return None

    def do_POST(self) -> None:
        type(self).requests += 1
        body = json.dumps({"__type": "TooManyRequestsException", "message": "Rate exceeded"})
        self.send_response(429)
        self.send_header("Content-Type", "application/json")
        self.send_header("x-amzn-ErrorType", "TooManyRequestsException")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body.encode())


@pytest.fixture
def throttling_api() -> Iterator[str]:
    _Throttling.requests = 0
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Throttling)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_a_throttled_api_is_retried_with_backoff_then_named(
    throttling_api: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", throttling_api)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
    monkeypatch.setattr(clients, "MAX_ATTEMPTS", 3)  # 8 in use: backoff up to 20 s a try
    batch = Aws("us-east-1").client("batch")
    started = time.monotonic()
    with pytest.raises(Exception) as caught:
        batch.describe_jobs(jobs=["job-1"])
    assert _Throttling.requests == 3  # botocore's standard mode: the call and 2 retries
    assert time.monotonic() - started > 0.05  # with a (jittered) backoff between them
    message = str(explain(caught.value, "DescribeJobs", "job-1"))
    assert message.startswith("DescribeJobs on job-1: AWS still throttled the call after 3 tries")
    assert isinstance(explain(caught.value, "DescribeJobs", "job-1"), AwsError)


def test_without_boto3_the_message_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "boto3", None)
    with pytest.raises(ConfigError, match=r"pip install 'stormproof\[aws\]'"):
        boto3_module()
