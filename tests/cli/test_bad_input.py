"""Every bad workflow file, through the real command line: exit 2, one clear message, no traceback.

The cases are shared with ``tests/spec`` (``bad_workflows.CASES``). All of them
run in-process through click's runner (fast); a few also run as real
subprocesses, to be sure nothing differs at the real front door.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from stormproof.cli.main import cli
from tests.cli.conftest import Cli
from tests.spec.bad_workflows import CASES, EXPECTED, write_case

IDS = [c[0] for c in CASES]


def invoke(tmp_path: Path, *args: str) -> tuple[int, str]:
    runner = CliRunner()
    old = Path.cwd()
    os.chdir(tmp_path)
    try:
        result = runner.invoke(cli, list(args), catch_exceptions=True)
    finally:
        os.chdir(old)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(
        result.exception
    )
    return result.exit_code, result.stdout + result.stderr


@pytest.mark.parametrize(("case", "file_name", "text"), CASES, ids=IDS)
@pytest.mark.parametrize("command", ["plan", "run"])
def test_bad_workflow_exits_2_with_one_clear_message(
    tmp_path: Path, case: str, file_name: str, text: str, command: str
) -> None:
    path = write_case(tmp_path, file_name, text)
    code, output = invoke(tmp_path, command, str(path))
    assert code == 2, output
    assert EXPECTED[case] in output
    assert "Traceback" not in output
    assert "errors.pydantic.dev" not in output
    assert output.count("error:") == 1
    if command == "run":  # bad input loses nothing and leaves nothing behind
        code, listing = invoke(tmp_path, "status", "--json")
        assert code == 0 and json.loads(listing) == []


@pytest.mark.parametrize("case", ["typo_dependency", "cycle_three_tasks", "not_json", "not_utf8"])
def test_the_real_front_door_says_the_same(tmp_path: Path, case: str) -> None:
    (cid, file_name, text) = next(c for c in CASES if c[0] == case)
    path = write_case(tmp_path, file_name, text)
    proc = subprocess.run(
        [sys.executable, "-m", "stormproof", "run", str(path)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=60,
    )
    assert proc.returncode == 2
    assert EXPECTED[cid] in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["run", "missing.yaml"], "missing.yaml"),
        (["resume", "nope"], "no run named 'nope'"),
        (["status", "nope"], "no run named 'nope'"),
        (["history", "nope"], "no run named 'nope'"),
        (["logs", "nope", "t"], "no run named 'nope'"),
        (["cancel", "nope"], "no run named 'nope'"),
        (["run", "wf.yaml", "--name", "../evil"], "run name '../evil' is not allowed"),
        (["status", "../x"], "is not allowed"),
        (["run", "wf.yaml", "--max-parallel", "0"], "0"),
        (["frobnicate"], "No such command"),
    ],
)
def test_bad_commands_exit_2(tmp_path: Path, args: list[str], fragment: str) -> None:
    (tmp_path / "wf.yaml").write_text("name: w\ntasks:\n  - {id: a, command: ['true']}\n")
    code, output = invoke(tmp_path, *args)
    assert code == 2, output
    assert fragment in output
    assert "Traceback" not in output


def test_bad_config_file_exits_2_naming_the_place(tmp_path: Path) -> None:
    (tmp_path / "wf.yaml").write_text("name: w\ntasks:\n  - {id: a, command: ['true']}\n")
    (tmp_path / "stormproof.yaml").write_text(
        "pools:\n  - {name: p, market: spott, vcpus: 2, memory: 1024}\n"
    )
    code, output = invoke(tmp_path, "run", "wf.yaml")
    assert code == 2
    assert "pools[0].market" in output and "did you mean 'spot'" in output


def test_unknown_task_in_logs_suggests_the_close_one(tmp_path: Path) -> None:
    (tmp_path / "wf.yaml").write_text("name: w\ntasks:\n  - {id: hello, command: [echo, hi]}\n")
    code, _ = invoke(tmp_path, "run", "wf.yaml", "--name", "r", "--quiet")
    assert code == 0
    code, output = invoke(tmp_path, "logs", "r", "helo")
    assert code == 2 and "did you mean 'hello'" in output


@pytest.mark.parametrize("command", ["plan", "run"])
@pytest.mark.parametrize(
    ("store", "fragment"),
    [
        ("s3://nobucket/ckpt", "cannot connect to http://127.0.0.1:9"),
        ("/proc/nope/ckpt", "cannot write to /proc/nope"),
    ],
)
def test_an_unusable_checkpoint_store_is_a_clear_error_before_anything_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: str, store: str, fragment: str
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "y")
    (tmp_path / "stormproof.yaml").write_text(f"checkpoints: {store}\n")
    (tmp_path / "wf.yaml").write_text(
        "name: w\ntasks:\n  - {id: a, command: [echo], checkpoint_enabled: true}\n"
    )
    code, output = invoke(tmp_path, command, "wf.yaml")
    assert code == 2
    assert fragment in output and "checkpoints:" in output
    assert not (tmp_path / ".stormproof" / "runs").exists()


POOLS = """\
pools:
  - {name: spot-c5, market: spot, vcpus: 4, memory: 8192, price: 0.068, count: 2}
  - {name: ondemand, market: on_demand, vcpus: 4, memory: 8192, price: 0.17}
"""


@pytest.mark.parametrize("command", ["plan", "run"])
def test_a_task_that_fits_no_pool_exits_2_naming_the_task_and_the_pools(
    tmp_path: Path, command: str
) -> None:
    (tmp_path / "stormproof.yaml").write_text(POOLS)
    (tmp_path / "wf.yaml").write_text(
        "name: w\ntasks:\n"
        "  - {id: small, command: ['true'], memory: 256}\n"
        "  - {id: huge, command: ['true'], vcpus: 16, memory: 256}\n"
    )
    code, output = invoke(tmp_path, command, "wf.yaml")
    assert code == 2, output
    assert "Traceback" not in output
    assert output.count("error:") == 1
    error = output[output.index("error:") :]
    assert "huge" in error and "spot-c5" in error and "ondemand" in error
    assert "small" not in error
    flat = " ".join(output.split())  # the console may wrap long lines
    assert "huge needs 16 vCPUs / 256 MiB, which none of the pools spot-c5, ondemand can hold" in (
        flat
    )
    assert "add a pool in stormproof.yaml or lower vcpus" in flat
    if command == "run":
        code, listing = invoke(tmp_path, "status", "--json")
        assert code == 0 and json.loads(listing) == [], "nothing was started"


def test_the_fits_no_pool_fix_names_the_file_the_pools_came_from(tmp_path: Path) -> None:
    """``simulate --pools FILE``: the error says to add a pool in FILE, not stormproof.yaml."""
    (tmp_path / "cluster").mkdir()
    (tmp_path / "cluster" / "pools.yaml").write_text(POOLS)
    (tmp_path / "wf.yaml").write_text(
        "name: w\ntasks:\n  - {id: huge, command: ['true'], vcpus: 16, memory: 256}\n"
    )
    code, output = invoke(tmp_path, "simulate", "wf.yaml", "--pools", "cluster/pools.yaml")
    assert code == 2, output
    assert "Traceback" not in output
    flat = " ".join(output.split())
    assert "add a pool in cluster/pools.yaml or lower vcpus" in flat
    assert "stormproof.yaml" not in flat


@pytest.mark.parametrize("command", ["plan", "run"])
def test_a_negative_pool_price_exits_2_with_one_error_line(tmp_path: Path, command: str) -> None:
    (tmp_path / "stormproof.yaml").write_text(POOLS.replace("price: 0.17", "price: -0.17"))
    (tmp_path / "wf.yaml").write_text("name: w\ntasks:\n  - {id: a, command: ['true']}\n")
    code, output = invoke(tmp_path, command, "wf.yaml")
    assert code == 2, output
    assert "Traceback" not in output
    (line,) = [line for line in output.splitlines() if "error:" in line]
    assert line == (
        "error: stormproof.yaml:3: pools[1].price: must be at least 0, got -0.17 "
        "(USD per instance-hour, like 0.068)"
    )


def _finished_run(
    tmp_path: Path, name: str, edit: Callable[[dict[str, Any]], dict[str, Any]]
) -> Path:
    """Run a one-task workflow to the end as ``name``, then rewrite its stored metadata."""
    (tmp_path / "wf.yaml").write_text("name: w\ntasks:\n  - {id: a, command: ['true']}\n")
    code, output = invoke(tmp_path, "run", "wf.yaml", "--name", name, "--quiet")
    assert code == 0, output
    db = tmp_path / ".stormproof" / "stormproof.db"
    with sqlite3.connect(db) as conn:
        (meta,) = conn.execute("SELECT meta FROM runs WHERE name = ?", (name,)).fetchone()
        changed = edit(json.loads(meta))
        conn.execute("UPDATE runs SET meta = ? WHERE name = ?", (json.dumps(changed), name))
    return db


def _row_count(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        (count,) = conn.execute("SELECT count(*) FROM rows").fetchone()
    return int(count)


def test_resume_refuses_a_run_whose_log_format_this_version_cannot_replay(tmp_path: Path) -> None:
    """A run started under another event-log format is refused, named, and left as it was."""

    def older_format(meta: dict[str, Any]) -> dict[str, Any]:
        assert meta["log_format"] == 1, "new runs record their log format"
        return meta | {"log_format": 0, "version": "0.0.9"}

    db = _finished_run(tmp_path, "old", older_format)
    before = _row_count(db)
    code, output = invoke(tmp_path, "resume", "old")
    assert code == 2, output
    assert "Traceback" not in output and output.count("error:") == 1
    flat = " ".join(output.split())
    assert "run 'old' was started by stormproof 0.0.9" in flat
    assert "(format 0)" in flat and "pip install 'stormproof==0.0.9'" in flat
    assert "--name NEW" in flat
    assert _row_count(db) == before, "nothing was appended to the refused run's log"


def test_a_run_recorded_before_log_formats_existed_still_resumes(tmp_path: Path) -> None:
    """Runs written before ``log_format`` was recorded are format 1: resume carries them on."""
    _finished_run(
        tmp_path, "older", lambda meta: {k: v for k, v in meta.items() if k != "log_format"}
    )
    code, output = invoke(tmp_path, "resume", "older")
    assert code == 0, output
    assert "error:" not in output and "succeeded" in output


def test_run_does_not_import_the_other_commands_and_help_still_lists_them(tmp_path: Path) -> None:
    """Subcommands in their own modules load when named (a 10,000-task ``run`` starts sooner)."""
    probe = (
        "import sys, stormproof.cli.main as m; "
        "print(sorted(n for n in sys.modules if n.startswith(('stormproof.cli.', "
        "'stormproof.importers', 'stormproof.sim'))))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout
    for module in ("import_cmd", "fleet_cmds", "simulate_cmd", "checkpoints_cmds", "importers"):
        assert module not in loaded
    cli = Cli(tmp_path, [])
    listed = cli("--help").stdout
    for name in ("checkpoint", "checkpoints", "fleet", "interrupt", "import", "simulate", "run"):
        assert f"\n  {name} " in listed
    assert "wfformat" in cli("import", "--help").stdout
