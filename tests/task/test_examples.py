"""The checkpointing examples, run as real processes against the stand-in runtime.

Each task runs in its own session, like an attempt under the local executor, and gets
signals the way the runtime sends them: to the whole process group. The bash example calls
``stormproof checkpoint commit`` through a ``stormproof`` on PATH that runs the click group
directly, since the main CLI registers it separately.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from stormproof.checkpoints import protocol
from stormproof.spec.load import load_workflow

from .conftest import FakeRuntime

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "checkpointing"


class Task:
    """A task process in its own session, its output read by threads (stdout line by line)."""

    def __init__(self, command: list[str], env: dict[str, str]) -> None:
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._stderr: list[str] = []
        self._finished = False
        self.proc = subprocess.Popen(
            command,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        self._readers = [
            threading.Thread(target=self._read_stdout, daemon=True),
            threading.Thread(target=self._read_stderr, daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        with self.proc.stdout:
            for line in self.proc.stdout:
                self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        with self.proc.stderr:
            self._stderr.append(self.proc.stderr.read())

    def wait_for(self, line: str, timeout_s: float = 30) -> None:
        deadline = time.monotonic() + timeout_s
        while line not in self.lines:
            try:
                got = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no line {line!r} in {timeout_s}s: {self.lines}") from None
            if got is None:
                raise AssertionError(f"exited before {line!r}: {self.lines}")
            self.lines.append(got)

    def signal_group(self, sig: signal.Signals) -> None:
        os.killpg(self.proc.pid, sig)

    def finish(self, timeout_s: float = 60) -> int:
        """Wait for the exit; every line of output is in ``lines`` afterwards."""
        code = self.proc.wait(timeout=timeout_s)
        if not self._finished:
            while (got := self._queue.get(timeout=10)) is not None:
                self.lines.append(got)
            for reader in self._readers:
                reader.join(timeout=10)
            self._finished = True
        return code

    def stderr(self) -> str:
        return "".join(self._stderr)

    def kill(self) -> None:
        """kill -9 the whole group (if still running) and collect what it wrote."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        self.finish()


def steps(lines: list[str]) -> list[int]:
    return [int(line.split()[1]) for line in lines if line.startswith("step ")]


@pytest.fixture
def fake_cli(tmp_path: Path) -> Path:
    """A ``stormproof`` on PATH that runs ``checkpoint ...`` with the click group itself."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    exe = bin_dir / "stormproof"
    exe.write_text(
        "#!/bin/sh\n"
        '[ "$1" = checkpoint ] || { echo "fake stormproof: only checkpoint" >&2; exit 2; }\n'
        "shift\n"
        f'exec "{sys.executable}" -c '
        '"from stormproof.cli.checkpoint_cmd import checkpoint; checkpoint()" "$@"\n'
    )
    exe.chmod(0o755)
    return bin_dir


@pytest.fixture(params=["python", "bash"])
def example(request: pytest.FixtureRequest, fake_cli: Path) -> Iterator[tuple[list[str], Path]]:
    if request.param == "python":
        yield [sys.executable, str(EXAMPLES / "counter.py")], fake_cli
    else:
        yield ["bash", str(EXAMPLES / "counter.sh")], fake_cli


def task_env(bin_dir: Path, checkpoint: dict[str, str], **values: object) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STORMPROOF_")}
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    env["STORMPROOF_ATTEMPT_ID"] = "count/1"
    env.update(checkpoint)
    env.update({k: str(v) for k, v in values.items()})
    return env


def start(example: tuple[list[str], Path], checkpoint: dict[str, str], **values: object) -> Task:
    command, bin_dir = example
    return Task(command, task_env(bin_dir, checkpoint, **values))


def fresh(tmp_path: Path, name: str = "checkpoint") -> dict[str, str]:
    directory = tmp_path / name
    directory.mkdir()
    return {protocol.ENV_CHECKPOINT_DIR: str(directory)}


def saved_steps(runtime: FakeRuntime) -> list[int]:
    return [s.meta["step"] for s in runtime.saved]


@pytest.mark.slow
def test_counts_and_checkpoints_every_k_steps(
    example: tuple[list[str], Path], tmp_path: Path
) -> None:
    env = fresh(tmp_path)
    runtime = FakeRuntime(Path(env[protocol.ENV_CHECKPOINT_DIR])).start()
    try:
        task = start(example, env, COUNT_TO=12, CHECKPOINT_EVERY=4, STEP_SECONDS=0.02)
        assert task.finish() == 0, task.stderr()
    finally:
        runtime.stop()
    assert steps(task.lines) == list(range(1, 13))
    assert task.lines[-1] == "done: counted to 12"
    assert saved_steps(runtime) == [4, 8]
    assert runtime.violations == []
    assert set(runtime.saved[-1].files) <= {"counter.json", "counter.txt"}


@pytest.mark.slow
def test_checkpoints_on_the_signal_and_on_the_request_file(
    example: tuple[list[str], Path], tmp_path: Path
) -> None:
    env = fresh(tmp_path)
    directory = Path(env[protocol.ENV_CHECKPOINT_DIR])
    runtime = FakeRuntime(directory).start()
    task = start(example, env, COUNT_TO=400, CHECKPOINT_EVERY=1000, STEP_SECONDS=0.02)
    try:
        task.wait_for("step 3")
        task.signal_group(signal.SIGUSR1)  # what checkpoint_interval sends
        deadline = time.monotonic() + 30
        while not runtime.saved and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(runtime.saved) == 1
        protocol.request_checkpoint(directory)  # and the file, for tasks that poll
        while len(runtime.saved) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(runtime.saved) == 2
        assert not (directory / ".checkpoint-request").exists()  # the commit answered it
        time.sleep(0.2)
        assert len(runtime.saved) == 2  # one request, one checkpoint
        assert task.proc.poll() is None
    finally:
        task.kill()
        runtime.stop()
    first, second = saved_steps(runtime)
    assert 3 <= first < second
    assert runtime.violations == []


@pytest.mark.slow
def test_kill_9_then_restore_redoes_only_the_steps_after_the_checkpoint(
    example: tuple[list[str], Path], tmp_path: Path
) -> None:
    env = fresh(tmp_path, "attempt-1")
    runtime = FakeRuntime(Path(env[protocol.ENV_CHECKPOINT_DIR])).start()
    task = start(example, env, COUNT_TO=20, CHECKPOINT_EVERY=5, STEP_SECONDS=0.02)
    try:
        task.wait_for("step 12")
    finally:
        task.kill()  # kill -9 the whole group, mid-way
        runtime.stop()
    assert saved_steps(runtime) == [5, 10]

    retry = runtime.restore_into(tmp_path / "attempt-2")  # a fresh directory, restored
    task2 = start(example, retry, COUNT_TO=20, CHECKPOINT_EVERY=5, STEP_SECONDS=0.02)
    runtime2 = FakeRuntime(Path(retry[protocol.ENV_CHECKPOINT_DIR])).start()
    try:
        assert task2.finish() == 0, task2.stderr()
    finally:
        runtime2.stop()
    assert task2.lines[0] == "resumed from step 10 (checkpoint 2)"
    assert steps(task2.lines) == list(range(11, 21))  # the redone work: 11, 12 only
    assert task2.lines[-1] == "done: counted to 20"


@pytest.mark.slow
def test_sigterm_checkpoints_at_once_and_exits_143(
    example: tuple[list[str], Path], tmp_path: Path
) -> None:
    env = fresh(tmp_path)
    runtime = FakeRuntime(Path(env[protocol.ENV_CHECKPOINT_DIR])).start()
    task = start(example, env, COUNT_TO=400, CHECKPOINT_EVERY=1000, STEP_SECONDS=0.02)
    try:
        task.wait_for("step 4")
        task.signal_group(signal.SIGTERM)  # the interruption notice
        code = task.finish()
    finally:
        task.kill()
        runtime.stop()
    assert code == 143, task.stderr()
    assert saved_steps(runtime) == [steps(task.lines)[-1]]


@pytest.mark.parametrize("name", ["counter.yaml", "counter-sh.yaml"])
def test_the_example_workflows_are_valid(name: str) -> None:
    spec = load_workflow(EXAMPLES / name)
    (only,) = spec.tasks
    assert only.checkpoint_enabled
    assert spec.global_config.checkpoint_interval is not None
    script = "counter.py" if name == "counter.yaml" else "counter.sh"
    assert any(part.endswith(script) for part in only.command)


def test_counter_py_without_stormproof_dir_just_counts(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STORMPROOF_")}
    env.update(COUNT_TO="3", STEP_SECONDS="0")
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "counter.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0
    assert result.stdout.splitlines()[-1] == "done: counted to 3"
    assert "counting without checkpoints" in result.stderr


# --- the molecular-dynamics production stage --------------------------------------------------

MD = EXAMPLES.parent / "md"


@pytest.fixture(scope="module")
def equilibrated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small equilibrated system (128 particles, a few tenths of a second to make)."""
    root = tmp_path_factory.mktemp("md")
    (root / "raw").mkdir()
    (root / "raw" / "params.json").write_text(
        json.dumps({"n_particles": 128, "density": 0.5, "seed": 7, "max_iterations": 50})
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("STORMPROOF_")}
    for script, values in (
        ("preprocess.py", {"INPUT_PATH": root / "raw", "OUTPUT_PATH": root / "pp"}),
        (
            "equilibrate.py",
            {"INPUT_PATH": root / "pp", "OUTPUT_PATH": root / "eq", "EQUILIBRATION_STEPS": 50},
        ),
    ):
        subprocess.run(
            [sys.executable, str(MD / script)],
            env={**env, **{k: str(v) for k, v in values.items()}},
            check=True,
            capture_output=True,
            timeout=120,
        )
    return root / "eq"


def production(
    equilibrated: Path, tmp_path: Path, *python_flags: str
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STORMPROOF_")}
    env.update(
        INPUT_PATH=str(equilibrated),
        OUTPUT_PATH=str(tmp_path / "out"),
        SIMULATION_TIME="200",
        CHECKPOINT_EVERY="50",
        STORMPROOF_ATTEMPT_ID="production-run/1",  # run by stormproof
        STORMPROOF_CHECKPOINT_DIR=str(tmp_path / "checkpoint"),
    )
    if "-S" in python_flags:  # no site-packages; a source tree on PYTHONPATH would still import
        env.pop("PYTHONPATH", None)
    return subprocess.run(
        [sys.executable, *python_flags, str(MD / "production.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.slow
def test_md_production_commits_with_stormproof_task(equilibrated: Path, tmp_path: Path) -> None:
    (tmp_path / "checkpoint").mkdir()
    runtime = FakeRuntime(tmp_path / "checkpoint", save_s=0.05).start()
    try:
        result = production(equilibrated, tmp_path)
    finally:
        runtime.stop()
    assert result.returncode == 0, result.stderr
    assert "warning" not in result.stderr
    assert saved_steps(runtime) == [50, 100, 150]
    assert runtime.violations == []  # it waited for each save before writing state.json again
    assert [json.loads(s.files["state.json"])["step"] for s in runtime.saved] == [50, 100, 150]
    assert not (tmp_path / "checkpoint" / ".commit").exists()


@pytest.mark.slow
def test_md_production_without_stormproof_importable_leaves_the_bare_marker(
    equilibrated: Path, tmp_path: Path
) -> None:
    (tmp_path / "checkpoint").mkdir()
    runtime = FakeRuntime(tmp_path / "checkpoint", save_s=0.0).start()
    try:
        result = production(equilibrated, tmp_path, "-S")  # no site-packages: no stormproof
    finally:
        runtime.stop()
    assert result.returncode == 0, result.stderr
    assert runtime.saved, "the runtime saw no marker"
    for saved in runtime.saved:  # the bare step is still a commit, its text kept as the label
        assert saved.meta["text"] in {"50", "100", "150"}
