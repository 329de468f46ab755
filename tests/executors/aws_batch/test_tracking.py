"""How the Batch executor looks at its jobs, against moto's server (an emulator): one
``DescribeJobs`` per 100 live jobs, at an interval that grows while nothing changes and
comes back down when something does. Nobody runs the jobs here (they stay RUNNABLE) until
the test ends some through moto's own ``TerminateJob``."""

from __future__ import annotations

import itertools
import math
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from stormproof.core.events import AttemptExited, AttemptLost, AttemptPreempted, Event
from stormproof.executors.aws_batch import AwsBatchExecutor
from stormproof.executors.base import AttemptJob
from tests.aws._moto import Moto, batch_jobs
from tests.aws.fixtures import PROJECT, config_text, run_cli

JOBS = 150
ENDED = (AttemptExited, AttemptLost, AttemptPreempted)


@pytest.fixture
def executor(moto: Moto, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """An executor of a project that ``stormproof aws setup`` made in moto."""
    for key, value in moto.env().items():
        monkeypatch.setenv(key, value)
    (tmp_path / "stormproof.yaml").write_text(config_text(checkpoints=False))
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    env.pop("STORMPROOF_HOME", None)
    setup = run_cli(tmp_path, env, "aws", "setup")
    assert setup.returncode == 0, setup.stdout + setup.stderr
    options = {
        "project": PROJECT,
        "bucket": "sptest-bucket",
        "image": "example.org/stormproof:latest",
        "poll_interval_s": 0.1,
        "max_poll_interval_s": 2.0,
        "interruption_queue": False,
        "prices": False,
        "pools": {"spot": {"market": "spot", "instance_types": {"c5.large": 1.0}}},
    }
    ex = AwsBatchExecutor(tmp_path, options)
    ex.prepare()
    yield ex
    ex.close()


def _job(tmp_path: Path, i: int) -> AttemptJob:
    return AttemptJob(
        run="track",
        attempt_id=f"t{i}/1",
        task_id=f"t{i}",
        number=1,
        command=["true"],
        env={},
        attempt_dir=tmp_path / f"t{i}",
        pool="spot",
        market="spot",
    )


def _looks(executor: Any, until: float) -> list[Event]:
    """Poll until ``until`` (monotonic); the events seen."""
    seen: list[Event] = []
    while time.monotonic() < until:
        seen += executor.poll(0.05)
    return seen


def _runnable(moto: Moto) -> list[str]:
    """The ids of the jobs Batch holds RUNNABLE in the spot queue (moto's answer)."""
    batch = moto.client("batch")
    found: list[str] = []
    kwargs: dict[str, Any] = {"jobQueue": f"{PROJECT}-spot", "jobStatus": "RUNNABLE"}
    while True:
        page = batch.list_jobs(**kwargs)
        found += [j["jobId"] for j in page["jobSummaryList"]]
        if not page.get("nextToken"):
            return found
        kwargs["nextToken"] = page["nextToken"]


def _wait_submitted(moto: Moto, n: int) -> None:
    """Until Batch holds ``n`` jobs, without polling (no look before every job is live)."""
    deadline = time.monotonic() + 60
    while len(_runnable(moto)) < n:
        assert time.monotonic() < deadline, "the submits did not finish"
        time.sleep(0.2)


def _gaps(times: list[float], per_look: int) -> list[float]:
    """Seconds between the first DescribeJobs calls of successive looks."""
    starts = times[::per_look]
    return [b - a for a, b in itertools.pairwise(starts)]


def test_live_jobs_are_described_100_a_call_at_an_interval_that_adapts(
    executor: Any, moto: Moto, tmp_path: Path
) -> None:
    calls: list[float] = []
    sizes: list[int] = []

    def seen_call(params: dict[str, Any], **_: Any) -> None:
        calls.append(time.monotonic())
        sizes.append(len(params["jobs"]))

    executor.aws.client("batch").meta.events.register(
        "before-parameter-build.batch.DescribeJobs", seen_call
    )
    for i in range(JOBS):
        executor.submit(_job(tmp_path, i))
    _wait_submitted(moto, JOBS)  # (a submit sets the pace to aws.poll_interval, 0.1 s)
    _looks(executor, time.monotonic() + 6.0)  # nothing changes: the looks slow down
    per_look = math.ceil(JOBS / 100)
    assert len(calls) % per_look == 0 and len(calls) >= 4 * per_look
    assert set(sizes) == {100, JOBS % 100}  # every live job in each look, 100 ids a call
    quiet = _gaps(calls, per_look)
    assert quiet[-1] > 3 * quiet[0], quiet  # 0.1 s growing by half per look, up to 2 s

    ended = _runnable(moto)[:5]
    for job_id in ended:  # something changes: the next look sees it, and the pace resets
        moto.client("batch").terminate_job(jobId=job_id, reason="by the test")
        job = batch_jobs()[job_id]  # what Batch does with a RUNNABLE job terminated
        job.status = "FAILED"
        job._mark_stopped(success=False)
    calls.clear()
    seen = _looks(executor, time.monotonic() + 4.5)
    assert len([e for e in seen if isinstance(e, ENDED)]) == len(ended), seen
    after = _gaps(calls, per_look)
    assert after and min(after) < quiet[-1] / 2, (quiet, after)  # back near 0.1 s
