"""The published JSON Schema of the workflow file (``stormproof schema``).

Why publish one: editors (VS Code's YAML extension, JetBrains) complete and
check a workflow as it is typed when the file points at a schema, and other
tools can generate workflows against it. The schema is derived from the
pydantic model, so it cannot drift from what ``load_workflow`` accepts; it
describes the *input* (a duration may be ``600`` or ``"10m"``), not the
parsed values.

What the schema cannot say (unknown dependencies, cycles, duplicate ids) is
checked when a workflow is loaded (``stormproof plan``).
"""

from __future__ import annotations

from typing import Any

from stormproof.spec.model import WorkflowSpec

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def workflow_json_schema() -> dict[str, Any]:
    """The JSON Schema of a workflow file, with ``$schema``, a title and a description."""
    body = WorkflowSpec.model_json_schema(mode="validation")
    return {
        "$schema": SCHEMA_DIALECT,
        "title": "stormproof workflow",
        "description": (
            "A stormproof workflow: a name, optional run-wide settings (global_config) and "
            "the tasks, each with an id, a command and the ids it depends_on. Accepted as "
            "JSON or YAML. Durations are seconds or strings like '10m' or '2h30m'; memory "
            "is in MiB. Graph rules (known dependencies, no cycles, unique ids) are checked "
            "when a workflow is loaded (`stormproof plan FILE`)."
        ),
        **{key: value for key, value in body.items() if key not in ("title", "description")},
    }
