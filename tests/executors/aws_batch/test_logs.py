"""``stormproof logs`` of an attempt that ran as a Batch job, through the real CLI: the emulated
Batch host runs the job's ``stormproof exec``, whose agent uploads the output to the real S3
server (SeaweedFS); ``logs`` reads it there, as for any other executor."""

from __future__ import annotations

import pytest

from tests.aws._moto import BatchHosts
from tests.aws.fixtures import Project
from tests.checkpoints._seaweed import BUCKET

pytestmark = pytest.mark.slow


def test_logs_prints_what_a_batch_attempt_printed_from_the_bucket(
    project: Project, hosts: BatchHosts
) -> None:
    project.write(
        "wf.yaml",
        "name: hello\n"
        "tasks:\n"
        "  - id: hello\n"
        '    command: "echo hello from batch; echo a warning >&2"\n'
        "    timeout: 5m\n",
    )
    run = project("run", "wf.yaml", "--name", "batch-logs", "-q", timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    shown = project("logs", "batch-logs", "hello")
    assert shown.returncode == 0, shown.stderr
    status = f"s3://{BUCKET}/stormproof/status/batch-logs/hello/1"
    assert shown.stdout == (
        f"── stdout of hello/1 ({status}.stdout.log) ──\nhello from batch\n"
        f"── stderr of hello/1 ({status}.stderr.log) ──\na warning\n"
    )
