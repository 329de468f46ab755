"""Whole runs on executor aws_batch through the real CLI: moto's server for the AWS APIs
(an emulator), the emulated Batch hosts running each job's ``stormproof exec`` as a real
process, SeaweedFS as the real S3 for checkpoints and exit status."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.aws._moto import BatchHosts, Moto, batch_jobs
from tests.aws.fixtures import aws_env, config_text
from tests.checkpoints._seaweed import Seaweed

pytestmark = pytest.mark.slow


@dataclass
class Project:
    cwd: Path
    env: dict[str, str]
    procs: list[subprocess.Popen[str]]

    def __call__(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "stormproof", *args], cwd=self.cwd,
                              env=self.env, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)  # fmt: skip

    def start(self, *args: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen([sys.executable, "-m", "stormproof", *args], cwd=self.cwd,
                                env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, stdin=subprocess.DEVNULL)  # fmt: skip
        self.procs.append(proc)
        return proc

    def history(self, run: str) -> list[dict[str, Any]]:
        proc = self("history", run, "--json")
        return json.loads(proc.stdout) if proc.returncode == 0 else []


@pytest.fixture
def project(moto: Moto, seaweed: Seaweed, hosts: BatchHosts, tmp_path: Path) -> Iterator[Project]:
    env = dict(os.environ)
    env.pop("STORMPROOF_HOME", None)
    env.update(aws_env(moto, seaweed), PYTHONUNBUFFERED="1")
    (tmp_path / "stormproof.yaml").write_text(config_text())
    p = Project(tmp_path, env, [])
    setup = p("aws", "setup")
    assert setup.returncode == 0, setup.stdout + setup.stderr
    yield p
    for proc in p.procs:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def test_a_workflow_runs_on_batch_end_to_end(project: Project, hosts: BatchHosts) -> None:
    project.cwd.joinpath("wf.yaml").write_text(
        "name: small\n"
        "tasks:\n"
        "  - {id: a, command: [sh, -c, 'echo hello > $STORMPROOF_DATA_DIR/a.txt']}\n"
        "  - {id: b, command: [sh, -c, 'cat $STORMPROOF_DATA_DIR/a.txt'], depends_on: [a]}\n"
    )
    run = project("run", "wf.yaml", "--name", "small", "-q")
    assert run.returncode == 0, run.stdout + run.stderr
    names = [j.job_name for j in batch_jobs().values()]
    assert sorted(n.split("--")[1] for n in names) == ["a", "b"]
    print(project.history("small")[:3])
