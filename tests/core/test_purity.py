"""The core is sans-I/O: no import that reads the clock, spawns processes or touches files."""

from __future__ import annotations

import ast
from pathlib import Path

import stormproof.core

FORBIDDEN = {
    "time",
    "random",
    "os",
    "subprocess",
    "sqlite3",
    "asyncio",
    "socket",
    "threading",
    "signal",
    "shutil",
    "pathlib",
    "uuid",
    "datetime",
    "secrets",
    "io",
    "tempfile",
}
CORE = Path(stormproof.core.__file__).parent


def imported_roots(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    roots: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
            if node.module.startswith("stormproof.") and not node.module.startswith(
                ("stormproof.core", "stormproof.errors")
            ):
                roots.add(node.module)  # the core may not reach into the shells either
    return roots


def test_core_modules_import_nothing_impure() -> None:
    files = sorted(CORE.glob("*.py"))
    assert len(files) >= 5
    for f in files:
        bad = {r for r in imported_roots(f) if r in FORBIDDEN or r.startswith("stormproof.")}
        assert not bad, f"{f.name} imports {sorted(bad)}: the core must stay free of I/O"


def test_the_check_would_catch_an_impure_import(tmp_path: Path) -> None:
    f = tmp_path / "bad.py"
    f.write_text("import time\nfrom stormproof.runtime.driver import Driver\n")
    assert {"time", "stormproof.runtime.driver"} <= imported_roots(f)
