"""What a file the user names may hold, and reading it within that.

Every file stormproof reads on a user's say-so (the workflow, ``stormproof.yaml``, a pools
file, a spot trace, a WfCommons trace to import) is hostile until checked: ``/dev/zero``
never ends, a 570-byte YAML "alias bomb" expands to gigabytes, a 5,000-digit number is a
``ValueError`` deep inside the parser. So every reader goes through here, and every limit
is refused up front, at C speed where it can be, with a message that names the file, the
place, the limit and what to do instead:

* **the file**: a regular file only (not a pipe, a device or a directory: opened without
  blocking, so a FIFO with no writer cannot hang us), at most ``file_bytes`` long, read
  with that bound even if it grows meanwhile;
* **nesting**: at most ``depth`` levels (a workflow needs six);
* **numbers**: a number is at most ``number_chars`` characters (a 400-digit interval is a
  typo, and a 5,000-digit one is refused by Python's own int parser);
* **aliases** (YAML): what aliases add, counted expanded, may not exceed the values the
  file holds itself plus ``alias_allowance``: a bomb is refused after a handful of events,
  while ``<<: *defaults`` in every task stays well inside;
* **tasks**: at most ``tasks``; estimated from the raw bytes before parsing (so a file of
  millions of tasks is refused in well under a second), counted exactly after.

The two limits a real workflow can reach (file size and task count) can be raised with
``STORMPROOF_MAX_FILE_MB`` and ``STORMPROOF_MAX_TASKS``.
"""

from __future__ import annotations

import json
import os
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import yaml

from stormproof.errors import ConfigError, InputRefused, unreadable

MiB = 1024 * 1024
ENV_MAX_FILE_MB = "STORMPROOF_MAX_FILE_MB"
ENV_MAX_TASKS = "STORMPROOF_MAX_TASKS"
#: ``stormproof.yaml`` and pools files are short (read by PyYAML's pure-Python loader, for its
#: messages); a bigger one is a mistake, not a cluster.
CONFIG_MAX_BYTES = 1 * MiB


@dataclass(frozen=True, slots=True)
class Limits:
    file_bytes: int = 128 * MiB  # a 100,000-task workflow is ~20 MB
    tasks: int = 1_000_000
    depth: int = 32
    number_chars: int = 32
    alias_allowance: int = 100_000

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> Limits:
        """The defaults, with ``STORMPROOF_MAX_FILE_MB`` and ``STORMPROOF_MAX_TASKS`` applied."""
        file_mb = _positive(environ, ENV_MAX_FILE_MB)
        tasks = _positive(environ, ENV_MAX_TASKS)
        base = cls()
        return cls(
            file_bytes=file_mb * MiB if file_mb else base.file_bytes,
            tasks=tasks or base.tasks,
        )


def active_limits() -> Limits:
    """The limits in force for this process (the environment can raise two of them)."""
    return Limits.from_environ(os.environ)


def _positive(environ: Mapping[str, str], name: str) -> int | None:
    raw = environ.get(name, "").strip()
    if not raw:
        return None
    if not raw.isdigit() or len(raw) > 12 or int(raw) < 1:
        raise ConfigError(f"{name}={raw!r}: expected a whole number of at least 1 (or unset it)")
    return int(raw)


# --------------------------------------------------------------------------- the file

_KINDS = {
    stat.S_IFIFO: "a named pipe (FIFO)",
    stat.S_IFCHR: "a character device (like /dev/zero or /dev/null)",
    stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket",
    stat.S_IFDIR: "a directory",
}


def read_bounded(path: str | Path, what: str, max_bytes: int, raise_hint: bool = True) -> bytes:
    """The bytes of the regular file ``path``, at most ``max_bytes`` of them, or ``InputRefused``.

    ``what`` names the file in messages ("workflow file"). ``O_NONBLOCK`` on open: a FIFO
    without a writer would otherwise block the open itself, before we can look at it.
    """
    source = str(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as err:
        raise InputRefused(source, [unreadable(err, what)]) from None
    except ValueError:  # a NUL byte in the path: no file can be named so
        raise InputRefused(repr(source), ["a path cannot hold a NUL byte"]) from None
    try:
        info = os.fstat(fd)
        kind = stat.S_IFMT(info.st_mode)
        if kind != stat.S_IFREG:
            shown = _KINDS.get(kind, "not a regular file")
            raise InputRefused(
                source, [f"is {shown}, not a {what}: stormproof reads only regular files"]
            )
        if info.st_size > max_bytes:
            raise InputRefused(source, [too_big(info.st_size, max_bytes, what, raise_hint)])
        os.set_blocking(fd, True)
        with os.fdopen(fd, "rb", closefd=False) as fh:
            data = fh.read(max_bytes + 1)  # the size may have lied (/proc) or grown
    except OSError as err:
        raise InputRefused(source, [unreadable(err, what)]) from None
    finally:
        os.close(fd)
    if len(data) > max_bytes:
        raise InputRefused(source, [too_big(len(data), max_bytes, what, raise_hint)])
    return data


def read_stream_bounded(stream: IO[bytes], source: str, what: str, max_bytes: int) -> bytes:
    """Standard input, at most ``max_bytes`` of it."""
    try:
        data = stream.read(max_bytes + 1)
    except OSError as err:
        raise InputRefused(source, [unreadable(err, what)]) from None
    if len(data) > max_bytes:
        raise InputRefused(source, [too_big(len(data), max_bytes, what, True)])
    return data


def too_big(size: int, max_bytes: int, what: str, raise_hint: bool) -> str:
    more = "more than" if size > max_bytes else "at least"
    text = f"is {more} {_size_text(max_bytes)}, the most a {what} may be"
    if raise_hint:
        text += (
            f" (split it, or raise the limit with {ENV_MAX_FILE_MB}=N, "
            f"e.g. {ENV_MAX_FILE_MB}={max(2 * max_bytes // MiB, 1)})"
        )
    return text + (f"; it is {_size_text(size)}" if size > max_bytes else "")


def _size_text(n: int) -> str:
    return f"{n / MiB:.0f} MiB" if n >= MiB else f"{n} bytes"


# --------------------------------------------------------------------------- messages


def deep(limits: Limits) -> str:
    return (
        f"the document nests more than {limits.depth} levels deep, the limit "
        "(a workflow needs six: is a bracket left open?)"
    )


def long_number(text: str, limits: Limits) -> str:
    shown = text if len(text) <= 24 else text[:12] + "…" + text[-6:]
    return (
        f"the number {shown} has {len(text)} characters, more than the {limits.number_chars} "
        "a number may have (write it in seconds, MiB or units as documented, or quote it "
        "if it is text)"
    )


def too_many_tasks(count: int, limits: Limits, estimated: bool) -> str:
    how = "about " if estimated else ""
    counted = " (counted by their id keys)" if estimated else ""
    return (
        f"the workflow has {how}{count:,} tasks{counted}, more than the limit of "
        f"{limits.tasks:,}: split it into several workflows, or raise the limit with "
        f"{ENV_MAX_TASKS}=N"
    )


def alias_bomb(limits: Limits) -> str:
    return (
        "aliases (*name) expand to more values than the file itself holds plus "
        f"{limits.alias_allowance:,} (the limit, against 'billion laughs' files): write "
        "the values out, or nest fewer aliases"
    )


def estimate_tasks(content: str | bytes) -> int:
    """An upper estimate of the tasks in a workflow text, at C speed, before any parsing.

    Every task needs an ``id`` key; this counts the ways one is spelt in practice (``id:``
    after a space, ``{`` or ``,``, and ``"id"``/``'id'``). It may count ids in comments or
    commands too (an estimate above the limit is still refused: the message says how it
    was counted); an id spelt with escapes is missed here and counted exactly after parsing.
    """
    if isinstance(content, str):
        return sum(content.count(p) for p in (" id:", "{id:", ",id:", '"id"', "'id'"))
    return sum(content.count(p) for p in (b" id:", b"{id:", b",id:", b'"id"', b"'id'"))


_DIGITS = bytes(0x30 if 0x30 <= i <= 0x39 else 0x20 for i in range(256))


def has_long_digit_run(content: str | bytes, limits: Limits) -> bool:
    """Whether ``content`` holds more than ``number_chars`` digits in a row (anywhere, strings
    included: a cheap test that sends the rare such file to the careful path)."""
    raw = content.encode("utf-8", "surrogateescape") if isinstance(content, str) else content
    return b"0" * (limits.number_chars + 1) in raw.translate(_DIGITS)


# --------------------------------------------------------------------------- JSON


class JsonRefused(ValueError):
    """A JSON document over a limit, or with a key given twice; ``line`` where known."""

    def __init__(self, text: str, line: int | None = None) -> None:
        super().__init__(text)
        self.text = text
        self.line = line


def strict_json_loads(text: str, limits: Limits) -> Any:
    """``json.loads`` that refuses duplicate keys, long numbers and deep nesting.

    Raises ``json.JSONDecodeError`` for syntax errors and ``JsonRefused`` for the rest.
    """

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        mapping = dict(items)
        if len(mapping) != len(items):
            seen: set[str] = set()
            key = next(k for k, _ in items if k in seen or seen.add(k))  # type: ignore[func-returns-value]
            raise JsonRefused(
                f"key {key!r} appears twice in one object (the later one would silently "
                "win; keep one)",
                _line_of_key(text, key, second=True),
            )
        return mapping

    def number(literal: str) -> Any:
        if len(literal) > limits.number_chars:
            raise JsonRefused(long_number(literal, limits), _line_of_literal(text, literal))
        return float(literal) if any(c in literal for c in ".eE") else int(literal)

    try:
        data = json.loads(text, object_pairs_hook=pairs, parse_int=number, parse_float=number)
    except RecursionError:
        raise JsonRefused(deep(limits), _line_too_deep(text, limits)) from None
    if _depth_over(data, limits.depth):
        raise JsonRefused(deep(limits), _line_too_deep(text, limits))
    return data


def _depth_over(data: Any, limit: int) -> bool:
    """Whether parsed data nests deeper than ``limit`` (iterative: no recursion to run out)."""
    stack: list[tuple[Any, int]] = [(data, 1)]
    while stack:
        value, level = stack.pop()
        if level > limit:
            return True
        if isinstance(value, dict):
            stack.extend((v, level + 1) for v in value.values() if isinstance(v, (dict, list)))
        elif isinstance(value, list):
            stack.extend((v, level + 1) for v in value if isinstance(v, (dict, list)))
    return False


_TOKENS = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]')


def _line_too_deep(text: str, limits: Limits) -> int | None:
    level = 0
    for match in _TOKENS.finditer(text):
        token = match.group()
        if token in "[{":
            level += 1
            if level > limits.depth:
                return text.count("\n", 0, match.start()) + 1
        elif token in "]}":
            level -= 1
    return None


def _line_of_key(text: str, key: str, second: bool) -> int | None:
    pattern = re.compile(re.escape(json.dumps(key)) + r"\s*:")
    found = [m.start() for m, _ in zip(pattern.finditer(text), range(2), strict=False)]
    if not found:
        return None
    at = found[-1] if second else found[0]
    return text.count("\n", 0, at) + 1


def _line_of_literal(text: str, literal: str) -> int | None:
    match = re.search(r'(?<![\w."])' + re.escape(literal), text)
    return text.count("\n", 0, match.start()) + 1 if match else None


# --------------------------------------------------------------------------- YAML trees


def yaml_tree_problems(root: yaml.Node, limits: Limits) -> list[tuple[int, str]]:
    """Limits and duplicate keys of a composed YAML tree, as ``(line, message)``.

    For files read through PyYAML's composer (``stormproof.yaml``): the composer shares the
    node of an anchor among its aliases, so counting sizes with a memo costs one visit per
    node, however much the aliases would expand.
    """
    problems: list[tuple[int, str]] = []
    sizes: dict[int, int] = {}
    own = sum(1 for _ in _walk_unique(root))
    expanded = _expanded_size(root, sizes)
    if expanded > own * 2 + limits.alias_allowance:
        problems.append((root.start_mark.line + 1, alias_bomb(limits)))
        return problems
    stack: list[tuple[yaml.Node, int]] = [(root, 1)]
    seen: set[int] = set()
    while stack:
        node, level = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        line = node.start_mark.line + 1
        if level > limits.depth:
            problems.append((line, deep(limits)))
            break
        if isinstance(node, yaml.ScalarNode):
            if node.tag.endswith((":int", ":float")) and len(node.value) > limits.number_chars:
                problems.append((line, long_number(node.value, limits)))
        elif isinstance(node, yaml.SequenceNode):
            stack.extend((child, level + 1) for child in node.value)
        elif isinstance(node, yaml.MappingNode):
            keys: set[str] = set()
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode) and key.value != "<<":
                    if key.value in keys:
                        problems.append(
                            (
                                key.start_mark.line + 1,
                                f"key {key.value!r} appears twice (the later one would "
                                "silently win; keep one)",
                            )
                        )
                    keys.add(key.value)
                stack.append((value, level + 1))
    return problems


def _walk_unique(root: yaml.Node) -> Any:
    seen: set[int] = set()
    stack = [root]
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        yield node
        if isinstance(node, yaml.SequenceNode):
            stack.extend(node.value)
        elif isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                stack.extend((key, value))


def _expanded_size(root: yaml.Node, sizes: dict[int, int]) -> int:
    """Values in the tree with every alias expanded, by a post-order walk with a memo.

    An alias inside its own anchor (``&a [*a]``) would expand forever: counted as infinite.
    """
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    open_nodes: set[int] = set()
    while stack:
        node, done = stack.pop()
        if id(node) in sizes:
            continue
        children: list[yaml.Node] = []
        if isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        elif isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        if done or not children:
            open_nodes.discard(id(node))
            sizes[id(node)] = 1 + sum(sizes.get(id(c), 0) for c in children)
            continue
        if id(node) in open_nodes:
            return 1 << 62  # a cycle: it contains itself
        open_nodes.add(id(node))
        stack.append((node, True))
        for child in children:
            if id(child) in open_nodes:
                return 1 << 62
            if id(child) not in sizes:
                stack.append((child, False))
    return sizes[id(root)]
