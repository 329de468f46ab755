"""Bounded input (``stormproof.limits``): every file the CLI reads is refused, clearly and at
once, when it is not a regular file or goes over a limit. Through the real command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from stormproof.cli.main import cli
from stormproof.errors import SpecError
from stormproof.limits import Limits, estimate_tasks
from stormproof.spec.load import load_workflow, parse_workflow

WF = "name: w\ntasks:\n  - {id: a, command: ['true']}\n"


def invoke(cwd: Path, *args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    old = Path.cwd()
    os.chdir(cwd)
    try:
        result = CliRunner().invoke(cli, list(args), env=env)
    finally:
        os.chdir(old)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(
        result.exception
    )
    output = result.stdout + result.stderr
    assert "Traceback" not in output
    return result.exit_code, " ".join(output.split())


def test_dev_zero_is_refused_without_reading_it(tmp_path: Path) -> None:
    code, output = invoke(tmp_path, "plan", "/dev/zero")
    assert code == 2
    assert "/dev/zero: is a character device (like /dev/zero or /dev/null), not a workflow" in (
        output
    )


def test_a_fifo_is_refused_even_with_no_writer(tmp_path: Path) -> None:
    """Opening a FIFO for reading blocks until a writer comes: a real subprocess, so a hang
    shows as the timeout."""
    fifo = tmp_path / "wf.yaml"
    os.mkfifo(fifo)
    proc = subprocess.run(
        [sys.executable, "-m", "stormproof", "plan", str(fifo)],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        cwd=tmp_path,
    )
    assert proc.returncode == 2
    assert "is a named pipe (FIFO), not a workflow file" in proc.stderr


def test_a_file_over_the_size_limit_is_refused_and_says_how_to_raise_it(tmp_path: Path) -> None:
    big = tmp_path / "wf.yaml"
    with open(big, "wb") as fh:  # sparse: 200 MiB that take no disk
        fh.truncate(200 * 1024 * 1024)
    code, output = invoke(tmp_path, "plan", str(big))
    assert code == 2
    assert "is more than 128 MiB, the most a workflow file may be" in output
    assert "STORMPROOF_MAX_FILE_MB=256" in output and "it is 200 MiB" in output
    code, output = invoke(tmp_path, "plan", str(big), env={"STORMPROOF_MAX_FILE_MB": "1"})
    assert code == 2 and "more than 1 MiB" in output


def test_the_size_limit_holds_for_a_file_that_lies_about_its_size(tmp_path: Path) -> None:
    """A /proc file says it is empty; it is read up to the limit and no further."""
    with pytest.raises(SpecError, match="more than 16 bytes"):
        load_workflow("/proc/self/maps", Limits(file_bytes=16))


@pytest.mark.parametrize("fmt", ["json", "yaml"])
def test_too_many_tasks_are_refused_before_parsing(tmp_path: Path, fmt: str) -> None:
    tasks = [{"id": f"t{i}", "command": "x"} for i in range(30)]
    if fmt == "json":
        text = json.dumps({"name": "w", "tasks": tasks})
    else:
        text = "name: w\ntasks:\n" + "".join(f"  - id: t{i}\n    command: x\n" for i in range(30))
    path = tmp_path / f"wf.{fmt}"
    path.write_text(text)
    assert estimate_tasks(text) == 30
    code, output = invoke(tmp_path, "plan", str(path), env={"STORMPROOF_MAX_TASKS": "20"})
    assert code == 2
    assert "the workflow has about 30 tasks (counted by their id keys), more than the limit of" in (
        output
    )
    assert "STORMPROOF_MAX_TASKS=N" in output
    code, _ = invoke(tmp_path, "plan", str(path), env={"STORMPROOF_MAX_TASKS": "30"})
    assert code == 0


def test_tasks_the_estimate_misses_are_counted_exactly_after_parsing() -> None:
    """Ids spelt with escapes escape the byte count; the parsed list is counted."""
    text = "name: w\ntasks:\n" + "".join(f'  - {{"\\x69d": t{i}, command: x}}\n' for i in range(5))
    assert estimate_tasks(text) == 0
    with pytest.raises(SpecError, match="has 5 tasks, more than the limit of 4"):
        parse_workflow(text, "wf.yaml", "yaml", Limits(tasks=4))


def test_a_bad_limit_variable_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "wf.yaml").write_text(WF)
    code, output = invoke(tmp_path, "plan", "wf.yaml", env={"STORMPROOF_MAX_TASKS": "lots"})
    assert code == 2 and "STORMPROOF_MAX_TASKS='lots': expected a whole number" in output


CONFIG_CASES = {
    "alias bomb": (
        "pools:\n  - &a {name: a, market: spot, vcpus: 1, memory: 1}\n"
        + "".join(
            f"x{n}: &{n} [" + ",".join([f"*{p}"] * 9) + "]\n"
            for p, n in zip(["a", *"bcdefgh"], "bcdefghi", strict=True)
        ),
        "aliases (*name) expand to more values",
    ),
    "long number": (
        "pools:\n  - {name: a, market: spot, vcpus: 1, memory: " + "9" * 400 + "}\n",
        "stormproof.yaml:2: the number 999999999999…999999 has 400 characters",
    ),
    "duplicate key": (
        "executor: local\npools:\n  - {name: a, market: spot, vcpus: 1, memory: 1, vcpus: 2}\n",
        "stormproof.yaml:3: key 'vcpus' appears twice",
    ),
    "deep": ("x: " + "[" * 40 + "]" * 40 + "\n", "nests more than 32 levels deep"),
}


@pytest.mark.parametrize("case", CONFIG_CASES)
def test_stormproof_yaml_is_bounded_too(tmp_path: Path, case: str) -> None:
    text, fragment = CONFIG_CASES[case]
    (tmp_path / "stormproof.yaml").write_text(text)
    (tmp_path / "wf.yaml").write_text(WF)
    code, output = invoke(tmp_path, "plan", "wf.yaml")
    assert code == 2, output
    assert fragment in output


def test_a_config_that_is_a_device_is_refused(tmp_path: Path) -> None:
    (tmp_path / "wf.yaml").write_text(WF)
    code, output = invoke(tmp_path, "plan", "wf.yaml", "--config", "/dev/zero")
    assert code == 2
    assert "/dev/zero: is a character device" in output


def test_a_pools_file_over_the_size_limit_is_refused(tmp_path: Path) -> None:
    (tmp_path / "wf.yaml").write_text(WF)
    big = tmp_path / "pools.yaml"
    with open(big, "wb") as fh:
        fh.truncate(2 * 1024 * 1024)
    code, output = invoke(tmp_path, "simulate", "wf.yaml", "--pools", str(big), "--runs", "1")
    assert code == 2
    assert "is more than 1 MiB, the most a configuration file may be" in output


def test_a_trace_with_a_long_number_or_a_device_is_refused(tmp_path: Path) -> None:
    (tmp_path / "wf.yaml").write_text(WF)
    trace = tmp_path / "trace.json"
    trace.write_text('{"metadata": {"gap_seconds": 600}, "data": [1, ' + "9" * 5000 + "]}")
    (tmp_path / "pools.yaml").write_text(
        "pools:\n  - {name: s, market: spot, vcpus: 2, memory: 2048}\n"
    )
    for path, fragment in ((trace, "has 5000 characters"), ("/dev/zero", "is not a file")):
        code, output = invoke(
            tmp_path,
            "simulate",
            "wf.yaml",
            "--pools",
            "pools.yaml",
            "--trace",
            f"s={path}",
            "--runs",
            "1",
        )
        assert code == 2, output
        assert fragment in output


def test_an_import_with_a_duplicate_key_or_from_a_device_is_refused(tmp_path: Path) -> None:
    doc = tmp_path / "trace.json"
    doc.write_text('{"name": "x",\n "name": "y", "workflow": {}}')
    code, output = invoke(tmp_path, "import", "wfformat", str(doc), "-o", "out.yaml")
    assert code == 2 and "line 2: key 'name' appears twice in one object" in output
    code, output = invoke(tmp_path, "import", "wfformat", "/dev/zero", "-o", "out.yaml")
    assert code == 2 and "is a character device" in output


def test_a_path_with_a_nul_byte_is_refused(tmp_path: Path) -> None:
    """Found by the fuzz test: ``plan '\\x00'`` was a ValueError traceback."""
    code, output = invoke(tmp_path, "plan", "wf\x00.yaml")
    assert code == 2 and "a path cannot hold a NUL byte" in output
    code, output = invoke(tmp_path, "status", "--home", "h\x00")
    assert code == 2 and "a path cannot hold a NUL byte" in output
