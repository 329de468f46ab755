"""The published JSON Schema describes what the loader accepts."""

from __future__ import annotations

import json
import re
from typing import Any

from stormproof.spec.model import TASK_ID_PATTERN
from stormproof.spec.schema import SCHEMA_DIALECT, workflow_json_schema
from tests.spec.test_load_good import SAMPLE_JSON


def _task_schema(schema: dict[str, Any]) -> dict[str, Any]:
    task: dict[str, Any] = schema["$defs"]["TaskSpec"]
    return task


def test_header() -> None:
    schema = workflow_json_schema()
    assert schema["$schema"] == SCHEMA_DIALECT
    assert schema["title"] == "stormproof workflow"
    assert "depends_on" in schema["description"]
    assert schema["type"] == "object"
    assert set(schema["required"]) == {"name", "tasks"}
    assert schema["additionalProperties"] is False
    json.dumps(schema)  # serialisable as is


def test_every_field_of_the_recipe_sample_is_described() -> None:
    schema = workflow_json_schema()
    sample = json.loads(SAMPLE_JSON)
    assert set(sample) <= set(schema["properties"])
    config = schema["$defs"]["GlobalConfig"]["properties"]
    assert set(sample["global_config"]) <= set(config)
    task = _task_schema(schema)
    for task_doc in sample["tasks"]:
        assert set(task_doc) <= set(task["properties"])
    assert set(task["required"]) == {"id", "command"}
    assert task["additionalProperties"] is False


def test_id_pattern_and_durations_say_what_the_loader_accepts() -> None:
    task = _task_schema(workflow_json_schema())
    assert task["properties"]["id"]["pattern"] == TASK_ID_PATTERN
    timeout = json.dumps(task["properties"]["timeout"])
    assert '"type": "string"' in timeout and '"type": "number"' in timeout
    duration = re.compile(
        next(
            variant["pattern"]
            for variant in task["properties"]["timeout"]["anyOf"][0]["anyOf"]
            if variant["type"] == "string"
        )
    )
    assert all(duration.match(text) for text in ("600", "10m", "2h30m", "1d", "90s"))
    assert not duration.match("soon")
    env = task["properties"]["environment"]["additionalProperties"]
    assert env["type"] == ["string", "number", "boolean"]


def test_enums_list_their_values() -> None:
    defs = workflow_json_schema()["$defs"]
    assert defs["OnFailure"]["enum"] == ["fail", "finish", "continue"]
    assert "diversified" in defs["SpotStrategy"]["enum"]
