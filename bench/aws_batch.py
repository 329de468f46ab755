"""Submitting and tracking N AWS Batch jobs against moto: API calls and CPU per job,
stormproof's executor against a naive loop (one ``DescribeJobs`` per job), in the same run.

moto's server (an emulator of the AWS APIs) runs in a child process, so the CPU measured
here is the orchestrator side only. In it, a submitted job stays RUNNABLE (moto's simple
Batch would finish it at submit), turns RUNNING at once and SUCCEEDED ``--job-seconds``
after it was submitted: the trackers must see every job end.

moto's ``DescribeJobs`` is replaced by a lookup by id (moto scans all the jobs it holds for
every call, which no real Batch does and which would make the naive loop quadratic).

Both sides submit every job with ``SubmitJob`` (one call per job, 8 threads: Batch has no
batch submit) and then look at the live jobs every ``--interval`` seconds until all ended:

* **stormproof**: ``AwsBatchExecutor.submit`` / ``poll`` (``DescribeJobs`` of 100 ids);
* **naive**: a ``DescribeJobs`` call per live job per look (what a per-job Lambda does).

    .venv/bin/python bench/aws_batch.py              # 10,000 jobs
    .venv/bin/python bench/aws_batch.py --jobs 2000  # quicker
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from _moto_child import moto_child  # bench/, the script's own folder

PROJECT = "bench"
QUEUE = f"{PROJECT}-spot"


# ---------------------------------------------------------------------- the moto child
def serve(port: int, job_seconds: float) -> None:
    """moto's server, whose jobs run ``job_seconds`` after they are submitted."""
    from moto.batch.models import BatchBackend, batch_backends
    from moto.batch_simple import models as simple
    from moto.server import ThreadedMotoServer

    def keep_runnable(self: Any, include_start_attempt: bool, job: Any) -> None:
        self.backend._jobs[job.job_id] = job
        job.status = "RUNNING"
        job.submitted_at = time.monotonic()

    def describe_jobs(self: Any, jobs: list[str] | None) -> list[dict[str, Any]]:
        # moto scans every job it holds for each call (O(jobs held) per call), which would
        # make the naive loop quadratic in the emulator, not in AWS: look the ids up instead
        return [self._jobs[j].describe() for j in jobs or [] if j in self._jobs]

    simple.BatchSimpleBackend._mark_job_as_finished = keep_runnable
    BatchBackend.describe_jobs = describe_jobs
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/moto-api/config",
        data=json.dumps({"batch": {"use_docker": False}}).encode(),
        method="POST",
    )
    urllib.request.urlopen(request).read()
    while True:
        time.sleep(0.1)
        now = time.monotonic()
        for backend in batch_backends.values():
            for region in backend.values():
                for job in list(region._jobs.values()):
                    start = getattr(job, "submitted_at", None)
                    if start is not None and not job.job_stopped and now - start > job_seconds:
                        job.exit_code = 0
                        job._start_attempt()
                        job._mark_stopped(success=True)


# ---------------------------------------------------------------------- the two trackers
def setup(endpoint: str) -> None:
    import boto3

    def client(name: str) -> Any:
        return boto3.client(name, endpoint_url=endpoint, region_name="us-east-1")

    ec2, iam, batch = client("ec2"), client("iam"), client("batch")
    subnets = [s["SubnetId"] for s in ec2.describe_subnets()["Subnets"]][:2]
    groups = [g["GroupId"] for g in ec2.describe_security_groups()["SecurityGroups"]][:1]
    role = iam.create_role(RoleName="r", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    profile = iam.create_instance_profile(InstanceProfileName="p")["InstanceProfile"]["Arn"]
    batch.create_compute_environment(
        computeEnvironmentName=f"{PROJECT}-spot-ce",
        type="MANAGED",
        state="ENABLED",
        serviceRole=role,
        computeResources={
            "type": "SPOT",
            "allocationStrategy": "SPOT_PRICE_CAPACITY_OPTIMIZED",
            "minvCpus": 0,
            "maxvCpus": 16,
            "instanceTypes": ["c5.large"],
            "subnets": subnets,
            "securityGroupIds": groups,
            "instanceRole": profile,
        },
    )
    batch.create_job_queue(
        jobQueueName=QUEUE,
        state="ENABLED",
        priority=1,
        computeEnvironmentOrder=[{"order": 1, "computeEnvironment": f"{PROJECT}-spot-ce"}],
    )


def jobs(run: str, n: int, tmp: Path) -> list[Any]:
    from stormproof.executors.base import AttemptJob

    return [
        AttemptJob(
            run=run,
            attempt_id=f"t{i}/1",
            task_id=f"t{i}",
            number=1,
            command=["true"],
            env={},
            attempt_dir=tmp / f"t{i}",
            pool="spot",
            market="spot",
        )
        for i in range(n)
    ]


def with_stormproof(run: str, n: int, interval: float, tmp: Path) -> tuple[Counter[str], float]:
    """Submit and track with the executor; ``calls["looks"]`` counts its looks at the jobs."""
    from stormproof.core.events import AttemptExited, AttemptSubmitFailed
    from stormproof.executors.aws_batch import AwsBatchExecutor

    options = {
        "project": PROJECT,
        "bucket": "unused",
        "image": "bench:1",
        "poll_interval_s": interval,
        "max_poll_interval_s": interval,
        "interruption_queue": False,
        "prices": False,
        "pools": {"spot": {"market": "spot", "instance_types": {"c5.large": 1.0}}},
    }
    executor = AwsBatchExecutor(tmp, options)
    look = executor._look

    def counted() -> None:
        executor.calls["looks"] += 1
        look()

    executor._look = counted  # type: ignore[method-assign]
    cpu0 = time.process_time()
    executor.prepare()
    for job in jobs(run, n, tmp):
        executor.submit(job)
    ended = 0
    while ended < n:
        for event in executor.poll(0.25):
            if isinstance(event, (AttemptExited, AttemptSubmitFailed)):
                ended += 1
    executor.close()
    return executor.calls, time.process_time() - cpu0


def naive(run: str, n: int, interval: float, tmp: Path) -> tuple[Counter[str], float]:
    import boto3
    from botocore.config import Config

    from stormproof.aws import names

    batch = boto3.client("batch", config=Config(max_pool_connections=32))
    calls: Counter[str] = Counter()
    cpu0 = time.process_time()
    lock = threading.Lock()
    live: dict[str, str] = {}

    def submit(i: int) -> None:
        response = batch.submit_job(
            jobName=names.job_name(run, f"t{i}/1"), jobQueue=QUEUE, jobDefinition=definition
        )
        with lock:
            live[response["jobId"]] = f"t{i}/1"
            calls["SubmitJob"] += 1

    definition = batch.register_job_definition(
        jobDefinitionName=f"{PROJECT}-naive",
        type="container",
        containerProperties={"image": "bench:1", "command": ["true"], "vcpus": 1, "memory": 512},
    )["jobDefinitionArn"]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(submit, range(n)))
    while live:
        calls["looks"] += 1
        started = time.monotonic()
        for job_id in list(live):
            (job,) = batch.describe_jobs(jobs=[job_id])["jobs"]
            calls["DescribeJobs"] += 1
            if job["status"] in ("SUCCEEDED", "FAILED"):
                del live[job_id]
        time.sleep(max(0.0, interval - (time.monotonic() - started)))
    return calls, time.process_time() - cpu0


# ---------------------------------------------------------------------- main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--interval", type=float, default=2.0, help="seconds between looks")
    parser.add_argument("--job-seconds", type=float, default=60.0)
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.job_seconds)
        return
    with moto_child(__file__, "--job-seconds", str(args.job_seconds)) as endpoint:
        setup(endpoint)
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.monotonic()
            ours, our_cpu = with_stormproof("sp", args.jobs, args.interval, Path(tmp))
            ours_s = time.monotonic() - t0
            t0 = time.monotonic()
            theirs, their_cpu = naive("naive", args.jobs, args.interval, Path(tmp))
            theirs_s = time.monotonic() - t0
    n = args.jobs
    print(
        f"{n:,} jobs, a look every {args.interval:g}s, each job ends {args.job_seconds:g}s "
        "after its submit (moto's server in a child process)"
    )
    for name, calls, cpu, wall in (
        ("stormproof", ours, our_cpu, ours_s),
        ("naive", theirs, their_cpu, theirs_s),
    ):
        looks = calls.pop("looks", 0)
        total = sum(calls.values())
        print(
            f"  {name:10} {total / n:6.3f} API calls/job in all ({dict(sorted(calls.items()))}),"
            f" {looks} looks, {calls['DescribeJobs'] / max(looks, 1) / n:.4f} DescribeJobs per "
            f"job per look; CPU {cpu * 1000 / n:6.3f} ms/job; wall {wall:6.1f} s"
        )
        calls["looks"] = looks
    per_look_ours = ours["DescribeJobs"] / max(ours["looks"], 1)
    per_look_theirs = theirs["DescribeJobs"] / max(theirs["looks"], 1)
    print(
        f"  DescribeJobs per look: {per_look_ours:.1f} vs {per_look_theirs:.1f} "
        f"({per_look_theirs / max(per_look_ours, 1e-9):.0f}x fewer); "
        f"CPU per job: {our_cpu / their_cpu:.2f}x of the naive loop's"
    )


if __name__ == "__main__":
    main()
