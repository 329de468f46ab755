"""Stage 1 — data preprocessing: build the initial Lennard-Jones system.

Places N particles on a simple cubic lattice in a periodic box, displaces them a
little at random (seeded), removes the worst overlaps by steepest-descent energy
minimisation, gives them Maxwell-Boltzmann velocities and writes
``$OUTPUT_PATH/system.json``.

Environment:
  OUTPUT_PATH  directory to write system.json into (created if missing)   [required]
  INPUT_PATH   directory that may hold params.json with any of
               {"n_particles": 200, "density": 0.8, "temperature": 1.0,
                "seed": 42, "jitter": 0.1, "max_iterations": 400}       [optional]
"""

from __future__ import annotations

import math
import os
import random
import time
from pathlib import Path
from typing import Any

import mdcore as md

DEFAULTS: dict[str, Any] = {
    "n_particles": 200,
    "density": 0.8,
    "temperature": 1.0,
    "seed": 42,
    "jitter": 0.1,
    "max_iterations": 400,
}
# name -> (type, lowest, highest)
LIMITS: dict[str, tuple[type, float, float]] = {
    "n_particles": (int, 8, 5000),
    "density": (float, 0.01, 1.2),
    "temperature": (float, 0.01, 10.0),
    "seed": (int, 0, 2**63),
    "jitter": (float, 0.0, 0.3),
    "max_iterations": (int, 0, 100_000),
}


def read_params() -> dict[str, Any]:
    params = dict(DEFAULTS)
    raw = os.environ.get("INPUT_PATH", "").strip()
    source = Path(raw) / "params.json" if raw else None
    if source is None or not source.is_file():
        md.say(f"no params.json in INPUT_PATH={raw or '(unset)'}; using the defaults")
        return params
    given = md.read_json(source, "preprocessing parameters")
    if not isinstance(given, dict):
        md.fail(f"{source} must hold a JSON object like {DEFAULTS}")
    for key, value in given.items():
        if key not in LIMITS:
            md.fail(f"{source}: unknown parameter {key!r}; known: {', '.join(LIMITS)}")
        kind, low, high = LIMITS[key]
        ok_type = isinstance(value, int) if kind is int else isinstance(value, (int, float))
        if isinstance(value, bool) or not ok_type or not low <= value <= high:
            what = "a whole number" if kind is int else "a number"
            md.fail(f"{source}: {key!r} must be {what} from {low:g} to {high:g}, got {value!r}")
        params[key] = kind(value)
    md.say(f"parameters from {source}: {given}")
    return params


def minimise(system: md.System, max_iterations: int) -> md.Forces:
    """Steepest descent with an adaptive step until the largest force is below 1."""
    forces = md.Forces(system)
    energy = forces.compute()
    step = 0.005
    for iteration in range(1, max_iterations + 1):
        fmax = math.sqrt(
            max(
                a * a + b * b + c * c
                for a, b, c in zip(forces.fx, forces.fy, forces.fz, strict=True)
            )
        )
        if iteration % 50 == 1:
            md.say(
                f"minimise iteration {iteration - 1}: U/N={energy / system.n:.4f} max|F|={fmax:.3f}"
            )
        if fmax < 1.0:
            break
        old = (system.x, system.y, system.z)
        scale = step / fmax
        box = system.box
        system.x = [(p + scale * f) % box for p, f in zip(system.x, forces.fx, strict=True)]
        system.y = [(p + scale * f) % box for p, f in zip(system.y, forces.fy, strict=True)]
        system.z = [(p + scale * f) % box for p, f in zip(system.z, forces.fz, strict=True)]
        trial = forces.compute()
        if trial < energy:
            energy = trial
            step = min(step * 1.2, 0.05)
        else:  # overshot: go back, take a smaller step
            system.x, system.y, system.z = old
            forces.compute()
            step *= 0.5
    md.say(f"minimised: U/N={energy / system.n:.4f} after {iteration} iterations")
    return forces


def main() -> None:
    started = time.perf_counter()
    out_dir = md.env_dir("OUTPUT_PATH", must_exist=False)
    params = read_params()
    rng = random.Random(params["seed"])
    n = params["n_particles"]
    box, positions = md.lattice(n, params["density"], params["jitter"], rng)
    if box <= 2 * (md.CUTOFF + md.SKIN):
        md.fail(
            f"box of {box:.2f} sigma is too small for the {md.CUTOFF} sigma cutoff: "
            "use more particles or a lower density"
        )
    md.say(f"lattice: {n} particles, density {params['density']}, box {box:.4f} sigma")
    velocities = md.maxwell_boltzmann(n, params["temperature"], rng)
    system = md.System(box, positions, velocities, params)
    forces = minimise(system, params["max_iterations"])
    system.params = {**params, "potential_per_particle": forces.potential / n}
    md.write_json(out_dir / "system.json", system.to_json())
    md.say(
        f"wrote {out_dir / 'system.json'}: T={md.temperature_of(md.velocities(system)):.3f} "
        f"({time.perf_counter() - started:.1f}s)"
    )


if __name__ == "__main__":
    main()
