"""``executor: aws_batch``: each attempt is an AWS Batch job in its pool's job queue.

Pools are delegated (DELEGATED.md): stormproof picks the pool (a job queue in front of a
spot or an on-demand compute environment, made by ``stormproof aws setup``) and Batch
picks the instance, which ``AttemptStarted.nodes`` names (its EC2 instance id, so an
EventBridge interruption warning for it reaches the attempts there).

* ``submit`` returns at once: a few threads call ``SubmitJob`` (the job is named after
  the attempt, ``aws.names.job_name``; Batch retries nothing).
* ``poll`` looks at every live job with ``DescribeJobs``, 100 ids a call, at an interval
  that starts at ``aws.poll_interval`` and grows by half while nothing changes, up to
  ``aws.max_poll_interval``; a submit or a change brings it back down.
* How a job ended is ``states.ended``; where the attempt's agent wrote an exit status to S3
  (``stormproof exec``), that settles it, with the checkpoints it uploaded.
* ``recover`` finds the run's jobs by name (``ListJobs`` with a name filter, per queue) and
  adopts them: none is submitted twice.
* ``kill`` is ``TerminateJob`` (ECS sends SIGTERM, then SIGKILL after its stop timeout;
  the agent commits and uploads the checkpoint in between). ``signal`` does nothing: the
  agent in the container asks for checkpoints at the task's interval itself.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from stormproof.aws import names
from stormproof.aws.clients import Aws, AwsError, error_code, explain, is_throttled
from stormproof.aws.interruptions import SqsInterruptions
from stormproof.aws.settings import AwsOptions
from stormproof.capacity.base import InstanceView
from stormproof.core.defs import Market, PoolDef
from stormproof.core.events import (
    AttemptStarted,
    AttemptSubmitFailed,
    Event,
)
from stormproof.errors import ConfigError
from stormproof.executors._agent_news import AgentNews, agent_commits
from stormproof.executors.aws_batch import jobs as requests
from stormproof.executors.aws_batch import states
from stormproof.executors.aws_batch.pools import describe, multi_node_on_demand, queue_problems
from stormproof.executors.base import AttemptJob
from stormproof.spec.model import WorkflowSpec

#: Exit code of an attempt cancelled before Batch had it (128 + SIGTERM).
CANCELLED_EXIT = 143
#: How long a throttled or unreachable SubmitJob is tried again before the attempt fails.
SUBMIT_PATIENCE_S = 600.0
#: Errors that mean "try again later", not "this attempt cannot be submitted".
_TRANSIENT = ("EndpointConnectionError", "ConnectTimeoutError", "ReadTimeoutError")


@dataclass
class _Tracked:
    job: AttemptJob
    name: str
    job_id: str | None = None
    started: bool = False
    done: bool = False
    killed: bool = False
    kill_pending: bool = False
    reported_seqs: set[int] = field(default_factory=set)
    host: str = ""


class AwsBatchExecutor(AgentNews):
    delegates_placement: ClassVar[bool] = True

    def __init__(self, run_dir: Path | None = None, options: Mapping[str, Any] | None = None):
        self.run_dir = run_dir
        self._init_news(options)
        self._aws: Aws | None = None
        self._tracked: dict[str, _Tracked] = {}
        self._by_job_id: dict[str, _Tracked] = {}
        self._submitter: ThreadPoolExecutor | None = None
        self._definitions: dict[tuple[str, bool], str] = {}
        self._definition_lock = threading.Lock()
        self._hosts: dict[str, str] = {}
        self._job_role_arn: str | None = None
        self._interval = self.options.poll_interval_s
        self._interruptions: SqsInterruptions | None = None

    # ------------------------------------------------------------------ pools
    @classmethod
    def describe_pools(
        cls, pools: tuple[PoolDef, ...], options: Mapping[str, Any]
    ) -> tuple[PoolDef, ...]:
        """One node is the pool's largest instance type; its nodes, ``max_vcpus`` of them;
        its price, AWS's when the file gives none (``pools.describe``)."""
        return describe(pools, options)

    @classmethod
    def adapt_workflow(cls, spec: WorkflowSpec) -> tuple[WorkflowSpec, list[str]]:
        """Multi-node tasks go to on-demand pools (``pools.multi_node_on_demand``)."""
        return multi_node_on_demand(spec)

    # ------------------------------------------------------------------ the seam
    @property
    def aws(self) -> Aws:
        if self._aws is None:
            self._aws = Aws(self.options.region)
        return self._aws

    def prepare(self) -> None:
        """Check what a run needs before anything is submitted: credentials, the bucket, and
        every pool's job queue and compute environment (each problem names the resource)."""
        aws = self.aws
        aws.require_credentials()
        sts = aws.client("sts")
        try:
            account = sts.get_caller_identity()["Account"]
        except Exception as exc:
            raise explain(exc, "GetCallerIdentity", "your AWS credentials") from None
        self._count("GetCallerIdentity")
        self._job_role_arn = (
            f"arn:aws:iam::{account}:role/{names.role(self.options.project, 'job')}"
        )
        if not self.options.bucket:
            raise ConfigError(
                "executor aws_batch needs an S3 bucket for the attempts' exit status: set "
                "aws.bucket in stormproof.yaml (or checkpoints: s3://bucket/prefix); "
                "`stormproof aws setup` creates it"
            )
        self._check_queues()
        if self.options.interruption_queue:
            self._interruptions = SqsInterruptions(
                aws.client("sqs"),
                names.interruption_queue(self.options.project),
                tuple(self.options.pools),
                every_s=min(self.options.poll_interval_s, 5.0),
                count=self._count,
            )
        self._submitter = ThreadPoolExecutor(
            self.options.submit_parallel, thread_name_prefix="stormproof-batch"
        )

    def _check_queues(self) -> None:
        batch = self.aws.client("batch")
        pools = list(self.options.pools)
        queues = [self.options.queue(p) for p in pools]
        envs = [self.options.compute_environment(p) for p in pools]
        try:
            found_queues = batch.describe_job_queues(jobQueues=queues)["jobQueues"]
            found_envs = batch.describe_compute_environments(computeEnvironments=envs)[
                "computeEnvironments"
            ]
        except Exception as exc:
            raise explain(exc, "DescribeJobQueues", ", ".join(queues)) from None
        self._count("DescribeJobQueues")
        self._count("DescribeComputeEnvironments")
        problems = queue_problems(pools, queues, envs, found_queues, found_envs)
        if problems:
            lines = "\n".join(f"  - {p}" for p in problems)
            raise AwsError(f"the run's AWS Batch resources are not ready:\n{lines}")

    def submit(self, job: AttemptJob) -> None:
        with self._lock:
            if job.attempt_id in self._tracked:
                return
            tracked = _Tracked(job, names.job_name(job.run, job.attempt_id))
            self._tracked[job.attempt_id] = tracked
        self._next_look = min(self._next_look, time.monotonic() + self.options.poll_interval_s)
        self._interval = self.options.poll_interval_s
        if self._submitter is None:
            self._submitter = ThreadPoolExecutor(
                self.options.submit_parallel, thread_name_prefix="stormproof-batch"
            )
        self._submitter.submit(self._submit_one, tracked)

    def kill(self, attempt_id: str, grace_s: float) -> None:
        with self._lock:
            tracked = self._tracked.get(attempt_id)
            if tracked is None or tracked.done:
                return
            tracked.killed = True
            if tracked.job_id is None:
                tracked.kill_pending = True  # its SubmitJob is still in flight
                return
        reason = f"{states.OUR_REASON_PREFIX} killed (grace {grace_s:g}s)"
        if self._submitter is not None:  # off the driver's loop: a cancel may stop thousands
            self._submitter.submit(self._terminate, tracked, reason)
        else:
            self._terminate(tracked, reason)

    def withdraw(self, attempt_id: str) -> None:
        return None  # no successors on a batch system

    def signal(self, attempt_id: str, signum: int) -> None:
        return None  # the agent asks the task for checkpoints at its interval, in the container

    def poll(self, timeout_s: float) -> list[Event]:
        if self._look_due():
            self._look()
        self._read_warnings()
        return self._wait_for_news(timeout_s)

    def recover(self, jobs: Sequence[AttemptJob]) -> list[Event]:
        """Adopt the run's jobs that Batch has, by name; report those that ended."""
        if not jobs:
            return []
        wanted = {names.job_name(j.run, j.attempt_id): j for j in jobs}
        found: dict[str, str] = {}
        for pool in sorted({j.pool for j in jobs}):
            for summary in self._list_run_jobs(self.options.queue(pool), jobs[0].run):
                name = summary["jobName"]
                if name in wanted and name not in found:
                    found[name] = summary["jobId"]
                elif name in wanted and found[name] != summary["jobId"]:
                    self._terminate_stray(summary["jobId"], name)
        for name, job_id in found.items():
            job = wanted[name]
            tracked = _Tracked(job, name, job_id)
            with self._lock:
                self._tracked[job.attempt_id] = tracked
                self._by_job_id[job_id] = tracked
        asked = {j.attempt_id for j in jobs}
        events: list[Event] = []
        self._describe([t for t in self._tracked.values() if t.job.attempt_id in asked], events)
        with self._lock:  # what recover says is the whole story of these attempts
            self._news = [e for e in self._news if getattr(e, "attempt_id", "") not in asked]
        return events

    def close(self, final: bool = False) -> None:
        if self._submitter is not None:
            self._submitter.shutdown(wait=True)
            self._submitter = None

    # ------------------------------------------------------------------ submitting
    def _submit_one(self, tracked: _Tracked) -> None:
        job = tracked.job
        image = job_image(job, self.options)
        try:
            if image is None:
                raise ConfigError(
                    f"task {job.task_id!r} has no container_image and aws.image is not set: give "
                    "one of them (an image with stormproof installed)"
                )
            definition = self._definition(image, job.nodes)
            request = requests.submit_request(
                job, self.options, definition, self.options.checkpoints
            )
            response = self._call_patiently("SubmitJob", tracked.name, request)
        except Exception as exc:
            message = (
                str(exc)
                if isinstance(exc, (AwsError, ConfigError))
                else str(
                    explain(
                        exc, "SubmitJob", f"job {tracked.name} in {self.options.queue(job.pool)}"
                    )
                )
            )
            with self._lock:
                tracked.done = True
            self._push([AttemptSubmitFailed(time.time(), job.attempt_id, message)])
            return
        with self._lock:
            tracked.job_id = response["jobId"]
            self._by_job_id[tracked.job_id] = tracked
            pending_kill = tracked.kill_pending
        if pending_kill:
            self._terminate(tracked, f"{states.OUR_REASON_PREFIX} killed before it started")

    def _call_patiently(self, operation: str, resource: str, request: dict[str, Any]) -> Any:
        """``SubmitJob`` through botocore's retries, and again while AWS throttles or is
        unreachable (up to ``SUBMIT_PATIENCE_S``): a busy API delays an attempt, never fails it."""
        batch = self.aws.client("batch")
        give_up = time.monotonic() + SUBMIT_PATIENCE_S
        pause = 1.0
        while True:
            try:
                self._count(operation)
                return batch.submit_job(**request)
            except Exception as exc:
                transient = is_throttled(exc) or type(exc).__name__ in _TRANSIENT
                if not transient or time.monotonic() > give_up:
                    raise
                self._warn_once("throttled", f"AWS is throttling {operation}; backing off")
                time.sleep(pause)
                pause = min(pause * 2, 30.0)

    def _definition(self, image: str, nodes: int) -> str:
        """The ARN of the job definition for ``image``: found by name, or registered once."""
        key = (image, nodes > 1)
        with self._definition_lock:
            if key in self._definitions:
                return self._definitions[key]
            batch = self.aws.client("batch")
            name = names.job_definition(self.options.project, image, nodes > 1)
            try:
                found = batch.describe_job_definitions(jobDefinitionName=name, status="ACTIVE")
                self._count("DescribeJobDefinitions")
                active = [d for d in found["jobDefinitions"] if _image_of(d) == image]
                if active:
                    arn = str(max(active, key=lambda d: d["revision"])["jobDefinitionArn"])
                else:
                    request = requests.definition_request(
                        self.options.project, image, self._job_role_arn, nodes
                    )
                    arn = str(batch.register_job_definition(**request)["jobDefinitionArn"])
                    self._count("RegisterJobDefinition")
            except Exception as exc:
                raise explain(exc, "RegisterJobDefinition", f"{name} (image {image})") from None
            self._definitions[key] = arn
            return arn

    def _terminate(self, tracked: _Tracked, reason: str) -> None:
        assert tracked.job_id is not None
        try:
            self.aws.client("batch").terminate_job(jobId=tracked.job_id, reason=reason)
            self._count("TerminateJob")
        except Exception as exc:  # it may have ended meanwhile: the next look tells
            self._warn_once(
                f"terminate {tracked.name}", str(explain(exc, "TerminateJob", tracked.name))
            )
        self._interval = self.options.poll_interval_s
        self._next_look = min(self._next_look, time.monotonic() + self._interval)

    def _terminate_stray(self, job_id: str, name: str) -> None:
        """A second job of one attempt (a SubmitJob retried by botocore after a lost answer)."""
        try:
            reason = f"{states.OUR_REASON_PREFIX} duplicate of {name}"
            self.aws.client("batch").terminate_job(jobId=job_id, reason=reason)
            self._count("TerminateJob")
        except Exception as exc:
            self._warn_once(f"stray {job_id}", str(explain(exc, "TerminateJob", job_id)))

    # ------------------------------------------------------------------ tracking
    def _look_due(self) -> bool:
        if time.monotonic() < self._next_look:
            return False
        with self._lock:
            return any(t.job_id and not t.done for t in self._tracked.values())

    def _look(self) -> None:
        with self._lock:
            live = [t for t in self._tracked.values() if t.job_id and not t.done]
        events: list[Event] = []
        try:
            self._describe(live, events)
        except AwsError:
            raise
        except Exception as exc:  # throttled or unreachable: look again later, slower
            self._warn_once(
                "describe", f"{explain(exc, 'DescribeJobs', 'the run jobs')}; trying again"
            )
            self._interval = min(self._interval * 2, self.options.max_poll_interval_s)
        if events:
            self._interval = self.options.poll_interval_s
        else:
            self._interval = min(self._interval * 1.5, self.options.max_poll_interval_s)
        self._next_look = time.monotonic() + self._interval
        self._push(events)

    def _describe(self, live: Sequence[_Tracked], events: list[Event]) -> None:
        by_id = {t.job_id: t for t in live if t.job_id}
        batch = self.aws.client("batch")
        described: list[tuple[_Tracked, dict[str, Any]]] = []
        for chunk in requests.chunks(list(by_id)):
            try:
                response = batch.describe_jobs(jobs=chunk)
            except Exception as exc:
                if error_code(exc) in (
                    "AccessDeniedException",
                    "UnrecognizedClientException",
                    "ExpiredTokenException",
                ):
                    raise explain(exc, "DescribeJobs", "the run's jobs") from None
                raise
            self._count("DescribeJobs")
            for desc in response.get("jobs", []):
                tracked = by_id.get(desc.get("jobId"))
                if tracked is not None:
                    described.append((tracked, desc))
        self._learn_hosts(
            [d for t, d in described if d.get("status") == "RUNNING" and not t.started]
        )
        now = time.time()
        for tracked, desc in described:
            events += self._update(tracked, desc, now)

    def _update(self, tracked: _Tracked, desc: dict[str, Any], now: float) -> list[Event]:
        status = desc.get("status", "")
        out: list[Event] = []
        attempt_id = tracked.job.attempt_id
        if status in ("RUNNING", *states.ENDED) and not tracked.started and desc.get("startedAt"):
            tracked.started = True
            host = self._hosts.get(_container_instance(desc) or "", "")
            tracked.host = host
            handle = f"{tracked.name}:{tracked.job_id}"
            out.append(AttemptStarted(now, attempt_id, handle, (host,) if host else ()))
        if status not in states.ENDED:
            return out
        agent = self._needed_status(tracked, desc)
        out += agent_commits(tracked.reported_seqs, tracked.job.attempt_id, agent, now)
        market = self.options.pools.get(tracked.job.pool, {}).get("market", "")
        image = job_image(tracked.job, self.options) or "?"
        out.append(
            states.ended(
                now,
                attempt_id,
                desc,
                spot=market == Market.SPOT.value,
                killed=tracked.killed,
                image=image,
                agent=agent,
            )
        )
        with self._lock:
            tracked.done = True
        return out

    def _needed_status(self, tracked: _Tracked, desc: dict[str, Any]) -> dict[str, Any] | None:
        """The exit status the attempt's agent wrote to S3, when it matters: the task keeps
        checkpoints (their seqs are in it), or Batch's own answer lacks an exit code."""
        finished = states.Finished.of(desc)
        checkpointed = "--checkpoints" in requests.agent_command(
            tracked.job, self.options, self.options.checkpoints
        )
        if not checkpointed and finished.status == "SUCCEEDED":
            return None
        if not checkpointed and finished.exit_code is not None:
            return None
        return self._agent_status(tracked.job.run, tracked.job.attempt_id)

    def _learn_hosts(self, running: list[dict[str, Any]]) -> None:
        """EC2 instance ids of the container instances the jobs run on (ECS, cached)."""
        by_cluster: dict[str, list[str]] = {}
        for desc in running:
            arn = _container_instance(desc)
            if arn and arn not in self._hosts:
                cluster = _cluster_of(arn)
                if cluster:
                    by_cluster.setdefault(cluster, []).append(arn)
        if not by_cluster:
            return
        ecs = self.aws.client("ecs")
        for cluster, arns in by_cluster.items():
            for chunk in requests.chunks(sorted(set(arns))):
                try:
                    found = ecs.describe_container_instances(
                        cluster=cluster, containerInstances=chunk
                    )
                    self._count("DescribeContainerInstances")
                except Exception as exc:
                    self._warn_once("ecs", str(explain(exc, "DescribeContainerInstances", cluster)))
                    continue
                for inst in found.get("containerInstances", []):
                    self._hosts[inst["containerInstanceArn"]] = inst.get("ec2InstanceId", "")

    def _list_run_jobs(self, queue: str, run: str) -> list[dict[str, Any]]:
        batch = self.aws.client("batch")
        out: list[dict[str, Any]] = []
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {
                "jobQueue": queue,
                "filters": [{"name": "JOB_NAME", "values": [names.run_prefix(run) + "*"]}],
            }
            if token:
                kwargs["nextToken"] = token
            try:
                page = batch.list_jobs(**kwargs)
            except Exception as exc:
                raise explain(exc, "ListJobs", queue) from None
            self._count("ListJobs")
            out += page.get("jobSummaryList", [])
            token = page.get("nextToken")
            if not token:
                return out

    def _read_warnings(self) -> None:
        """EventBridge's interruption warnings for the hosts of this run's jobs."""
        source = self._interruptions
        if source is None:
            return
        try:
            self._push(source.poll(time.time(), _HostsView(self)))
        except Exception as exc:
            self._warn_once(
                "sqs",
                f"{explain(exc, 'ReceiveMessage', source.queue_name)}; interruption warnings "
                "are not read (the agents on the hosts still see them)",
            )
            self._interruptions = None


class _HostsView:
    """The hosts of the run's running jobs, as an interruption source sees a fleet."""

    def __init__(self, executor: AwsBatchExecutor) -> None:
        with executor._lock:
            self._live = [t for t in executor._tracked.values() if t.host and not t.done]

    def live(self, pool: str) -> list[InstanceView]:
        return [InstanceView(t.host, pool, "up") for t in self._live if t.job.pool == pool]


def job_image(job: AttemptJob, options: AwsOptions) -> str | None:
    """The task's ``container_image``, else ``aws.image``."""
    return job.image or options.image


def _image_of(definition: Mapping[str, Any]) -> str:
    props = definition.get("containerProperties")
    if props:
        return str(props.get("image", ""))
    ranges = (definition.get("nodeProperties") or {}).get("nodeRangeProperties") or [{}]
    return str((ranges[0].get("container") or {}).get("image", ""))


def _container_instance(desc: Mapping[str, Any]) -> str | None:
    arn = (desc.get("container") or {}).get("containerInstanceArn")
    if not arn:
        attempts = desc.get("attempts") or []
        if attempts:
            arn = (attempts[-1].get("container") or {}).get("containerInstanceArn")
    return str(arn) if arn and str(arn).startswith("arn:") else None


def _cluster_of(container_instance_arn: str) -> str | None:
    """``arn:…:container-instance/<cluster>/<id>`` → ``<cluster>``."""
    resource = container_instance_arn.split(":", 5)[-1]
    parts = resource.split("/")
    return parts[1] if len(parts) == 3 else None
