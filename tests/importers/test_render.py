"""The hand-written YAML reads back as exactly what was written, whatever the text."""

from __future__ import annotations

import math

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from stormproof.importers.render import decimal_text, render_yaml, scalar
from stormproof.spec.load import parse_workflow

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def read_back(text: str) -> object:
    return yaml.load(text, Loader=_Loader)  # a safe loader (C if available)


# Surrogates cannot be written as UTF-8, so no file (or WfFormat JSON) holds them.
TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=80)


@settings(max_examples=1000, deadline=None)
@given(TEXT)
def test_any_text_reads_back_the_same_in_block_and_flow_context(text: str) -> None:
    written = scalar(text)
    assert "\n" not in written
    assert read_back(f"key: {written}\n") == {"key": text}
    assert read_back(f"- [{written}, {written}]\n") == [[text, text]]
    assert read_back(f"{{k: {written}}}\n") == {"k": text}


@pytest.mark.parametrize(
    ("text", "style"),
    [
        ("mProject_ID0000001", "plain"),
        ("a/b.c-d", "plain"),
        ("yes", "quoted"),
        ("Null", "quoted"),
        ("0.0167", "quoted"),
        ("1e5", "quoted"),
        ("2024-01-01", "quoted"),
        ("a b", "quoted"),
        ("", "quoted"),
        ("-x", "quoted"),
        ("tab\there", "quoted"),
        ("nel\x85", "quoted"),
        ("\ufeffbom", "quoted"),
        ("nul\x00", "quoted"),
        ("café 😀", "quoted"),
    ],
)
def test_plain_only_where_it_cannot_change_meaning(text: str, style: str) -> None:
    written = scalar(text)
    assert (written == text) == (style == "plain")
    assert read_back(f"k: {written}") == {"k": text}


@settings(max_examples=500, deadline=None)
@given(st.floats(min_value=0, max_value=1e12, allow_nan=False, allow_infinity=False))
def test_numbers_are_plain_decimals_that_read_back_exactly(value: float) -> None:
    text = decimal_text(value)
    assert "e" not in text.lower()
    loaded = read_back(f"n: {text}")
    assert isinstance(loaded, dict)
    assert float(loaded["n"]) == value


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_numbers_that_yaml_cannot_hold_are_refused(value: float) -> None:
    with pytest.raises(ValueError, match="cannot write"):
        decimal_text(value)


def test_a_whole_document_with_header_loads_as_a_workflow() -> None:
    document = {
        "name": "odd: name # here",
        "description": "line one\nline two",
        "tasks": [
            {
                "id": "a",
                "command": ["sleep", "0.5"],
                "vcpus": 1.5,
                "memory": 10,
                "estimated_runtime": 1e-05,
                "labels": {"wf_id": "a:1", "wf_command": 'it\'s "quoted"'},
            },
            {"id": "b", "command": "true", "depends_on": ["a"], "labels": {}},
        ],
    }
    header = ["from /tmp/weird\x01path", "second line"]
    text = render_yaml(document, header)
    assert text.startswith("# from /tmp/weird?path\n# second line\n")
    assert read_back(text) == document
    spec = parse_workflow(text, "doc.yaml", "yaml")
    assert spec.tasks[0].estimated_runtime == 1e-05
    assert spec.tasks[0].labels == {"wf_id": "a:1", "wf_command": 'it\'s "quoted"'}


def test_a_value_of_an_unexpected_type_is_a_programming_error() -> None:
    with pytest.raises(TypeError, match="cannot write a set"):
        render_yaml({"name": {1}})
