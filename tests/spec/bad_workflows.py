"""Bad workflow files, and a fragment of the message each must produce.

Shared by the spec tests (``SpecError`` and its text) and the CLI tests (exit
code 2, one clear message, no traceback), so that every front door reports
the same problems the same way.

``CASES`` holds ``(case id, file name, file text)``; the extension of the file
name decides the format. ``EXPECTED[case id]`` is a fragment that the rendered
message must contain. Write a case with ``write_case`` (or ``case_bytes``):
file texts may carry raw bytes that are not UTF-8 as lone surrogates
(``surrogateescape``), which ``Path.write_text`` would refuse.
"""

from __future__ import annotations

from pathlib import Path


def case_bytes(text: str) -> bytes:
    """The bytes of a case file (UTF-8, raw bytes kept through ``surrogateescape``)."""
    return text.encode("utf-8", "surrogateescape")


def write_case(directory: Path, file_name: str, text: str) -> Path:
    """Write one case into ``directory`` and return its path."""
    path = directory / file_name
    path.write_bytes(case_bytes(text))
    return path


def _raw(data: bytes) -> str:
    return data.decode("utf-8", "surrogateescape")


def _tasks(body: str) -> str:
    """A YAML workflow around some task lines (indented by 2, starting with '- id: ...')."""
    return "name: demo\ntasks:\n" + body


def _alias_bomb() -> str:
    """The 'billion laughs': nine levels of nine aliases, 9^9 strings if expanded."""
    lines = ["name: bomb", 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for prev, name in zip("abcdefgh", "bcdefghi", strict=True):
        lines.append(f"{name}: &{name} [" + ",".join([f"*{prev}"] * 9) + "]")
    lines.append("tasks:\n  - {id: a, command: *i}")
    return "\n".join(lines) + "\n"


CASES: list[tuple[str, str, str]] = [
    # --- the graph
    (
        "typo_dependency",
        "workflow.yaml",
        _tasks(
            "  - id: equilibration\n    command: [mpirun, gromacs]\n"
            "  - id: production\n    command: [mpirun, mdrun]\n    depends_on: [equilibraton]\n"
        ),
    ),
    (
        "cycle_three_tasks",
        "workflow.yaml",
        _tasks(
            "  - {id: a, command: [run], depends_on: [b]}\n"
            "  - {id: b, command: [run], depends_on: [c]}\n"
            "  - {id: c, command: [run], depends_on: [a]}\n"
        ),
    ),
    (
        "self_dependency",
        "workflow.yaml",
        _tasks("  - id: prep\n    command: [run]\n    depends_on: [prep]\n"),
    ),
    (
        "duplicate_id",
        "workflow.yaml",
        _tasks("  - id: prep\n    command: [run]\n  - id: prep\n    command: [run, again]\n"),
    ),
    (
        "duplicate_dependency",
        "workflow.yaml",
        _tasks(
            "  - id: prep\n    command: [run]\n"
            "  - id: md\n    command: [run]\n    depends_on: [prep, prep]\n"
        ),
    ),
    # --- task fields
    (
        "negative_vcpus",
        "workflow.yaml",
        _tasks("  - id: prep\n    command: [run]\n    vcpus: -4\n"),
    ),
    ("zero_memory", "workflow.yaml", _tasks("  - id: prep\n    command: [run]\n    memory: 0\n")),
    (
        "memory_with_unit",
        "workflow.yaml",
        _tasks("  - id: prep\n    command: [run]\n    memory: 4GiB\n"),
    ),
    ("unsafe_id_dotdot", "workflow.yaml", _tasks("  - id: ../x\n    command: [run]\n")),
    ("unsafe_id_slash", "workflow.yaml", _tasks("  - id: a/b\n    command: [run]\n")),
    ("unsafe_id_hidden", "workflow.yaml", _tasks("  - id: .hidden\n    command: [run]\n")),
    ("empty_id", "workflow.yaml", _tasks("  - id: ''\n    command: [run]\n")),
    ("long_id", "workflow.yaml", _tasks(f"  - id: {'x' * 129}\n    command: [run]\n")),
    (
        "vcpus_as_word",
        "workflow.yaml",
        _tasks("  - id: prep\n    command: [run]\n    vcpus: eight\n"),
    ),
    (
        "depends_on_as_string",
        "workflow.yaml",
        _tasks(
            "  - id: prep\n    command: [run]\n  - id: md\n    command: [run]\n"
            "    depends_on: prep\n"
        ),
    ),
    (
        "depends_on_as_string_json",
        "workflow.json",
        '{"name": "demo", "tasks": [\n  {"id": "prep", "command": ["run"]},\n'
        '  {"id": "md", "command": ["run"], "depends_on": "prep"}\n]}\n',
    ),
    (
        "vcpus_as_word_json",
        "workflow.json",
        '{\n  "name": "demo",\n  "tasks": [\n    {\n      "id": "prep",\n'
        '      "vcpus": "eight",\n      "command": ["run"]\n    }\n  ]\n}\n',
    ),
    ("missing_command", "workflow.yaml", _tasks("  - id: prep\n    vcpus: 2\n")),
    ("empty_command", "workflow.yaml", _tasks("  - id: prep\n    command: []\n")),
    ("blank_command", "workflow.yaml", _tasks("  - id: prep\n    command: '   '\n")),
    (
        "number_in_command",
        "workflow.yaml",
        _tasks("  - id: nap\n    command: [sleep, 5]\n"),
    ),
    (
        "unknown_task_field",
        "workflow.yaml",
        _tasks(
            "  - id: prep\n    command: [run]\n"
            "  - id: md\n    command: [run]\n    depnds_on: [prep]\n"
        ),
    ),
    (
        "bad_type_value",
        "workflow.yaml",
        _tasks("  - id: prep\n    command: [run]\n    type: gpu\n"),
    ),
    (
        "bad_on_failure",
        "workflow.yaml",
        _tasks("  - id: prep\n    command: [run]\n    on_failure: explode\n"),
    ),
    (
        "bad_duration",
        "workflow.yaml",
        _tasks("  - id: prep\n    command: [run]\n    timeout: soon\n"),
    ),
    (
        "negative_timeout",
        "workflow.yaml",
        _tasks("  - id: prep\n    command: [run]\n    timeout: -5\n"),
    ),
    (
        "infinite_vcpus",
        "workflow.yaml",
        _tasks("  - id: prep\n    command: [run]\n    vcpus: .inf\n"),
    ),
    (
        "env_name_with_space",
        "workflow.yaml",
        _tasks("  - id: prep\n    command: [run]\n    environment:\n      MY VAR: 1\n"),
    ),
    # --- retry rules
    (
        "asl_pascal_case",
        "workflow.yaml",
        _tasks(
            "  - id: prep\n    command: [run]\n    retry:\n"
            "      - error_equals: [Task.Failed]\n        IntervalSeconds: 30\n"
        ),
    ),
    (
        "asl_error_equals",
        "workflow.yaml",
        _tasks(
            "  - id: prep\n    command: [run]\n    retry:\n      - ErrorEquals: [Task.Failed]\n"
        ),
    ),
    (
        "bad_retry_error_name",
        "workflow.yaml",
        _tasks(
            "  - id: prep\n    command: [run]\n    retry:\n      - error_equals: [Task.Timout]\n"
        ),
    ),
    (
        "retry_and_retry_attempts",
        "workflow.yaml",
        _tasks(
            "  - id: prep\n    command: [run]\n    retry_attempts: 2\n    retry:\n"
            "      - error_equals: [Task.Failed]\n"
        ),
    ),
    (
        "checkpoint_settings_without_checkpointing",
        "workflow.yaml",
        _tasks("  - id: prep\n    command: [run]\n    checkpoint_interval: 10m\n"),
    ),
    # --- the top level and global_config
    ("missing_name", "workflow.yaml", "tasks:\n  - id: prep\n    command: [run]\n"),
    ("missing_tasks", "workflow.yaml", "name: demo\n"),
    ("empty_tasks", "workflow.yaml", "name: demo\ntasks: []\n"),
    ("task_not_mapping", "workflow.yaml", "name: demo\ntasks:\n  - prep\n"),
    ("top_level_list", "workflow.yaml", "- id: prep\n  command: [run]\n"),
    ("top_level_scalar", "workflow.json", '"just a string"\n'),
    (
        "misspelt_name",
        "workflow.yaml",
        "nmae: demo\ntasks:\n  - id: prep\n    command: [run]\n",
    ),
    (
        "unknown_global_field",
        "workflow.yaml",
        "name: demo\nglobal_config:\n  max_paralel: 4\ntasks:\n  - id: prep\n    command: [run]\n",
    ),
    (
        "global_field_at_top",
        "workflow.yaml",
        "name: demo\ncheckpoint_interval: 600\ntasks:\n  - id: prep\n    command: [run]\n",
    ),
    (
        "bad_spot_strategy",
        "workflow.yaml",
        "name: demo\nglobal_config:\n  spot_strategy: diversifed\n"
        "tasks:\n  - id: prep\n    command: [run]\n",
    ),
    # --- the file itself
    ("empty_file", "workflow.yaml", ""),
    ("blank_file", "workflow.json", "  \n\n"),
    ("only_comments", "workflow.yaml", "# nothing here yet\n"),
    ("not_json", "workflow.json", '{"name": '),
    (
        "json_trailing_comma",
        "workflow.json",
        '{"name": "demo", "tasks": [{"id": "a", "command": ["run"],}]}',
    ),
    (
        "bad_yaml_indentation",
        "workflow.yaml",
        "name: demo\ntasks:\n  - id: prep\n    command: [run]\n   vcpus: 2\n",
    ),
    (
        "yaml_tab_indentation",
        "workflow.yaml",
        "name: demo\ntasks:\n\t- id: prep\n",
    ),
    (
        "two_yaml_documents",
        "workflow.yaml",
        "name: demo\ntasks:\n  - id: prep\n    command: [run]\n---\nname: other\n",
    ),
    (
        "yaml_custom_tag",
        "workflow.yaml",
        _tasks("  - id: prep\n    command: !Ref run\n"),
    ),
    (
        "duplicate_yaml_key",
        "workflow.yaml",
        _tasks("  - id: prep\n    command: [run]\n    vcpus: 2\n    vcpus: 4\n"),
    ),
    ("binary_garbage", "workflow.yaml", _raw(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00")),
    # --- over a limit (stormproof.limits): refused at once, never expanded or parsed on
    ("yaml_alias_bomb", "workflow.yaml", _alias_bomb()),
    ("yaml_alias_in_itself", "workflow.yaml", _tasks("  - &t {id: a, command: [run, *t]}\n")),
    (
        "long_number_interval_yaml",
        "workflow.yaml",
        "name: demo\nglobal_config:\n  checkpoint_interval: " + "9" * 400 + "\n"
        "tasks:\n  - {id: a, command: [run]}\n",
    ),
    (
        "long_number_vcpus_yaml",
        "workflow.yaml",
        _tasks(f"  - {{id: a, command: [run], vcpus: {'9' * 5000}}}\n"),
    ),
    (
        "long_number_interval_json",
        "workflow.json",
        '{"name": "demo", "global_config": {"checkpoint_interval": ' + "9" * 400 + "},\n"
        ' "tasks": [{"id": "a", "command": ["run"]}]}',
    ),
    (
        "long_number_vcpus_json",
        "workflow.json",
        '{"name": "demo",\n "tasks": [{"id": "a", "command": ["run"],\n "vcpus": '
        + "9" * 5000
        + "}]}",
    ),
    (
        "duplicate_json_key",
        "workflow.json",
        '{"name": "demo", "tasks": [\n  {"id": "a", "command": ["run"], "vcpus": 2,\n'
        '   "vcpus": 4}\n]}\n',
    ),
    ("deep_yaml", "workflow.yaml", _tasks("  - id: a\n    command: " + "[" * 40 + "]" * 40 + "\n")),
    (
        "deep_json",
        "workflow.json",
        '{"name": "demo",\n "tasks": [{"id": "a", "command": ' + "[" * 40 + "]" * 40 + "}]}",
    ),
    ("not_utf8", "workflow.yaml", _raw(b"name: caf\xe9\ntasks: []\n")),
    # --- what no program can be given (exec takes C strings): a run used to hang on it
    ("nul_in_command", "workflow.yaml", _tasks('  - {id: a, command: ["ech\\0o", x]}\n')),
    (
        "nul_in_environment",
        "workflow.json",
        '{"name": "n", "tasks": [{"id": "a", "command": "true", '
        '"environment": {"X": "a\\u0000b"}}]}',
    ),
]

EXPECTED: dict[str, str] = {
    "typo_dependency": (
        "line 7: tasks[1] (production).depends_on: unknown task 'equilibraton' "
        "(did you mean 'equilibration'?)"
    ),
    "cycle_three_tasks": "dependency cycle a -> b -> c -> a",
    "self_dependency": "task 'prep' depends on itself",
    "duplicate_id": "tasks[1].id: 'prep' is used by tasks[0] too",
    "duplicate_dependency": "tasks[1] (md).depends_on: lists 'prep' twice",
    "negative_vcpus": "tasks[0] (prep).vcpus: must be more than 0, got -4",
    "zero_memory": "tasks[0] (prep).memory: must be more than 0, got 0",
    "memory_with_unit": "memory is in MiB, e.g. 4096 for 4 GiB",
    "unsafe_id_dotdot": "'../x' is not a safe task id: it starts with '.' and contains '/'",
    "unsafe_id_slash": "'a/b' is not a safe task id: it contains '/'",
    "unsafe_id_hidden": "'.hidden' is not a safe task id: it starts with '.'",
    "empty_id": "'' is not a safe task id: it is empty",
    "long_id": "is not a safe task id: it is 129 characters long",
    "vcpus_as_word": "line 5: tasks[0] (prep).vcpus: expected a number, got 'eight'",
    "depends_on_as_string": "expected a list of task ids, got 'prep' (write depends_on: [prep])",
    "depends_on_as_string_json": 'write "depends_on": ["prep"]',
    "vcpus_as_word_json": "line 6: tasks[0] (prep).vcpus: expected a number, got 'eight'",
    "missing_command": "tasks[0] (prep): missing field 'command'",
    "empty_command": "tasks[0] (prep).command: is empty",
    "blank_command": "tasks[0] (prep).command: is empty",
    "number_in_command": (
        'tasks[0] (nap).command[1]: expected a string, got 5 (put it in quotes: "5")'
    ),
    "unknown_task_field": (
        "line 7: tasks[1] (md): unknown field 'depnds_on' (did you mean 'depends_on'?)"
    ),
    "bad_type_value": "expected one of 'batch', 'multi_node', got 'gpu'",
    "bad_on_failure": "expected one of 'fail', 'finish', 'continue', got 'explode'",
    "bad_duration": "timeout: expected a duration like 600, '10m' or '2h30m', got 'soon'",
    "negative_timeout": "timeout: cannot be negative, got -5",
    "infinite_vcpus": "vcpus: expected a finite number, got inf",
    "env_name_with_space": "variable name 'MY VAR' is not valid",
    "asl_pascal_case": "unknown field 'IntervalSeconds' (did you mean 'interval_seconds'?)",
    "asl_error_equals": "unknown field 'ErrorEquals' (did you mean 'error_equals'?)",
    "bad_retry_error_name": "unknown error name 'Task.Timout' (did you mean 'Task.Timeout'?)",
    "retry_and_retry_attempts": "has both retry and retry_attempts",
    "checkpoint_settings_without_checkpointing": (
        "tasks[0] (prep): sets checkpoint_interval but not checkpoint_enabled: true, so it "
        "does nothing (add checkpoint_enabled: true, or remove it)"
    ),
    "missing_name": "top level: missing field 'name'",
    "missing_tasks": "top level: missing field 'tasks'",
    "empty_tasks": "tasks: the list is empty (add at least one task)",
    "task_not_mapping": "tasks[0]: expected a mapping, got 'prep'",
    "top_level_list": "the top level must be a mapping with name and tasks, got a list",
    "top_level_scalar": "the top level must be a mapping with name and tasks",
    "misspelt_name": "top level: unknown field 'nmae' (did you mean 'name'?)",
    "unknown_global_field": (
        "line 3: global_config: unknown field 'max_paralel' (did you mean 'max_parallel'?)"
    ),
    "global_field_at_top": "unknown field 'checkpoint_interval' (it belongs under global_config)",
    "bad_spot_strategy": "got 'diversifed' (did you mean 'diversified'?)",
    "empty_file": "the file is empty",
    "blank_file": "the file is empty",
    "only_comments": "the file holds only comments",
    "not_json": "line 1, column 10: invalid JSON: expecting value (the file ends too early",
    "json_trailing_comma": "invalid JSON: expecting property name enclosed in double quotes",
    "bad_yaml_indentation": "line 5, column 4: invalid YAML",
    "yaml_tab_indentation": "indent with spaces, not tabs",
    "two_yaml_documents": "the file holds more than one document",
    "yaml_custom_tag": "no custom '!' tags",
    "duplicate_yaml_key": "line 6: tasks[0] (prep): key 'vcpus' appears twice",
    "binary_garbage": "this is a binary file, not a workflow",
    "not_utf8": "line 1: the file is not UTF-8 text (byte 0xe9",
    "yaml_alias_bomb": (
        "line 7, column 8: aliases (*name) expand to more values than the file itself "
        "holds plus 100,000"
    ),
    "yaml_alias_in_itself": "line 3, column 31: the alias *t is inside its own anchor",
    "long_number_interval_yaml": (
        "line 3, column 24: the number 999999999999…999999 has 400 characters, more than "
        "the 32 a number may have"
    ),
    "long_number_vcpus_yaml": "line 3, column 36: the number 999999999999…999999 has 5000",
    "long_number_interval_json": "line 1: the number 999999999999…999999 has 400 characters",
    "long_number_vcpus_json": "line 3: the number 999999999999…999999 has 5000 characters",
    "duplicate_json_key": "line 3: key 'vcpus' appears twice in one object",
    "deep_yaml": "line 4, column 43: the document nests more than 32 levels deep, the limit",
    "deep_json": "line 2: the document nests more than 32 levels deep, the limit",
    "nul_in_command": "line 3: tasks[0] (a).command: holds a NUL byte",
    "nul_in_environment": "tasks[0] (a).environment: X: holds a NUL byte (\\0)",
}
