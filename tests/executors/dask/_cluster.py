"""A real Dask cluster for the tests: a ``dask scheduler`` and ``dask worker`` processes.

Everything listens on 127.0.0.1 on ports the OS picks (the scheduler writes its address to a
scheduler file; workers take any free port), keeps its files in the test's temp dir, and is
stopped by pid. Workers run without a nanny, so a worker's pid is the worker: ``kill -9`` of it
is a worker that vanished. Each worker is one pool's (``pool-spot`` or ``pool-ondemand``
resource) with ``vcpus`` and ``memory`` resources.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

START_TIMEOUT_S = 60.0


@dataclass
class Worker:
    name: str
    proc: subprocess.Popen[bytes]
    resources: dict[str, float]


@dataclass
class DaskCluster:
    root: Path
    address: str = ""
    scheduler: subprocess.Popen[bytes] | None = None
    workers: dict[str, Worker] = field(default_factory=dict)
    _client: Any = None

    # ------------------------------------------------------------------ starting
    def start_scheduler(
        self, python: str = sys.executable, env: dict[str, str] | None = None
    ) -> None:
        file = self.root / "scheduler.json"
        with open(self.root / "scheduler.log", "ab") as log:
            self.scheduler = self._spawn(
                [python, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
                 "--port", "0", "--no-dashboard", "--scheduler-file", str(file),
                 "--idle-timeout", "600"],
                log, env,
            )  # fmt: skip
        deadline = time.monotonic() + START_TIMEOUT_S
        while not file.exists() or not file.read_text().strip():
            if self.scheduler.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the dask scheduler did not start: {self.log('scheduler')}")
            time.sleep(0.05)
        self.address = json.loads(file.read_text())["address"]

    def start_worker(
        self, name: str, resources: dict[str, float], nthreads: int = 2, wait: bool = True,
        argv: list[str] | None = None,
    ) -> Worker:  # fmt: skip
        spec = ",".join(f"{k}={v:g}" for k, v in resources.items())
        command = argv or [sys.executable, "-m", "distributed.cli.dask_worker"]
        with open(self.root / f"{name}.log", "ab") as log:
            proc = self._spawn(
                [*command, self.address, "--name", name, "--nthreads", str(nthreads),
                 "--resources", spec, "--no-nanny", "--no-dashboard", "--host", "127.0.0.1",
                 "--local-directory", str(self.root / "dask-scratch"), "--death-timeout", "60"],
                log,
            )  # fmt: skip
        worker = Worker(name, proc, resources)
        self.workers[name] = worker
        if wait:
            self.wait_for_worker(name)
        return worker

    def _spawn(
        self, argv: list[str], log: Any, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            argv, stdout=log, stderr=log, stdin=subprocess.DEVNULL, cwd=self.root,
            env=env or _env(), start_new_session=True,
        )  # fmt: skip

    def wait_for_worker(self, name: str) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while name not in self.names():
            worker = self.workers[name]
            if worker.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"dask worker {name} did not start: {self.log(name)}")
            time.sleep(0.05)

    # ------------------------------------------------------------------ looking and acting
    @property
    def client(self) -> Any:
        """A client of the test's own (as a deployment or an operator would have)."""
        if self._client is None:
            from distributed import Client

            self._client = Client(self.address, timeout=30, set_as_default=False)
        return self._client

    def names(self) -> set[str]:
        info = self.client.scheduler_info(n_workers=-1)
        return {str(w["name"]) for w in info["workers"].values()}

    def address_of(self, name: str) -> str:
        info = self.client.scheduler_info(n_workers=-1)
        for address, w in info["workers"].items():
            if str(w["name"]) == name:
                return str(address)
        raise KeyError(name)

    def kill_worker(self, name: str) -> None:
        """``kill -9`` the worker process: a worker that vanished."""
        proc = self.workers[name].proc
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)

    def retire(self, name: str) -> None:
        """What a deployment does on a spot node's preemption notice."""
        self.client.retire_workers(names=[name], close_workers=True)

    def log(self, name: str) -> str:
        with contextlib.suppress(OSError):
            return (self.root / f"{name}.log").read_text()[-3000:]
        return ""

    def stop(self) -> None:
        if self._client is not None:
            with contextlib.suppress(Exception):
                self._client.close()
        procs = [w.proc for w in self.workers.values()]
        if self.scheduler is not None:
            procs.append(self.scheduler)
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
        for proc in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    env["DASK_DISTRIBUTED__ADMIN__TICK__LIMIT"] = "60s"  # a loaded CI box is no hang
    return env


SPOT = {"vcpus": 2, "memory": 2048, "pool-spot": 1}
ONDEMAND = {"vcpus": 2, "memory": 2048, "pool-ondemand": 1}


@contextlib.contextmanager
def running_cluster(root: Path, workers: dict[str, dict[str, float]]) -> Iterator[DaskCluster]:
    """A scheduler and the given workers (started together), stopped by pid at the end."""
    root.mkdir(parents=True, exist_ok=True)
    c = DaskCluster(root)
    try:
        c.start_scheduler()
        for name, resources in workers.items():
            c.start_worker(name, resources, wait=False)
        for name in workers:
            c.wait_for_worker(name)
        yield c
    finally:
        c.stop()
