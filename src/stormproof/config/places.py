"""Where a setting is in ``stormproof.yaml``: its path (``pools[1].market``), its line in the
YAML document, and problems rendered compiler style. Shared by loading, which reports what
pydantic found, and by ``Config``, which reports what an executor found after loading."""

from __future__ import annotations

from collections.abc import Sequence

import yaml


def setting_path(loc: Sequence[int | str]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def line_of(root: yaml.Node | None, loc: Sequence[int | str]) -> int:
    """The 1-based line of ``loc`` in the YAML document, as close as it allows (0: unknown)."""
    if root is None:
        return 0
    node: yaml.Node = root
    line = root.start_mark.line + 1
    for part in loc:
        child: yaml.Node | None = None
        if isinstance(node, yaml.MappingNode) and isinstance(part, str):
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode) and key.value == part:
                    # The key's line: right for an unknown key and for a block value below it.
                    line = key.start_mark.line + 1
                    child = value
                    break
        elif (
            isinstance(node, yaml.SequenceNode)
            and isinstance(part, int)
            and 0 <= part < len(node.value)
        ):
            child = node.value[part]
            line = child.start_mark.line + 1
        if child is None:
            break
        node = child
    return line


def render_messages(shown: str, messages: list[str]) -> str:
    if len(messages) == 1:
        return f"{shown}{messages[0]}"
    lines = [f"{shown}: {len(messages)} problems"]
    lines += [f"  - {shown}{m}" for m in messages]
    return "\n".join(lines)
