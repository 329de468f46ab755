"""Reaching a Dask cluster, and what it says about itself: the seam's foreign side.

Everything that can go wrong before an attempt is submitted is found here and said in one
line (a ``ConfigError``, exit 2), never as Dask's traceback:

* the scheduler does not answer within ``connect_timeout``;
* the client (this orchestrator) and the scheduler or a worker run different ``dask`` or
  ``distributed`` versions, or Python versions: Dask pickles functions and speaks msgpack
  between them, and a mismatch fails later in ways that name nothing useful;
* a worker cannot import stormproof's wrapper, or has another version of it;
* a pool whose workers carry no marker (and whose shape the file does not give).

``local:`` starts a ``LocalCluster`` of worker processes in the orchestrator: nothing else to
start, and nothing outlives the orchestrator either (``docs/dask.md`` says what that means
for resume). Its workers are started with SIGINT ignored: Ctrl-C in the terminal reaches the
whole foreground process group, and must stop the orchestrator (which then retires the
workers, giving each attempt its notice) rather than kill the workers under their attempts.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from distributed import Client, LocalCluster
from distributed.versions import VersionMismatchWarning

from stormproof.config import SettingError
from stormproof.executors.dask.options import (
    GPUS,
    MEMORY,
    VCPUS,
    DaskOptions,
    LocalClusterOptions,
)
from stormproof.executors.dask.status import PROTOCOL
from stormproof.executors.dask.worker import worker_protocol

#: Where problems with the cluster itself are reported in stormproof.yaml.
_SCHEDULER = ("dask", "scheduler")
#: Packages whose versions must agree between the orchestrator and the cluster.
_MUST_AGREE = ("dask", "distributed")
#: Connections to schedulers opened by this process, shared by ``describe_pools``,
#: ``check_workflow`` and the executor of the same command (one handshake, not three).
_clients: dict[str, Client] = {}
_lock = threading.Lock()


@dataclass(frozen=True)
class WorkerInfo:
    """One worker as the scheduler knows it."""

    address: str
    name: str
    resources: Mapping[str, float] = field(default_factory=dict)

    def holds(self, vcpus: float, memory_mib: int, gpus: int) -> bool:
        r = self.resources
        return (
            r.get(VCPUS, 0.0) >= vcpus
            and r.get(MEMORY, 0.0) >= memory_mib
            and (gpus == 0 or r.get(GPUS, 0.0) >= gpus)
        )


@dataclass
class Connection:
    """A client, and the local cluster it owns (with ``local:``)."""

    client: Client
    cluster: LocalCluster | None = None

    def close(self) -> None:
        with contextlib.suppress(Exception):  # closing what may already be gone
            self.client.close()
        if self.cluster is not None:
            with contextlib.suppress(Exception):
                self.cluster.close()


def shared_client(options: DaskOptions) -> Client:
    """A checked client of ``options.scheduler``, opened once per process."""
    address = options.scheduler
    assert address is not None
    with _lock:
        client = _clients.get(address)
        if client is not None and client.status == "running":
            return client
        client = open_client(address, options.connect_timeout_s)
        try:
            check_cluster(client, options)
        except BaseException:
            client.close()
            raise
        _clients[address] = client
        return client


def forget_client(client: Client) -> None:
    """Close a shared client (the executor's, at its end)."""
    with _lock:
        for address, known in list(_clients.items()):
            if known is client:
                del _clients[address]
    with contextlib.suppress(Exception):
        client.close()


def open_client(address: str, timeout_s: float) -> Client:
    """Connect to the scheduler, or say in one line that it cannot be reached."""
    try:
        with _quiet_versions():
            return Client(address, timeout=timeout_s, set_as_default=False)
    except (OSError, TimeoutError) as exc:
        raise SettingError(
            _SCHEDULER,
            f"cannot reach the Dask scheduler at {address} within {timeout_s:g}s "
            f"({_first_line(exc)}): start it (`dask scheduler`), or give the address it "
            "prints (like tcp://10.0.0.5:8786)",
        ) from None
    except ValueError as exc:  # an address Dask cannot parse
        raise SettingError(
            _SCHEDULER,
            f"{address!r} is not a Dask scheduler address ({exc}); give one like "
            "tcp://10.0.0.5:8786",
        ) from None


def start_local(options: LocalClusterOptions, markers: list[str]) -> Connection:
    """A ``LocalCluster`` of worker processes for this orchestrator, and its client."""
    resources = {VCPUS: options.vcpus, MEMORY: float(options.memory_mib)}
    resources.update((marker, 1.0) for marker in markers)
    with _sigint_ignored():
        cluster = LocalCluster(
            n_workers=options.workers,
            threads_per_worker=options.threads_per_worker,
            processes=True,
            resources=resources,
            host="127.0.0.1",
            dashboard_address=None,
            silence_logs=logging.ERROR,
        )
    client = Client(cluster, set_as_default=False)
    return Connection(client, cluster)


def check_cluster(client: Client, options: DaskOptions) -> None:
    """The versions agree, and every worker runs this stormproof's wrapper."""
    versions: Any = client.get_versions()
    mine = versions["client"]["packages"]
    where = options.where
    _check_versions(mine, versions["scheduler"]["packages"], where)
    for address, info in versions["workers"].items():
        if isinstance(info, dict) and "packages" in info:
            _check_versions(mine, info["packages"], f"the Dask worker {address}")
    answers = client.run(worker_protocol, on_error="return")
    for address, answer in answers.items():
        if isinstance(answer, BaseException):
            raise SettingError(
                _SCHEDULER,
                f"the Dask worker {address} cannot run stormproof's wrapper "
                f"({_first_line(answer)}): install stormproof on the workers (pip install "
                "stormproof, the same version as here): each attempt runs through it",
            )
        if answer != PROTOCOL:
            raise SettingError(
                _SCHEDULER,
                f"the Dask worker {address} has another version of stormproof (wrapper "
                f"protocol {answer}, this one {PROTOCOL}): install the same stormproof on the "
                "workers as here",
            )


def _check_versions(mine: Mapping[str, Any], theirs: Mapping[str, Any], where: str) -> None:
    differ = [
        f"{pkg} {theirs.get(pkg)} there, {mine.get(pkg)} here"
        for pkg in _MUST_AGREE
        if theirs.get(pkg) != mine.get(pkg)
    ]
    py_mine, py_theirs = _minor(mine.get("python")), _minor(theirs.get("python"))
    if py_mine != py_theirs:
        differ.append(f"Python {py_theirs} there, {py_mine} here")
    if differ:
        pins = " ".join(f"'{pkg}=={theirs.get(pkg)}'" for pkg in _MUST_AGREE if theirs.get(pkg))
        raise SettingError(
            _SCHEDULER,
            f"{where} runs other versions than this orchestrator ({'; '.join(differ)}): "
            f"install the cluster's versions here (pip install {pins}), or upgrade the "
            "cluster to these",
        )


def workers(client: Client) -> list[WorkerInfo]:
    """Every worker the scheduler knows now."""
    info = client.scheduler_info(n_workers=-1)
    return [
        WorkerInfo(
            address,
            str(w.get("name", address)),
            {str(k): float(v) for k, v in (w.get("resources") or {}).items()},
        )
        for address, w in info["workers"].items()
    ]


def local_workers(options: LocalClusterOptions, markers: list[str]) -> list[WorkerInfo]:
    """The workers ``start_local`` would start, without starting them (for ``plan``)."""
    resources = {VCPUS: options.vcpus, MEMORY: float(options.memory_mib)}
    resources.update((marker, 1.0) for marker in markers)
    return [WorkerInfo(f"local-{i}", str(i), resources) for i in range(options.workers)]


def _minor(python: Any) -> str:
    """``3.11.7.final.0`` -> ``3.11``."""
    return ".".join(str(python or "?").split(".")[:2])


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


@contextlib.contextmanager
def _quiet_versions() -> Iterator[None]:
    """Dask warns about mismatched versions while connecting; ``check_cluster`` says it better,
    in one line (and under ``-W error`` the warning would fail the connection itself)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", VersionMismatchWarning)
        yield


@contextlib.contextmanager
def _sigint_ignored() -> Iterator[None]:
    """Processes started meanwhile inherit SIGINT ignored (see the module docstring)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)
