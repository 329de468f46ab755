"""What goes into a task's fingerprint, and what does not (``runtime.fingerprint``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from stormproof.errors import SpecError
from stormproof.runtime.fingerprint import content_hash, definitions, hash_inputs, what_changed
from stormproof.spec.model import WorkflowSpec

BASE: dict[str, Any] = {
    "name": "wf",
    "tasks": [
        {"id": "prep", "command": ["prep.sh"], "outputs": ["p"]},
        {"id": "sim", "command": "sim $X", "depends_on": ["prep"], "environment": {"X": 1}},
    ],
}


def fps(change: dict[str, Any] | None = None, runtime: str | None = None) -> list[str]:
    tasks = [dict(t) for t in BASE["tasks"]]
    for key, value in (change or {}).items():
        tasks[0][key] = value
    spec = WorkflowSpec.model_validate({"name": "wf", "tasks": tasks})
    return [d.fingerprint for d in definitions(spec, {"in.txt": "sha256:1"}, runtime)]


@pytest.mark.parametrize(
    "change",
    [
        {"command": ["prep.sh", "-v"]},
        {"environment": {"Y": "2"}},
        {"nodes": 2},
        {"gpus": 1},
        {"type": "multi_node"},
        {"outputs": ["p", "q"]},
        {"inputs": ["in.txt"]},
    ],
)
def test_what_defines_a_result_changes_the_fingerprint_and_every_child_s(
    change: dict[str, Any],
) -> None:
    before, after = fps(), fps(change)
    assert before[0] != after[0]
    assert before[1] != after[1]  # the child's result may depend on it


@pytest.mark.parametrize(
    "change",
    [
        {"name": "Prepare"},
        {"vcpus": 8},
        {"memory": 8192},
        {"retry_attempts": 5},
        {"timeout": 60},
        {"estimated_runtime": "2h"},
        {"labels": {"a": "b"}},
        {"spot_enabled": False},
        {"container_image": "img:1"},  # no runtime: it runs on the host either way
    ],
)
def test_what_cannot_change_a_result_leaves_it(change: dict[str, Any]) -> None:
    assert fps() == fps(change)


def test_an_image_counts_once_a_runtime_runs_it() -> None:
    assert fps({"container_image": "img:1"}, "podman") != fps(
        {"container_image": "img:2"}, "podman"
    )
    assert fps({"container_image": "img:1"}, "podman") != fps({"container_image": "img:1"})


def test_inputs_are_hashed_by_content_not_by_time(tmp_path: Path) -> None:
    f = tmp_path / "params.yaml"
    f.write_text("dt: 1\n")
    first = content_hash(f)
    os.utime(f, (1, 1))
    assert content_hash(f) == first  # touched, or restored from a backup: same content
    f.write_text("dt: 2\n")  # same size, new content
    assert content_hash(f) != first
    folder = tmp_path / "scripts"
    (folder / "lib").mkdir(parents=True)
    (folder / "lib" / "a.py").write_text("x")
    before = content_hash(folder)
    (folder / "lib" / "b.py").write_text("")
    assert content_hash(folder) != before


def test_a_missing_input_is_an_error_naming_the_task_and_the_path(tmp_path: Path) -> None:
    spec = WorkflowSpec.model_validate(
        {"name": "wf", "tasks": [{"id": "a", "command": "x", "inputs": ["nope.txt"]}]}
    )
    with pytest.raises(SpecError, match=r"tasks\[0\] \(a\)\.inputs\[0\]: 'nope.txt': no such"):
        hash_inputs(spec, tmp_path, "wf.yaml")


def test_what_changed_names_each_part_in_words() -> None:
    old_spec = WorkflowSpec.model_validate(
        {"name": "wf", "tasks": [{"id": "a", "command": "x", "inputs": ["i", "gone"]}]}
    )
    new_spec = WorkflowSpec.model_validate(
        {
            "name": "wf",
            "tasks": [{"id": "a", "command": "y", "environment": {"E": 1}, "inputs": ["i", "j"]}],
        }
    )
    (old,) = definitions(old_spec, {"i": "sha256:1", "gone": "sha256:2"}, None)
    (new,) = definitions(new_spec, {"i": "sha256:9", "j": "sha256:3"}, None)
    assert what_changed(old, new) == [
        "command changed",
        "environment changed",
        "input removed: gone",
        "input changed: i",
        "input added: j",
    ]
    recorded = {"parts": old.parts, "inputs": old.inputs}  # as a result keeps it
    assert what_changed(recorded, new) == what_changed(old, new)
