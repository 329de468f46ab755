"""moto's server (an emulator of the AWS APIs, not AWS) and the Batch hosts it lacks.

moto answers the Batch, EC2, ECS, IAM, SQS, EventBridge and S3 APIs from memory. What it
does not do, the tests do themselves:

* **running jobs.** With ``use_docker: false`` moto marks every job SUCCEEDED the moment
  it is submitted. ``Moto`` runs the server in this process (``ThreadedMotoServer``) and
  replaces that one step of moto's simple Batch backend so a submitted job stays
  ``RUNNABLE``; ``BatchHosts`` then plays the compute environments' EC2 hosts: it takes
  RUNNABLE jobs, gives each an instance (a real moto EC2 instance, registered as an ECS
  container instance in the environment's cluster, as Batch does), moves the job to
  RUNNING, runs its command as a real local process with the job's environment, and
  ends the job with the process's exit code, Batch's status reasons included;
* **terminations, timeouts, reclaims.** ``TerminateJob`` reaches the process as SIGTERM
  then SIGKILL (ECS's stop); a job past its timeout is killed with Batch's reason;
  ``reclaim(host)`` serves the spot notice on the host's IMDS stand-in, then kills the
  host's processes and fails its jobs with ``Host EC2 (instance …) terminated.``

The moto state is reset before every test; the server lives for the session.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import signal
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

ACCOUNT = "123456789012"
MANAGED_POLICIES = (
    "AWSBatchServiceRole",
    "AmazonEC2ContainerServiceforEC2Role",
    "AmazonSSMManagedInstanceCore",
)
REGION = "us-east-1"


@dataclass
class Moto:
    endpoint: str
    server: Any

    def reset(self) -> None:
        _post(f"{self.endpoint}/moto-api/reset", {})
        _post(
            f"{self.endpoint}/moto-api/config",
            {"batch": {"use_docker": False}},
        )

    def client(self, service: str) -> Any:
        import boto3

        return boto3.client(
            service,
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id="test",
            aws_secret_access_key="test",
        )

    def env(self) -> dict[str, str]:
        """What a process needs to talk to this server as if it were AWS."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test",
            "AWS_DEFAULT_REGION": REGION,
            "AWS_REGION": REGION,
            # boto's credential chain must never ask the real instance metadata address
            "AWS_EC2_METADATA_DISABLED": "true",
        }


def _post(url: str, body: dict[str, Any]) -> None:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST")
    urllib.request.urlopen(request, timeout=10).read()


def _keep_runnable(self: Any, include_start_attempt: bool, job: Any) -> None:
    """moto's simple Batch finishes a job at submit; here it only registers it, RUNNABLE."""
    self.backend._jobs[job.job_id] = job
    job.status = "RUNNABLE"


def _describe_jobs(self: Any, jobs: list[str] | None) -> list[dict[str, Any]]:
    """moto's DescribeJobs over a snapshot of its jobs: moto walks the live dict unlocked, so
    a SubmitJob served by another thread meanwhile failed the call (an emulator race)."""
    wanted = set(jobs or ())
    held = list(self._jobs.items())
    return [j.describe() for k, j in held if not wanted or k in wanted or j.arn in wanted]


@contextlib.contextmanager
def moto_server() -> Iterator[Moto]:
    try:
        from moto.batch.models import BatchBackend
        from moto.batch_simple import models as simple
        from moto.server import ThreadedMotoServer
    except ImportError:
        if os.environ.get("CI"):
            raise
        pytest.skip("moto[server] is not installed (pip install -e '.[test]')")
    from moto.core.config import default_user_config

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    # AWS's own managed policies that setup attaches (AWSBatchServiceRole …): only those,
    # since moto parses all ~1,300 of them again after every reset (1.7 s)
    from moto.iam import models as iam_models

    every = json.loads(iam_models.aws_managed_policies_data)
    wanted = {k: v for k, v in every.items() if k in MANAGED_POLICIES}
    original_policies = iam_models.aws_managed_policies_data
    iam_models.aws_managed_policies_data = json.dumps(wanted)
    default_user_config["iam"] = {"load_aws_managed_policies": True}
    original = simple.BatchSimpleBackend._mark_job_as_finished
    simple.BatchSimpleBackend._mark_job_as_finished = _keep_runnable  # type: ignore[method-assign]
    original_describe = BatchBackend.describe_jobs
    BatchBackend.describe_jobs = _describe_jobs  # type: ignore[method-assign]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    moto = Moto(f"http://{host}:{port}", server)
    try:
        moto.reset()
        yield moto
    finally:
        server.stop()
        simple.BatchSimpleBackend._mark_job_as_finished = original  # type: ignore[method-assign]
        BatchBackend.describe_jobs = original_describe  # type: ignore[method-assign]
        iam_models.aws_managed_policies_data = original_policies


_SHARED: list[Moto] = []


def shared_moto() -> Moto:
    """One moto server for the whole test process (it takes seconds to start), stopped at
    exit; each test resets its state (``Moto.reset``)."""
    if not _SHARED:
        running = moto_server()
        _SHARED.append(running.__enter__())
        atexit.register(running.__exit__, None, None, None)
    return _SHARED[0]


def batch_jobs() -> dict[str, Any]:
    from moto.batch.models import batch_backends

    jobs: dict[str, Any] = batch_backends[ACCOUNT][REGION]._jobs
    return jobs


@dataclass
class _Host:
    instance_id: str
    container_instance_arn: str
    environment: str
    jobs: set[str] = field(default_factory=set)
    gone: bool = False


@dataclass
class _Running:
    job: Any
    host: _Host
    proc: subprocess.Popen[bytes] | None
    started: float
    term_sent: float | None = None


class BatchHosts:
    """The EC2 hosts of moto's compute environments: see the module's docstring."""

    def __init__(
        self,
        moto: Moto,
        workdir: Path,
        env: dict[str, str],
        imds: Any,
        slots: int = 4,
        stop_timeout_s: float = 30.0,
    ) -> None:
        self.moto = moto
        self.workdir = workdir
        self.env = env
        self.imds = imds
        self.slots = slots
        self.stop_timeout_s = stop_timeout_s
        self.hosts: dict[str, list[_Host]] = {}
        self.running: dict[str, _Running] = {}
        self.started: list[str] = []  # job names in the order they started
        #: Images the hosts can pull; any other fails the job as Batch does (None: all).
        self.pullable: set[str] | None = None
        self.paused = False
        self._ec2 = moto.client("ec2")
        self._ecs = moto.client("ecs")
        self._batch = moto.client("batch")
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ the test's hands
    def host_of(self, job_name: str) -> str:
        for run in self.running.values():
            if run.job.job_name == job_name:
                return run.host.instance_id
        raise KeyError(job_name)

    def running_names(self) -> list[str]:
        return [r.job.job_name for r in self.running.values()]

    def reclaim(self, instance_id: str, notice_s: float) -> None:
        """EC2 reclaims a spot host: the notice on its IMDS now, the host gone after it."""
        self.imds.notice(instance_id, notice_s)

        def later() -> None:
            time.sleep(notice_s)
            self.lose(instance_id)

        threading.Thread(target=later, daemon=True).start()

    def lose(self, instance_id: str) -> None:
        """The host vanishes: its processes are killed, its jobs fail as Batch says."""
        with self._lock:
            for hosts in self.hosts.values():
                for host in hosts:
                    if host.instance_id == instance_id:
                        host.gone = True
            for job_id, run in list(self.running.items()):
                if run.host.instance_id == instance_id:
                    if run.proc is not None and run.proc.poll() is None:
                        os.killpg(run.proc.pid, signal.SIGKILL)
                        run.proc.wait()
                    reason = f"Host EC2 (instance {instance_id}) terminated."
                    self._end(job_id, None, reason)
        with contextlib.suppress(Exception):
            self._ec2.terminate_instances(InstanceIds=[instance_id])

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        with self._lock:
            for run in self.running.values():
                if run.proc is not None and run.proc.poll() is None:
                    os.killpg(run.proc.pid, signal.SIGKILL)
                    run.proc.wait()

    # ------------------------------------------------------------------ the loop
    def _loop(self) -> None:
        while not self._stop.wait(0.05):
            if self.paused:
                continue
            with self._lock:
                try:
                    self._step()
                except Exception as exc:  # a test's host must not die silently
                    print(f"BatchHosts: {exc!r}")

    def _step(self) -> None:
        now = time.monotonic()
        for job_id, job in list(batch_jobs().items()):
            run = self.running.get(job_id)
            if run is None:
                if job._status == "RUNNABLE" and job.stop:
                    job.status = "FAILED"
                    job._mark_stopped(success=False)
                elif job._status == "RUNNABLE":
                    self._start(job)
                continue
            code = run.proc.poll() if run.proc is not None else None
            if code is not None:
                self._end(job_id, code, job.job_stopped_reason if job.stop else None)
            elif job.stop and run.term_sent is None:
                run.term_sent = now
                os.killpg(run.proc.pid, signal.SIGTERM)  # type: ignore[union-attr]
            elif run.term_sent is not None and now - run.term_sent > self.stop_timeout_s:
                os.killpg(run.proc.pid, signal.SIGKILL)  # type: ignore[union-attr]
            elif job.timeout and now - run.started > job.timeout["attemptDurationSeconds"]:
                os.killpg(run.proc.pid, signal.SIGKILL)  # type: ignore[union-attr]
                run.proc.wait()  # type: ignore[union-attr]
                self._end(job_id, 137, "Job attempt duration exceeded timeout")

    def _start(self, job: Any) -> None:
        env_name = job.job_queue.env_order_json[0]["computeEnvironment"]
        env_name = env_name.rsplit("/", 1)[-1]
        host = self._host(env_name)
        if host is None:
            return  # every host is full: the job waits, RUNNABLE
        details = job._container_details()
        image = job.job_definition.container_properties.get("image", "")
        if self.pullable is not None and image not in self.pullable:
            why = f"CannotPullContainerError: pull image manifest: {image}: not found"
            job.status = "FAILED"
            job.job_stopped_reason = "Task failed to start"
            job._start_attempt()
            job.latest_attempt["container"]["reason"] = why
            job._mark_stopped(success=False)
            return
        env = dict(self.env)
        env.update({e["name"]: e["value"] for e in details["environment"]})
        env["AWS_EC2_METADATA_SERVICE_ENDPOINT"] = self.imds.endpoint(host.instance_id)
        cwd = self.workdir / job.job_id
        cwd.mkdir(parents=True, exist_ok=True)
        job.status = "RUNNING"
        job.job_started_at = __import__("datetime").datetime.now()
        job._start_attempt()
        job.latest_attempt["container"]["containerInstanceArn"] = host.container_instance_arn
        out = open(cwd / "output.log", "wb")  # noqa: SIM115 - closed with the process
        try:
            proc = subprocess.Popen(
                details["command"],
                env=env,
                cwd=cwd,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError:
            proc = None
        finally:
            out.close()
        host.jobs.add(job.job_id)
        self.running[job.job_id] = _Running(job, host, proc, time.monotonic())
        self.started.append(job.job_name)
        if proc is None:
            self._end(
                job.job_id,
                None,
                "CannotStartContainerError: no such command",
                container_reason="CannotStartContainerError: no such command",
            )

    def _end(
        self, job_id: str, code: int | None, reason: str | None, container_reason: str | None = None
    ) -> None:
        run = self.running.pop(job_id)
        run.host.jobs.discard(job_id)
        job = run.job
        if code is not None and code < 0:
            code = 128 - code
        attempt = job.latest_attempt["container"]
        if code is not None:
            attempt["exitCode"] = code
            job.exit_code = code
        if container_reason:
            attempt["reason"] = container_reason
        if reason or code != 0:
            job.job_stopped_reason = reason or "Essential container in task exited"
        job._mark_stopped(success=code == 0 and not reason)

    def _host(self, environment: str) -> _Host | None:
        hosts = self.hosts.setdefault(environment, [])
        for host in hosts:
            draining = host.instance_id in self.imds.actions  # ECS spot draining: no new jobs
            if not host.gone and not draining and len(host.jobs) < self.slots:
                return host
        described = self._batch.describe_compute_environments(computeEnvironments=[environment])
        cluster = described["computeEnvironments"][0]["ecsClusterArn"]
        reservation = self._ec2.run_instances(
            ImageId="ami-12c6146b", MinCount=1, MaxCount=1, InstanceType="c5.large"
        )
        instance_id = reservation["Instances"][0]["InstanceId"]
        document = json.dumps(
            {
                "instanceId": instance_id,
                "region": REGION,
                "availabilityZone": f"{REGION}a",
                "instanceType": "c5.large",
            }
        )
        registered = self._ecs.register_container_instance(
            cluster=cluster, instanceIdentityDocument=document
        )["containerInstance"]
        host = _Host(instance_id, registered["containerInstanceArn"], environment)
        hosts.append(host)
        return host
