"""A workflow document as YAML a person can read, written fast enough for a million tasks.

Why not ``yaml.dump``: even libyaml's emitter takes ~15 s per 100,000 tasks
(four times what loading the result takes), because every value goes through
PyYAML's representer and analyser. Imported workflows have one fixed shape
(top-level scalars, then tasks of scalars, short lists and one flat mapping),
so each value is written directly, in the style a person would choose:
plain when that cannot change its meaning, single-quoted when it is printable
on one line, and double-quoted with escapes (by libyaml, the rare slow case)
otherwise. Lists of scalars use flow style (``depends_on: [a, b]``).

Numbers are written as plain decimals (``0.00001``, never ``1e-05``): YAML
1.1, which PyYAML and the workflow loader speak, reads ``1e-05`` as a string.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

import yaml

#: Plain scalars that no YAML 1.1 resolver turns into anything but a string, and that hold
#: no indicator (``:`` ``#`` ``,`` ``[`` ...) in block or flow context.
_PLAIN = re.compile(r"[A-Za-z][A-Za-z0-9_./-]*\Z")
#: Words YAML 1.1 reads as booleans or null (compared lower-cased: quoting too much is harmless).
_WORDS = frozenset({"y", "n", "yes", "no", "true", "false", "on", "off", "null"})
#: What a single-quoted scalar can hold as-is: one line of printable characters (the reader's
#: own definition of printable, minus NEL and the byte-order mark, which it treats specially).
_QUOTABLE = re.compile(r"[\x20-\x7e\xa0-\ud7ff\ue000-\ufefe\uff00-\ufffd\U00010000-\U0010ffff]+\Z")
_NOT_PRINTABLE = re.compile(
    r"[^\x20-\x7e\xa0-\ud7ff\ue000-\ufefe\uff00-\ufffd\U00010000-\U0010ffff]"
)
_Dumper: Any = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
_NO_FOLDING = 2**30  # libyaml takes an int; this long a line is never folded


def scalar(text: str) -> str:
    """``text`` as a YAML scalar on one line that reads back as exactly ``text``."""
    if _PLAIN.match(text) and text.lower() not in _WORDS:
        return text
    if _QUOTABLE.match(text):
        return "'" + text.replace("'", "''") + "'"
    dumped: str = yaml.dump(
        text, Dumper=_Dumper, default_style='"', width=_NO_FOLDING, allow_unicode=False
    )
    return dumped.rstrip("\n")


def decimal_text(value: float) -> str:
    """A finite number as a plain decimal: ``16.712``, ``0.00001``, ``3`` (never an exponent).

    The digits are Python's shortest round-trip ones, so the text reads back as the same float.
    """
    if not math.isfinite(value):
        raise ValueError(f"cannot write {value!r} as a YAML number")
    if value == int(value):
        return str(int(value))
    return format(Decimal(repr(float(value))), "f")


def render_yaml(document: Mapping[str, Any], header: Sequence[str] = ()) -> str:
    """The document as block YAML, ``header`` lines first as comments; ``tasks`` as a list."""
    parts = [_comment(line) for line in header]
    for key, value in document.items():
        if key == "tasks":
            parts.append("tasks:\n")
            parts.extend(map(_task_block, value))
        else:
            parts.append(f"{scalar(key)}: {_value(value)}\n")
    return "".join(parts)


def _comment(line: str) -> str:
    # The YAML reader refuses unprintable characters even in comments (a path could hold one).
    return ("# " + _NOT_PRINTABLE.sub("?", line)).rstrip() + "\n"


def _task_block(task: Mapping[str, Any]) -> str:
    lines: list[str] = []
    for n, (key, value) in enumerate(task.items()):
        lead = "- " if n == 0 else "  "
        if isinstance(value, Mapping) and value:
            lines.append(f"{lead}{scalar(key)}:\n")
            lines.extend(f"    {scalar(k)}: {_value(v)}\n" for k, v in value.items())
        else:
            lines.append(f"{lead}{scalar(key)}: {_value(value)}\n")
    return "".join(lines)


def _value(value: Any) -> str:
    """One value on one line: a scalar, or a flow list/mapping of scalars."""
    if isinstance(value, str):
        return scalar(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return decimal_text(value)
    if value is None:
        return "null"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(map(_value, value)) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{scalar(k)}: {_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"cannot write a {type(value).__name__} as YAML here")
