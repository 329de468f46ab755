"""``stormproof checkpoints list/show/prune`` through click's runner, on both backends."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from stormproof.checkpoints.fsspec_store import FsspecStore
from stormproof.checkpoints.open import open_checkpoint_store
from stormproof.cli.checkpoints_cmds import checkpoints

from ._seaweed import BUCKET
from .helpers import flip_byte, make_source, remove

DAY = 86400.0


@pytest.fixture
def cli(
    backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> tuple[FsspecStore, Any]:
    """A project dir whose stormproof.yaml points ``checkpoints:`` at this test's store.

    For S3 the endpoint and credentials come from the environment, as a user would set them.
    """
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("STORMPROOF_HOME", raising=False)
    if backend == "local":
        url = str(tmp_path / "ckpt")
        store = open_checkpoint_store(url, tmp_path)
    else:
        server = request.getfixturevalue("seaweed")
        for name, value in server.env().items():
            monkeypatch.setenv(name, value)
        url = f"s3://{BUCKET}/cli-{request.node.name[-40:].replace('[', '-').strip(']')}"
        store = open_checkpoint_store(url, tmp_path, storage_options=server.options())
    (tmp_path / "stormproof.yaml").write_text(f"checkpoints: {url}\n")

    def run(*args: str) -> Result:
        return CliRunner().invoke(checkpoints, list(args), env={"COLUMNS": "240"})

    return store, run


def seed(store: FsspecStore, tmp_path: Path) -> None:
    """Run ``md``: task ``prod`` seqs 1-3 (3 corrupt), task ``prep`` seq 1; run ``old``."""
    for seq in (1, 2, 3):
        store.save("md", "prod", seq, seq, make_source(tmp_path / f"p{seq}", f"v{seq}"), seq * DAY)
    store.save("md", "prep", 1, 1, make_source(tmp_path / "prep"), 2 * DAY)
    store.save("old", "prod", 1, 1, make_source(tmp_path / "old"), 0.0)
    flip_byte(store, "md", "prod", 3, "step.txt")


def test_list_table_and_json(cli: tuple[FsspecStore, Any], tmp_path: Path) -> None:
    store, run = cli
    seed(store, tmp_path)
    remove(store, "md", "prod", 2, "MANIFEST.json")

    table = run("list", "md")
    assert table.exit_code == 0, table.output
    for word in ("task", "seq", "attempt", "created", "size", "files", "tier", "verified"):
        assert word in table.output
    assert "sizes ok" in table.output and "manifest missing" in table.output

    listed = json.loads(run("list", "md", "prod", "--json").output)
    assert [(r["seq"], r["state"], r["verified"]) for r in listed] == [
        (3, "ok", None),
        (2, "incomplete", None),
        (1, "ok", None),
    ]
    assert listed[0]["attempt"] == 3 and listed[0]["files"] == 4 and listed[0]["tier"] == "warm"

    verified = json.loads(run("list", "md", "prod", "--json", "--verify").output)
    assert [(r["seq"], r["verified"]) for r in verified] == [(3, False), (2, False), (1, True)]
    assert verified[0]["problem"] == "file step.txt: sha256 mismatch"
    assert "file step.txt: sha256 mismatch" in run("list", "md", "--verify").output


def test_list_of_an_unknown_run_is_one_clear_error(cli: tuple[FsspecStore, Any]) -> None:
    _, run = cli
    result = run("list", "nope")
    assert result.exit_code == 2
    assert "no checkpoints for run 'nope'" in result.output
    assert "Traceback" not in result.output


def test_show_verifies_each_file(cli: tuple[FsspecStore, Any], tmp_path: Path) -> None:
    store, run = cli
    seed(store, tmp_path)

    good = run("show", "md", "prod", "1")
    assert good.exit_code == 0, good.output
    assert "checkpoint md/prod/1 (warm)" in good.output and "verified" in good.output
    assert "state/params.json" in good.output

    bad = run("show", "md", "prod")  # the newest: 3, corrupt
    assert bad.exit_code == 1
    assert "checkpoint md/prod/3" in bad.output
    assert "does not verify: file step.txt: sha256 mismatch" in bad.output

    [shown] = json.loads(run("show", "md", "prod", "3", "--json").output)
    assert shown["ok"] is False and shown["manifest"]["seq"] == 3
    assert [f["path"] for f in shown["files"] if not f["ok"]] == ["step.txt"]

    missing = run("show", "md", "prod", "9")
    assert missing.exit_code == 2 and "has no checkpoint 9 (it has: 3, 2, 1)" in missing.output


def test_prune_keep_last_per_task(cli: tuple[FsspecStore, Any], tmp_path: Path) -> None:
    store, run = cli
    seed(store, tmp_path)
    dry = json.loads(run("prune", "md", "--keep-last", "1", "--dry-run", "--json").output)
    assert dry == {
        "dry_run": True,
        "removed": [{"run": "md", "task": "prod", "seq": s} for s in (1, 2)],
    }
    assert len(store.list("md")) == 4  # a dry run removes nothing

    done = run("prune", "md", "--keep-last", "1")
    assert done.exit_code == 0, done.output
    assert "removed 2 checkpoint(s)" in done.output and "md/prod/1" in done.output
    assert [(i.task, i.seq) for i in store.list("md")] == [("prep", 1), ("prod", 3)]


def test_prune_older_than_over_all_runs(cli: tuple[FsspecStore, Any], tmp_path: Path) -> None:
    store, run = cli
    seed(store, tmp_path)
    # Seeded checkpoints were created 0-3 days after the epoch and `prune` counts age from
    # now: "older than (now - 2.5 days)" keeps only what was created after day 2.5.
    result = run("prune", "--older-than", f"{int((time.time() - 2.5 * DAY) // 60)}m", "--json")
    assert result.exit_code == 0, result.output
    removed = {(r["run"], r["task"], r["seq"]) for r in json.loads(result.output)["removed"]}
    assert removed == {("old", "prod", 1), ("md", "prod", 1), ("md", "prod", 2), ("md", "prep", 1)}
    assert [(i.task, i.seq) for i in store.list("md")] == [("prod", 3)]
    assert store.list("old") == []


def test_prune_older_than_one_task(cli: tuple[FsspecStore, Any], tmp_path: Path) -> None:
    store, run = cli
    seed(store, tmp_path)
    result = run("prune", "md", "--task", "prep", "--older-than", "7d")
    assert result.exit_code == 0, result.output
    assert "removed 1 checkpoint(s)" in result.output
    assert {i.task for i in store.list("md")} == {"prod"}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["prune", "md"], "give exactly one of --older-than DURATION or --keep-last K"),
        (["prune", "--keep-last", "2"], "--keep-last needs the run NAME"),
        (["prune", "md", "--older-than", "soon"], "expected a duration like 600"),
        (["prune", "md", "--keep-last", "-1"], "-1 is not in the range x>=0"),
        (["show", "md", "nope"], "no checkpoints of task 'nope' in run 'md'"),
    ],
)
def test_bad_usage_is_exit_2_with_a_message(
    cli: tuple[FsspecStore, Any], tmp_path: Path, args: list[str], message: str
) -> None:
    store, run = cli
    seed(store, tmp_path)
    result = run(*args)
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output


def test_an_unreachable_store_is_one_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "stormproof.yaml").write_text("checkpoints: nosuch://bucket/x\n")
    result = CliRunner().invoke(checkpoints, ["list", "md"])
    assert result.exit_code == 2
    assert "checkpoints: nosuch://bucket/x is not a usable store URL" in result.output


def test_configured_tiers_are_listed(
    cli: tuple[FsspecStore, Any], tmp_path: Path, backend: str
) -> None:
    store, run = cli
    config = (tmp_path / "stormproof.yaml").read_text()
    (tmp_path / "stormproof.yaml").write_text(f"{config}checkpoint_tiers: {{hot: ./hot}}\n")
    hot = open_checkpoint_store(str(tmp_path / "hot"), tmp_path)
    for target in (store, hot):
        target.save("md", "prod", 1, 1, make_source(tmp_path / "s"), 1.0)
    listed = json.loads(run("list", "md", "--json").output)
    assert [(r["seq"], r["tier"]) for r in listed] == [(1, "hot"), (1, "warm")]
    assert [r["tier"] for r in json.loads(run("list", "md", "--json", "--hot", ".").output)] == [
        "warm"  # --hot wins over the configuration: nothing of run md under ./
    ]
