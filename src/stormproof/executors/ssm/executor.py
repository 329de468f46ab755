"""``executor: ssm``: each attempt is one SSM Run Command on the EC2 instance the core chose.

``capacity: aws`` launches the run's instances (``capacity/aws.py``); this executor reaches
them through SSM Run Command, which the SSM agent on Amazon Linux already provides: no SSH
keys, no open port, only IAM. The fleet hands it the core's instance ids mapped to EC2's
(``use_instances``).

* ``submit`` returns at once: a few threads call ``SendCommand`` (``commands.send_request``:
  the agent, ``stormproof exec``, around the task's command; the attempt id in the
  ``Comment``).
* ``poll`` looks at every live command with one paginated ``ListCommands`` (50 a page, from
  the oldest live command's time on), at an interval that starts at ``aws.poll_interval``
  and grows by half while nothing changes, up to ``aws.max_poll_interval``; a submit or a
  change brings it back down. A command that ended is settled by the agent's exit status in
  S3 first, SSM's invocation (``GetCommandInvocation``) second (``commands.settle``).
* ``kill`` sends SIGTERM to the attempt's agent through a second, tiny command: the agent
  gives the task its time to commit a checkpoint and uploads it. If the command is still
  running ``KILL_BACKSTOP_S`` after the grace, ``CancelCommand`` ends it.
* ``recover`` finds the run's commands by their comment (``ListCommands`` per instance of
  the attempts asked about) and adopts them: none is sent twice.
* A spot notice the agent acted on (its status names it) is also given to the core as an
  ``InterruptionNotice`` for the instance (source ``imds``), so nothing more is placed on
  an instance that is about to go.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, ClassVar

from stormproof.aws import names
from stormproof.aws.clients import Aws, error_code, explain
from stormproof.core.defs import PoolDef
from stormproof.core.events import (
    AttemptLost,
    AttemptStarted,
    AttemptSubmitFailed,
    Event,
    InterruptionNotice,
)
from stormproof.executors._agent_news import AgentNews, agent_commits
from stormproof.executors.base import AttemptJob
from stormproof.executors.ssm import commands
from stormproof.executors.ssm.pools import describe

#: After a kill's grace, how long the agent has to end before ``CancelCommand``.
KILL_BACKSTOP_S = 30.0
#: ``ListCommands`` answers at most this many commands a page.
PAGE = 50


@dataclass
class _Tracked:
    job: AttemptJob
    instance: str  # the EC2 instance id
    command_id: str | None = None
    requested: float = 0.0
    started: bool = False
    done: bool = False
    killed: bool = False
    kill_pending: float | None = None  # the grace of a kill asked before SendCommand answered
    cancel_at: float | None = None  # the backstop's time (monotonic)
    reported_seqs: set[int] = field(default_factory=set)


class SsmExecutor(AgentNews):
    delegates_placement: ClassVar[bool] = False

    def __init__(self, run_dir: Path | None = None, options: Mapping[str, Any] | None = None):
        self.run_dir = run_dir
        self._init_news(options)
        self._aws: Aws | None = None
        self._instances: Mapping[str, str] = {}
        self._tracked: dict[str, _Tracked] = {}
        self._by_command: dict[str, _Tracked] = {}
        self._sender: ThreadPoolExecutor | None = None
        self._interval = self.options.poll_interval_s
        self._noticed: set[str] = set()

    @classmethod
    def describe_pools(
        cls, pools: tuple[PoolDef, ...], options: Mapping[str, Any]
    ) -> tuple[PoolDef, ...]:
        """An instance's shape is the pool's smallest instance type's, its price AWS's when
        the file gives none (``pools.describe``)."""
        return describe(pools, options)

    # ------------------------------------------------------------------ the seam
    @property
    def aws(self) -> Aws:
        if self._aws is None:
            self._aws = Aws(self.options.region)
        return self._aws

    def use_instances(self, ec2_ids: Mapping[str, str]) -> None:
        """The core's instance ids -> EC2's, kept up to date by the fleet (``open_fleet``)."""
        self._instances = ec2_ids

    def prepare(self) -> None:
        """Credentials and the bucket the agents write their exit status to, before anything
        is sent (each problem names what to set)."""
        aws = self.aws
        aws.require_credentials()
        if not self.options.bucket:
            from stormproof.errors import ConfigError

            raise ConfigError(
                "executor ssm needs an S3 bucket for the attempts' exit status: set aws.bucket "
                "in stormproof.yaml (or checkpoints: s3://bucket/prefix)"
            )
        self._pool()

    def submit(self, job: AttemptJob) -> None:
        with self._lock:
            if job.attempt_id in self._tracked:
                return
            instance = self._instances.get(job.instances[0], "") if job.instances else ""
            tracked = _Tracked(job, instance)
            self._tracked[job.attempt_id] = tracked
        if not instance:  # its instance is gone (found so on resume): Node.Lost, not the task's
            why = f"no EC2 instance is known for {', '.join(job.instances) or 'it'}"
            self._finish(tracked, AttemptLost(time.time(), job.attempt_id, why))
            return
        self._faster()
        self._pool().submit(self._send, tracked)

    def kill(self, attempt_id: str, grace_s: float) -> None:
        with self._lock:
            tracked = self._tracked.get(attempt_id)
            if tracked is None or tracked.done:
                return
            tracked.killed = True
            if tracked.command_id is None:
                tracked.kill_pending = grace_s  # its SendCommand is still in flight
                return
            tracked.cancel_at = time.monotonic() + grace_s + KILL_BACKSTOP_S
        self._pool().submit(self._signal, tracked)

    def withdraw(self, attempt_id: str) -> None:
        return None  # attempts are never held unstarted here

    def signal(self, attempt_id: str, signum: int) -> None:
        return None  # the agent on the instance asks the task for checkpoints itself

    def poll(self, timeout_s: float) -> list[Event]:
        if self._look_due():
            self._look()
        return self._wait_for_news(timeout_s)

    def recover(self, jobs: Sequence[AttemptJob]) -> list[Event]:
        """Adopt the run's commands, found by their comment on the attempts' instances."""
        by_comment = {names.command_comment(j.run, j.attempt_id): j for j in jobs}
        instances = sorted({self._instances.get(j.instances[0], "") for j in jobs if j.instances})
        adopted: list[tuple[_Tracked, dict[str, Any]]] = []
        for instance in filter(None, instances):
            try:
                found = sorted(self._list(InstanceId=instance), key=_requested)
            except Exception as exc:
                raise explain(exc, "ListCommands", f"the commands on {instance}") from None
            for command in found:
                job = by_comment.get(str(command.get("Comment", "")))
                if job is None:
                    continue
                if job.attempt_id in self._tracked:
                    self._cancel_stray(command)  # a second command of one attempt
                    continue
                tracked = _Tracked(job, instance, str(command["CommandId"]), _requested(command))
                with self._lock:
                    self._tracked[job.attempt_id] = tracked
                    self._by_command[str(command["CommandId"])] = tracked
                adopted.append((tracked, command))
        events: list[Event] = []
        for tracked, command in adopted:
            events += self._update(tracked, command, time.time())
        with self._lock:  # what recover says is the whole story of these attempts
            asked = {j.attempt_id for j in jobs}
            self._news = [e for e in self._news if getattr(e, "attempt_id", "") not in asked]
        return events

    def close(self, final: bool = False) -> None:
        if self._sender is not None:
            self._sender.shutdown(wait=True)
            self._sender = None

    # ------------------------------------------------------------------ sending
    def _pool(self) -> ThreadPoolExecutor:
        if self._sender is None:
            self._sender = ThreadPoolExecutor(
                self.options.submit_parallel, thread_name_prefix="stormproof-ssm"
            )
        return self._sender

    def _send(self, tracked: _Tracked) -> None:
        job = tracked.job
        ssm = self.aws.client("ssm")
        try:
            request = commands.send_request(job, tracked.instance, self.options)
            response = ssm.send_command(**request)
            self._count("SendCommand")
        except Exception as exc:
            error = explain(exc, "SendCommand", f"{job.attempt_id} on {tracked.instance}")
            self._finish(tracked, AttemptSubmitFailed(time.time(), job.attempt_id, str(error)))
            return
        command = response["Command"]
        with self._lock:
            tracked.command_id = str(command["CommandId"])
            tracked.requested = _requested(command) or time.time()
            self._by_command[tracked.command_id] = tracked
            pending = tracked.kill_pending
        if pending is not None:
            tracked.cancel_at = time.monotonic() + pending + KILL_BACKSTOP_S
            self._signal(tracked)

    def _signal(self, tracked: _Tracked) -> None:
        try:
            ssm = self.aws.client("ssm")
            ssm.send_command(**commands.signal_request(tracked.job, tracked.instance))
            self._count("SendCommand")
        except Exception as exc:  # the instance may be gone: the backstop, or its loss, ends it
            self._warn_once(
                f"signal {tracked.job.attempt_id}",
                str(explain(exc, "SendCommand", f"stop {tracked.job.attempt_id}")),
            )
        self._faster()

    def _cancel(self, tracked: _Tracked) -> None:
        """The backstop: the agent did not end after its grace; SSM ends the command."""
        tracked.cancel_at = None
        try:
            self.aws.client("ssm").cancel_command(
                CommandId=tracked.command_id, InstanceIds=[tracked.instance]
            )
            self._count("CancelCommand")
        except Exception as exc:
            self._warn_once(
                f"cancel {tracked.command_id}",
                str(explain(exc, "CancelCommand", tracked.job.attempt_id)),
            )
            why = f"it did not stop when asked, and SSM could not cancel it ({error_code(exc)})"
            self._finish(tracked, AttemptLost(time.time(), tracked.job.attempt_id, why))

    def _cancel_stray(self, command: Mapping[str, Any]) -> None:
        try:
            self.aws.client("ssm").cancel_command(CommandId=str(command["CommandId"]))
            self._count("CancelCommand")
        except Exception as exc:
            self._warn_once(f"stray {command['CommandId']}", str(exc))

    # ------------------------------------------------------------------ tracking
    def _look_due(self) -> bool:
        if time.monotonic() < self._next_look:
            return False
        with self._lock:
            return any(t.command_id and not t.done for t in self._tracked.values())

    def _look(self) -> None:
        with self._lock:
            live = [t for t in self._tracked.values() if t.command_id and not t.done]
        events: list[Event] = []
        if live:
            since = min(t.requested for t in live) - 1.0
            try:
                found = self._list(Filters=[{"key": "InvokedAfter", "value": _iso(since)}])
            except Exception as exc:  # throttled or unreachable: look again later, slower
                self._warn_once("list", f"{explain(exc, 'ListCommands', 'the run')}; retrying")
                self._interval = min(self._interval * 2, self.options.max_poll_interval_s)
                self._next_look = time.monotonic() + self._interval
                return
            now = time.time()
            for command in found:
                tracked = self._by_command.get(str(command.get("CommandId", "")))
                if tracked is not None and not tracked.done:
                    events += self._update(tracked, command, now)
        for tracked in live:
            if tracked.cancel_at is not None and time.monotonic() >= tracked.cancel_at:
                self._cancel(tracked)
        if events:
            self._interval = self.options.poll_interval_s
        else:
            self._interval = min(self._interval * 1.5, self.options.max_poll_interval_s)
        self._next_look = time.monotonic() + self._interval
        self._push(events)

    def _list(self, **kwargs: Any) -> list[dict[str, Any]]:
        ssm = self.aws.client("ssm")
        out: list[dict[str, Any]] = []
        token: str | None = None
        while True:
            page_args = dict(kwargs, MaxResults=PAGE, **({"NextToken": token} if token else {}))
            if "CommandId" in kwargs:
                page_args.pop("MaxResults")
            page = ssm.list_commands(**page_args)
            self._count("ListCommands")
            out += page.get("Commands", [])
            token = page.get("NextToken")
            if not token:
                return out

    def _update(self, tracked: _Tracked, command: Mapping[str, Any], now: float) -> list[Event]:
        status = str(command.get("Status", ""))
        out: list[Event] = []
        attempt_id = tracked.job.attempt_id
        if status in commands.STARTED and not tracked.started:
            tracked.started = True
            handle = f"{tracked.instance}:{tracked.command_id}"
            out.append(AttemptStarted(now, attempt_id, handle, tracked.job.instances))
        if status not in commands.ENDED:
            return out
        agent = self._agent_status(tracked.job.run, tracked.job.attempt_id)
        out += agent_commits(tracked.reported_seqs, tracked.job.attempt_id, agent, now)
        invocation = None if _ended(agent) else self._invocation(tracked)
        if _ended(agent) and agent is not None and agent.get("notice") and not tracked.killed:
            out += self._notice(tracked, now, agent.get("reclaim_at"))
        ended = commands.settle(
            now, attempt_id, tracked.instance, command, invocation, agent, killed=tracked.killed
        )
        with self._lock:
            tracked.done = True
        return [*out, ended]

    def _notice(self, tracked: _Tracked, now: float, reclaim_at: object) -> list[Event]:
        """The agent stopped the command on the instance's own notice (IMDS): the instance is
        going, so the core drains it too, until EC2's time for it (once per instance)."""
        core = tracked.job.instances[0] if tracked.job.instances else ""
        if not core or core in self._noticed:
            return []
        self._noticed.add(core)
        left = max(0.0, reclaim_at - now) if isinstance(reclaim_at, (int, float)) else 0.0
        return [InterruptionNotice(now, core, left, "imds")]

    def _invocation(self, tracked: _Tracked) -> dict[str, Any] | None:
        try:
            found = self.aws.client("ssm").get_command_invocation(
                CommandId=tracked.command_id, InstanceId=tracked.instance
            )
            self._count("GetCommandInvocation")
        except Exception as exc:
            self._warn_once(
                f"invocation {tracked.command_id}",
                str(explain(exc, "GetCommandInvocation", tracked.job.attempt_id)),
            )
            return None
        return dict(found)

    # ------------------------------------------------------------------ helpers
    def _finish(self, tracked: _Tracked, event: Event) -> None:
        with self._lock:
            tracked.done = True
        self._push([event])

    def _faster(self) -> None:
        self._interval = self.options.poll_interval_s
        self._next_look = min(self._next_look, time.monotonic() + self._interval)


def _ended(agent: Mapping[str, Any] | None) -> bool:
    return agent is not None and agent.get("state") == "ended"


def _requested(command: Mapping[str, Any]) -> float:
    when = command.get("RequestedDateTime")
    if isinstance(when, datetime):
        return when.timestamp()
    return 0.0


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
