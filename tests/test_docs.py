"""The documentation site builds with warnings as errors, and its reference pages are made from
the code (``docs/hooks/reference.py``): every command and every workflow field is in them."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from stormproof.cli.main import cli
from stormproof.spec.model import GlobalConfig, Retrier, TaskSpec, WorkflowSpec

REPO = Path(__file__).resolve().parent.parent


def _mkdocs_or_skip() -> None:
    if importlib.util.find_spec("mkdocs") and importlib.util.find_spec("material"):
        return
    why = "mkdocs and mkdocs-material are not installed (pip install -e '.[docs]')"
    if os.environ.get("CI") == "true":
        pytest.fail(why)
    pytest.skip(why)


def build(config: Path, site: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(config), "-d", str(site)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    _mkdocs_or_skip()
    out = tmp_path_factory.mktemp("site")
    proc = build(REPO / "mkdocs.yml", out)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out


def test_the_site_builds_strict_with_every_page_of_the_nav(site: Path) -> None:
    for page in ("index.html", "rerun/index.html", "containers/index.html"):
        assert (site / page).is_file(), page


def test_the_command_reference_has_every_command_and_option(site: Path) -> None:
    text = (site / "reference" / "cli" / "index.html").read_text()
    import click

    root = click.Context(cli, info_name="stormproof")
    for name in cli.list_commands(root):
        command = cli.get_command(root, name)
        assert command is not None
        if command.hidden:
            assert f"stormproof {name}</code>" not in text
            continue
        assert f"stormproof {name}</code>" in text, name
        for param in command.params:
            for opt in getattr(param, "opts", ()):
                if opt.startswith("--"):
                    assert opt in text, f"{name} {opt}"


def test_the_workflow_reference_has_every_field_of_the_file(site: Path) -> None:
    text = (site / "reference" / "workflow" / "index.html").read_text()
    sections = (
        (WorkflowSpec, ""),
        (GlobalConfig, "global_config."),
        (TaskSpec, "tasks[]."),
        (Retrier, "tasks[].retry[]."),
    )
    for model, prefix in sections:
        for field in model.model_fields:
            assert f"<code>{prefix}{field}</code>" in text, prefix + field
    assert "Files or folders the task leaves in the run" in text  # descriptions, from the schema


def test_a_broken_link_fails_the_build(tmp_path: Path) -> None:
    _mkdocs_or_skip()
    shutil.copytree(REPO / "docs", tmp_path / "docs")
    shutil.copy(REPO / "mkdocs.yml", tmp_path / "mkdocs.yml")
    page = tmp_path / "docs" / "cli.md"
    page.write_text(page.read_text() + "\nSee [nowhere](no-such-page.md).\n")
    proc = build(tmp_path / "mkdocs.yml", tmp_path / "site")
    assert proc.returncode != 0
    assert "no-such-page.md" in proc.stdout + proc.stderr
