"""Running and tracking N attempts over M EC2 instances through SSM Run Command against
moto: API calls per attempt, stormproof's ``executor: ssm`` against a naive loop (one
``GetCommandInvocation`` per attempt per look), in the same run.

moto's server (an emulator of the AWS APIs) runs in a child process. Three of its gaps are
filled there so the figures mean what they would on AWS: a command starts ``InProgress``
(moto says ``Success`` at once) and ends ``Success`` ``--seconds`` after it was sent, with
the exit status its agent (``stormproof exec``) would write to S3 written there first; a
command goes to the instance it names (moto adds every instance when no ``Targets`` are
given); ``ListCommands`` pages 50 commands at a time and honours ``InvokedAfter``, as SSM
does (moto returns everything in one answer).

Both sides send every attempt with ``SendCommand`` (one call each: SSM has no batch send)
and look at the live ones every ``--interval`` seconds until all ended:

* **stormproof**: ``SsmExecutor.submit`` / ``poll``: one paginated ``ListCommands`` per look
  over every live command, and at each end the agent's status in S3 (``GetObject``), which
  holds the exit code (``GetCommandInvocation`` only when it is absent);
* **naive**: a ``GetCommandInvocation`` per live attempt per look.

    .venv/bin/python bench/ec2_ssm.py                       # 2,000 attempts over 50 instances
    .venv/bin/python bench/ec2_ssm.py --attempts 500 --instances 10
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from _moto_child import moto_child  # bench/, the script's own folder

BUCKET = "bench"
PAGE = 50


# ---------------------------------------------------------------------- the moto child
def serve(port: int, seconds: float) -> None:
    """moto's server, whose commands run ``seconds`` after they are sent (see the docstring)."""
    from datetime import datetime, timezone

    from moto.core.responses import ActionResult
    from moto.server import ThreadedMotoServer
    from moto.ssm import models, responses
    from moto.ssm.models import ssm_backends

    original = models.Command.__init__

    def init(command: Any, *args: Any, **kwargs: Any) -> None:
        requested = list(kwargs.get("instance_ids") or [])
        original(command, *args, **kwargs)
        command.instance_ids = requested
        command.invocations = [
            command.invocation_response(i, "aws:runShellScript") for i in requested
        ]
        command.status = command.status_details = "InProgress"
        for invocation in command.invocations:
            invocation["Status"] = invocation["StatusDetails"] = "InProgress"
        command.sent_at = time.monotonic()

    def list_commands(self: Any) -> Any:
        command_id = self._get_param("CommandId")
        instance_id = self._get_param("InstanceId")
        found = self.ssm_backend.list_commands(command_id, instance_id)
        after = next(
            (f["value"] for f in self._get_param("Filters") or [] if f["key"] == "InvokedAfter"),
            None,
        )
        if after:
            since = datetime.fromisoformat(after.replace("Z", "+00:00"))
            found = [
                c for c in found if c.requested_date_time.replace(tzinfo=timezone.utc) >= since
            ]
        start = int(self._get_param("NextToken") or 0)
        size = int(self._get_param("MaxResults") or PAGE)
        page = found[start : start + size]
        body: dict[str, Any] = {"Commands": [c.response_object() for c in page]}
        if start + size < len(found):
            body["NextToken"] = str(start + size)
        return ActionResult(body)

    models.Command.__init__ = init  # type: ignore[method-assign]
    responses.SimpleSystemManagerResponse.list_commands = list_commands  # type: ignore[method-assign]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    import boto3

    s3 = boto3.client(
        "s3",
        endpoint_url=f"http://127.0.0.1:{port}",
        region_name="us-east-1",
        aws_access_key_id="bench",
        aws_secret_access_key="bench",
    )
    while True:
        time.sleep(0.1)
        now = time.monotonic()
        for account in ssm_backends.values():
            for backend in account.values():
                for command in list(backend._commands):
                    sent = getattr(command, "sent_at", None)
                    if sent is not None and command.status == "InProgress" and now - sent > seconds:
                        _agent_status(s3, command.parameters.get("commands", []))
                        command.status = command.status_details = "Success"
                        for invocation in command.invocations:
                            invocation["Status"] = invocation["StatusDetails"] = "Success"


def _agent_status(s3: Any, lines: list[str]) -> None:
    """What ``stormproof exec`` writes as a command ends: its exit status at ``--status``."""
    words = lines[-1].split() if lines else []
    if "--status" not in words:
        return
    bucket, _, key = words[words.index("--status") + 1].removeprefix("s3://").partition("/")
    body = json.dumps({"state": "ended", "exit_code": 0, "checkpoints": []}).encode()
    s3.put_object(Bucket=bucket, Key=key, Body=body)


# ---------------------------------------------------------------------- the two trackers
def instances(endpoint: str, m: int) -> dict[str, str]:
    """``m`` EC2 instances, by the core's ids (``i0`` …)."""
    import boto3

    ec2 = boto3.client("ec2", endpoint_url=endpoint, region_name="us-east-1")
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket=BUCKET)
    found = ec2.run_instances(ImageId="ami-12c6146b", MinCount=m, MaxCount=m)["Instances"]
    return {f"i{k}": inst["InstanceId"] for k, inst in enumerate(found)}


def jobs(run: str, n: int, m: int, tmp: Path) -> list[Any]:
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
            instances=(f"i{i % m}",),
            pool="spot",
            market="spot",
        )
        for i in range(n)
    ]


def with_stormproof(
    run: str, n: int, ec2_ids: dict[str, str], interval: float, tmp: Path
) -> Counter[str]:
    """Send and track with the executor; ``calls["looks"]`` counts its looks."""
    from stormproof.core.events import AttemptExited, AttemptLost, AttemptSubmitFailed
    from stormproof.executors.ssm import SsmExecutor

    options = {
        "project": "bench",
        "bucket": BUCKET,
        "poll_interval_s": interval,
        "max_poll_interval_s": interval,
        "interruption_queue": False,
        "prices": False,
        "capacity": "aws",
        "pools": {"spot": {"market": "spot", "instance_types": {"c5.large": 1.0}}},
    }
    executor = SsmExecutor(tmp, options)
    executor.use_instances(ec2_ids)
    look = executor._look

    def counted() -> None:
        executor.calls["looks"] += 1
        look()

    executor._look = counted  # type: ignore[method-assign]
    executor.prepare()
    for job in jobs(run, n, len(ec2_ids), tmp):
        executor.submit(job)
    ended = 0
    while ended < n:
        for event in executor.poll(0.25):
            if isinstance(event, (AttemptExited, AttemptSubmitFailed, AttemptLost)):
                ended += 1
    executor.close()
    return executor.calls


def naive(run: str, n: int, ec2_ids: dict[str, str], interval: float, tmp: Path) -> Counter[str]:
    import boto3
    from botocore.config import Config

    from stormproof.aws.settings import AwsOptions
    from stormproof.executors.ssm import commands

    ssm = boto3.client("ssm", config=Config(max_pool_connections=32))
    options = AwsOptions(project="bench", bucket=BUCKET)
    calls: Counter[str] = Counter()
    live: dict[str, str] = {}

    def send(job: Any) -> None:
        instance = ec2_ids[job.instances[0]]
        response = ssm.send_command(**commands.send_request(job, instance, options))
        live[response["Command"]["CommandId"]] = instance
        calls["SendCommand"] += 1

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(send, jobs(run, n, len(ec2_ids), tmp)))
    while live:
        calls["looks"] += 1
        started = time.monotonic()
        for command_id, instance in list(live.items()):
            found = ssm.get_command_invocation(CommandId=command_id, InstanceId=instance)
            calls["GetCommandInvocation"] += 1
            if found["Status"] in commands.ENDED:
                del live[command_id]
        time.sleep(max(0.0, interval - (time.monotonic() - started)))
    return calls


# ---------------------------------------------------------------------- main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--attempts", type=int, default=2_000)
    parser.add_argument("--instances", type=int, default=50)
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between looks")
    parser.add_argument("--seconds", type=float, default=120.0, help="each command's run time")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.seconds)
        return
    n = args.attempts
    with moto_child(__file__, "--seconds", str(args.seconds)) as endpoint:
        ec2_ids = instances(endpoint, args.instances)
        with tempfile.TemporaryDirectory() as tmp:
            ours = with_stormproof("sp", n, ec2_ids, args.interval, Path(tmp))
            theirs = naive("naive", n, ec2_ids, args.interval, Path(tmp))
    print(
        f"{n:,} attempts over {args.instances} instances, a look every {args.interval:g}s, each "
        f"command runs {args.seconds:g}s (moto's server in a child process)"
    )
    for name, calls, tracking in (
        ("stormproof", ours, "ListCommands"),
        ("naive", theirs, "GetCommandInvocation"),
    ):
        looks = calls.pop("looks", 0)
        total = sum(calls.values())
        print(
            f"  {name:10} {total / n:6.3f} API calls/attempt ({dict(sorted(calls.items()))}),"
            f" {looks} looks, {calls[tracking] / max(looks, 1) / n:.4f} {tracking} per attempt "
            "per look"
        )
        calls["looks"] = looks
    ours_track = ours["ListCommands"] / n
    theirs_track = theirs["GetCommandInvocation"] / n
    ours_all = sum(ours.values()) - ours["looks"]
    theirs_all = sum(theirs.values()) - theirs["looks"]
    print(
        f"  tracking calls per attempt: {ours_track:.3f} vs {theirs_track:.3f} "
        f"({theirs_track / max(ours_track, 1e-9):.1f}x fewer); all calls: {ours_all:,} vs "
        f"{theirs_all:,} ({theirs_all / max(ours_all, 1):.1f}x fewer)"
    )


if __name__ == "__main__":
    main()
