"""Good workflow files load, as JSON and as YAML, into the same spec."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from stormproof.errors import SpecError
from stormproof.spec.load import load_workflow, parse_workflow
from stormproof.spec.model import OnFailure, SpotStrategy, WorkflowSpec
from stormproof.spec.yaml_events import EventBuilder
from tests.recipe_sample import SAMPLE_JSON

#: The recipe's sample-workflow.json, verbatim.

SAMPLE_YAML = """\
# The recipe's sample, as YAML: same fields, numbers where JSON had strings.
name: Molecular Dynamics Simulation
description: Multi-stage molecular dynamics workflow with checkpointing
global_config:
  checkpoint_interval: 10m
  max_retry_attempts: 3
  spot_strategy: diversified
tasks:
  - id: data-preprocessing
    name: Data Preprocessing
    type: batch
    container_image: scientific-computing:preprocessing
    command: [python, /app/preprocess.py]
    vcpus: 2
    memory: 4096
    nodes: 1
    environment:
      INPUT_PATH: /mnt/efs/raw_data
      OUTPUT_PATH: /mnt/efs/processed_data
    checkpoint_enabled: true
    spot_enabled: true
  - id: equilibration
    name: System Equilibration
    type: batch
    container_image: scientific-computing:md-simulation
    command: [mpirun, gromacs, equilibrate]
    vcpus: 8
    memory: 16384
    nodes: 4
    depends_on: [data-preprocessing]
    environment:
      INPUT_PATH: /mnt/efs/processed_data
      OUTPUT_PATH: /mnt/efs/equilibration
    checkpoint_enabled: true
    spot_enabled: true
    retry_attempts: 2
  - id: production-run
    name: Production MD Run
    type: batch
    container_image: scientific-computing:md-simulation
    command: [mpirun, gromacs, mdrun]
    vcpus: 16
    memory: 32768
    nodes: 8
    depends_on: [equilibration]
    environment:
      INPUT_PATH: /mnt/efs/equilibration
      OUTPUT_PATH: /mnt/efs/production
      SIMULATION_TIME: 1000000
    checkpoint_enabled: true
    spot_enabled: true
    retry_attempts: 3
    backoff_multiplier: 2.5
  - id: analysis
    name: Trajectory Analysis
    type: batch
    container_image: scientific-computing:analysis
    command: [python, /app/analyze.py]
    vcpus: 4
    memory: 8192
    nodes: 2
    depends_on: [production-run]
    environment:
      INPUT_PATH: /mnt/efs/production
      OUTPUT_PATH: /mnt/efs/results
    checkpoint_enabled: false
    spot_enabled: true
"""


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_recipe_sample_json_loads_verbatim(tmp_path: Path) -> None:
    spec = load_workflow(_write(tmp_path, "sample-workflow.json", SAMPLE_JSON))
    assert spec.name == "Molecular Dynamics Simulation"
    assert spec.global_config.checkpoint_interval == 600.0
    assert spec.global_config.max_retry_attempts == 3
    assert spec.global_config.spot_strategy is SpotStrategy.DIVERSIFIED
    assert [t.id for t in spec.tasks] == [
        "data-preprocessing",
        "equilibration",
        "production-run",
        "analysis",
    ]
    production = spec.tasks[2]
    assert production.command == ["mpirun", "gromacs", "mdrun"]
    assert (production.vcpus, production.memory, production.nodes) == (16, 32768, 8)
    assert production.depends_on == ["equilibration"]
    assert production.environment["SIMULATION_TIME"] == "1000000"
    assert (production.retry_attempts, production.backoff_multiplier) == (3, 2.5)
    assert spec.tasks[3].checkpoint_enabled is False
    assert spec.tasks[0].retry_attempts is None  # falls back to global max_retry_attempts


def test_recipe_sample_yaml_is_the_same_spec(tmp_path: Path) -> None:
    from_json = load_workflow(_write(tmp_path, "wf.json", SAMPLE_JSON))
    from_yaml = load_workflow(_write(tmp_path, "wf.yaml", SAMPLE_YAML))
    assert from_yaml == from_json


def test_the_example_in_the_repo_loads() -> None:
    example = Path(__file__).resolve().parents[2] / "examples" / "molecular-dynamics.json"
    if not example.exists():
        pytest.skip("examples/molecular-dynamics.json is not in this checkout")
    assert load_workflow(example) == parse_workflow(SAMPLE_JSON, "<sample>", "json")


@pytest.mark.parametrize(
    ("written", "seconds"),
    [
        ("600", 600.0),
        ('"600"', 600.0),
        ('"10m"', 600.0),
        ('"2h30m"', 9000.0),
        ('"90s"', 90.0),
        ('"1d"', 86400.0),
        ('"1.5h"', 5400.0),
        ("0.5", 0.5),
    ],
)
def test_durations(written: str, seconds: float) -> None:
    text = f'{{"name": "d", "tasks": [{{"id": "a", "command": "true", "timeout": {written}}}]}}'
    assert parse_workflow(text, "<t>", "json").tasks[0].timeout == seconds


def test_environment_numbers_and_booleans_become_strings() -> None:
    text = (
        "name: env\ntasks:\n  - id: a\n    command: [env]\n    environment:\n"
        "      STEPS: 1000000\n      RATE: 0.5\n      DEBUG: true\n      NAME: plain\n"
    )
    env = parse_workflow(text, "<t>", "yaml").tasks[0].environment
    assert env == {"STEPS": "1000000", "RATE": "0.5", "DEBUG": "true", "NAME": "plain"}


def test_command_may_be_a_shell_string() -> None:
    text = '{"name": "s", "tasks": [{"id": "a", "command": "echo hi | wc -c"}]}'
    assert parse_workflow(text, "<t>").tasks[0].command == "echo hi | wc -c"


def test_extensions_and_sniffing(tmp_path: Path) -> None:
    expected = parse_workflow(SAMPLE_JSON, "<sample>", "json")
    for name, text in [
        ("wf.JSON", SAMPLE_JSON),
        ("wf.yml", SAMPLE_YAML),
        ("wf.workflow", SAMPLE_JSON),
        ("wf", SAMPLE_YAML),
        ("wf.txt", "\n  " + SAMPLE_JSON),
    ]:
        assert load_workflow(_write(tmp_path, name, text)) == expected, name


def test_yaml_flow_mapping_in_a_file_of_unknown_type(tmp_path: Path) -> None:
    path = _write(tmp_path, "wf.conf", "{name: flow, tasks: [{id: a, command: [run]}]}")
    assert load_workflow(path).name == "flow"


def test_json_is_valid_yaml_too(tmp_path: Path) -> None:
    expected = parse_workflow(SAMPLE_JSON, "<sample>", "json")
    assert load_workflow(_write(tmp_path, "wf.yaml", SAMPLE_JSON)) == expected


def test_utf8_bom_is_accepted(tmp_path: Path) -> None:
    for name in ("wf.json", "wf.yaml"):
        path = tmp_path / name
        path.write_bytes(b"\xef\xbb\xbf" + SAMPLE_JSON.encode())
        assert load_workflow(path).name == "Molecular Dynamics Simulation"


def test_non_ascii_text_is_fine(tmp_path: Path) -> None:
    text = 'name: "Simulation de dynamique moléculaire ✓"\ntasks:\n  - {id: a, command: [run]}\n'
    assert load_workflow(_write(tmp_path, "wf.yaml", text)).name.endswith("✓")


def test_yaml_anchors_and_merge_keys(tmp_path: Path) -> None:
    text = """\
name: merged
tasks:
  - &base
    id: a
    command: [run]
    vcpus: 4
    memory: 8192
  - <<: *base
    id: b
    vcpus: 8
    depends_on: [a]
"""
    a, b = load_workflow(_write(tmp_path, "wf.yaml", text)).tasks
    assert (a.vcpus, a.memory) == (4, 8192)
    assert (b.id, b.vcpus, b.memory, b.command, b.depends_on) == ("b", 8, 8192, ["run"], ["a"])


def test_json_duplicate_keys_are_refused_like_yaml_ones(tmp_path: Path) -> None:
    # JSON parsers keep the last value silently; a workflow refuses it, with the line.
    text = '{"name": "first",\n "name": "dup", "tasks": [{"id": "a", "command": ["run"]}]}'
    with pytest.raises(SpecError, match="line 2: key 'name' appears twice"):
        load_workflow(_write(tmp_path, "wf.json", text))


def test_loading_leaves_the_garbage_collector_as_it_was(tmp_path: Path) -> None:
    import gc

    path = _write(tmp_path, "wf.json", SAMPLE_JSON)
    assert gc.isenabled()
    load_workflow(path)
    assert gc.isenabled()
    gc.disable()
    try:
        load_workflow(path)
        assert not gc.isenabled()
    finally:
        gc.enable()
    with pytest.raises(SpecError):
        load_workflow(_write(tmp_path, "bad.json", "{"))
    assert gc.isenabled()


def test_fast_and_slow_json_paths_agree() -> None:
    # The fast path is model_validate_json on bytes; the slow one json.loads + model_validate.
    assert WorkflowSpec.model_validate_json(SAMPLE_JSON) == WorkflowSpec.model_validate(
        json.loads(SAMPLE_JSON)
    )


def test_extension_fields_parse() -> None:
    text = """\
name: ext
global_config: {max_parallel: 8, on_failure: continue, retry_interval: 1m, kill_grace: 15s}
tasks:
  - id: train
    command: python train.py --resume
    gpus: 1
    timeout: 2h30m
    estimated_runtime: 90m
    max_interruptions: 20
    on_failure: finish
    retry:
      - {error_equals: [Capacity.Interrupted], interval_seconds: 30, max_attempts: 3,
         backoff_rate: 2}
      - {error_equals: [States.ALL], interval_seconds: 60, max_attempts: 3, jitter: full}
"""
    spec = parse_workflow(text, "<t>", "yaml")
    assert spec.global_config.on_failure is OnFailure.CONTINUE
    assert spec.global_config.retry_interval == 60.0
    task = spec.tasks[0]
    assert (task.timeout, task.estimated_runtime, task.gpus) == (9000.0, 5400.0, 1)
    assert task.retry is not None and [r.max_attempts for r in task.retry] == [3, 3]


# --------------------------------------------------------------------------- the YAML builder

_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**12), max_value=10**12),
    st.floats(allow_nan=False),
    st.text(max_size=12),
    st.sampled_from(["010", "0x1f", "1_000", "1:30", "yes", "off", "~", "2001-12-14", "-.inf"]),
)
_documents = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(document=_documents, flow=st.booleans())
def test_event_builder_builds_what_safe_load_builds(document: Any, flow: bool) -> None:
    text = yaml.safe_dump(document, default_flow_style=flow, allow_unicode=True)
    assert EventBuilder(text).build() == yaml.safe_load(text)


_PLAIN_SCALARS = [
    "010", "0o17", "0x1f", "0b101", "1_000", "1:30", "+5", "-5", "0", "00", "1.5", ".5", "1e3",
    "1.0e+3", ".inf", "-.Inf", "yes", "No", "ON", "off", "y", "~", "null", "Null", "2001-12-14",
    "2001-12-14t21:59:43.10-05:00", "=", "plain text", "'quoted'", '"dq"', "''", "true", "False",
    "-", "a: b", "#x", "0.", "1__0", "0x_1F", "190:20:30.15",
]  # fmt: skip


@settings(max_examples=200, deadline=None)
@given(
    values=st.lists(st.sampled_from(_PLAIN_SCALARS), min_size=1, max_size=6),
    keys=st.lists(st.sampled_from(_PLAIN_SCALARS), min_size=1, max_size=3),
)
def test_event_builder_resolves_plain_scalars_like_pyyaml(
    values: list[str], keys: list[str]
) -> None:
    lines = [f"v{i}: {v}" for i, v in enumerate(values) if ": " not in v and not v.startswith("#")]
    lines += [f"{k}: key" for k in keys if ": " not in k and not k.startswith(("#", "-"))]
    lines.append("seq: [" + ", ".join(v for v in values if v not in ("-", "a: b", "#x")) + "]")
    text = "\n".join(lines) + "\n"
    try:
        expected = yaml.safe_load(text)
    except yaml.YAMLError:
        with pytest.raises(yaml.YAMLError):
            EventBuilder(text).build()
        return
    assert EventBuilder(text).build() == expected
