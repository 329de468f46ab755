"""The example workflow files: the recipe's sample kept verbatim, and its runnable YAML twin."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import yaml

from stormproof.spec.model import WorkflowSpec
from tests.recipe_sample import RECIPE_SAMPLE

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


#: sha256 of the heredoc's bytes with its 3-space indentation removed (verbatim, not re-dumped).
RECIPE_SAMPLE_SHA256 = "6575fb82b29c35c11a711a0a180366e20245bf295c40bb4533ed410d5230bdbc"

#: The task fields the YAML keeps from the recipe unchanged.
KEPT = (
    "id",
    "name",
    "type",
    "container_image",
    "depends_on",
    "retry_attempts",
    "backoff_multiplier",
    "checkpoint_enabled",
    "spot_enabled",
)


def _keys_in_order(value: Any) -> Any:
    if isinstance(value, dict):
        return [(k, _keys_in_order(v)) for k, v in value.items()]
    if isinstance(value, list):
        return [_keys_in_order(v) for v in value]
    return value


def test_json_is_the_recipe_sample_verbatim() -> None:
    raw = (EXAMPLES / "molecular-dynamics.json").read_bytes()
    data = json.loads(raw)
    assert data == RECIPE_SAMPLE
    assert _keys_in_order(data) == _keys_in_order(RECIPE_SAMPLE)  # same field order too
    assert hashlib.sha256(raw).hexdigest() == RECIPE_SAMPLE_SHA256
    assert raw.startswith(b'{\n    "name"') and raw.endswith(b"    ]\n}\n")


def test_json_is_accepted_by_the_spec_model() -> None:
    spec = WorkflowSpec.model_validate(RECIPE_SAMPLE)
    assert [t.id for t in spec.tasks] == [
        "data-preprocessing",
        "equilibration",
        "production-run",
        "analysis",
    ]


def test_yaml_is_the_same_workflow_sized_for_a_laptop() -> None:
    data = yaml.safe_load((EXAMPLES / "molecular-dynamics.yaml").read_text())
    spec = WorkflowSpec.model_validate(data)
    recipe = WorkflowSpec.model_validate(RECIPE_SAMPLE)
    assert (spec.name, spec.description, spec.global_config) == (
        recipe.name,
        recipe.description,
        recipe.global_config,
    )
    assert len(spec.tasks) == len(recipe.tasks)
    for task, original in zip(spec.tasks, recipe.tasks, strict=True):
        for field in KEPT:
            assert getattr(task, field) == getattr(original, field), (task.id, field)
        assert (task.vcpus, task.nodes) == (1, 1), task.id
        assert 256 <= task.memory <= 512, task.id
        assert task.estimated_runtime is not None and task.timeout is not None, task.id
        assert task.timeout > task.estimated_runtime, task.id
        # python3 ${STORMPROOF_WORKFLOW_DIR}/md/<script>.py, and the script is there
        assert isinstance(task.command, list) and task.command[0] == "python3"
        prefix = "${STORMPROOF_WORKFLOW_DIR}/"
        assert task.command[1].startswith(prefix), task.id
        assert (EXAMPLES / task.command[1].removeprefix(prefix)).is_file(), task.id
        # the recipe's /mnt/efs/<x> paths become ${STORMPROOF_DATA_DIR}/<x>
        for key in ("INPUT_PATH", "OUTPUT_PATH"):
            want = original.environment[key].replace("/mnt/efs", "${STORMPROOF_DATA_DIR}")
            assert task.environment[key] == want, (task.id, key)
    production = spec.tasks[2]
    assert int(production.environment["SIMULATION_TIME"]) < 1_000_000
