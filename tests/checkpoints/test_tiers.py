"""Hot, warm and cold tiers: restore from the fastest copy that verifies, move old ones cold.

Which tier a restore used is proved by damage, not by timing: corrupt the
warm copy and a restore that still succeeds must have read hot, and so on.
The warm and cold tiers run on both backends (local directory, SeaweedFS).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from stormproof.checkpoints import CheckpointCorrupt, TieredStore

from .conftest import MakeStore
from .helpers import exists, flip_byte, make_source, tree

RUN, TASK = "run", "sim"
DAY = 86400.0


@pytest.fixture
def tiers(make_store: MakeStore, tmp_path: Path) -> TieredStore:
    return TieredStore(tmp_path / "hot", make_store("warm"), make_store("cold"), cold_after_s=DAY)


def test_save_writes_hot_and_warm_and_list_shows_each_copy(
    tiers: TieredStore, tmp_path: Path
) -> None:
    manifest = tiers.save(RUN, TASK, 1, 1, make_source(tmp_path / "src"), 100.0)
    assert tiers.hot is not None
    assert tiers.hot.verify(RUN, TASK, 1).ok and tiers.warm.verify(RUN, TASK, 1).ok
    assert [(i.seq, i.tier, i.state) for i in tiers.list(RUN)] == [
        (1, "hot", "ok"),
        (1, "warm", "ok"),
    ]
    assert tiers.verify(RUN, TASK, 1).tier == "hot"
    assert manifest.total_bytes > 0


def test_restore_reads_hot_when_it_holds_a_good_copy(tiers: TieredStore, tmp_path: Path) -> None:
    tiers.save(RUN, TASK, 1, 1, make_source(tmp_path / "src", "v1"), 100.0)
    flip_byte(tiers.warm, RUN, TASK, 1, "step.txt")  # only hot is intact now
    tiers.restore(RUN, TASK, 1, tmp_path / "dest")
    assert (tmp_path / "dest" / "step.txt").read_text() == "v1\n"


def test_restore_reads_warm_when_hot_is_gone(tiers: TieredStore, tmp_path: Path) -> None:
    tiers.save(RUN, TASK, 1, 1, make_source(tmp_path / "src", "v1"), 100.0)
    shutil.rmtree(tmp_path / "hot")  # a new node: empty local disk
    manifest, skipped = tiers.restore_newest(RUN, TASK, tmp_path / "dest")
    assert manifest is not None and manifest.seq == 1 and skipped == []
    assert (tmp_path / "dest" / "step.txt").read_text() == "v1\n"


def test_a_corrupt_hot_copy_falls_through_to_warm_and_is_dropped(
    tiers: TieredStore, tmp_path: Path
) -> None:
    tiers.save(RUN, TASK, 1, 1, make_source(tmp_path / "src", "v1"), 100.0)
    assert tiers.hot is not None
    flip_byte(tiers.hot, RUN, TASK, 1, "state/params.json")
    manifest, skipped = tiers.restore_newest(RUN, TASK, tmp_path / "dest")
    assert manifest is not None and manifest.seq == 1 and skipped == []
    assert (tmp_path / "dest" / "state" / "params.json").read_text() == '{"dt": 0.002}\n'
    assert [i.tier for i in tiers.list(RUN)] == ["warm"]  # the bad cache entry is gone


def test_every_tier_bad_is_one_skip_naming_each_tier(tiers: TieredStore, tmp_path: Path) -> None:
    tiers.save(RUN, TASK, 1, 1, make_source(tmp_path / "src", "v1"), 100.0)
    tiers.save(RUN, TASK, 1, 2, make_source(tmp_path / "src2", "v2"), 200.0)
    assert tiers.hot is not None
    flip_byte(tiers.hot, RUN, TASK, 2, "step.txt")
    flip_byte(tiers.warm, RUN, TASK, 2, "step.txt")
    with pytest.raises(CheckpointCorrupt) as raised:
        tiers.restore(RUN, TASK, 2, tmp_path / "dest")
    assert raised.value.problem == (
        "hot: file step.txt: sha256 mismatch; warm: file step.txt: sha256 mismatch"
    )
    manifest, skipped = tiers.restore_newest(RUN, TASK, tmp_path / "dest")
    assert manifest is not None and manifest.seq == 1
    assert skipped == [(2, "warm: file step.txt: sha256 mismatch")]  # hot copy already dropped


def test_move_cold_then_restore_from_cold(tiers: TieredStore, tmp_path: Path) -> None:
    tiers.save(RUN, TASK, 1, 1, make_source(tmp_path / "s1", "v1"), 0.0)
    tiers.save(RUN, TASK, 1, 2, make_source(tmp_path / "s2", "v2"), 2 * DAY)
    assert tiers.move_cold(now=2 * DAY + 10) == [(RUN, TASK, 1)]
    assert tiers.move_cold(now=2 * DAY + 10) == []  # nothing left to move
    assert sorted((i.seq, i.tier) for i in tiers.list(RUN)) == [
        (1, "cold"),
        (2, "hot"),
        (2, "warm"),
    ]
    assert tiers.cold is not None and tiers.cold.verify(RUN, TASK, 1).ok
    assert not exists(tiers.warm, RUN, TASK, 1, "step.txt")

    dest = tmp_path / "dest"
    tiers.restore(RUN, TASK, 1, dest)
    assert tree(dest)["step.txt"] == b"v1\n"
    flip_byte(tiers.warm, RUN, TASK, 2, "step.txt")
    shutil.rmtree(tmp_path / "hot")
    manifest, skipped = tiers.restore_newest(RUN, TASK, dest)
    assert manifest is not None and manifest.seq == 1  # from cold, after seq 2 failed
    assert skipped == [(2, "warm: file step.txt: sha256 mismatch")]


def test_a_damaged_warm_copy_is_not_moved_cold(tiers: TieredStore, tmp_path: Path) -> None:
    tiers.save(RUN, TASK, 1, 1, make_source(tmp_path / "s1"), 0.0)
    flip_byte(tiers.warm, RUN, TASK, 1, "step.txt")
    assert tiers.move_cold(now=2 * DAY) == []
    assert tiers.warnings and "stays warm: file step.txt: sha256 mismatch" in tiers.warnings[-1]
    assert tiers.cold is not None and tiers.cold.list(RUN) == []
    assert [i.tier for i in tiers.list(RUN)] == ["hot", "warm"]


def test_prune_and_delete_cover_every_tier(tiers: TieredStore, tmp_path: Path) -> None:
    for seq in (1, 2, 3, 4):
        tiers.save(RUN, TASK, 1, seq, make_source(tmp_path / f"s{seq}"), seq * DAY)
    tiers.move_cold(now=3.5 * DAY)  # 1 and 2 go cold
    assert tiers.prune(RUN, TASK, keep_last=2) == [1, 2]
    assert sorted({i.seq for i in tiers.list(RUN)}) == [3, 4]
    assert tiers.prune_older_than(0.5 * DAY, now=4 * DAY) == [(RUN, TASK, 3)]
    assert tiers.delete(RUN) == 1
    assert tiers.list(RUN) == []


def test_a_hot_tier_that_cannot_be_written_does_not_fail_the_save(
    make_store: MakeStore, tmp_path: Path
) -> None:
    (tmp_path / "not-a-dir").write_text("x")
    tiers = TieredStore(tmp_path / "not-a-dir" / "hot", make_store("warm"))
    tiers.save(RUN, TASK, 1, 1, make_source(tmp_path / "src"), 1.0)
    assert [i.tier for i in tiers.list_all()] == ["warm"]
    assert tiers.warnings and "hot copy of run/sim/1 not kept" in tiers.warnings[0]
