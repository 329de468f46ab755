"""YAML straight from parser events: the values ``yaml.safe_load`` would build, bounded.

Why not ``yaml.load``: it composes a tree of nodes first, each with two marks, which for
100,000 tasks is over a gigabyte and most of the time. ``EventBuilder`` consumes events as
they come and keeps the limits (``stormproof.limits``) as it meets them; ``spec/load.py``
composes nodes only when a document has problems, to give them line numbers.
"""

from __future__ import annotations

from typing import Any

import yaml
from yaml.nodes import ScalarNode

from stormproof.limits import Limits, alias_bomb, deep, long_number
from stormproof.spec.problems import Loc, Problem

Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_TAG = "tag:yaml.org,2002:"
_STR = _TAG + "str"
EMPTY: Any = object()  # the document of a file holding only comments
_MERGE: Any = object()  # the key "<<"


class EventBuilder:
    """Python values straight from parser events, as PyYAML's safe loader builds them.

    Why not ``yaml.load``: it composes a tree of nodes first, each with two
    marks, which for 100,000 tasks is over a gigabyte and most of the time.
    Here events are consumed as they come: strings, plain integers, booleans
    and nulls are converted inline (implicit types memoised per distinct
    scalar); anything rarer (floats, timestamps, octal) goes to PyYAML's own
    constructor, so values are the same. Anchors, aliases and ``<<`` merge
    keys work. Unlike PyYAML, a key given twice in one mapping is reported
    (``duplicates``), not silently overwritten.

    Limits are kept as events come (``Refused``): nesting depth, the length of numbers,
    and what aliases add. An alias is the anchored value itself (shared, never copied), so
    the builder stays small; but pydantic would walk it once per use, so each use counts
    the anchor's *expanded* size, and the sum may not outgrow the document's own values
    by more than the allowance.
    """

    def __init__(self, text: str, limits: Limits | None = None) -> None:
        self._loader = Loader(text)
        self._limits = limits or Limits()
        self._anchors: dict[str, Any] = {}
        self._sizes: dict[str, int] = {}  # an anchor's size with its aliases expanded
        self._open: dict[int, tuple[str, int]] = {}  # anchored containers being built
        self._own = 0  # values the text spells out (scalars and containers)
        self._added = 0  # values aliases add, expanded
        self._tags: dict[str, str] = {}
        self.duplicates: list[Problem] = []

    def build(self) -> Any:
        """The single document of the stream, or ``EMPTY``."""
        get = self._loader.get_event
        get()  # StreamStartEvent
        if isinstance(get(), yaml.StreamEndEvent):
            return EMPTY
        data = self._document()
        event = get()
        if not isinstance(event, yaml.StreamEndEvent):
            raise _marked("a second document starts here", event, "expected a single document")
        return data

    def _document(self) -> Any:
        """The hot loop: one pass over the events of a document, with an explicit stack."""
        get, scalar, tag_of = self._loader.get_event, self._scalar, self._tags.get
        stack: list[tuple[Any, Any, bool, Any]] = []  # (container, key, want a key, key mark)
        top: Any = None
        key: Any = None
        key_mark: Any = None
        want_key = False
        own = 0
        max_depth = self._limits.depth
        while True:
            event = get()
            kind = type(event)
            own += 1
            if kind is yaml.ScalarEvent:
                value = event.value  # most scalars are plain strings: no call for those
                tag = event.tag or (tag_of(value) if event.implicit[0] else _STR)
                if tag != _STR or event.anchor is not None:
                    self._own = own
                    value = scalar(event, want_key)
            elif kind is yaml.MappingStartEvent or kind is yaml.SequenceStartEvent:
                if len(stack) >= max_depth:
                    raise Refused(event, deep(self._limits))
                stack.append((top, key, want_key, key_mark))
                self._own = own
                top, want_key = self._start(event), kind is yaml.MappingStartEvent
                continue
            elif kind is yaml.MappingEndEvent or kind is yaml.SequenceEndEvent:
                if self._open:
                    self._own = own
                    self._close(top)
                value = self._merge(top) if kind is yaml.MappingEndEvent else top
                top, key, want_key, key_mark = stack.pop()
            elif kind is yaml.AliasEvent:
                self._own = own
                value = self._alias(event)
            else:  # DocumentEndEvent
                return top
            if top is None:
                top = value
            elif want_key:
                key, key_mark, want_key = value, event.start_mark, False
            elif type(top) is list:
                top.append(value)
            else:
                self._put(top, key, value, key_mark, stack)
                want_key = True

    def _scalar(self, event: Any, is_key: bool) -> Any:
        value, tag = event.value, event.tag
        if tag is None or tag == "!":
            tag = self._resolve(value) if event.implicit[0] else _TAG + "str"
        if tag in (_TAG + "int", _TAG + "float") and len(value) > self._limits.number_chars:
            raise Refused(event, long_number(value, self._limits))
        if tag == _TAG + "str":
            built = value
        elif tag == _TAG + "int" and value.isdigit() and (value[0] != "0" or value == "0"):
            built = int(value)
        elif tag == _TAG + "bool":
            built = self._loader.bool_values[value.lower()]
        elif tag == _TAG + "null":
            built = None
        elif tag == _TAG + "merge" and is_key:
            built = _MERGE
        elif tag == _TAG + "value" and is_key:  # YAML 1.1's "=" key, a string to PyYAML
            built = value
        else:
            node = ScalarNode(tag, value, event.start_mark, event.end_mark, event.style)
            built = self._loader.construct_object(node, deep=True)
        if event.anchor is not None:
            self._anchors[event.anchor] = built
            self._sizes[event.anchor] = 1
        return built

    def _resolve(self, value: str) -> str:
        tag = self._tags.get(value)
        if tag is None:
            tag = self._tags[value] = self._loader.resolve(ScalarNode, value, (True, False))
        return tag

    def _start(self, event: Any) -> Any:
        is_map = isinstance(event, yaml.MappingStartEvent)
        if event.tag not in (None, "!", _TAG + ("map" if is_map else "seq")):
            raise _marked(f"could not determine a constructor for the tag {event.tag!r}", event)
        container: Any = {} if is_map else []
        if event.anchor is not None:
            self._anchors[event.anchor] = container
            self._sizes.pop(event.anchor, None)  # an anchor may be redefined
            self._open[id(container)] = (event.anchor, self._own + self._added)
        return container

    def _close(self, container: Any) -> None:
        """An anchored container is complete: its size, aliases inside it expanded."""
        opened = self._open.pop(id(container), None)
        if opened is not None:
            anchor, at_start = opened
            self._sizes[anchor] = self._own + self._added - at_start + 1

    def _merge(self, mapping: dict[Any, Any]) -> dict[Any, Any]:
        """Apply ``<<: *defaults``: merged keys fill in, the mapping's own keys win."""
        merged = mapping.pop(_MERGE, None)
        if merged is not None:
            for source in merged if isinstance(merged, list) else [merged]:
                if not isinstance(source, dict):
                    raise yaml.MarkedYAMLError(problem="'<<' can only merge mappings")
                for key, value in source.items():
                    mapping.setdefault(key, value)
        return mapping

    def _alias(self, event: Any) -> Any:
        if event.anchor not in self._anchors:
            raise _marked(f"found undefined alias {event.anchor!r}", event)
        size = self._sizes.get(event.anchor)
        if size is None:  # inside its own anchor: it would contain itself, forever
            raise Refused(event, f"the alias *{event.anchor} is inside its own anchor")
        self._added += size
        if self._added > self._own + self._limits.alias_allowance:
            raise Refused(event, alias_bomb(self._limits))
        return self._anchors[event.anchor]

    def _put(self, mapping: dict[Any, Any], key: Any, value: Any, mark: Any, stack: Any) -> None:
        try:
            seen = key in mapping
        except TypeError:  # a list or a mapping as a key
            raise yaml.MarkedYAMLError(
                problem="a key must be a plain value", problem_mark=mark
            ) from None
        if seen and key is not _MERGE:
            text = f"key {key!r} appears twice (the later one would silently win; keep one)"
            self.duplicates.append(Problem(_path_of(stack), text, line=mark.line + 1))
        mapping[key] = value


class Refused(Exception):
    """A limit the document goes over, where it does (``stormproof.limits``)."""

    def __init__(self, event: Any, text: str) -> None:
        mark = event.start_mark
        super().__init__(f"line {mark.line + 1}, column {mark.column + 1}: {text}")


def _marked(problem: str, event: Any, context: str | None = None) -> yaml.MarkedYAMLError:
    return yaml.MarkedYAMLError(context, None, problem, event.start_mark)


def _path_of(stack: list[tuple[Any, Any, bool, Any]]) -> Loc:
    """The path of the innermost open container, read off the builder's stack (error path)."""
    path: list[str | int] = []
    for container, key, _, _ in stack[1:]:
        path.append(len(container) if isinstance(container, list) else str(key))
    return tuple(path)
