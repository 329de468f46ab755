"""``stormproof checkpoint commit``: commit a checkpoint from a task written in any language.

The task-side twin of ``stormproof.task.commit()`` for shell scripts, Fortran
codes and anything else that can run a command. Run it inside an attempt of a
``checkpoint_enabled`` task, after the checkpoint's files are written to
``$STORMPROOF_CHECKPOINT_DIR``::

    stormproof checkpoint commit --meta '{"step": 1200}'

Exit codes are part of the contract, scripts branch on them: 0 the checkpoint
was saved (prints ``checkpoint N saved``), or handed over with
``--no-wait``; 1 the runtime could not save it, or did not answer within
``--timeout``; 2 bad usage (not in a checkpointed attempt, an empty
checkpoint directory, bad ``--meta`` or ``--timeout``).

The group is registered on the main CLI by ``cli/main.py``
(``cli.add_command(checkpoint)``); it needs nothing else from it.
"""

from __future__ import annotations

import contextlib
import json
import signal
from typing import Any, NoReturn

import click

from stormproof import task
from stormproof.checkpoints import protocol


@click.group(name="checkpoint")
def checkpoint() -> None:
    """Task-side checkpoint commands: run them inside an attempt of a checkpointed task."""


@checkpoint.command(name="commit")
@click.option(
    "--wait/--no-wait",
    default=True,
    show_default=True,
    help="Wait until stormproof has saved the checkpoint; with --no-wait, leave the files "
    "alone until $STORMPROOF_CHECKPOINT_DIR/.commit is gone.",
)
@click.option(
    "--timeout",
    default="10m",
    show_default=True,
    metavar="DURATION",
    help="How long to wait for the save, like 90s, 10m or 1h (exit 1 when it runs out).",
)
@click.option(
    "--meta",
    metavar="JSON",
    help="A JSON object recorded with the checkpoint, like '{\"step\": 1200}'.",
)
def commit(wait: bool, timeout: str, meta: str | None) -> None:
    """Commit the files in $STORMPROOF_CHECKPOINT_DIR as a checkpoint.

    Exit 0 when saved, 1 when the save failed or timed out, 2 on bad usage.
    """
    _ignore_checkpoint_signal()
    timeout_s = _parse_timeout(timeout)
    meta_obj = _parse_meta(meta)
    try:
        if not wait:
            task.commit(meta_obj, wait=False, timeout_s=timeout_s)
            click.echo("checkpoint committed; stormproof saves it in the background")
            return
        seq = task.commit(meta_obj, wait=True, timeout_s=timeout_s)
    except task.CheckpointUsageError as e:
        _fail(str(e), 2)
    except task.CheckpointCommitFailed as e:
        _fail(e.message, 1)
    click.echo(f"checkpoint {seq} saved")


def _ignore_checkpoint_signal() -> None:
    """Survive the checkpoint signal while committing.

    stormproof sends it to the attempt's whole process group, this command
    included, and Python's default for SIGUSR1 is to die: a request that
    arrives during a commit must not turn it into a failure.
    """
    signals = {protocol.DEFAULT_SIGNAL}
    # A bad STORMPROOF_CHECKPOINT_SIGNAL is the task's handler's problem, not the commit's.
    with contextlib.suppress(task.CheckpointUsageError):
        configured = task.checkpoint_signal()
        if configured is not None:
            signals.add(configured)
    for sig in signals:
        signal.signal(sig, signal.SIG_IGN)


def _parse_timeout(text: str) -> float:
    from stormproof.spec.model import parse_duration  # pydantic: load only for the CLI

    try:
        timeout_s = parse_duration(text)
    except ValueError as e:
        _fail(f"--timeout: {e}", 2)
    if timeout_s <= 0:
        _fail(f"--timeout must be more than 0, got {text!r}", 2)
    return timeout_s


def _parse_meta(text: str | None) -> dict[str, Any] | None:
    if text is None:
        return None
    try:
        meta = json.loads(text)
    except ValueError as e:
        _fail(f"--meta is not valid JSON ({e}): {text!r}", 2)
    if not isinstance(meta, dict):
        _fail(f"--meta must be a JSON object like '{{\"step\": 1200}}', got {text!r}", 2)
    return meta


def _fail(message: str, code: int) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    raise SystemExit(code)
