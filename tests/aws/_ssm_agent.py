"""A stand-in for the SSM agent on ``capacity: aws``'s EC2 instances, which moto lacks.

moto records ``SendCommand`` and answers ``ListCommands``, but runs nothing, marks every
command ``Success`` the moment it is sent, and has no ``CancelCommand``; and its EC2
instances are not machines. ``SsmAgents`` plays the SSM agent of every instance:

* it keeps a command to the instances it names (moto adds every instance to a command sent
  without ``Targets``);
* it polls moto's ``ListCommands`` (through the API, as the real agent polls SSM), and runs
  each new command's ``AWS-RunShellScript`` for real as a local process (``sh -c``), with
  the instance's own environment: its IMDS stand-in endpoint (so ``stormproof exec`` sees
  that instance's notices), its own ``TMPDIR`` (its disk), S3 in SeaweedFS, the rest in moto;
* it moves the command ``Pending`` → ``InProgress`` → ``Success``/``Failed`` with the
  process's exit code in moto's invocation, as SSM does;
* an instance terminated in moto (``terminate_instances``, a reclaim) is a machine gone:
  its processes are SIGKILLed at once and its commands stay ``InProgress``, as SSM leaves
  them until they time out;
* ``CancelCommand`` (patched into moto's SSM responses) kills the command's processes and
  marks it ``Cancelled``.

The patches are installed for the stand-in's life and removed by ``close``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._moto import ACCOUNT, REGION, Moto

_ALIVE = ("pending", "running")


def _backend() -> Any:
    from moto.ssm.models import ssm_backends

    return ssm_backends[ACCOUNT][REGION]


def _set(command: Any, status: str, details: str, code: int | None = None) -> None:
    command.status, command.status_details = status, details
    for invocation in command.invocations:
        invocation["Status"], invocation["StatusDetails"] = status, details
        invocation["ResponseCode"] = -1 if code is None else code


@dataclass
class _Run:
    command_id: str
    instance: str
    proc: subprocess.Popen[bytes]


class SsmAgents:
    """The SSM agents of moto's EC2 instances (see the module's docstring)."""

    def __init__(self, moto: Moto, workdir: Path, env: dict[str, str], imds: Any) -> None:
        self.moto = moto
        self.workdir = workdir
        self.env = env
        self.imds = imds
        self.running: dict[str, _Run] = {}
        self.seen: set[str] = set()
        #: Command ids in the order their processes started, with their instance.
        self.started: list[tuple[str, str]] = []
        self.paused = False
        self._ssm = moto.client("ssm")
        self._ec2 = moto.client("ec2")
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._patch()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ the test's hands
    def commands(self) -> list[dict[str, Any]]:
        """Every command moto holds (the attempts' and the kills')."""
        return list(self._ssm.list_commands()["Commands"])

    def instance_of(self, comment_part: str) -> str:
        """The EC2 instance of the running command whose comment contains ``comment_part``."""
        for command in self.commands():
            if comment_part in command["Comment"] and command["CommandId"] in self.running:
                return str(command["InstanceIds"][0])
        raise KeyError(comment_part)

    def output(self, comment_part: str) -> str:
        texts = []
        for command in self.commands():
            if comment_part in command["Comment"] and not command["Comment"].startswith("stop"):
                log = self.workdir / command["InstanceIds"][0] / f"{command['CommandId']}.log"
                texts.append(log.read_text() if log.exists() else "")
        return "\n".join(texts)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        with self._lock:
            for run in self.running.values():
                _kill(run.proc)
        self._unpatch()

    # ------------------------------------------------------------------ the loop
    def _loop(self) -> None:
        while not self._stop.wait(0.05):
            if self.paused:
                continue
            with self._lock:
                try:
                    self._step()
                except Exception as exc:  # a test's stand-in must not die silently
                    print(f"SsmAgents: {exc!r}")

    def _step(self) -> None:
        found = self._ssm.list_commands()["Commands"]
        states = self._states({c["InstanceIds"][0] for c in found if c["InstanceIds"]})
        backend = _backend()
        for command in found:
            command_id = command["CommandId"]
            instance = command["InstanceIds"][0] if command["InstanceIds"] else ""
            if command_id not in self.seen:
                self.seen.add(command_id)
                if states.get(instance) in _ALIVE:
                    self._start(backend.get_command_by_id(command_id), instance)
                else:
                    _set(backend.get_command_by_id(command_id), "Failed", "Undeliverable")
        for command_id, run in list(self.running.items()):
            code = run.proc.poll()
            if states.get(run.instance) not in _ALIVE:  # the machine is gone, and its work
                _kill(run.proc)
                del self.running[command_id]
            elif code is not None:
                del self.running[command_id]
                command = backend.get_command_by_id(command_id)
                if command.status == "Cancelling":
                    _set(command, "Cancelled", "Cancelled")
                elif code == 0:
                    _set(command, "Success", "Success", 0)
                else:
                    _set(command, "Failed", "Failed", code if code > 0 else 128 - code)

    def _states(self, instances: set[str]) -> dict[str, str]:
        if not instances:
            return {}
        found = self._ec2.describe_instances(InstanceIds=sorted(instances))["Reservations"]
        return {i["InstanceId"]: i["State"]["Name"] for r in found for i in r["Instances"]}

    def _start(self, command: Any, instance: str) -> None:
        home = self.workdir / instance
        (home / "tmp").mkdir(parents=True, exist_ok=True)
        env = dict(self.env)
        env["TMPDIR"] = str(home / "tmp")
        env["AWS_EC2_METADATA_SERVICE_ENDPOINT"] = self.imds.endpoint(instance)
        script = "\n".join(command.parameters["commands"])
        with open(home / f"{command.command_id}.log", "wb") as out:
            proc = subprocess.Popen(
                ["/bin/sh", "-c", script],
                env=env,
                cwd=home,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        _set(command, "InProgress", "InProgress")
        self.running[command.command_id] = _Run(command.command_id, instance, proc)
        self.started.append((command.command_id, instance))

    # ------------------------------------------------------------------ moto's gaps
    def _patch(self) -> None:
        from moto.ssm import models, responses

        agents = self
        self._original_init = models.Command.__init__
        original_init = self._original_init

        def pending_init(command: Any, *args: Any, **kwargs: Any) -> None:
            requested = list(kwargs.get("instance_ids") or [])
            original_init(command, *args, **kwargs)
            if not kwargs.get("targets"):  # moto adds every instance when no Targets are given
                command.instance_ids = requested
                command.target_count = command.completed_count = len(requested)
                command.invocations = [
                    command.invocation_response(i, "aws:runShellScript") for i in requested
                ]
            _set(command, "Pending", "Pending")  # SSM has not delivered it yet

        def cancel_command(response: Any) -> Any:
            from moto.core.responses import ActionResult

            command = _backend().get_command_by_id(response._get_param("CommandId"))
            with agents._lock:
                run = agents.running.get(command.command_id)
                if run is not None:
                    _set(command, "Cancelling", "Cancelling")
                    _kill(run.proc)
                elif command.status in ("Pending", "InProgress"):
                    _set(command, "Cancelled", "Cancelled")
            return ActionResult({})

        models.Command.__init__ = pending_init  # type: ignore[method-assign]
        responses.SimpleSystemManagerResponse.cancel_command = cancel_command  # type: ignore[attr-defined]

    def _unpatch(self) -> None:
        from moto.ssm import models, responses

        models.Command.__init__ = self._original_init  # type: ignore[method-assign]
        with contextlib.suppress(AttributeError):
            del responses.SimpleSystemManagerResponse.cancel_command  # type: ignore[attr-defined]


def _kill(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def wait_for(check: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")
