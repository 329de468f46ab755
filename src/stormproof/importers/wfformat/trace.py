"""A WfFormat task as read, the problems found while reading, and how values are shown in them.

What every step of the import shares (``reading`` makes ``TracedTask``s, ``graph`` links them,
``task_documents`` writes them), so it is apart from all of them. Problems are collected, not
raised one by one: one run of the command shows all of them (``Problems``); a problem that
stops the reading at once raises ``WfFormatError`` directly. Values are quoted the way they
look in the JSON file (``show``), lone surrogates included, which JSON can hold and UTF-8
cannot.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any, Literal

from stormproof.errors import SpecError

#: The file's layout: 1.5's ``specification`` + ``execution``, or one flat task list before it.
Layout = Literal["split", "flat"]
#: Problems listed in one error; the rest are counted. Nobody reads past twenty.
_MAX_LISTED = 20
_SURROGATE = re.compile("[\ud800-\udfff]")
#: The names a task's runtime had across versions (read in this order, named when missing).
RUNTIME_KEYS = ("runtimeInSeconds", "runtime")


class WfFormatError(SpecError):
    """A WfFormat file that cannot be imported; each message names the place and the fix."""


@dataclass(slots=True)
class TracedTask:
    """One task as read, before it is checked, linked and written."""

    place: str  # "workflow.specification.tasks[3]", for messages
    wf_id: str | None
    wf_name: str | None
    parent_refs: list[str]
    child_refs: list[str]
    key: str = ""  # the identity that references resolve to and the new id is made from
    runtime: float | None = None
    runtime_defaulted: bool = False
    cores: float | None = None
    memory_bytes: float | None = None
    command: str | None = None
    #: Where runtime, cores and memory were read: the task itself, or its execution entry.
    measured_at: str | None = None


class Problems:
    """Problems found while reading; reported together, so one run of the command shows all."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.messages: list[str] = []
        self.count = 0

    def add(self, message: str) -> None:
        self.count += 1
        if len(self.messages) < _MAX_LISTED:
            self.messages.append(message)

    def raise_if_any(self) -> None:
        if self.count:
            more = self.count - len(self.messages)
            tail = [f"... and {more} more problem(s) like these"] if more else []
            raise WfFormatError(self.source, self.messages + tail)


def finite(value: Any) -> float | None:
    """A JSON number as a finite float; ``None`` for anything else (true/false included)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        number = float(value)
    except OverflowError:  # an integer with hundreds of digits
        return None
    return number if math.isfinite(number) else None


def is_text(text: str) -> bool:
    """False if ``text`` has a lone surrogate: JSON's "\\ud800" loads, UTF-8 cannot hold it."""
    return text.isascii() or _SURROGATE.search(text) is None


def text_or_none(value: Any) -> str | None:
    """A non-blank string, else ``None`` (for fields that only inform: name, description)."""
    if not isinstance(value, str) or not is_text(value):
        return None
    return value.strip() or None


def kind(value: Any) -> str:
    kinds = {dict: "an object", list: "a list", str: "a string", bool: "true/false"}
    if value is None:
        return "null"
    return kinds.get(type(value), "a number" if isinstance(value, (int, float)) else "a value")


def show(value: Any, limit: int = 60) -> str:
    """A value as it looks in the JSON file, cut short."""
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(value)
    if not is_text(text):
        text = json.dumps(value)  # lone surrogates as \\udXXX escapes, printable anywhere
    return text if len(text) <= limit else text[: limit - 3] + "..."
