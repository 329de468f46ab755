"""Stage 4 — trajectory analysis.

Reads ``$INPUT_PATH/trajectory.json`` (from the production run) and writes to
``$OUTPUT_PATH``:

* ``results.json``: mean and standard deviation of the energies, temperature and
  pressure, the standard error of each mean by block averaging, the energy
  drift, the radial distribution function g(r) and the static structure factor
  S(k) averaged over all frames, and the mean-squared displacement with the
  diffusion coefficient it gives;
* ``report.txt``: the same as a short text report, with g(r) drawn in ASCII.

Environment:
  INPUT_PATH   directory holding trajectory.json     [required]
  OUTPUT_PATH  directory to write the results into   [required]
"""

from __future__ import annotations

import cmath
import itertools
import math
import statistics
import time
from pathlib import Path
from typing import Any

import mdcore as md

TRAJECTORY_FORMAT = "stormproof-md-trajectory/1"
BIN_WIDTH = 0.05
SK_MAX_INDEX = 8  # S(k) up to k = 8 * 2 pi / box, past the main peak near k = 7
QUANTITIES = ("total", "potential", "kinetic", "temperature", "pressure")


def load_trajectory(in_dir: Path) -> dict[str, Any]:
    path = in_dir / "trajectory.json"
    if not path.is_file():
        md.fail(f"no trajectory.json in {in_dir} — did the production-run stage finish?")
    data = md.read_json(path, "written by production-run")
    if not isinstance(data, dict) or data.get("format") != TRAJECTORY_FORMAT:
        md.fail(f'{path} is not a trajectory (expected "format": "{TRAJECTORY_FORMAT}")')
    n, box = data.get("n_particles"), data.get("box")
    samples, frames = data.get("samples"), data.get("frames")
    if not isinstance(n, int) or n < 2 or not isinstance(box, (int, float)) or box <= 0:
        md.fail(f"{path}: 'n_particles' and 'box' must be positive numbers")
    if not isinstance(samples, list) or len(samples) < 2:
        md.fail(f"{path}: needs at least 2 energy samples, found {len(samples or [])}")
    for k, s in enumerate(samples):
        if not isinstance(s, dict) or not all(
            isinstance(s.get(q), (int, float)) for q in QUANTITIES
        ):
            md.fail(f"{path}: samples[{k}] must have numbers for {', '.join(QUANTITIES)}")
    if not isinstance(frames, list) or not frames:
        md.fail(f"{path}: has no position frames")
    for k, f in enumerate(frames):
        pos = f.get("positions") if isinstance(f, dict) else None
        if not (
            isinstance(pos, list)
            and len(pos) == 3
            and all(isinstance(c, list) and len(c) == n for c in pos)
        ):
            md.fail(f"{path}: frames[{k}].positions must be 3 lists of {n} numbers")
    return data


def block_error(values: list[float], blocks: int = 5) -> float:
    """Standard error of the mean from ``blocks`` contiguous blocks (correlations included)."""
    size = len(values) // blocks
    if size < 1:
        return float("nan")
    means = [statistics.fmean(values[b * size : (b + 1) * size]) for b in range(blocks)]
    return statistics.stdev(means) / math.sqrt(blocks)


def rdf(frames: list[dict[str, Any]], n: int, box: float) -> tuple[list[float], list[float]]:
    """g(r) from 0 to box/2, averaged over the frames, minimum-image distances."""
    r_max = 0.5 * box
    bins = int(r_max / BIN_WIDTH)
    hist = [0] * bins
    half = 0.5 * box
    for frame in frames:
        x, y, z = frame["positions"]
        for i in range(n - 1):
            xi, yi, zi = x[i], y[i], z[i]
            for j in range(i + 1, n):
                dx = abs(xi - x[j])
                if dx > half:
                    dx = box - dx
                dy = abs(yi - y[j])
                if dy > half:
                    dy = box - dy
                dz = abs(zi - z[j])
                if dz > half:
                    dz = box - dz
                r = math.sqrt(dx * dx + dy * dy + dz * dz)
                if r < r_max:
                    k = int(r / BIN_WIDTH)
                    if k < bins:
                        hist[k] += 2
    density = n / box**3
    radii, g = [], []
    for k in range(bins):
        lo, hi = k * BIN_WIDTH, (k + 1) * BIN_WIDTH
        shell = 4.0 / 3.0 * math.pi * (hi**3 - lo**3)
        radii.append(round(lo + 0.5 * BIN_WIDTH, 4))
        g.append(hist[k] / (len(frames) * n * density * shell))
    return radii, g


def diffusion(frames: list[dict[str, Any]], n: int, box: float, dt: float) -> dict[str, Any]:
    """Mean-squared displacement over all time origins, and D from its slope (Einstein)."""
    steps = [f["step"] for f in frames]
    if len(frames) < 3 or any(b <= a for a, b in itertools.pairwise(steps)):
        return {"lag_time": [], "msd": [], "D": None}
    half = 0.5 * box
    # unwrap the periodic positions frame by frame (frames are far less than box/2 apart)
    unwrapped = [[list(map(float, axis)) for axis in frames[0]["positions"]]]
    for before, frame in itertools.pairwise(frames):
        current = []
        for k in range(3):
            axis = []
            for i in range(n):
                d = frame["positions"][k][i] - before["positions"][k][i]
                if d > half:
                    d -= box
                elif d < -half:
                    d += box
                axis.append(unwrapped[-1][k][i] + d)
            current.append(axis)
        unwrapped.append(current)
    sums: dict[int, float] = {}
    counts: dict[int, int] = {}
    for a in range(len(frames)):
        xa, ya, za = unwrapped[a]
        for b in range(a + 1, len(frames)):
            xb, yb, zb = unwrapped[b]
            lag = steps[b] - steps[a]
            total = 0.0
            for i in range(n):
                dx, dy, dz = xb[i] - xa[i], yb[i] - ya[i], zb[i] - za[i]
                total += dx * dx + dy * dy + dz * dz
            sums[lag] = sums.get(lag, 0.0) + total / n
            counts[lag] = counts.get(lag, 0) + 1
    lags = sorted(sums)
    times = [lag * dt for lag in lags]
    msd = [sums[lag] / counts[lag] for lag in lags]
    # fit the diffusive regime: lags between 20% and 50% of the longest (enough origins)
    fit = [
        (t, m) for t, m in zip(times, msd, strict=True) if 0.2 * times[-1] <= t <= 0.5 * times[-1]
    ]
    d_coeff = None
    if len(fit) >= 2:
        tm = statistics.fmean(t for t, _ in fit)
        mm = statistics.fmean(m for _, m in fit)
        slope = sum((t - tm) * (m - mm) for t, m in fit) / sum((t - tm) ** 2 for t, _ in fit)
        d_coeff = slope / 6.0
    return {"lag_time": times, "msd": msd, "D": d_coeff}


def structure_factor(
    frames: list[dict[str, Any]], n: int, box: float, max_index: int = SK_MAX_INDEX
) -> tuple[list[float], list[float]]:
    """Static structure factor S(k) = <|sum_j exp(i k.r_j)|^2> / N, averaged over shells of |k|.

    k runs over the box's reciprocal lattice, k = 2 pi (nx, ny, nz) / box with
    |n| <= ``max_index``; k and -k give the same |rho_k|^2, so only half are summed.
    """
    vectors = [
        (a, b, c)
        for a in range(0, max_index + 1)
        for b in range(-max_index, max_index + 1)
        for c in range(-max_index, max_index + 1)
        if 0 < a * a + b * b + c * c <= max_index * max_index
        and (a > 0 or b > 0 or (b == 0 and c > 0))
    ]
    unit = 2.0 * math.pi / box
    sums: dict[int, float] = {}
    counts: dict[int, int] = {}
    for frame in frames:
        # phase[axis][m + max_index][j] = exp(i m 2 pi x_j / box), by repeated multiplication
        phase = []
        for axis in frame["positions"]:
            base = [cmath.exp(1j * unit * x) for x in axis]
            powers = {0: [1 + 0j] * n}
            for m in range(1, max_index + 1):
                powers[m] = [p * b for p, b in zip(powers[m - 1], base, strict=True)]
                powers[-m] = [p.conjugate() for p in powers[m]]
            phase.append(powers)
        px, py, pz = phase
        for a, b, c in vectors:
            rho = sum(u * v * w for u, v, w in zip(px[a], py[b], pz[c], strict=True))
            key = a * a + b * b + c * c
            sums[key] = sums.get(key, 0.0) + (rho.real**2 + rho.imag**2) / n
            counts[key] = counts.get(key, 0) + 1
    shells = sorted(sums)
    return [round(unit * math.sqrt(k2), 4) for k2 in shells], [
        sums[k2] / counts[k2] for k2 in shells
    ]


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def report(data: dict[str, Any], results: dict[str, Any]) -> str:
    lines = [
        "Molecular dynamics — trajectory analysis",
        "=" * 40,
        f"particles: {data['n_particles']}   box: {data['box']:.4f} sigma   "
        f"steps: {data['steps']}   dt: {data['dt']}",
        f"samples: {results['n_samples']}   frames: {results['n_frames']}",
        "",
        f"{'quantity':<14}{'mean':>12}{'std':>12}",
    ]
    for q in QUANTITIES:
        s = results["observables"][q]
        lines.append(f"{q:<14}{s['mean']:>12.5f}{s['std']:>12.5f}")
    e = results["observables"]["total"]
    lines += [
        "",
        f"mean total energy: {e['mean']:.5f} ± {e['sem']:.5f} per particle (block average)",
        f"energy drift: {results['energy_drift']['relative']:+.2e} relative",
        f"g(r) first peak: r = {results['rdf']['first_peak_r']:.3f} sigma, "
        f"g = {results['rdf']['first_peak_g']:.3f}",
        f"S(k) main peak: k = {_fmt(results['structure_factor']['peak_k'])} / sigma, "
        f"S = {_fmt(results['structure_factor']['peak_S'])}",
        f"diffusion coefficient (MSD slope / 6): {_fmt(results['diffusion']['D'])} sigma^2/tau",
        "",
        "g(r)",
    ]
    radii, g = results["rdf"]["r"], results["rdf"]["g"]
    for k in range(0, len(radii), 2):
        if radii[k] < 0.8:
            continue
        lines.append(f"{radii[k]:5.2f} {g[k]:5.2f} " + "#" * round(20 * g[k]))
    return "\n".join(lines) + "\n"


def main() -> None:
    started = time.perf_counter()
    in_dir = md.env_dir("INPUT_PATH", must_exist=True)
    out_dir = md.env_dir("OUTPUT_PATH", must_exist=False)
    data = load_trajectory(in_dir)
    samples, frames = data["samples"], data["frames"]
    n, box = data["n_particles"], float(data["box"])
    md.say(f"analysing {len(samples)} energy samples and {len(frames)} frames of {n} particles")

    observables = {}
    for q in QUANTITIES:
        values = [float(s[q]) for s in samples]
        observables[q] = {
            "mean": statistics.fmean(values),
            "std": statistics.stdev(values),
            "sem": block_error(values),
        }
    e = observables["total"]
    md.say(f"total energy per particle: mean {e['mean']:.5f}, std {e['std']:.2e}")

    radii, g = rdf(frames, n, box)
    peak = max(range(len(g)), key=g.__getitem__)
    md.say(f"g(r) over {len(frames)} frames: first peak at r={radii[peak]:.3f}, g={g[peak]:.3f}")
    k, sk = structure_factor(frames, n, box)
    # skip the small-k shells: S(k) there is the compressibility, not the first peak
    sk_peak = max((i for i in range(len(k)) if k[i] > 4.0), key=sk.__getitem__, default=None)
    if sk_peak is not None:
        md.say(f"S(k) over {len(k)} shells: main peak at k={k[sk_peak]:.3f}, S={sk[sk_peak]:.3f}")
    msd = diffusion(frames, n, box, float(data.get("dt", 0.005)))
    if msd["D"] is not None:
        md.say(f"mean-squared displacement over {len(msd['msd'])} lags: D={msd['D']:.4f}")
    results = {
        "n_particles": n,
        "n_samples": len(samples),
        "n_frames": len(frames),
        "observables": observables,
        "energy_drift": data.get("energy_drift", {}),
        "rdf": {
            "bin_width": BIN_WIDTH,
            "r": radii,
            "g": g,
            "first_peak_r": radii[peak],
            "first_peak_g": g[peak],
        },
        "structure_factor": {
            "k": k,
            "S": sk,
            "peak_k": k[sk_peak] if sk_peak is not None else None,
            "peak_S": sk[sk_peak] if sk_peak is not None else None,
        },
        "diffusion": msd,
    }
    md.write_json(out_dir / "results.json", results, indent=1)
    md.write_text(out_dir / "report.txt", report(data, results))
    md.say(
        f"wrote {out_dir / 'results.json'} and report.txt ({time.perf_counter() - started:.1f}s)"
    )


if __name__ == "__main__":
    main()
