"""A tiny Lennard-Jones molecular dynamics engine shared by the example's stages.

Standard library only. Reduced LJ units throughout (sigma = epsilon = mass = 1,
k_B = 1), a cubic periodic box, the potential truncated at ``CUTOFF`` and shifted
so that it is zero there, and a Verlet neighbour list (cutoff + skin) rebuilt
whenever a particle may have moved far enough to matter. Small, slow and honest:
velocity Verlet conserves the energy to a few parts in 10^4 over thousands of
steps.

The scripts share these conventions:

* every stage reads ``INPUT_PATH`` / writes ``OUTPUT_PATH`` (directories, like
  the recipe's ``/mnt/efs/...`` paths);
* a system is one JSON document (``system.json``): box, positions, velocities
  and the parameters it was made with;
* every file is written to a temporary name and renamed, so a stage killed
  half-way never leaves a half-written file for the next stage;
* bad input ends the process with a one-line ``error: ...`` on stderr and a
  non-zero exit code, never a traceback.
"""

from __future__ import annotations

import json
import math
import os
import random
import sys
from pathlib import Path
from typing import Any, NoReturn

CUTOFF = 2.5
SKIN = 0.3
FORMAT = "stormproof-md/1"

Vec = list[float]


def fail(message: str, code: int = 1) -> NoReturn:
    print(f"error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(code)


def say(message: str) -> None:
    # stdout is a log file under stormproof, so flush every line
    print(message, flush=True)


# --- environment -----------------------------------------------------------------


def env_dir(name: str, *, must_exist: bool) -> Path:
    value = os.environ.get(name, "").strip()
    if not value:
        fail(f"{name} is not set (it should name a directory)", 2)
    path = Path(value)
    if must_exist and not path.is_dir():
        fail(f"{name}={value} is not a directory", 2)
    return path


def env_int(name: str, default: int, *, minimum: int = 1) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        # accept 1000000, 1e6 and 1_000_000; reject 2.5
        value = float(raw.replace("_", ""))
    except ValueError:
        fail(f"{name}={raw!r} is not a whole number", 2)
    if not value.is_integer() or value < minimum:
        fail(f"{name}={raw!r} must be a whole number >= {minimum}", 2)
    return int(value)


# --- files -----------------------------------------------------------------------


def write_json(path: Path, data: Any, *, indent: int | None = None) -> None:
    """Write ``data`` to ``path`` atomically (temporary file, fsync, rename)."""
    write_text(path, json.dumps(data, indent=indent) + "\n")


def write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_json(path: Path, what: str) -> Any:
    if not path.is_file():
        fail(f"{path} not found ({what})")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        fail(f"{path} is not readable JSON ({what}): {e}")


def _floats(name: str, value: Any, n: int, source: Path) -> Vec:
    if (
        not isinstance(value, list)
        or len(value) != n
        or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in value)
    ):
        fail(f"{source}: '{name}' must be a list of {n} finite numbers")
    return [float(v) for v in value]


class System:
    """N particles in a periodic cube: positions and velocities as flat lists per axis."""

    def __init__(self, box: float, pos: list[Vec], vel: list[Vec], params: dict[str, Any]):
        self.box = box
        self.x, self.y, self.z = pos
        self.vx, self.vy, self.vz = vel
        self.params = params

    @property
    def n(self) -> int:
        return len(self.x)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "n_particles": self.n,
            "box": self.box,
            "params": self.params,
            "positions": [self.x, self.y, self.z],
            "velocities": [self.vx, self.vy, self.vz],
        }

    @classmethod
    def from_json(cls, data: Any, source: Path) -> System:
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            fail(f'{source} is not a system file (expected "format": "{FORMAT}")')
        n = data.get("n_particles")
        box = data.get("box")
        if not isinstance(n, int) or n < 2:
            fail(f"{source}: 'n_particles' must be a whole number >= 2")
        if not isinstance(box, (int, float)) or not box > 2 * (CUTOFF + SKIN):
            fail(f"{source}: 'box' must be a number > {2 * (CUTOFF + SKIN)}")
        pos, vel = data.get("positions"), data.get("velocities")
        if not (
            isinstance(pos, list) and len(pos) == 3 and isinstance(vel, list) and len(vel) == 3
        ):
            fail(f"{source}: 'positions' and 'velocities' must each be 3 lists (x, y, z)")
        p = [_floats(f"positions[{k}]", pos[k], n, source) for k in range(3)]
        v = [_floats(f"velocities[{k}]", vel[k], n, source) for k in range(3)]
        params = data.get("params")
        return cls(float(box), p, v, params if isinstance(params, dict) else {})


def load_system(directory: Path, stage_before: str) -> System:
    path = directory / "system.json"
    if not path.is_file():
        fail(f"no system.json in {directory} — did the {stage_before} stage run?")
    return System.from_json(read_json(path, f"written by {stage_before}"), path)


# --- physics ---------------------------------------------------------------------


def lattice(n: int, density: float, jitter: float, rng: random.Random) -> tuple[float, list[Vec]]:
    """``n`` particles on the first sites of a simple cubic lattice, slightly displaced."""
    box = (n / density) ** (1.0 / 3.0)
    side = math.ceil(n ** (1.0 / 3.0) - 1e-9)
    a = box / side
    x: Vec = []
    y: Vec = []
    z: Vec = []
    for i in range(side):
        for j in range(side):
            for k in range(side):
                if len(x) == n:
                    break
                x.append(((i + 0.5) * a + rng.uniform(-jitter, jitter)) % box)
                y.append(((j + 0.5) * a + rng.uniform(-jitter, jitter)) % box)
                z.append(((k + 0.5) * a + rng.uniform(-jitter, jitter)) % box)
    return box, [x, y, z]


def maxwell_boltzmann(n: int, temperature: float, rng: random.Random) -> list[Vec]:
    vel = [[rng.gauss(0.0, math.sqrt(temperature)) for _ in range(n)] for _ in range(3)]
    for v in vel:  # no drift of the whole box
        mean = sum(v) / n
        for i in range(n):
            v[i] -= mean
    scale = math.sqrt(temperature / temperature_of(vel))
    return [[c * scale for c in v] for v in vel]


def kinetic_energy(vel: list[Vec]) -> float:
    return 0.5 * sum(c * c for v in vel for c in v)


def temperature_of(vel: list[Vec]) -> float:
    n = len(vel[0])
    return 2.0 * kinetic_energy(vel) / (3 * n - 3)  # 3 degrees of freedom fixed by momentum


class Forces:
    """Lennard-Jones forces over a Verlet neighbour list."""

    def __init__(self, system: System):
        self.s = system
        self.rc2 = CUTOFF * CUTOFF
        self.rl2 = (CUTOFF + SKIN) ** 2
        self.shift = 4.0 * (CUTOFF**-12 - CUTOFF**-6)
        n = system.n
        self.fx = [0.0] * n
        self.fy = [0.0] * n
        self.fz = [0.0] * n
        self.pairs: list[tuple[int, int]] = []
        self.ref: list[Vec] = [[], [], []]
        self.rebuilds = 0
        self.potential = 0.0
        self.virial = 0.0
        self.rebuild()

    def rebuild(self) -> None:
        s = self.s
        box, half = s.box, 0.5 * s.box
        x, y, z = s.x, s.y, s.z
        rl2 = self.rl2
        pairs = []
        for i in range(s.n - 1):
            xi, yi, zi = x[i], y[i], z[i]
            for j in range(i + 1, s.n):
                dx = xi - x[j]
                if dx > half:
                    dx -= box
                elif dx < -half:
                    dx += box
                dy = yi - y[j]
                if dy > half:
                    dy -= box
                elif dy < -half:
                    dy += box
                dz = zi - z[j]
                if dz > half:
                    dz -= box
                elif dz < -half:
                    dz += box
                if dx * dx + dy * dy + dz * dz < rl2:
                    pairs.append((i, j))
        self.pairs = pairs
        self.ref = [x[:], y[:], z[:]]
        self.rebuilds += 1

    def _stale(self) -> bool:
        """True if some particle moved more than half the skin since the last rebuild."""
        s = self.s
        box, half = s.box, 0.5 * s.box
        limit = (0.5 * SKIN) ** 2
        rx, ry, rz = self.ref
        for i in range(s.n):
            d2 = 0.0
            for d in (s.x[i] - rx[i], s.y[i] - ry[i], s.z[i] - rz[i]):
                if d > half:
                    d -= box
                elif d < -half:
                    d += box
                d2 += d * d
            if d2 > limit:
                return True
        return False

    def compute(self) -> float:
        """Fill fx, fy, fz; return the potential energy."""
        if self._stale():
            self.rebuild()
        s = self.s
        box, half = s.box, 0.5 * s.box
        x, y, z = s.x, s.y, s.z
        n = s.n
        fx = [0.0] * n
        fy = [0.0] * n
        fz = [0.0] * n
        rc2 = self.rc2
        pe = 0.0
        vir = 0.0
        inside = 0
        for i, j in self.pairs:
            dx = x[i] - x[j]
            if dx > half:
                dx -= box
            elif dx < -half:
                dx += box
            dy = y[i] - y[j]
            if dy > half:
                dy -= box
            elif dy < -half:
                dy += box
            dz = z[i] - z[j]
            if dz > half:
                dz -= box
            elif dz < -half:
                dz += box
            r2 = dx * dx + dy * dy + dz * dz
            if r2 < rc2:
                ir2 = 1.0 / r2
                ir6 = ir2 * ir2 * ir2
                pe += ir6 * (ir6 - 1.0)
                ff = ir6 * (ir6 - 0.5) * ir2  # F/r, in units of 48 epsilon
                vir += ff * r2
                inside += 1
                fxi = ff * dx
                fyi = ff * dy
                fzi = ff * dz
                fx[i] += fxi
                fy[i] += fyi
                fz[i] += fzi
                fx[j] -= fxi
                fy[j] -= fyi
                fz[j] -= fzi
        self.fx = [48.0 * f for f in fx]
        self.fy = [48.0 * f for f in fy]
        self.fz = [48.0 * f for f in fz]
        self.virial = 48.0 * vir
        self.potential = 4.0 * pe - inside * self.shift
        return self.potential


def verlet_step(s: System, forces: Forces, dt: float) -> float:
    """One velocity-Verlet step (unit mass); return the new potential energy."""
    box = s.box
    h = 0.5 * dt
    fx, fy, fz = forces.fx, forces.fy, forces.fz
    vx = [v + h * f for v, f in zip(s.vx, fx, strict=True)]
    vy = [v + h * f for v, f in zip(s.vy, fy, strict=True)]
    vz = [v + h * f for v, f in zip(s.vz, fz, strict=True)]
    s.x = [(p + dt * v) % box for p, v in zip(s.x, vx, strict=True)]
    s.y = [(p + dt * v) % box for p, v in zip(s.y, vy, strict=True)]
    s.z = [(p + dt * v) % box for p, v in zip(s.z, vz, strict=True)]
    pe = forces.compute()
    s.vx = [v + h * f for v, f in zip(vx, forces.fx, strict=True)]
    s.vy = [v + h * f for v, f in zip(vy, forces.fy, strict=True)]
    s.vz = [v + h * f for v, f in zip(vz, forces.fz, strict=True)]
    return pe


def velocities(s: System) -> list[Vec]:
    return [s.vx, s.vy, s.vz]


def pressure(s: System, forces: Forces) -> float:
    volume = s.box**3
    return (2.0 * kinetic_energy(velocities(s)) + forces.virial) / (3.0 * volume)
