"""A real PostgreSQL server for the tests, from Debian's ``postgresql`` package.

``initdb`` makes a cluster in a temporary directory (as the ``postgres`` user when
the tests run as root: initdb refuses root), ``postgres`` serves it on a free port
of 127.0.0.1 with its socket in that directory, and it is stopped by its PID. No
systemd, no fixed port, nothing shared with another test session. Durability
settings are relaxed (``fsync=off``): a test kills clients, not the machine.

Missing binaries skip the tests with the reason on a developer's machine and fail
them under ``CI=true`` (``.ci/apt-packages`` lists ``postgresql``).
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import pytest

#: Debian installs the server's programs off the PATH, per major version.
_DEBIAN_BINS = "/usr/lib/postgresql/*/bin"
SUPERUSER = "postgres"
#: The one role that must give its password (scram-sha-256); every other login is trusted.
PASSWORD_USER = "pw_user"
_INITDB = ("--no-sync", "--no-instructions", "-E", "UTF8", "--locale=C")
_SERVER_SETTINGS = ("-c", "listen_addresses=127.0.0.1", "-c", "max_connections=60")
#: Tests kill clients, not the machine: no need to wait for the disk (benchmarks do wait).
_NOT_DURABLE = ("-c", "fsync=off", "-c", "full_page_writes=off")


def missing(reason: str) -> NoReturn:
    """Skip for a developer; under CI a missing real component is a failure, never a skip."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} (CI=true: the real component must be there)")
    pytest.skip(reason)


def server_bin_dir() -> Path | None:
    """Where ``initdb`` and ``postgres`` are: Debian's newest version, else the PATH."""
    found = sorted(glob.glob(_DEBIAN_BINS), key=lambda p: int(Path(p).parent.name or 0))
    for candidate in reversed(found):
        if (Path(candidate) / "initdb").exists():
            return Path(candidate)
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class PostgresServer:
    """One cluster; ``start``/``stop`` may be called again (the same data, the same port)."""

    bin_dir: Path
    root: Path
    port: int = 0
    #: ``False``: fsync off, for tests; ``True``: the server's durable defaults, for benchmarks.
    durable: bool = False
    proc: subprocess.Popen[bytes] | None = None
    _user: dict[str, Any] = field(default_factory=dict)

    @property
    def data(self) -> Path:
        return self.root / "data"

    def url(self, schema: str | None = None, dbname: str = "postgres") -> str:
        url = f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{dbname}"
        return url + (f"?options=-csearch_path%3D{schema}" if schema else "")

    def init(self) -> None:
        if os.geteuid() == 0:
            entry = pwd.getpwnam(SUPERUSER)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
            self._user = {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}
        made = subprocess.run(
            [self.bin_dir / "initdb", "-D", self.data, "-U", SUPERUSER, "-A", "trust", *_INITDB],
            capture_output=True,
            text=True,
            cwd=self.root,
            **self._user,
        )
        if made.returncode != 0:
            raise RuntimeError(f"initdb failed in {self.root}: {made.stderr.strip()}")
        hba = self.data / "pg_hba.conf"
        first = f"host all {PASSWORD_USER} 127.0.0.1/32 scram-sha-256\n"
        hba.write_text(first + hba.read_text())

    def start(self, timeout_s: float = 30.0) -> None:
        """Start on ``self.port`` (a free one the first time); ready when it answers."""
        for _ in range(5):  # another session may take the free port first: pick another
            self.port = self.port or free_port()
            log = open(self.root / "server.log", "ab")  # noqa: SIM115 - the server writes it
            where = ("-D", str(self.data), "-p", str(self.port), "-k", str(self.root))
            self.proc = subprocess.Popen(
                [self.bin_dir / "postgres", *where, *_SERVER_SETTINGS, *self.settings()],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.root,
                **self._user,
            )
            log.close()
            if self._wait_ready(timeout_s):
                return
            self.port = 0
        raise RuntimeError(f"PostgreSQL did not start; see {self.root / 'server.log'}")

    def settings(self) -> tuple[str, ...]:
        return () if self.durable else _NOT_DURABLE

    def _wait_ready(self, timeout_s: float) -> bool:
        import psycopg

        assert self.proc is not None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False  # exited: the port was taken, most likely
            try:
                psycopg.connect(self.url(), connect_timeout=2).close()
                return True
            except psycopg.OperationalError:
                time.sleep(0.05)
        self.stop()
        return False

    def stop(self) -> None:
        """Fast shutdown by PID: clients are disconnected, the data stays consistent."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def execute(self, statement: str, dbname: str = "postgres") -> None:
        import psycopg

        with psycopg.connect(self.url(dbname=dbname), autocommit=True) as conn:
            conn.execute(statement)  # type: ignore[arg-type] - test-made statements only

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


def start_server(durable: bool = False, parent: Path | None = None) -> PostgresServer:
    """A fresh cluster (in a new directory under ``parent``, default the system's temporary
    one), started; skips (or fails under CI) when PostgreSQL is not installed."""
    bin_dir = server_bin_dir()
    if bin_dir is None:
        missing("PostgreSQL's server is not installed (apt-get install postgresql)")
    try:
        import psycopg  # noqa: F401
    except ImportError:
        missing("psycopg is not installed (pip install -e '.[test]')")
    root = Path(tempfile.mkdtemp(prefix="stormproof-pg-", dir=parent)).resolve()
    server = PostgresServer(bin_dir, root, durable=durable)
    try:
        server.init()
        server.start()
    except BaseException:
        server.remove()
        raise
    return server


_schemas = iter(range(1, 1_000_000))


def fresh_schema(server: PostgresServer) -> str:
    """An empty schema of its own for one test: ``search_path`` points the store at it."""
    name = f"t{os.getpid()}_{next(_schemas)}"
    with contextlib.suppress(Exception):
        server.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")
    server.execute(f"CREATE SCHEMA {name}")
    return name
