"""Stage 3 — production run: constant-energy (NVE) MD, checkpointed.

Reads the equilibrated ``$INPUT_PATH/system.json``, runs ``SIMULATION_TIME``
velocity-Verlet steps, records the energies every ``SAMPLE_EVERY`` steps and the
positions every ``FRAME_EVERY`` steps, and writes ``$OUTPUT_PATH/trajectory.json``.

Checkpoints (when ``STORMPROOF_CHECKPOINT_DIR`` is set):

* every ``CHECKPOINT_EVERY`` steps it writes ``state.json`` there (temporary file,
  then rename) and commits it with ``commit_checkpoint()``;
* on SIGTERM (stormproof's interruption notice) or SIGINT it finishes the current
  step, checkpoints at once and exits 143 (130 for SIGINT);
* on start, if ``STORMPROOF_RESTORED=1`` and ``state.json`` is there, it carries on
  from the saved step and prints ``resumed from step N``.

Each run appends ``production step-range A..B`` to ``$STORMPROOF_DATA_DIR/production.log``
(the steps it computed, A exclusive) so the work redone after an interruption is visible.

Environment:
  INPUT_PATH                 directory holding system.json                  [required]
  OUTPUT_PATH                directory to write trajectory.json into        [required]
  SIMULATION_TIME            number of steps (default 2000)                 [optional]
  SAMPLE_EVERY               energy sample interval, steps (default 10)     [optional]
  FRAME_EVERY                position frame interval, steps (default 50)    [optional]
  CHECKPOINT_EVERY           checkpoint interval, steps (default 200)       [optional]
  STORMPROOF_CHECKPOINT_DIR  where to write state.json                      [set by stormproof]
  STORMPROOF_RESTORED        "1" when a checkpoint was restored there       [set by stormproof]
  STORMPROOF_COMMIT          "cli": commit with `stormproof checkpoint commit`;
                             otherwise by writing the marker file .commit   [optional]
  STORMPROOF_DATA_DIR        where production.log goes                      [set by stormproof]
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import mdcore as md

DT = 0.005
STATE_FORMAT = "stormproof-md-checkpoint/1"
TRAJECTORY_FORMAT = "stormproof-md-trajectory/1"

_stop_signal: int | None = None


def _on_signal(signum: int, _frame: object) -> None:
    # Only set a flag: the main loop checkpoints between two steps, never mid-step.
    global _stop_signal
    _stop_signal = signum


def commit_checkpoint(checkpoint_dir: Path, step: int) -> None:
    """Tell stormproof that ``checkpoint_dir`` now holds a complete checkpoint.

    The one place that knows how a commit is done. Run by stormproof (which
    sets ``STORMPROOF_ATTEMPT_ID``) with stormproof importable, it is
    ``stormproof.task.commit()``: it returns once the checkpoint is saved, so
    the next ``state.json`` never overwrites one being copied. Otherwise (run
    by hand, with no runtime to answer; or stormproof not installed where the
    task runs) it writes the bare marker file, which stormproof accepts too.
    """
    how = os.environ.get("STORMPROOF_COMMIT", "").strip()
    if how != "cli" and os.environ.get("STORMPROOF_ATTEMPT_ID", "").strip():
        try:
            from stormproof import task
        except ImportError:  # not installed where the task runs: the marker file below
            pass
        else:
            try:
                task.commit({"step": step}, timeout_s=120)
            except (task.CheckpointCommitFailed, task.CheckpointUsageError) as e:
                print(f"warning: checkpoint at step {step} not committed: {e}", file=sys.stderr)
            return
    if how == "cli":
        exe = shutil.which("stormproof")
        command = [exe] if exe else [sys.executable, "-m", "stormproof"]
        command += ["checkpoint", "commit"]
        try:
            result = subprocess.run(command, capture_output=True, text=True, timeout=120)
        except (OSError, subprocess.TimeoutExpired) as e:
            print(f"warning: checkpoint at step {step} not committed: {e}", file=sys.stderr)
            return
        if result.returncode != 0:
            print(
                f"warning: checkpoint at step {step} not committed: `{' '.join(command)}` "
                f"exited {result.returncode}: {result.stderr.strip()}",
                file=sys.stderr,
                flush=True,
            )
    else:
        md.write_text(checkpoint_dir / ".commit", f"{step}\n")


class Run:
    """The production run's state: the system plus everything recorded so far."""

    def __init__(self, system: md.System, total: int, input_digest: str):
        self.system = system
        self.total = total
        self.input_digest = input_digest
        self.step = 0
        self.samples: list[dict[str, float]] = []
        self.frames: list[dict[str, Any]] = []
        self.e0: float | None = None

    def to_state(self) -> dict[str, Any]:
        return {
            "format": STATE_FORMAT,
            "step": self.step,
            "total_steps": self.total,
            "input_sha256": self.input_digest,
            "e0": self.e0,
            "system": self.system.to_json(),
            "samples": self.samples,
            "frames": self.frames,
        }

    def restore(self, path: Path) -> None:
        state = md.read_json(path, "production checkpoint")
        if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
            md.fail(f"{path} is not a production checkpoint (expected format {STATE_FORMAT})")
        if state.get("input_sha256") != self.input_digest:
            md.fail(f"{path} was made from a different input system.json; refusing to resume")
        step = state.get("step")
        if not isinstance(step, int) or not 0 <= step <= self.total:
            md.fail(f"{path}: step {step!r} is not between 0 and SIMULATION_TIME={self.total}")
        samples, frames, e0 = state.get("samples"), state.get("frames"), state.get("e0")
        if not isinstance(samples, list) or not isinstance(frames, list):
            md.fail(f"{path}: 'samples' and 'frames' must be lists")
        if not isinstance(e0, (int, float)):
            md.fail(f"{path}: 'e0' (the energy at step 0) must be a number")
        self.system = md.System.from_json(state.get("system"), path)
        self.step = step
        self.samples = samples
        self.frames = frames
        self.e0 = float(e0)


def checkpoint(run: Run, checkpoint_dir: Path) -> None:
    md.write_json(checkpoint_dir / "state.json", run.to_state())
    commit_checkpoint(checkpoint_dir, run.step)
    md.say(f"checkpoint at step {run.step}")


def log_range(first: int, last: int) -> None:
    data_dir = os.environ.get("STORMPROOF_DATA_DIR", "").strip()
    if not data_dir:
        return
    Path(data_dir).mkdir(parents=True, exist_ok=True)
    fd = os.open(Path(data_dir) / "production.log", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"production step-range {first}..{last}\n".encode())
    finally:
        os.close(fd)


def sample(run: Run, forces: md.Forces, potential: float) -> float:
    s = run.system
    n = s.n
    kinetic = md.kinetic_energy(md.velocities(s))
    total = (kinetic + potential) / n
    run.samples.append(
        {
            "step": run.step,
            "kinetic": kinetic / n,
            "potential": potential / n,
            "total": total,
            "temperature": md.temperature_of(md.velocities(s)),
            "pressure": md.pressure(s, forces),
        }
    )
    return total


def add_frame(run: Run) -> None:
    s = run.system
    # 6 decimals (1e-6 sigma) is plenty for analysis and halves the file
    positions = [[round(c, 6) for c in axis] for axis in (s.x, s.y, s.z)]
    run.frames.append({"step": run.step, "positions": positions})


def main() -> None:
    started = time.perf_counter()
    in_dir = md.env_dir("INPUT_PATH", must_exist=True)
    out_dir = md.env_dir("OUTPUT_PATH", must_exist=False)
    total = md.env_int("SIMULATION_TIME", 2000)
    sample_every = md.env_int("SAMPLE_EVERY", 10)
    frame_every = md.env_int("FRAME_EVERY", 50)
    checkpoint_every = md.env_int("CHECKPOINT_EVERY", 200)
    raw_dir = os.environ.get("STORMPROOF_CHECKPOINT_DIR", "").strip()
    checkpoint_dir = Path(raw_dir) if raw_dir else None
    if checkpoint_dir is not None:
        checkpoint_dir.mkdir(parents=True, exist_ok=True)

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)

    input_file = in_dir / "system.json"
    system = md.load_system(in_dir, "equilibration")
    run = Run(system, total, hashlib.sha256(input_file.read_bytes()).hexdigest())
    state_file = checkpoint_dir / "state.json" if checkpoint_dir else None
    if os.environ.get("STORMPROOF_RESTORED", "").strip() == "1":
        if state_file is not None and state_file.is_file():
            run.restore(state_file)
            md.say(f"resumed from step {run.step}")
        else:
            print(
                f"warning: STORMPROOF_RESTORED=1 but no state.json in "
                f"{checkpoint_dir or '(STORMPROOF_CHECKPOINT_DIR unset)'}; starting from step 0",
                file=sys.stderr,
                flush=True,
            )
    first = run.step
    n = run.system.n
    md.say(f"production: {n} particles, NVE, steps {first}..{total}, dt={DT}")

    forces = md.Forces(run.system)
    potential = forces.compute()
    if run.e0 is None:  # a fresh start: record step 0
        run.e0 = sample(run, forces, potential)
        add_frame(run)
    report_every = max(total // 10, 1)
    try:
        while run.step < total and _stop_signal is None:
            potential = md.verlet_step(run.system, forces, DT)
            run.step += 1
            step = run.step
            if step % sample_every == 0 or step == total:
                sample(run, forces, potential)
            if step % frame_every == 0 or step == total:
                add_frame(run)
            if step % report_every == 0 or step == total:
                energy = (md.kinetic_energy(md.velocities(run.system)) + potential) / n
                md.say(
                    f"step {step}/{total} ({100 * step // total}%) E={energy:.5f} "
                    f"drift={energy - run.e0:+.2e}"
                )
            if checkpoint_dir is not None and step % checkpoint_every == 0 and step < total:
                checkpoint(run, checkpoint_dir)
        if _stop_signal is not None and run.step < total:
            name = signal.Signals(_stop_signal).name
            if checkpoint_dir is None:
                md.say(f"{name} at step {run.step}: no STORMPROOF_CHECKPOINT_DIR, progress lost")
            else:
                md.say(f"{name} at step {run.step}: checkpointing before exit")
                checkpoint(run, checkpoint_dir)
            raise SystemExit(128 + _stop_signal)
    finally:
        log_range(first, run.step)

    s = run.system
    energies = [x["total"] for x in run.samples]
    drift = energies[-1] - run.e0
    md.write_json(
        out_dir / "trajectory.json",
        {
            "format": TRAJECTORY_FORMAT,
            "n_particles": n,
            "box": s.box,
            "dt": DT,
            "steps": total,
            "sample_every": sample_every,
            "frame_every": frame_every,
            "params": s.params,
            "energy_drift": {
                "initial": run.e0,
                "final": energies[-1],
                "absolute": drift,
                "relative": drift / abs(run.e0),
                "max_deviation": max(abs(e - run.e0) for e in energies),
            },
            "samples": run.samples,
            "frames": run.frames,
            "final": s.to_json(),
        },
    )
    md.say(
        f"energy drift over {total} steps: {drift:+.2e} per particle "
        f"({drift / abs(run.e0):+.2e} relative)"
    )
    md.say(
        f"wrote {out_dir / 'trajectory.json'}: {len(run.samples)} samples, "
        f"{len(run.frames)} frames ({time.perf_counter() - started:.1f}s)"
    )


if __name__ == "__main__":
    main()
