"""An attempt's output in the home, as the dashboard's log pane reads it (``LocalLogs.tail``),
and which place ``attempt_logs`` picks for a run (the S3 side: ``tests/aws``)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from stormproof.errors import StormproofError
from stormproof.runtime.attempt_logs import LocalLogs, attempt_logs
from stormproof.runtime.home import Home

RUN, TASK = "r1", "talk"


@pytest.fixture
def home(tmp_path: Path) -> Home:
    h = Home(tmp_path / ".stormproof")
    h.attempt_dir(RUN, TASK, 1).mkdir(parents=True)
    return h


def local(home: Home) -> LocalLogs:
    logs = attempt_logs(home, RUN, {"executor": "local"}, TASK, 1)
    assert isinstance(logs, LocalLogs)
    assert logs.folder == home.attempt_dir(RUN, TASK, 1)
    return logs


def test_the_tail_is_the_last_bytes_or_the_whole_of_a_shorter_stream(home: Home) -> None:
    (home.attempt_dir(RUN, TASK, 1) / "stdout.log").write_bytes(b"0123456789")
    logs = local(home)
    assert logs.tail("stdout", 4) == b"6789"
    assert logs.tail("stdout", 100) == b"0123456789"
    assert logs.tail("stderr", 4) == b""  # nothing printed there: no file


def test_a_run_with_no_executor_recorded_is_read_from_the_home(home: Home) -> None:
    assert isinstance(attempt_logs(home, RUN, {}, TASK, 1), LocalLogs)


def test_a_log_replaced_by_a_link_is_not_followed(home: Home, tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("not for the logs\n")
    os.symlink(secret, home.attempt_dir(RUN, TASK, 1) / "stdout.log")
    with pytest.raises(StormproofError, match="is a symbolic link"):
        local(home).tail("stdout", 100)


def test_a_log_that_is_not_a_file_is_named_with_the_fix(home: Home) -> None:
    (home.attempt_dir(RUN, TASK, 1) / "stdout.log").mkdir()
    for read in (lambda logs: logs.tail("stdout", 100), lambda logs: logs.read("stdout", 0)):
        with pytest.raises(StormproofError, match=r"stdout\.log is not a regular file; remove"):
            read(local(home))
