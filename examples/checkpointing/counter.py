"""Count to ``COUNT_TO``, slowly, and never lose more than a few steps: stormproof.task in use.

The smallest complete checkpointing task:

* every ``CHECKPOINT_EVERY`` steps, and whenever stormproof asks (the
  workflow's ``checkpoint_interval``: the checkpoint signal, SIGUSR1 by
  default, or the request file), it writes ``counter.json`` into
  ``$STORMPROOF_CHECKPOINT_DIR`` and commits it with ``task.commit()``, which
  returns once stormproof has saved it;
* on SIGTERM (the interruption notice) it checkpoints at once and exits 143;
* when stormproof restored a checkpoint (``task.restored()``) it carries on
  from the saved step.

``counter.json`` is written in place, not through a temporary file: only
*committed* checkpoints are ever restored, so a half-written one cannot be.

Environment: ``COUNT_TO`` (default 20), ``CHECKPOINT_EVERY`` (5),
``STEP_SECONDS`` (0.2). Outside stormproof (no checkpoint directory) it just
counts.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

from stormproof import task

stop = False


def on_sigterm(signum: int, frame: object) -> None:
    global stop
    stop = True  # only a flag: the loop checkpoints between two steps


def save(directory: Path, step: int) -> None:
    (directory / "counter.json").write_text(json.dumps({"step": step}))
    seq = task.commit({"step": step})
    print(f"checkpoint {seq} at step {step}", flush=True)


def main() -> int:
    total = int(os.environ.get("COUNT_TO", "20"))
    every = int(os.environ.get("CHECKPOINT_EVERY", "5"))
    pause = float(os.environ.get("STEP_SECONDS", "0.2"))
    try:
        directory: Path | None = task.checkpoint_dir()
    except task.CheckpointUsageError as e:
        print(f"counting without checkpoints: {e}", file=sys.stderr)
        directory = None

    step = 0
    if directory is not None and task.restored():
        step = json.loads((directory / "counter.json").read_text())["step"]
        print(f"resumed from step {step} (checkpoint {task.restored_seq()})", flush=True)
    task.on_checkpoint_request()
    signal.signal(signal.SIGTERM, on_sigterm)

    while step < total and not stop:
        time.sleep(pause)
        step += 1
        print(f"step {step}", flush=True)
        due = step % every == 0 or task.checkpoint_requested()
        if directory is not None and step < total and due:
            save(directory, step)
    if stop and step < total:
        if directory is not None:
            save(directory, step)
        return 143
    print(f"done: counted to {total}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
