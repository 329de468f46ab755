"""Stage 2 — equilibration: bring the system to the target temperature.

Reads ``$INPUT_PATH/system.json`` (from preprocessing), runs velocity-Verlet
steps with a simple velocity-rescaling thermostat (every ``RESCALE_EVERY``
steps the velocities are scaled to the target temperature exactly) and writes
the equilibrated system to ``$OUTPUT_PATH/system.json``.

Environment:
  INPUT_PATH           directory holding system.json                     [required]
  OUTPUT_PATH          directory to write system.json into               [required]
  EQUILIBRATION_STEPS  number of steps (default 800)                      [optional]
"""

from __future__ import annotations

import math
import time

import mdcore as md

DT = 0.005
RESCALE_EVERY = 10


def main() -> None:
    started = time.perf_counter()
    in_dir = md.env_dir("INPUT_PATH", must_exist=True)
    out_dir = md.env_dir("OUTPUT_PATH", must_exist=False)
    steps = md.env_int("EQUILIBRATION_STEPS", 800)
    system = md.load_system(in_dir, "data-preprocessing")
    target = system.params.get("temperature", 1.0)
    if not isinstance(target, (int, float)) or not target > 0:
        md.fail(f"{in_dir / 'system.json'}: params.temperature must be a positive number")
    n = system.n
    md.say(f"equilibrating {n} particles at T={target} for {steps} steps (dt={DT})")

    forces = md.Forces(system)
    potential = forces.compute()
    report_every = max(steps // 8, 1)
    temperature = md.temperature_of(md.velocities(system))
    for step in range(1, steps + 1):
        potential = md.verlet_step(system, forces, DT)
        if step % RESCALE_EVERY == 0 or step == steps:
            temperature = md.temperature_of(md.velocities(system))
            factor = math.sqrt(target / temperature)
            system.vx = [v * factor for v in system.vx]
            system.vy = [v * factor for v in system.vy]
            system.vz = [v * factor for v in system.vz]
        if step % report_every == 0 or step == steps:
            md.say(
                f"step {step}/{steps} ({100 * step // steps}%) T={temperature:.3f} "
                f"U/N={potential / n:.4f} P={md.pressure(system, forces):.3f}"
            )

    system.params = {
        **system.params,
        "equilibration_steps": steps,
        "potential_per_particle": potential / n,
    }
    md.write_json(out_dir / "system.json", system.to_json())
    md.say(
        f"wrote {out_dir / 'system.json'} ({forces.rebuilds} neighbour-list rebuilds, "
        f"{time.perf_counter() - started:.1f}s)"
    )


if __name__ == "__main__":
    main()
