"""Child process for the kill -9 test: save one checkpoint, saying when it starts and ends.

Usage: python -m tests.checkpoints._saver URL OPTIONS_JSON SOURCE SEQ
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from stormproof.checkpoints.open import open_checkpoint_store


def main() -> None:
    url, options, source, seq = sys.argv[1:5]
    store = open_checkpoint_store(url, Path.cwd(), storage_options=json.loads(options) or None)
    print("saving", flush=True)
    store.save("run", "sim", 2, int(seq), Path(source), time.time())
    print("saved", flush=True)
    print(f"peak_rss_kib {_peak_rss_kib()}", flush=True)


def _peak_rss_kib() -> int:
    """VmHWM: this process's peak RSS since exec (ru_maxrss would include the forked parent)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return -1


if __name__ == "__main__":
    main()
