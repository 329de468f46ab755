"""The dashboard's log pane for an attempt that ran on AWS: a real SSM run on moto's EC2 (its
agent, ``stormproof exec``, uploads the output to the real S3 server, SeaweedFS), then the
API in-process reads the tail from there. Each way S3 refuses is caused for real: an identity
that may not read, no credentials, a bucket that is gone."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from fastapi.testclient import TestClient

from stormproof.monitor.report import report_data
from stormproof.monitor.shapes import LOG_TAIL_BYTES
from stormproof.runtime.home import Home
from stormproof.store.sqlite import SQLiteEventLog
from tests.aws.fixtures import WRITER_KEY, WRITER_SECRET, Project
from tests.checkpoints._seaweed import BUCKET, KEY, SECRET, Seaweed

from .test_api import client

pytestmark = pytest.mark.slow

#: Lines past the pane's 64 KiB, on stdout; one line on stderr.
LINES = 20_000
PRINTED = "".join(f"{n}\n" for n in range(1, LINES + 1)).encode()


@pytest.fixture
def aws_api(ec2_project: Project, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    """A finished SSM run ``onaws`` whose task ``count`` printed more than the pane shows and
    whose ``broken`` failed, and the API over its home, in an environment that reaches the
    same S3 as the run's agent."""
    ec2_project.write(
        "wf.yaml",
        "name: onaws\n"
        "global_config: {on_failure: continue}\n"
        "tasks:\n"
        f'  - {{id: count, command: "seq 1 {LINES}; echo done >&2"}}\n'
        '  - {id: broken, command: "echo it broke >&2; exit 3", retry_attempts: 0}\n',
    )
    run = ec2_project("run", "wf.yaml", "--name", "onaws", "-q", timeout=300)
    assert run.returncode == 1, run.stdout + run.stderr  # broken failed, as it should
    for name in ("AWS_ENDPOINT_URL", "AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    for name, value in ec2_project.environ.items():
        if name.startswith("AWS_"):
            monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with client(ec2_project.cwd / ".stormproof") as c:
        yield c


URL = "/api/runs/onaws/tasks/count/attempts/1/logs"


def test_the_log_pane_shows_the_tail_of_an_ssm_attempts_output_from_s3(
    aws_api: TestClient,
) -> None:
    out = aws_api.get(f"{URL}/stdout")
    assert out.status_code == 200, out.text
    assert len(PRINTED) > LOG_TAIL_BYTES
    assert out.content == PRINTED[-LOG_TAIL_BYTES:]
    assert out.headers["content-type"].startswith("text/plain")
    assert aws_api.get(f"{URL}/stderr").text == "done\n"
    assert aws_api.get(f"{URL}/environ").status_code == 404  # the checks are the same
    assert aws_api.get("/api/runs/onaws/tasks/count/attempts/2/logs/stdout").status_code == 404


def test_each_way_s3_refuses_is_a_502_with_its_one_line_fix(
    aws_api: TestClient,
    locked_seaweed: Seaweed,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    with monkeypatch.context() as m:
        m.setenv("AWS_ENDPOINT_URL_S3", locked_seaweed.endpoint)
        m.setenv("AWS_ACCESS_KEY_ID", WRITER_KEY)
        m.setenv("AWS_SECRET_ACCESS_KEY", WRITER_SECRET)
        denied = aws_api.get(f"{URL}/stdout")
    assert denied.status_code == 502
    assert denied.json()["detail"].startswith(
        f"not allowed to read s3://{BUCKET}/stormproof/status/onaws/count/1.stdout.log "
        "(AccessDenied)"
    )

    with monkeypatch.context() as m:
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            m.delenv(name)
        m.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
        m.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
        nobody = aws_api.get(f"{URL}/stdout")
    assert nobody.status_code == 502
    assert nobody.json()["detail"].startswith("no AWS credentials found")

    s3 = boto3.client(
        "s3",
        endpoint_url=locked_seaweed.endpoint,
        aws_access_key_id=KEY,
        aws_secret_access_key=SECRET,
        region_name="us-east-1",
    )
    s3.delete_bucket(Bucket=BUCKET)
    with monkeypatch.context() as m:
        m.setenv("AWS_ENDPOINT_URL_S3", locked_seaweed.endpoint)
        gone = aws_api.get(f"{URL}/stderr")
    assert gone.status_code == 502
    assert f"bucket {BUCKET!r} does not exist, so the output of count/1" in gone.json()["detail"]


def test_the_report_of_a_run_on_aws_has_its_failed_attempts_tails_from_s3(
    aws_api: TestClient,
    ec2_project: Project,
    locked_seaweed: Seaweed,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    home = Home(ec2_project.cwd / ".stormproof")
    store = SQLiteEventLog(home.db_path)
    try:
        logs = report_data(store, home, "onaws")["logs"]
        assert logs == {"broken/1/stdout": "", "broken/1/stderr": "it broke\n"}
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", locked_seaweed.endpoint)
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", WRITER_KEY)
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", WRITER_SECRET)
        assert report_data(store, home, "onaws")["logs"] == {}  # made all the same, without
    finally:
        store.close()
