"""How the command leaves: without tearing the interpreter down, unless that could lose work."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

PRELUDE = """
import atexit, sys, threading, time
from stormproof.cli.main import _leave
def mark(path, text):
    with open(path, "w") as fh:
        fh.write(text)
"""


def leave(script: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", PRELUDE + script], capture_output=True, text=True, timeout=60
    )


def test_it_skips_the_teardown_and_keeps_the_code_and_every_byte_of_output(
    tmp_path: Path,
) -> None:
    torn_down = tmp_path / "torn-down"
    done = leave(
        f"atexit.register(mark, {str(torn_down)!r}, 'yes')\n"
        "sys.stdout.write('x' * 200_000)\n"
        "sys.stderr.write('said\\n')\n"
        "_leave(3)\n"
    )
    assert done.returncode == 3
    assert done.stdout == "x" * 200_000 and done.stderr == "said\n"
    assert not torn_down.exists()  # exit handlers (the slow teardown) never ran


def test_a_thread_still_running_gets_the_normal_exit(tmp_path: Path) -> None:
    finished = tmp_path / "finished"
    done = leave(
        f"late = lambda: (time.sleep(0.3), mark({str(finished)!r}, 'ok'))\n"
        "threading.Thread(target=late).start()\n"
        "_leave(0)\n"
    )
    assert done.returncode == 0
    assert finished.read_text() == "ok"


def test_a_message_as_the_code_is_printed_and_exits_1() -> None:
    done = leave("_leave('stopped: see the log')\n")
    assert done.returncode == 1
    assert "stopped: see the log" in done.stderr
