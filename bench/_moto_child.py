"""moto's server in a child process, for the benchmarks that count AWS API calls.

In a child, so that the CPU the benchmark reads is the orchestrator side's alone. The child is
the benchmark script itself, run again with ``--serve PORT`` and the arguments its server needs
(each benchmark patches moto differently); this module starts it, points boto3 at it through
the environment and waits until it answers.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def moto_child(script: str, *serve_args: str) -> Iterator[str]:
    """Run ``script --serve PORT *serve_args`` and yield its endpoint; kill it at the end."""
    port = free_port()
    child = subprocess.Popen(
        [sys.executable, script, "--serve", str(port), *serve_args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    os.environ.update(
        AWS_ENDPOINT_URL=endpoint,
        AWS_ACCESS_KEY_ID="bench",
        AWS_SECRET_ACCESS_KEY="bench",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_EC2_METADATA_DISABLED="true",
    )
    try:
        for _ in range(200):
            try:
                urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        yield endpoint
    finally:
        child.kill()
        child.wait()
