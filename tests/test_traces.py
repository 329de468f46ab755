"""Loading spot traces: the format, wrapping, and one clear message per kind of bad file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stormproof.errors import StormproofError
from stormproof.traces import Trace, TraceError, load_trace, parse_trace

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
REAL = SHARED / "data" / "spot-traces" / "availability" / "1-node" / "aws-10-26-2022"


def write(tmp_path: Path, content: str, name: str = "trace.json") -> Path:
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    return path


def test_a_valid_file_loads_with_its_tick_and_counts(tmp_path: Path) -> None:
    doc = {"metadata": {"gap_seconds": 600}, "data": [1, 0, 3], "prices": [0.9, 1.0, 1.1]}
    trace = load_trace(write(tmp_path, json.dumps(doc)))
    assert trace.gap_s == 600.0
    assert trace.counts == (1, 0, 3)
    assert trace.source.endswith("trace.json")
    assert len(trace) == 3
    assert trace.duration_s() == 1800.0


def test_first_ticks_keeps_the_beginning(tmp_path: Path) -> None:
    path = write(tmp_path, json.dumps({"metadata": {"gap_seconds": 60}, "data": [5, 4, 3, 2]}))
    assert load_trace(path, first_ticks=2).counts == (5, 4)
    assert load_trace(path, first_ticks=4).counts == (5, 4, 3, 2)


def test_first_ticks_beyond_the_file_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, json.dumps({"metadata": {"gap_seconds": 60}, "data": [1, 1]}))
    with pytest.raises(TraceError, match=r"has 2 ticks, fewer than the 3 asked for"):
        load_trace(path, first_ticks=3)
    with pytest.raises(TraceError, match=r"first_ticks must be at least 1, not 0"):
        load_trace(path, first_ticks=0)


def test_at_reads_the_tick_of_a_time_and_wraps() -> None:
    trace = Trace(10.0, (7, 8, 9), "t")
    assert [trace.at(t) for t in (0, 9.99, 10, 25, 29.9)] == [7, 7, 8, 9, 9]
    assert trace.at(30) == 7  # one whole loop later
    assert trace.at(65) == 7 and trace.at(-1) == 9


def test_window_slices_and_wraps_around_the_end() -> None:
    trace = Trace(10.0, (0, 1, 2, 3), "t")
    assert trace.window(1, 2).counts == (1, 2)
    assert trace.window(3, 3).counts == (3, 0, 1)
    assert trace.window(6, 2).counts == (2, 3)  # a start past the end wraps first
    assert trace.window(2, 9).counts == (2, 3, 0, 1, 2, 3, 0, 1, 2)  # longer than the trace
    assert trace.window(3, 3).gap_s == 10.0
    with pytest.raises(ValueError, match="at least one tick"):
        trace.window(0, 0)


def test_a_trace_needs_ticks_and_a_positive_tick_length() -> None:
    with pytest.raises(TraceError, match="at least one tick"):
        Trace(600.0, (), "empty")
    with pytest.raises(TraceError, match="must be > 0 s"):
        Trace(0.0, (1,), "zero")


def test_trace_errors_are_user_errors_printed_without_a_traceback() -> None:
    assert issubclass(TraceError, StormproofError)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            "[1, 0]",
            'trace.json: a trace is a JSON object {"metadata": {"gap_seconds": N}, '
            '"data": [...]}, not a list',
        ),
        (
            '{"data": [1]}',
            'trace.json: "metadata.gap_seconds" is missing (add "metadata": '
            '{"gap_seconds": N}, the seconds between two values of "data")',
        ),
        ('{"metadata": {}, "data": [1]}', '"metadata.gap_seconds" is missing'),
        (
            '{"metadata": {"gap_seconds": 0}, "data": [1]}',
            'trace.json: "metadata.gap_seconds" must be a number of seconds > 0, not 0',
        ),
        (
            '{"metadata": {"gap_seconds": "600"}, "data": [1]}',
            '"metadata.gap_seconds" must be a number of seconds > 0, not "600"',
        ),
        (
            '{"metadata": {"gap_seconds": true}, "data": [1]}',
            '"metadata.gap_seconds" must be a number of seconds > 0, not true',
        ),
        (
            '{"metadata": {"gap_seconds": 600}}',
            'trace.json: "data" is missing (the list of availability values)',
        ),
        (
            '{"metadata": {"gap_seconds": 600}, "data": {"a": 1}}',
            'trace.json: "data" must be a list of non-negative integers, not an object',
        ),
        (
            '{"metadata": {"gap_seconds": 600}, "data": []}',
            'trace.json: "data" is empty (a trace needs at least one tick)',
        ),
        (
            '{"metadata": {"gap_seconds": 600}, "data": [1, 0, "x"]}',
            'trace.json: "data" must be a list of non-negative integers (item 2 is "x")',
        ),
        ('{"metadata": {"gap_seconds": 600}, "data": [1, -1]}', "(item 1 is -1)"),
        ('{"metadata": {"gap_seconds": 600}, "data": [1.5]}', "(item 0 is 1.5)"),
        ('{"metadata": {"gap_seconds": 600}, "data": [0, true]}', "(item 1 is true)"),
        ('{"metadata": {"gap_seconds": 600}, "data": [null]}', "(item 0 is null)"),
    ],
)
def test_each_bad_document_gets_a_message_naming_the_file_and_the_fix(
    tmp_path: Path, content: str, message: str
) -> None:
    with pytest.raises(TraceError) as err:
        load_trace(write(tmp_path, content))
    assert message in str(err.value)
    assert str(err.value).startswith(str(tmp_path / "trace.json"))


def test_a_long_bad_item_is_cut_short_in_the_message(tmp_path: Path) -> None:
    doc = {"metadata": {"gap_seconds": 600}, "data": ["x" * 100]}
    with pytest.raises(TraceError) as err:
        load_trace(write(tmp_path, json.dumps(doc)))
    assert "..." in str(err.value) and len(str(err.value)) < 200


def test_malformed_json_says_line_and_column(tmp_path: Path) -> None:
    path = write(tmp_path, '{"metadata": {"gap_seconds": 600},\n "data": [1, 0,]}')
    with pytest.raises(TraceError) as err:
        load_trace(path)
    assert str(err.value) == f"{path}: line 2, column 16: invalid JSON: expecting value"


def test_a_truncated_file_is_called_incomplete(tmp_path: Path) -> None:
    path = write(tmp_path, '{"metadata": {"gap_seconds": 600}, "data": [1, 0')
    with pytest.raises(TraceError, match=r"line 1, column 49: .*ends too early: is it complete"):
        load_trace(path)


def test_unreadable_files_name_the_path_and_the_fix(tmp_path: Path) -> None:
    missing = tmp_path / "nope.json"
    with pytest.raises(TraceError) as err:
        load_trace(missing)
    assert str(err.value) == f"{missing}: no such file (check the path, or pass --traces DIR)"
    with pytest.raises(TraceError, match="is a directory, not a trace file"):
        load_trace(tmp_path)
    binary = tmp_path / "bin.json"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(TraceError, match="is not UTF-8 text"):
        load_trace(binary)


def test_parse_trace_takes_a_decoded_document_and_a_name() -> None:
    trace = parse_trace({"metadata": {"gap_seconds": 1.5}, "data": [2]}, "inline")
    assert trace == Trace(1.5, (2,), "inline")
    with pytest.raises(TraceError, match=r"^inline: a trace is a JSON object .* not null$"):
        parse_trace(None, "inline")


@pytest.mark.skipif(not REAL.is_dir(), reason=f"{SHARED} is absent: the real traces live there")
def test_a_real_trace_loads() -> None:
    trace = load_trace(REAL / "us-west-2a_k80_1.json")
    assert trace.gap_s == 600.0
    assert len(trace) == 3895  # 27 days of 10-minute probes
    assert set(trace.counts) == {0, 1}
    first = load_trace(REAL / "us-west-2a_k80_1.json", first_ticks=1872)
    assert first.counts == trace.counts[:1872]
