"""The molecular-dynamics example's scripts, run directly as processes (no stormproof runtime).

One module-scoped pipeline (preprocess -> equilibrate -> production -> analyze) in a temporary
directory, sized down to a few seconds; the interruption tests reuse its equilibrated system and
compare against its uninterrupted production run, which a resumed run must match exactly.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

MD = Path(__file__).resolve().parents[2] / "examples" / "md"
STEPS = 600  # production steps for the tests (the workflow runs 2000)
CHECKPOINT_EVERY = 100


def md_env(**values: str | Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("STORMPROOF_")
        and k not in {"INPUT_PATH", "OUTPUT_PATH", "SIMULATION_TIME", "EQUILIBRATION_STEPS"}
    }
    env.update({k: str(v) for k, v in values.items()})
    return env


def run_script(name: str, **env: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(MD / name)],
        env=md_env(**env),
        capture_output=True,
        text=True,
        timeout=120,
    )


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result.stdout


def load(path: Path) -> Any:
    return json.loads(path.read_text())


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("md")
    data = root / "data"
    (data / "raw_data").mkdir(parents=True)
    (data / "raw_data" / "params.json").write_text(
        json.dumps({"n_particles": 200, "seed": 7, "max_iterations": 120})
    )
    out: dict[str, Any] = {"root": root, "data": data}
    out["preprocess"] = ok(
        run_script(
            "preprocess.py",
            INPUT_PATH=data / "raw_data",
            OUTPUT_PATH=data / "processed_data",
        )
    )
    out["equilibrate"] = ok(
        run_script(
            "equilibrate.py",
            INPUT_PATH=data / "processed_data",
            OUTPUT_PATH=data / "equilibration",
            EQUILIBRATION_STEPS="300",
        )
    )
    out["production"] = ok(
        run_script(
            "production.py",
            INPUT_PATH=data / "equilibration",
            OUTPUT_PATH=data / "production",
            SIMULATION_TIME=str(STEPS),
            CHECKPOINT_EVERY=str(CHECKPOINT_EVERY),
            STORMPROOF_CHECKPOINT_DIR=root / "checkpoint",
            STORMPROOF_DATA_DIR=data,
        )
    )
    out["analyze"] = ok(
        run_script("analyze.py", INPUT_PATH=data / "production", OUTPUT_PATH=data / "results")
    )
    return out


# --- the happy path ---------------------------------------------------------------------


@pytest.mark.slow
def test_preprocess_builds_a_lattice_system_from_params(pipeline: dict[str, Any]) -> None:
    assert "parameters from" in pipeline["preprocess"]
    system = load(pipeline["data"] / "processed_data" / "system.json")
    assert system["n_particles"] == 200
    assert system["params"]["seed"] == 7
    assert system["box"] == pytest.approx((200 / 0.8) ** (1 / 3))
    for axis in system["positions"]:
        assert len(axis) == 200
        assert all(0 <= c < system["box"] for c in axis)
    # minimisation removed the overlaps of the jittered lattice
    assert system["params"]["potential_per_particle"] < -5.0


@pytest.mark.slow
def test_equilibrate_reaches_the_target_temperature(pipeline: dict[str, Any]) -> None:
    assert "step 300/300 (100%)" in pipeline["equilibrate"]
    system = load(pipeline["data"] / "equilibration" / "system.json")
    velocities = system["velocities"]
    kinetic = 0.5 * sum(v * v for axis in velocities for v in axis)
    assert 2 * kinetic / (3 * 200 - 3) == pytest.approx(1.0, rel=1e-9)  # rescaled last step
    for axis in velocities:  # no drift of the box
        assert abs(sum(axis)) < 1e-9


@pytest.mark.slow
def test_production_conserves_energy_and_checkpoints(pipeline: dict[str, Any]) -> None:
    stdout = pipeline["production"]
    assert f"step {STEPS // 2}/{STEPS} (50%) E=" in stdout
    assert "energy drift over" in stdout
    trajectory = load(pipeline["data"] / "production" / "trajectory.json")
    assert [s["step"] for s in trajectory["samples"]] == list(range(0, STEPS + 1, 10))
    assert [f["step"] for f in trajectory["frames"]] == list(range(0, STEPS + 1, 50))
    assert abs(trajectory["energy_drift"]["relative"]) < 1e-3
    # a checkpoint every CHECKPOINT_EVERY steps, the last one committed before the end
    checkpoint = pipeline["root"] / "checkpoint"
    last = STEPS - CHECKPOINT_EVERY
    assert load(checkpoint / "state.json")["step"] == last
    assert (checkpoint / ".commit").read_text().strip() == str(last)
    assert not list(checkpoint.glob("*.tmp")) and not list(checkpoint.glob(".*.tmp"))
    log = (pipeline["data"] / "production.log").read_text().splitlines()
    assert log == [f"production step-range 0..{STEPS}"]


@pytest.mark.slow
def test_analyze_reports_liquid_structure(pipeline: dict[str, Any]) -> None:
    results = load(pipeline["data"] / "results" / "results.json")
    energy = results["observables"]["total"]
    assert energy["std"] < 1e-2 * abs(energy["mean"])
    assert 0.8 < results["observables"]["temperature"]["mean"] < 1.25
    rdf = results["rdf"]
    assert 1.0 <= rdf["first_peak_r"] <= 1.2
    assert 2.0 < rdf["first_peak_g"] < 3.5
    assert all(g == 0 for r, g in zip(rdf["r"], rdf["g"], strict=True) if r < 0.8)  # no overlaps
    far = [g for r, g in zip(rdf["r"], rdf["g"], strict=True) if r > 2.5]
    assert sum(far) / len(far) == pytest.approx(1.0, abs=0.15)
    assert 6.0 < results["structure_factor"]["peak_k"] < 8.0
    assert 0.01 < results["diffusion"]["D"] < 0.2
    report = (pipeline["data"] / "results" / "report.txt").read_text()
    assert "g(r) first peak" in report and "diffusion coefficient" in report


# --- interruption and resume --------------------------------------------------------------


def start_production(
    tmp: Path, pipeline: dict[str, Any], **extra: str | Path
) -> subprocess.Popen[str]:
    env = md_env(
        INPUT_PATH=pipeline["data"] / "equilibration",
        OUTPUT_PATH=tmp / "production",
        SIMULATION_TIME=str(STEPS),
        CHECKPOINT_EVERY=str(CHECKPOINT_EVERY),
        STORMPROOF_DATA_DIR=tmp,
        **extra,
    )
    return subprocess.Popen(
        [sys.executable, str(MD / "production.py")],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def terminate_after(process: subprocess.Popen[str], line_start: str) -> tuple[str, str]:
    """SIGTERM the process once it prints a line starting with ``line_start``."""
    assert process.stdout is not None
    seen = []
    for line in process.stdout:
        seen.append(line)
        if line.startswith(line_start):
            process.send_signal(signal.SIGTERM)
            break
    stdout, stderr = process.communicate(timeout=60)
    return "".join(seen) + stdout, stderr


@pytest.mark.slow
def test_sigterm_checkpoints_and_a_restored_run_resumes_exactly(
    pipeline: dict[str, Any], tmp_path: Path
) -> None:
    checkpoint = tmp_path / "checkpoint"
    process = start_production(tmp_path, pipeline, STORMPROOF_CHECKPOINT_DIR=checkpoint)
    stdout, stderr = terminate_after(process, "checkpoint at step 200")
    assert process.returncode == 143, stdout + stderr
    assert "SIGTERM at step" in stdout
    state = load(checkpoint / "state.json")
    stopped = state["step"]
    assert 200 <= stopped < STEPS
    assert (checkpoint / ".commit").read_text().strip() == str(stopped)
    assert f"checkpoint at step {stopped}" in stdout
    assert not (tmp_path / "production" / "trajectory.json").exists()

    resumed = run_script(
        "production.py",
        INPUT_PATH=pipeline["data"] / "equilibration",
        OUTPUT_PATH=tmp_path / "production",
        SIMULATION_TIME=str(STEPS),
        CHECKPOINT_EVERY=str(CHECKPOINT_EVERY),
        STORMPROOF_DATA_DIR=tmp_path,
        STORMPROOF_CHECKPOINT_DIR=checkpoint,
        STORMPROOF_RESTORED="1",
    )
    out = ok(resumed)
    assert out.splitlines()[0] == f"resumed from step {stopped}"
    assert f"step {STEPS}/{STEPS} (100%)" in out
    assert (tmp_path / "production.log").read_text().splitlines() == [
        f"production step-range 0..{stopped}",
        f"production step-range {stopped}..{STEPS}",
    ]
    # the interrupted-and-resumed trajectory is the uninterrupted one, bit for bit
    got = load(tmp_path / "production" / "trajectory.json")
    want = load(pipeline["data"] / "production" / "trajectory.json")
    assert got["final"] == want["final"]
    assert got["samples"] == want["samples"]
    assert got["frames"] == want["frames"]


@pytest.mark.slow
def test_sigterm_without_a_checkpoint_dir_exits_143_and_loses_progress(
    pipeline: dict[str, Any], tmp_path: Path
) -> None:
    process = start_production(tmp_path, pipeline)
    stdout, _ = terminate_after(process, f"step {STEPS // 10}/")
    assert process.returncode == 143
    assert "no STORMPROOF_CHECKPOINT_DIR, progress lost" in stdout
    (line,) = (tmp_path / "production.log").read_text().splitlines()
    assert line.startswith("production step-range 0..")


@pytest.mark.slow
def test_restored_flag_without_state_starts_from_zero(
    pipeline: dict[str, Any], tmp_path: Path
) -> None:
    result = run_script(
        "production.py",
        INPUT_PATH=pipeline["data"] / "equilibration",
        OUTPUT_PATH=tmp_path / "out",
        SIMULATION_TIME="20",
        STORMPROOF_CHECKPOINT_DIR=tmp_path / "empty",
        STORMPROOF_RESTORED="1",
        STORMPROOF_DATA_DIR=tmp_path,
    )
    assert "starting from step 0" in result.stderr
    assert "steps 0..20" in ok(result)


@pytest.mark.slow
def test_cli_commit_runs_stormproof_checkpoint_commit(
    pipeline: dict[str, Any], tmp_path: Path
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls.txt"
    fake = bin_dir / "stormproof"
    fake.write_text(  # records its arguments and whether state.json was in place
        "#!/bin/sh\n"
        'if [ -f "$STORMPROOF_CHECKPOINT_DIR/state.json" ]; then s=ready; else s=missing; fi\n'
        f'echo "$* $s" >> "{calls}"\n'
    )
    fake.chmod(0o755)
    checkpoint = tmp_path / "checkpoint"
    env = md_env(
        INPUT_PATH=pipeline["data"] / "equilibration",
        OUTPUT_PATH=tmp_path / "out",
        SIMULATION_TIME="40",
        CHECKPOINT_EVERY="10",
        STORMPROOF_CHECKPOINT_DIR=checkpoint,
        STORMPROOF_COMMIT="cli",
    )
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    result = subprocess.run(
        [sys.executable, str(MD / "production.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    ok(result)
    assert calls.read_text().splitlines() == ["checkpoint commit ready"] * 3
    assert not (checkpoint / ".commit").exists()
    assert load(checkpoint / "state.json")["step"] == 30


# --- bad input ---------------------------------------------------------------------------


def expect_error(result: subprocess.CompletedProcess[str], code: int, *words: str) -> None:
    assert result.returncode == code, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("error: ")
    for word in words:
        assert word in result.stderr


def test_preprocess_needs_output_path() -> None:
    expect_error(run_script("preprocess.py"), 2, "OUTPUT_PATH is not set")


@pytest.mark.parametrize(
    ("params", "words"),
    [
        ({"n_particles": "many"}, ["'n_particles' must be a whole number"]),
        ({"density": 5}, ["'density' must be a number from 0.01 to 1.2"]),
        ({"temprature": 1.0}, ["unknown parameter 'temprature'"]),
        ([1, 2], ["must hold a JSON object"]),
        ({"n_particles": 8}, ["too small for the 2.5 sigma cutoff"]),
    ],
)
def test_preprocess_rejects_bad_params(tmp_path: Path, params: Any, words: list[str]) -> None:
    (tmp_path / "params.json").write_text(json.dumps(params))
    result = run_script("preprocess.py", INPUT_PATH=tmp_path, OUTPUT_PATH=tmp_path / "out")
    expect_error(result, 1, *words)


def test_preprocess_rejects_unreadable_params(tmp_path: Path) -> None:
    (tmp_path / "params.json").write_text("{not json")
    result = run_script("preprocess.py", INPUT_PATH=tmp_path, OUTPUT_PATH=tmp_path / "out")
    expect_error(result, 1, "is not readable JSON")


def test_equilibrate_says_which_stage_is_missing(tmp_path: Path) -> None:
    result = run_script("equilibrate.py", INPUT_PATH=tmp_path, OUTPUT_PATH=tmp_path / "out")
    expect_error(result, 1, "no system.json", "data-preprocessing")


def test_equilibrate_rejects_a_file_that_is_not_a_system(tmp_path: Path) -> None:
    (tmp_path / "system.json").write_text(json.dumps({"format": "something-else"}))
    result = run_script("equilibrate.py", INPUT_PATH=tmp_path, OUTPUT_PATH=tmp_path / "out")
    expect_error(result, 1, "is not a system file")


def test_equilibrate_rejects_a_missing_input_dir(tmp_path: Path) -> None:
    result = run_script(
        "equilibrate.py", INPUT_PATH=tmp_path / "nowhere", OUTPUT_PATH=tmp_path / "out"
    )
    expect_error(result, 2, "is not a directory")


@pytest.mark.parametrize("value", ["abc", "2.5", "0", "-3"])
def test_production_rejects_a_bad_simulation_time(tmp_path: Path, value: str) -> None:
    result = run_script(
        "production.py", INPUT_PATH=tmp_path, OUTPUT_PATH=tmp_path / "out", SIMULATION_TIME=value
    )
    expect_error(result, 2, "SIMULATION_TIME")


@pytest.mark.slow
@pytest.mark.parametrize(
    ("state", "words"),
    [
        ("{truncated", ["is not readable JSON"]),
        ('{"format": "stormproof-md-checkpoint/1", "input_sha256": "0"}', ["different input"]),
    ],
)
def test_production_refuses_a_bad_checkpoint(
    pipeline: dict[str, Any], tmp_path: Path, state: str, words: list[str]
) -> None:
    (tmp_path / "state.json").write_text(state)
    result = run_script(
        "production.py",
        INPUT_PATH=pipeline["data"] / "equilibration",
        OUTPUT_PATH=tmp_path / "out",
        STORMPROOF_CHECKPOINT_DIR=tmp_path,
        STORMPROOF_RESTORED="1",
    )
    expect_error(result, 1, *words)


def test_analyze_rejects_a_bad_trajectory(tmp_path: Path) -> None:
    (tmp_path / "trajectory.json").write_text(
        json.dumps(
            {
                "format": "stormproof-md-trajectory/1",
                "n_particles": 2,
                "box": 6.0,
                "samples": [{"total": 1.0}],
                "frames": [],
            }
        )
    )
    result = run_script("analyze.py", INPUT_PATH=tmp_path, OUTPUT_PATH=tmp_path / "out")
    expect_error(result, 1, "at least 2 energy samples")


def test_analyze_says_which_stage_is_missing(tmp_path: Path) -> None:
    result = run_script("analyze.py", INPUT_PATH=tmp_path, OUTPUT_PATH=tmp_path / "out")
    expect_error(result, 1, "no trajectory.json", "production-run")
