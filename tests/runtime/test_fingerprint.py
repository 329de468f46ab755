"""What goes into a task's fingerprint, and what does not (``runtime.fingerprint``)."""

from __future__ import annotations

import hashlib
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


def test_a_task_on_the_host_keeps_its_fingerprint_whatever_runtime_is_configured() -> None:
    """Adding ``container: podman`` to the config must not rerun tasks that have no image."""
    assert fps(runtime="podman") == fps() == fps(runtime="apptainer")


def test_the_order_environment_variables_are_written_in_does_not_matter() -> None:
    assert fps({"environment": {"A": "1", "B": "2"}}) == fps({"environment": {"B": "2", "A": "1"}})


def test_a_file_renamed_inside_an_input_folder_changes_its_hash(tmp_path: Path) -> None:
    folder = tmp_path / "scripts"
    folder.mkdir()
    (folder / "a.py").write_text("x")
    before = content_hash(folder)
    (folder / "a.py").rename(folder / "b.py")  # same bytes, another name
    assert content_hash(folder) != before


def test_an_input_shared_by_tasks_is_hashed_once_and_the_others_still_are(
    tmp_path: Path,
) -> None:
    for name in ("shared.txt", "own.txt"):
        (tmp_path / name).write_text(name)
    tasks = [
        {"id": "a", "command": "x", "inputs": ["shared.txt"]},
        {"id": "b", "command": "y", "inputs": ["shared.txt", "own.txt"]},
    ]
    spec = WorkflowSpec.model_validate({"name": "wf", "tasks": tasks})
    hashes = hash_inputs(spec, tmp_path, "wf.yaml")
    assert hashes == {p: content_hash(tmp_path / p) for p in ("shared.txt", "own.txt")}


def test_fingerprints_stay_what_earlier_versions_recorded() -> None:
    """Results in users' stores carry fingerprints made by earlier versions: if these change,
    every task reruns after an upgrade. A deliberate change bumps ``FINGERPRINT_VERSION``
    and these values with it."""
    assert fps() == [
        "c811313d78d3c624b25e92734403899a66d8df86bcedd368d023f5858069209a",
        "1f85c929863ff0e5f1f6dec5120455334a8800ce5abb3e218e72ed86b044e028",
    ]
    assert fps({"container_image": "img:1"}, "podman")[0] == (
        "dfb9c4f778d0b6bfdf3e28ccb69549f9f57439ccb9c43843eb69a95ec2c07a0d"
    )


def test_a_folder_s_hash_stays_what_earlier_versions_recorded(tmp_path: Path) -> None:
    folder = tmp_path / "s"
    (folder / "lib").mkdir(parents=True)
    (folder / "lib" / "a.py").write_text("x")
    (folder / "run.sh").write_text("echo")
    assert content_hash(folder) == (
        "sha256:b49641d561c551fb205d6ba8eb5ebf5beb209f4fd966361cd5b44280094c4501"
    )


def test_an_input_s_hash_is_the_sha256_of_its_bytes(tmp_path: Path) -> None:
    f = tmp_path / "params.yaml"
    f.write_bytes(b"dt: 1\n" * 300_000)  # more than one read
    assert content_hash(f) == "sha256:" + hashlib.sha256(f.read_bytes()).hexdigest()


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


def test_an_input_a_run_never_hashed_is_said_so_and_never_taken_as_unchanged() -> None:
    spec = WorkflowSpec.model_validate(
        {"name": "wf", "tasks": [{"id": "a", "command": "x", "inputs": ["i"]}]}
    )
    (old,) = definitions(spec, {}, None)  # a run from before inputs were hashed
    (new,) = definitions(spec, {"i": "sha256:1"}, None)
    assert old.fingerprint != new.fingerprint
    assert what_changed(old, new) == ["input not hashed before: i"]
