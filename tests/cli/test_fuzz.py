"""Fuzzing the front door: whatever a user writes or types, the CLI exits 0 or 2, never with a
traceback, a hang or a blow-up.

Hypothesis drives the real CLI entry point in-process (click's runner) over workflow files,
built as structures (wrong types, odd fields, numbers of any size, aliases) and as bytes
(a valid file with hostile tokens spliced in, and raw bytes), and over the CLI's arguments;
a sample goes through a real subprocess under a memory cap. ``STORMPROOF_FUZZ_EXAMPLES``
sets the examples per test (CI: a short pass; ``bench/fuzz.py`` runs the full one).
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stormproof.cli import main as cli_main
from stormproof.spec.model import GlobalConfig, TaskSpec

EXAMPLES = int(os.environ.get("STORMPROOF_FUZZ_EXAMPLES", "120"))
#: Longest one input may take before it counts as a hang (the limits refuse in well under 1 s).
HANG_S = 30
#: Most the fuzzing process may grow over a whole test.
GROWTH_MIB = 512
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


class Hang(Exception):
    pass


def _alarm(_sig: int, _frame: FrameType | None) -> None:
    raise Hang(f"one input took more than {HANG_S} s")


@pytest.fixture(scope="module")
def memory_guard() -> Iterator[None]:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    yield
    grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown < GROWTH_MIB, f"the fuzzing process grew by {grown:.0f} MiB"


def run_cli(cwd: Path, args: list[str]) -> tuple[int, str]:
    """One invocation through the real entry point; asserts the contract and returns it."""
    old = Path.cwd()
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, HANG_S)
    os.chdir(cwd)
    try:
        result = CliRunner().invoke(cli_main.cli, args, catch_exceptions=True)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        os.chdir(old)
        cli_main._KEPT.clear()  # what `plan` keeps for a fast exit, freed between inputs
    output = result.stdout + result.stderr
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        args,
        repr(result.exception),
    )
    assert "Traceback" not in output, (args, output)
    assert result.exit_code in (0, 2), (args, result.exit_code, output[-2000:])
    return result.exit_code, output


# --------------------------------------------------------------------------- workflows

NASTY_NUMBERS = ["9" * 40, "-" + "9" * 400, "1e999", "0x" + "f" * 50, ".inf", "-.nan", "1_000"]
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**40), max_value=10**40),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(["10m", "2h30m", "-5", "soon", "", "Task.Failed", "States.ALL", "spot"]),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=12,
)
IDS = st.one_of(st.from_regex(r"[a-z][a-z0-9_.-]{0,8}", fullmatch=True), st.text(max_size=10))
TASK_FIELDS = list(TaskSpec.model_fields)
GLOBAL_FIELDS = list(GlobalConfig.model_fields)


@st.composite
def workflows(draw: st.DrawFn) -> dict[str, Any]:
    ids = draw(st.lists(IDS, min_size=0, max_size=5))
    tasks: list[Any] = []
    for task_id in ids:
        task: dict[str, Any] = {
            "id": task_id,
            "command": draw(
                st.one_of(
                    st.just(["true"]),
                    st.text(max_size=10),
                    st.lists(st.text(max_size=5), max_size=3),
                    VALUES,
                )
            ),
        }
        for field in draw(st.lists(st.sampled_from(TASK_FIELDS), max_size=4, unique=True)):
            if field == "depends_on":
                task[field] = draw(st.lists(st.sampled_from(ids) | IDS, max_size=3))
            else:
                task[field] = draw(VALUES)
        if draw(st.booleans()):
            task[draw(st.text(max_size=8))] = draw(VALUES)
        tasks.append(task if draw(st.integers(0, 20)) else draw(VALUES))
    doc: dict[str, Any] = {"name": draw(st.one_of(st.just("fuzz"), VALUES)), "tasks": tasks}
    if draw(st.booleans()):
        doc["global_config"] = {
            f: draw(VALUES) for f in draw(st.lists(st.sampled_from(GLOBAL_FIELDS), max_size=3))
        }
    return doc


def _dump(doc: dict[str, Any], fmt: str) -> str:
    if fmt == "json":
        return json.dumps(doc)
    return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)


TOKENS = [
    "&a ",
    "*a",
    "<<: *a",
    "!!python/object:os.system ",
    "\x00",
    "[" * 40,
    "{" * 40,
    "9" * 60,
    '"',
    "'",
    "\t",
    ": ",
    "- ",
    "\ufeff",
    "---\n",
    "%YAML 1.1\n",
    "? ",
    "&b [*a, *a, *a]",
    "\\u0000",
    '"\\x69d": x',
    "\n  ",
    "#",
    "|\n",
    ">-\n",
    "0o777",
    "1:20:30",
    "2001-12-14",
    *NASTY_NUMBERS,
]
VALID = (
    "name: fuzz\nglobal_config: {max_retry_attempts: 1}\ntasks:\n  - {id: a, command: ['true']}\n"
    "  - id: b\n    command: [echo, b]\n    depends_on: [a]\n"
)


@st.composite
def spliced(draw: st.DrawFn) -> bytes:
    text = draw(st.sampled_from([VALID, json.dumps(yaml.safe_load(VALID))]))
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(text)))
        cut = draw(st.integers(0, 5))
        text = text[:at] + draw(st.sampled_from(TOKENS) | st.text(max_size=4)) + text[at + cut :]
    return text.encode("utf-8", "surrogatepass")


@FUZZ
@given(doc=workflows(), fmt=st.sampled_from(["json", "yaml"]))
def test_any_workflow_structure_exits_0_or_2(
    tmp_path_factory: pytest.TempPathFactory, memory_guard: None, doc: dict[str, Any], fmt: str
) -> None:
    cwd = tmp_path_factory.mktemp("wf")
    path = cwd / f"wf.{fmt}"
    try:
        path.write_text(_dump(doc, fmt), encoding="utf-8", errors="surrogatepass")
    except (ValueError, yaml.YAMLError):  # a value neither format can write
        return
    run_cli(cwd, ["plan", str(path)])


@FUZZ
@given(data=spliced() | st.binary(max_size=400), ext=st.sampled_from(["yaml", "json", "txt"]))
def test_any_workflow_bytes_exit_0_or_2(
    tmp_path_factory: pytest.TempPathFactory, memory_guard: None, data: bytes, ext: str
) -> None:
    cwd = tmp_path_factory.mktemp("wf")
    path = cwd / f"wf.{ext}"
    path.write_bytes(data)
    run_cli(cwd, ["plan", str(path)])


# --------------------------------------------------------------------------- arguments


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory with a workflow, a config and one finished run ``r``."""
    cwd = tmp_path_factory.mktemp("cli")
    (cwd / "wf.yaml").write_text(VALID)
    proc = subprocess.run(
        [sys.executable, "-m", "stormproof", "run", "wf.yaml", "--name", "r", "--quiet"],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stderr
    return cwd


WORDS = st.one_of(
    st.sampled_from(["r", "a", "b", "nope", "wf.yaml", "-", "..", "/dev/zero", "0", "-1"]),
    st.text(max_size=12),
    st.integers(-(10**30), 10**30).map(str),
)
OPTIONS: dict[str, list[str]] = {
    "status": ["--json", "--tasks", "--state", "--stage", "--limit", "--offset"],
    "history": ["--json", "--task"],
    "logs": ["--attempt", "--stream"],
    "plan": ["--json"],
    "fleet": ["--json", "--scale"],
    "interrupt": ["--instance", "--notice", "--lost"],
    "checkpoints": [],
    "schema": [],
    "import": [],
    "simulate": ["--runs", "--seed", "--deadline", "--policy", "--runtime-spread", "--json"],
    "run": ["--dry-run", "--name", "--max-parallel", "--seed", "--reuse", "--redrive", "--plan"],
    "redrive": ["--json", "--detach"],
    "clean": ["--older-than", "--keep-last", "--dry-run"],
}


@st.composite
def arguments(draw: st.DrawFn) -> list[str]:
    command = draw(st.sampled_from(sorted(OPTIONS)))
    args = [command]
    if command == "simulate":
        args += ["wf.yaml", "--workers", "1", "--runs", str(draw(st.integers(1, 5)))]
    if command == "run":
        args += ["--dry-run"]
    if command == "redrive":
        args += ["--plan"]  # only plans: a fuzzed redrive never drives a run
    if command == "import":
        args += ["wfformat"]
    if command == "checkpoints":
        args += [draw(st.sampled_from(["list", "show", "prune"]))]
    args += draw(st.lists(WORDS, max_size=2))
    for option in draw(st.lists(st.sampled_from(OPTIONS[command] or ["--json"]), max_size=3)):
        args += [option, draw(WORDS)] if draw(st.booleans()) else [option]
    return args


@FUZZ
@given(args=arguments())
def test_any_arguments_exit_0_or_2(home: Path, memory_guard: None, args: list[str]) -> None:
    if "--home" not in args:
        args = [*args, "--home", str(home / ".stormproof")]
    run_cli(home, args)


@pytest.mark.parametrize("seed", range(4))
def test_a_sample_through_a_real_process_under_a_memory_cap(tmp_path: Path, seed: int) -> None:
    """The real ``python -m stormproof`` (imports, signals, exit) with 1 GiB of address space."""
    samples = [
        "name: x\na: &a [" + ",".join(["1"] * 9) + "]\nb: &b [" + ",".join(["*a"] * 9) + "]\n"
        "c: &c [" + ",".join(["*b"] * 9) + "]\nd: &d [" + ",".join(["*c"] * 9) + "]\n"
        "e: &e [" + ",".join(["*d"] * 9) + "]\nf: [" + ",".join(["*e"] * 9) + "]\n",
        VALID.replace("max_retry_attempts: 1", "max_retry_attempts: " + "9" * 4400),
        "{" * 50000,
        VALID.replace("['true']", "['tr\\x00ue']"),
    ]
    (tmp_path / "wf.yaml").write_text(samples[seed])

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))

    proc = subprocess.run(
        [sys.executable, "-m", "stormproof", "plan", "wf.yaml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        preexec_fn=cap,
    )
    assert proc.returncode in (0, 2), proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
