"""The spawner process (``executors._spawner``) on its own: real processes, real signals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from stormproof.executors._spawner import Channel, Spawner


class Opened(Spawner):
    """A spawner whose channels the test's end closes."""

    def __init__(self) -> None:
        super().__init__()
        self.channels: list[Channel] = []

    def open(self, request: dict[str, Any]) -> Channel:
        channel = super().open(request)
        self.channels.append(channel)
        return channel


@pytest.fixture
def spawner() -> Iterator[Opened]:
    s = Opened()
    yield s
    for channel in s.channels:
        channel.close()
    s.close()


def request(d: Path, argv: list[str], **extra: Any) -> dict[str, Any]:
    return {
        "argv": argv,
        "cwd": str(d / "work"),
        "env": {"GREETING": "hi"},
        "stdout": str(d / "stdout.log"),
        "stderr": str(d / "stderr.log"),
        "claim": [str(d / "claim"), "mine\n"],
        **extra,
    }


def read(channel: Channel, timeout_s: float = 30.0) -> dict[str, Any] | None:
    assert channel.ready(timeout_s), "the spawner said nothing"
    return channel.read()


def alive(pid: int) -> bool:
    """Alive and not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return False
    return stat[stat.rfind(b")") + 2 :].split()[0] not in (b"Z", b"X")


def wait_dead(pid: int, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while alive(pid):
        assert time.monotonic() < deadline, f"process {pid} still runs"
        time.sleep(0.02)


def wait_file(path: Path, timeout_s: float = 10.0) -> str:
    deadline = time.monotonic() + timeout_s
    while not path.exists() or not path.read_text().strip():
        assert time.monotonic() < deadline, f"no {path}"
        time.sleep(0.02)
    return path.read_text()


def test_it_claims_starts_in_the_work_dir_with_logs_and_reports_the_exit(
    spawner: Opened, tmp_path: Path
) -> None:
    script = 'pwd; echo "$GREETING"; echo oops >&2; exit 3'
    channel = spawner.open(request(tmp_path, ["sh", "-c", script]))
    started = read(channel)
    assert started is not None and started["e"] == "started" and started["inherited_kib"] > 0
    end = read(channel)
    assert end is not None and (end["e"], end["code"]) == ("exit", 3)
    assert end["cpu_s"] >= 0 and end["maxrss_kib"] > 0
    assert (tmp_path / "claim").read_text() == "mine\n"
    assert (tmp_path / "stdout.log").read_text() == f"{tmp_path / 'work'}\nhi\n"
    assert (tmp_path / "stderr.log").read_text() == "oops\n"


def test_a_claimed_attempt_never_runs_again(spawner: Opened, tmp_path: Path) -> None:
    (tmp_path / "claim").write_text("someone else\n")
    channel = spawner.open(request(tmp_path, ["sh", "-c", "echo ran > ran"]))
    assert read(channel) == {"e": "claimed"}
    assert not (tmp_path / "work" / "ran").exists()
    assert (tmp_path / "claim").read_text() == "someone else\n"


def test_a_command_that_cannot_start_is_refused_as_a_shell_would(
    spawner: Opened, tmp_path: Path
) -> None:
    missing = spawner.open(request(tmp_path / "a", ["no-such-command-anywhere"]))
    answer = read(missing)
    assert answer is not None and (answer["e"], answer["code"]) == ("refused", 127)
    assert "command not found" in (tmp_path / "a" / "stderr.log").read_text()
    script = tmp_path / "not-executable"
    script.write_text("#!/bin/sh\n")
    denied = spawner.open(request(tmp_path / "b", [str(script)]))
    answer = read(denied)
    assert answer is not None and (answer["code"], answer["verdict"]) == (126, "exited")


def test_a_stopped_commands_stragglers_die_with_its_leader(spawner: Opened, tmp_path: Path) -> None:
    # the leader leaves a background child in its group and exits on SIGTERM
    script = "sleep 60 & echo $! > child; trap 'exit 143' TERM; while :; do sleep 0.05; done"
    channel = spawner.open(request(tmp_path, ["sh", "-c", script]))
    started = read(channel)
    assert started is not None
    child = int(wait_file(tmp_path / "work" / "child"))
    channel.send("stop")
    os.killpg(started["pid"], signal.SIGTERM)
    end = read(channel)
    assert end is not None and end["code"] == 143
    wait_dead(child)


def test_a_channel_closed_by_the_worker_kills_its_command(spawner: Opened, tmp_path: Path) -> None:
    channel = spawner.open(request(tmp_path, ["sleep", "60"]))
    started = read(channel)
    assert started is not None
    channel.close()  # the thread that waited for it died
    wait_dead(started["pid"])


#: Starts a spawner and a command under it, prints the command's pid, then waits to be killed.
OWNER = """
import sys, json, time
from stormproof.executors._spawner import Spawner
s = Spawner()
c = s.open(json.loads(sys.argv[1]))
print(json.dumps({"pid": c.read()["pid"], "spawner": s.proc.pid}), flush=True)
time.sleep(120)
"""


def test_kill_9_of_its_owner_kills_the_commands_and_the_spawner_exits(tmp_path: Path) -> None:
    req = request(tmp_path, ["sh", "-c", "sleep 60 & sleep 60"])
    owner = subprocess.Popen(
        [sys.executable, "-c", OWNER, json.dumps(req)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert owner.stdout is not None
        pids = json.loads(owner.stdout.readline())
        owner.stdout.close()
        assert alive(pids["pid"]) and alive(pids["spawner"])
        owner.kill()  # kill -9: as a Dask worker killed under its attempts
        owner.wait()
        wait_dead(pids["pid"])
        wait_dead(pids["spawner"])
    finally:
        owner.kill()
        owner.wait()


def test_kill_9_of_the_spawner_is_an_end_the_worker_reads(spawner: Opened, tmp_path: Path) -> None:
    channel = spawner.open(request(tmp_path, ["sleep", "60"]))
    started = read(channel)
    assert started is not None
    spawner.proc.kill()
    assert read(channel) is None  # the worker's thread then kills the group and reports it
    os.killpg(started["pid"], signal.SIGKILL)
