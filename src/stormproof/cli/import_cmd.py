"""``stormproof import``: workflows recorded or written for other tools, as stormproof files.

``stormproof import wfformat TRACE.json -o workflow.yaml`` turns a WfCommons
WfFormat instance (a real execution of a workflow, e.g. from WfInstances)
into a workflow whose tasks carry the traced runtimes, for ``plan``, and
sleep a scaled-down copy of them, for a quick real ``run``.

Exit codes: 0 written; 2 bad usage or a file that cannot be imported (one
message naming the place and the fix, never a traceback).

The group is registered on the main CLI by ``cli/main.py``
(``cli.add_command(import_)``); it needs nothing else from it, not even a
home or a configuration.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click
from rich.console import Console
from rich.markup import escape

from stormproof.errors import SpecError, StormproofError
from stormproof.importers.files import STDIO, check_output, read_json, write_output
from stormproof.importers.render import decimal_text, render_yaml
from stormproof.importers.wfformat.convert import convert, header_lines
from stormproof.importers.wfformat.options import DEFAULT_TIME_FACTOR, ImportOptions
from stormproof.importers.wfformat.trace import WfFormatError

from .params import duration

_err = Console(stderr=True, highlight=False, soft_wrap=True)


@click.group(name="import")
def import_() -> None:
    """Turn workflows from other tools into stormproof workflow files."""


def _time_factor(_ctx: click.Context, _param: click.Parameter, value: float) -> float:
    if not math.isfinite(value) or value < 0:
        raise click.BadParameter(f"must be a number of at least 0, like 0.001, not {value}")
    return value


@import_.command(name="wfformat")
@click.argument("file", metavar="FILE")
@click.option(
    "-o",
    "--output",
    required=True,
    metavar="FILE",
    help="Where to write the workflow (YAML); - writes to standard output.",
)
@click.option(
    "--time-factor",
    type=float,
    default=DEFAULT_TIME_FACTOR,
    show_default=True,
    callback=_time_factor,
    help="Each stand-in command sleeps the traced runtime times this (0: no sleep). "
    "estimated_runtime keeps the traced runtime.",
)
@click.option(
    "--default-runtime",
    metavar="DURATION",
    callback=duration,
    help="Runtime for tasks the file has none for, like 60, 90s or 10m (default: an error).",
)
@click.option(
    "--max-vcpus",
    type=click.FloatRange(min=0, min_open=True),
    help="Cap each task's vcpus (the traced cores go to the label wf_cores).",
)
@click.option(
    "--max-memory",
    type=click.IntRange(min=1),
    metavar="MIB",
    help="Cap each task's memory, in MiB (the traced bytes go to the label wf_memory_bytes).",
)
@click.option("--name", help="The workflow's name (default: the file's name field).")
@click.option("--force", is_flag=True, help="Overwrite the output file if it exists.")
def wfformat(
    file: str,
    output: str,
    time_factor: float,
    default_runtime: float | None,
    max_vcpus: float | None,
    max_memory: int | None,
    name: str | None,
    force: bool,
) -> None:
    """Import a WfCommons WfFormat instance (JSON) as a workflow with traced runtimes.

    Tasks keep their dependencies, runtimes (estimated_runtime), cores and
    memory; their commands become `sleep` for the runtime times
    --time-factor. The original id, name and command are kept as labels.
    """
    options = ImportOptions(
        time_factor=time_factor,
        default_runtime=default_runtime,
        max_vcpus=max_vcpus,
        max_memory_mib=max_memory,
        name=name.strip() if name and name.strip() else None,
    )
    with _user_errors():
        check_output(output, force)
        text, summary = _import(file, output, options)
        write_output(text, output, force)
    click.echo(summary, err=output == STDIO)  # standard output may be the workflow itself


def _import(file: str, output: str, options: ImportOptions) -> tuple[str, str]:
    """The YAML text and a one-line summary; the text is checked with the workflow loader."""
    document = read_json(file, WfFormatError)
    source = "<stdin>" if file == STDIO else file
    stem = Path(file).stem if file != STDIO else "wfformat-import"
    result = convert(document, options, source=source, fallback_name=stem)
    del document  # a million-task trace is gigabytes of objects: free them before rendering
    text = render_yaml(result.workflow, header_lines(result, source, options))
    _check_loads(text, output)
    where = "standard output" if output == STDIO else output
    summary = (
        f"wrote {where}: {result.tasks} tasks, {result.edges} dependencies"
        f" (time factor {decimal_text(options.time_factor)})"
    )
    if output != STDIO:
        summary += f"; next: stormproof plan {output}"
    return text, summary


def _check_loads(text: str, output: str) -> None:
    """The written file must load: if it would not, that is a bug here, not the user's doing."""
    from stormproof.spec.load import parse_workflow

    try:
        parse_workflow(text, output, "yaml")
    except SpecError as err:
        raise StormproofError(
            "the imported workflow does not validate, which is a bug in `stormproof import "
            f"wfformat` (please report it with the input file): {err}"
        ) from None


@contextmanager
def _user_errors() -> Iterator[None]:
    """Like ``session()``: a user error is one line on stderr and its exit code, no traceback."""
    try:
        yield
    except StormproofError as e:
        _err.print(f"[bold red]error:[/] {escape(str(e))}", markup=True, highlight=False)
        sys.exit(e.exit_code)
