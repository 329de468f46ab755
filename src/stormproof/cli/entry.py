"""The command's first lines: Ctrl-C and SIGTERM stop it cleanly from the very start.

Python turns SIGINT into ``KeyboardInterrupt`` wherever it lands: inside an import it is a
traceback, inside click it is ``Aborted!`` and exit code 1. Neither says what the user needs
to hear: that nothing was lost and the run can be resumed. So before anything else is
imported, both signals are made to leave at once with exit code 130, after a line that says
so. At once, with ``os._exit``, not by raising ``SystemExit``: an exception raised by a
signal handler surfaces wherever the interpreter happens to be, and some places turn it into
another one (Python 3.11 wraps anything raised while a class body's ``__set_name__`` runs, as
in an import, in a ``RuntimeError``: a traceback again). Leaving at once is what ``kill -9``
does, and every part of stormproof is built to survive that: SQLite drops an unfinished
transaction, the OS releases the run's lock, attempts and their shim live on. While a run is
driven, the driver installs its own handlers (stop launching, record the stop, exit 130)
and puts these back afterwards.

This module imports nothing of stormproof's but the command itself, and that only once the
handlers are in place.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from types import FrameType

#: The exit code of a command stopped by Ctrl-C or SIGTERM (as a shell reports SIGINT).
EXIT_STOPPED = 130


def main() -> None:
    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    from stormproof.cli.main import main as command

    command()


def _stop(signum: int, frame: FrameType | None) -> None:
    name = signal.Signals(signum).name
    with contextlib.suppress(OSError, ValueError):  # no stream to say it on
        sys.stdout.flush()
        print(f"stormproof: stopped by {name}; nothing was lost", file=sys.stderr, flush=True)
    os._exit(EXIT_STOPPED)
