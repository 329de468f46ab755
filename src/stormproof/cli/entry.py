"""The command's first lines: Ctrl-C and SIGTERM stop it cleanly from the very start.

Python turns SIGINT into ``KeyboardInterrupt`` wherever it lands: inside an import it is a
traceback, inside click it is ``Aborted!`` and exit code 1. Neither says what the user needs
to hear: that nothing was lost and the run can be resumed. So before anything else is
imported, both signals are made to leave with ``SystemExit(130)``, which every ``with`` and
``finally`` on the way out honours (the store's transaction is rolled back, the run's lock
released) and which prints no traceback. While a run is driven, the driver installs its own
handlers (stop launching, record the stop, exit 130) and puts these back afterwards.

This module imports nothing of stormproof's but the command itself, and that only once the
handlers are in place.
"""

from __future__ import annotations

import contextlib
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
    with contextlib.suppress(OSError, ValueError):  # no stderr to say it on
        print(f"stormproof: stopped by {name}; nothing was lost", file=sys.stderr, flush=True)
    raise SystemExit(EXIT_STOPPED)
