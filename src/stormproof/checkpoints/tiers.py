"""Hot, warm and cold checkpoint tiers (the recipe's challenge 5).

* **hot**: a directory on node-local disk. A cache: written first because it
  is fast, never trusted without verifying, allowed to vanish with the node.
* **warm**: the configured store (``checkpoints:``). The durable copy: a save
  has happened when warm has it, whatever hot says.
* **cold**: optional, cheaper storage; ``move_cold`` moves checkpoints older
  than ``cold_after_s`` there (copy, verify the copy, then delete from warm).

Restore takes the fastest tier holding a copy that verifies: hot, then warm,
then cold. A copy that fails verification is skipped (and a corrupt hot copy
deleted, it is only a cache); the caller hears about a checkpoint only if no
tier has a good copy of it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .base import (
    CheckpointCorrupt,
    CheckpointInfo,
    CheckpointStoreError,
    Infos,
    Manifest,
    Removed,
    Seqs,
    Skipped,
    Tier,
    Verification,
    older_than,
    seqs_to_prune,
)
from .fsspec_store import FsspecStore
from .open import local_store, open_checkpoint_store

_ORDER: dict[Tier, int] = {"hot": 0, "warm": 1, "cold": 2}
Verifications = list[Verification]
Stores = list[FsspecStore]


class TieredStore:
    """A ``CheckpointStore`` over up to three stores; see the module docstring."""

    def __init__(
        self,
        hot: Path | FsspecStore | None,
        warm: FsspecStore,
        cold: FsspecStore | None = None,
        cold_after_s: float | None = None,
    ) -> None:
        if isinstance(hot, Path):
            hot = local_store(hot, tier="hot", durable=False)  # a cache: no fsync
        if hot is not None:
            hot.tier = "hot"
        warm.tier = "warm"
        if cold is not None:
            cold.tier = "cold"
        if cold_after_s is not None and cold_after_s < 0:
            raise ValueError("cold_after_s must be 0 or more")
        self.hot, self.warm, self.cold = hot, warm, cold
        self.cold_after_s = cold_after_s
        self.url = warm.url
        #: Problems that did not fail the operation (a hot copy that could not be written,
        #: a cold copy that did not verify); the runtime logs and clears them.
        self.warnings: list[str] = []

    @property
    def tiers(self) -> Stores:
        return [t for t in (self.hot, self.warm, self.cold) if t is not None]

    def check(self) -> None:
        """Every tier must be usable at start (``ConfigError`` names the one that is not)."""
        for tier in self.tiers:
            tier.check()

    # ------------------------------------------------------------------ save / list
    def save(
        self, run: str, task: str, attempt: int, seq: int, source: Path, now: float
    ) -> Manifest:
        """Hot first (fast, best effort), then warm (must succeed)."""
        if self.hot is not None:
            try:
                self.hot.save(run, task, attempt, seq, source, now)
            except CheckpointStoreError as err:
                self.warnings.append(f"hot copy of {run}/{task}/{seq} not kept: {err}")
                self._forget_hot(run, task, seq)
        try:
            return self.warm.save(run, task, attempt, seq, source, now)
        except BaseException:
            self._forget_hot(run, task, seq)  # saved means "warm has it"; no orphan in hot
            raise

    def list(self, run: str, task: str | None = None) -> Infos:
        """One entry per stored copy (so a checkpoint can appear once per tier)."""
        return _sorted([i for t in self.tiers for i in t.list(run, task)])

    def list_all(self) -> Infos:
        return _sorted([i for t in self.tiers for i in t.list_all()])

    def verify(self, run: str, task: str, seq: int) -> Verification:
        """The first tier whose copy verifies; else every tier's problems, tier by tier."""
        results = self.verify_all(run, task, seq)
        for result in results:
            if result.ok:
                return result
        held = [r for r in results if r.problem != "checkpoint not found"] or results
        problems = tuple(f"{r.tier}: {p}" for r in held for p in r.problems)
        return Verification(run, task, seq, None, problems or ("checkpoint not found",))

    def verify_all(self, run: str, task: str, seq: int) -> Verifications:
        return [t.verify(run, task, seq) for t in self.tiers]

    # ------------------------------------------------------------------ restore
    def restore(self, run: str, task: str, seq: int, dest: Path) -> Manifest:
        """From the fastest tier whose copy verifies while it is copied."""
        problems: list[str] = []
        for tier in self.tiers:
            try:
                return tier.restore(run, task, seq, dest)
            except CheckpointCorrupt as corrupt:
                if corrupt.problem == "checkpoint not found":
                    continue
                problems.append(f"{tier.tier}: {corrupt.problem}")
                if tier is self.hot:
                    self._forget_hot(run, task, seq)
        raise CheckpointCorrupt("; ".join(problems) or "checkpoint not found")

    def restore_newest(
        self, run: str, task: str, dest: Path, candidates: Sequence[int] | None = None
    ) -> tuple[Manifest | None, Skipped]:
        """Newest seq with a verified copy in any tier; ``(seq, problem)`` for each skipped."""
        infos = self.list(run, task)
        known = {i.seq for i in infos}
        seqs = sorted(known if candidates is None else set(candidates), reverse=True)
        skipped: Skipped = []
        for seq in seqs:
            copies = [i for i in infos if i.seq == seq]
            if not copies:
                skipped.append((seq, f"not in any tier of {self.url}"))
                continue
            if not any(i.state == "ok" for i in copies):
                skipped.append((seq, "; ".join(f"{i.tier}: {i.problem}" for i in copies)))
                continue
            try:
                return self.restore(run, task, seq, dest), skipped
            except CheckpointCorrupt as corrupt:
                skipped.append((seq, corrupt.problem))
        return None, skipped

    # ------------------------------------------------------------------ cold
    def move_cold(self, now: float) -> Removed:
        """Move warm checkpoints created before ``now - cold_after_s`` to cold.

        Each is copied, the cold copy verified by reading it back, and only then
        deleted from warm (and from hot: nobody restores an old one in a hurry).
        A copy that does not verify stays in warm, with a warning.
        """
        if self.cold is None or self.cold_after_s is None:
            return []
        moved: Removed = []
        for info in older_than(self.warm.list_all(), now - self.cold_after_s):
            if info.state != "ok":
                continue
            key = (info.run, info.task, info.seq)
            try:
                self.cold.copy_from(self.warm, *key)
                check = self.cold.verify(*key)
                if not check.ok:
                    raise CheckpointCorrupt(check.problem or "cold copy does not verify")
            except CheckpointCorrupt as corrupt:
                self.warnings.append(f"{'/'.join(map(str, key))} stays warm: {corrupt.problem}")
                continue
            self.warm.delete(*key)
            if self.hot is not None:
                self.hot.delete(*key)
            moved.append(key)
        return moved

    # ------------------------------------------------------------------ delete / prune
    def delete(self, run: str, task: str | None = None, seq: int | None = None) -> int:
        """Remove from every tier; returns how many distinct checkpoints went."""
        keys = {(i.task, i.seq) for i in self.list(run, task) if seq is None or i.seq == seq}
        for tier in self.tiers:
            tier.delete(run, task, seq)
        return len(keys)

    def prune(self, run: str, task: str, keep_last: int) -> Seqs:
        """Keep the newest ``keep_last`` complete checkpoints counted over all tiers."""
        doomed = seqs_to_prune(self.list(run, task), keep_last)
        for seq in doomed:
            for tier in self.tiers:
                tier.delete(run, task, seq)
        return doomed

    def prune_older_than(self, age_s: float, now: float, run: str | None = None) -> Removed:
        removed: set[tuple[str, str, int]] = set()
        for tier in self.tiers:
            removed.update(tier.prune_older_than(age_s, now, run))
        return sorted(removed)

    def _forget_hot(self, run: str, task: str, seq: int) -> None:
        if self.hot is None:
            return
        try:
            self.hot.delete(run, task, seq)
        except CheckpointStoreError as err:
            self.warnings.append(f"hot copy of {run}/{task}/{seq} not removed: {err}")


def open_tiered_store(
    warm_url: str | None,
    home: Path,
    *,
    hot_dir: Path | None = None,
    cold_url: str | None = None,
    cold_after_s: float | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> TieredStore:
    """Tiers from settings: warm is ``checkpoints:``; hot and cold are optional."""
    warm = open_checkpoint_store(warm_url, home, storage_options=storage_options)
    cold = (
        open_checkpoint_store(cold_url, home, storage_options=storage_options, tier="cold")
        if cold_url
        else None
    )
    return TieredStore(hot_dir, warm, cold, cold_after_s)


def _sorted(infos: list[CheckpointInfo]) -> list[CheckpointInfo]:
    return sorted(infos, key=lambda i: (i.run, i.task, -i.seq, _ORDER[i.tier]))
