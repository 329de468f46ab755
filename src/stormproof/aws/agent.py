"""``stormproof exec``: the agent around one attempt on an EC2 instance or in a container.

What it does, in order:

1. restores the checkpoint the orchestrator chose (``STORMPROOF_CHECKPOINT_SEQ``) from the
   checkpoint store into a local directory, and points ``STORMPROOF_CHECKPOINT_DIR`` there;
2. starts the task's command in its own process group;
3. every ``poll`` seconds: asks IMDSv2 for a spot interruption notice and a rebalance
   recommendation, and uploads every checkpoint the task commits (``.commit``), answering
   the task as the local runtime does (``.commit-result``);
4. on a notice (``spot/instance-action``), or on SIGTERM to itself (``TerminateJob``,
   ``docker stop``): SIGTERM to the command, then waits until the notice's time (less a
   margin) for it to commit and exit, uploads that checkpoint, SIGKILLs what is left;
   a rebalance recommendation only asks for a checkpoint (the checkpoint signal and the
   request file), since it is a risk, not a notice;
5. keeps the command's output (``agent_output``): teed to the agent's own stdout and
   stderr, bounded, uploaded beside the status every ``log_upload_s`` and once more, on a
   notice and at the end, before the final status (``stormproof logs`` reads it there);
6. writes the attempt's exit status to S3 (``--status``): the exit code, the notice if
   there was one, the checkpoints uploaded (each one's ``seq``, ``files``, ``bytes`` and
   ``save_s``, the seconds from the task's commit to the checkpoint in the store). It
   writes it after each upload too, so an instance that vanishes later still leaves the
   checkpoints it saved. The orchestrator reads it when Batch's own answer is not enough
   (a host gone), so the attempt is settled once, by what really happened.

It exits with the command's exit code (143 when stopped on a notice).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stormproof.aws import names
from stormproof.aws.agent_output import MAX_KEPT_BYTES, OutputCopy, OutputUpload
from stormproof.aws.imds import Imds, seconds_until
from stormproof.checkpoints import protocol

#: Stop waiting for the command this long before the notice's time, to upload in time.
UPLOAD_MARGIN_S = 15.0
#: What a notice without a usable time gives the command (EC2's notices are 2 minutes).
DEFAULT_NOTICE_S = 120.0
#: How often the checkpoint directory is looked at for a commit (a task waits on it).
COMMIT_CHECK_S = 0.1
#: What SIGTERM to the agent gives (ECS kills the container 30 s after it by default).
TERM_GRACE_S = 25.0
STOPPED_EXIT = 143


@dataclass
class AgentSettings:
    run: str
    attempt_id: str
    command: Sequence[str] | str
    status_url: str | None = None
    checkpoints: str | None = None
    poll_s: float = 2.0
    imds_endpoint: str = ""
    use_imds: bool = True
    #: How often the output that grew is uploaded beside the status (``aws.log_upload``).
    log_upload_s: float = 30.0
    #: What is kept of each stream at most (the first half and the last half).
    log_max_bytes: int = MAX_KEPT_BYTES


@dataclass
class Agent:
    settings: AgentSettings
    env: dict[str, str] = field(default_factory=lambda: dict(os.environ))
    _proc: subprocess.Popen[bytes] | None = None
    _notice: str | None = None
    _stop_at: float | None = None
    _checkpoints: list[dict[str, Any]] = field(default_factory=list)
    _instance_id: str | None = None
    _term = threading.Event()
    _rebalance_seen: bool = False
    _reclaim_at: float | None = None

    def __post_init__(self) -> None:
        self._term = threading.Event()
        self._task, _, number = self.settings.attempt_id.rpartition("/")
        self._number = int(number) if number.isdigit() else 1
        self._store: Any = None
        self._next_seq = 0
        self._ckpt_dir: Path | None = None
        self._s3_client: Any = None
        self._imds = Imds(self.settings.imds_endpoint) if self.settings.use_imds else None
        #: No commit this agent saves was asked for before it started (see ``save_s``).
        self._started_at = time.time()
        self._output: OutputCopy | None = None
        self._upload: OutputUpload | None = None

    # ------------------------------------------------------------------ the run
    def run(self) -> int:
        signal.signal(signal.SIGTERM, lambda *_: self._term.set())
        self._instance_id = self._ask_imds("instance-id")
        if self.settings.checkpoints:
            self._prepare_checkpoints()
        self._write_status("running")
        self._start()
        assert self._proc is not None
        next_watch = 0.0
        while True:
            code = self._proc.poll()
            self._upload_commits()
            if code is not None:
                break
            if time.monotonic() >= next_watch or self._term.is_set():
                next_watch = time.monotonic() + self.settings.poll_s
                self._watch()
            if self._stop_at is not None and time.time() >= self._stop_at:
                self._kill_group(signal.SIGKILL)
                self._proc.wait()
                code = self._proc.returncode
                break
            self._term.wait(min(COMMIT_CHECK_S, self._left()))
        self._upload_commits()
        self._finish_output()
        exit_code = _exit_code(code)
        if self._notice is not None:
            exit_code = STOPPED_EXIT if exit_code == 0 else exit_code
        self._write_status("ended", exit_code)
        return exit_code

    def _left(self) -> float:
        if self._stop_at is None:
            return self.settings.poll_s
        return max(0.05, min(self.settings.poll_s, self._stop_at - time.time()))

    def _start(self) -> None:
        command = self.settings.command
        argv = ["/bin/sh", "-c", command] if isinstance(command, str) else list(command)
        kept = self._keep_output()
        pipe = subprocess.PIPE if kept else None
        try:
            self._proc = subprocess.Popen(
                argv, env=self.env, start_new_session=True, stdout=pipe, stderr=pipe
            )
        except OSError as err:
            self._write_status("ended", 127, error=f"cannot start {argv[0]!r}: {err}")
            print(f"stormproof exec: cannot start {argv[0]!r}: {err}", file=sys.stderr)
            raise SystemExit(127) from None
        if self._output is not None and self._upload is not None:
            self._output.start({"stdout": self._proc.stdout, "stderr": self._proc.stderr})
            self._upload.start(self.settings.log_upload_s)

    # ------------------------------------------------------------------ notices
    def _watch(self) -> None:
        if self._notice is not None:
            return
        if self._term.is_set():
            self._stop(
                "SIGTERM to the agent (TerminateJob or the container stopping)", TERM_GRACE_S
            )
            return
        action = self._ask_imds("spot/instance-action")
        if action is not None:
            data = _json(action)
            left = seconds_until(str(data.get("time", "")), time.time())
            self._reclaim_at = time.time() + (left if left is not None else DEFAULT_NOTICE_S)
            grace = (left if left is not None else DEFAULT_NOTICE_S) - UPLOAD_MARGIN_S
            self._stop(
                f"spot instance-action {data.get('action', '?')} at {data.get('time')}",
                max(grace, 5.0),
            )
            return
        if not self._rebalance_seen and self._ask_imds("events/recommendations/rebalance"):
            self._rebalance_seen = True
            self._ask_checkpoint("rebalance recommendation")

    def _stop(self, why: str, grace_s: float) -> None:
        self._notice = why
        self._stop_at = time.time() + grace_s
        print(
            f"stormproof exec: {why}: SIGTERM to the task, {grace_s:.0f}s to checkpoint",
            file=sys.stderr,
        )
        self._kill_group(signal.SIGTERM)
        if self._upload is not None:
            self._upload.now()  # the instance may be gone before the command ends

    def _ask_checkpoint(self, reason: str) -> None:
        if self._ckpt_dir is None:
            return
        protocol.request_checkpoint(self._ckpt_dir, reason)
        name = self.env.get(protocol.ENV_CHECKPOINT_SIGNAL, "SIGUSR1")
        if name != protocol.NO_SIGNAL:
            with contextlib.suppress(ValueError):
                self._kill_group(protocol.parse_signal(name))

    def _ask_imds(self, path: str) -> str | None:
        if self._imds is None:
            return None
        try:
            return self._imds.get(path)
        except OSError:
            return None  # no metadata service here (not on EC2): no notices to wait for

    def _kill_group(self, sig: int) -> None:
        if self._proc is None or self._proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._proc.pid, sig)

    # ------------------------------------------------------------------ checkpoints
    def _prepare_checkpoints(self) -> None:
        from stormproof.checkpoints.open import open_checkpoint_store

        base = Path(tempfile.mkdtemp(prefix="stormproof-ckpt-"))
        self._ckpt_dir = base / "checkpoint"
        self._ckpt_dir.mkdir()
        self._store = open_checkpoint_store(self.settings.checkpoints, base)
        infos = self._store.list(self.settings.run, self._task)
        self._next_seq = max((i.seq for i in infos), default=0) + 1
        seq = int(self.env.get(protocol.ENV_CHECKPOINT_SEQ, "0") or 0)
        self.env[protocol.ENV_CHECKPOINT_DIR] = str(self._ckpt_dir)
        self.env[protocol.ENV_RESTORED] = "0"
        if seq:
            self._store.restore(self.settings.run, self._task, seq, self._ckpt_dir)
            self.env[protocol.ENV_RESTORED] = "1"

    def _upload_commits(self) -> None:
        ckpt = self._ckpt_dir
        if ckpt is None or protocol.pending_commit(ckpt) is None:
            return
        seq = self._next_seq
        requested_at = protocol.commit_requested_at(ckpt, time.time(), self._started_at)
        try:
            manifest = self._store.save(
                self.settings.run, self._task, self._number, seq, ckpt, time.time()
            )
        except Exception as exc:
            error = f"checkpoint {seq} of {self.settings.attempt_id} was not saved: {exc}"
            print(f"stormproof exec: {error}", file=sys.stderr)
            protocol.finish_commit(ckpt, protocol.CommitResult.failed(error))
            return
        self._next_seq += 1
        self._checkpoints.append(
            {
                "seq": seq,
                "files": len(manifest.files),
                "bytes": manifest.total_bytes,
                # from the task's commit request to the checkpoint in the store
                "save_s": max(0.0, time.time() - requested_at),
            }
        )
        self._write_status("running")  # before the task hears "saved"
        protocol.finish_commit(ckpt, protocol.CommitResult.saved(seq))

    # ------------------------------------------------------------------ output
    def _keep_output(self) -> bool:
        """Tee the command's output into bounded logs uploaded beside the status (if any)."""
        url = self.settings.status_url
        if not url:
            return False
        bucket, key = _bucket_and_key(url)
        folder = Path(tempfile.mkdtemp(prefix="stormproof-output-"))
        self._output = OutputCopy(folder, self.settings.log_max_bytes)
        keys = {s: names.log_key(key, s) for s in self._output.logs}

        def put(key: str, body: bytes, metadata: dict[str, str]) -> None:
            self._s3().put_object(Bucket=bucket, Key=key, Body=body, Metadata=metadata)

        self._upload = OutputUpload(self._output.logs, keys, put)
        return True

    def _finish_output(self) -> None:
        """The last upload, once the pipes are read to their end: before the final status."""
        if self._output is None or self._upload is None:
            return
        self._output.finish()
        self._upload.finish()
        self._output.close()
        if self._upload.complete():  # in S3 now: the instance's disk is not for keeping
            shutil.rmtree(self._output.folder, ignore_errors=True)

    # ------------------------------------------------------------------ status
    def _write_status(self, state: str, exit_code: int | None = None, error: str = "") -> None:
        url = self.settings.status_url
        if not url:
            return
        status = {
            "attempt_id": self.settings.attempt_id,
            "run": self.settings.run,
            "state": state,
            "exit_code": exit_code,
            "notice": self._notice,
            #: When EC2 takes the instance (a spot notice): the orchestrator drains it until then.
            "reclaim_at": self._reclaim_at,
            "instance_id": self._instance_id,
            "checkpoints": self._checkpoints,
            "at": time.time(),
        }
        if error:
            status["error"] = error
        bucket, key = _bucket_and_key(url)
        for pause in (0.5, 2.0, 5.0, None):
            try:
                s3 = self._s3()
                s3.put_object(Bucket=bucket, Key=key, Body=json.dumps(status).encode())
                return
            except Exception as exc:
                if pause is None:
                    print(
                        f"stormproof exec: could not write the status to {url}: {exc}",
                        file=sys.stderr,
                    )
                    return
                time.sleep(pause)

    def _s3(self) -> Any:
        if self._s3_client is None:
            from stormproof.aws.clients import Aws

            region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
            self._s3_client = Aws(region or "us-east-1").client("s3")
        return self._s3_client


def _bucket_and_key(url: str) -> tuple[str, str]:
    """``s3://bucket/key`` as its two parts (``exec`` checked the scheme)."""
    bucket, _, key = url.removeprefix("s3://").partition("/")
    return bucket, key


def _exit_code(returncode: int | None) -> int:
    if returncode is None:
        return 1
    return 128 - returncode if returncode < 0 else returncode


def _json(text: str) -> dict[str, Any]:
    try:
        data = json.loads(text)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}
