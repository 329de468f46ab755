"""Saving a checkpoint (scan + copy + sha256 + manifest) vs plain ``cp -r``, and its memory.

Two checkpoints of the same total size, written fresh for every measurement:
one file, and ``--files`` files of about 1 MiB in 10 directories. Each is
saved to a local store, next to ``cp -r`` of the same data on the same disk,
in alternating order, and the median of ``--reps`` is reported:

* **warm**: the source was just written and is in the page cache (the usual
  case: a task commits what it just wrote);
* **cold**: the source is flushed and evicted (``fdatasync`` +
  ``POSIX_FADV_DONTNEED``, no root needed), so it is read from the disk;
* each in two durability modes: ``page cache`` (the store with
  ``durable=False`` vs ``cp -r``) and ``durable`` (the store's default: files
  made durable before the manifest names them, vs ``cp -r && sync``).

Two save engines are timed: the store's (``copy_file_range`` in the kernel,
sha256 of the copy a chunk behind, in a second thread) and the textbook one
(read a buffer, hash it, write it: one read of each byte, no overlap).

Peak RSS of a process that saves ``--rss-small`` and then ``--size`` MiB is
read from ``VmHWM`` (reset at exec, unlike ``ru_maxrss`` after a fork)::

    python bench/checkpoint_throughput.py                  # 1 GiB, 1,000 files, 3 reps
    python bench/checkpoint_throughput.py --dir /scratch/me --size 4096 --reps 5
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from stormproof.checkpoints import _copy
from stormproof.checkpoints.open import open_checkpoint_store

MiB = 1 << 20
_BLOCK: list[bytes] = []  # 64 MiB of random data, made on first use (not in the RSS child)


def write_fresh(root: Path, total_mib: int, files: int, cold: bool) -> Path:
    """New data (unique per call), flushed; evicted from the page cache when ``cold``."""
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    if not _BLOCK:
        _BLOCK.append(os.urandom(64 * MiB))
    block = _BLOCK[0]
    stamp = os.urandom(16)
    per_file = total_mib * MiB // files
    for i in range(files):
        path = root / (f"d{i % 10}/part-{i:05d}.bin" if files > 1 else "state.bin")
        path.parent.mkdir(exist_ok=True)
        with open(path, "wb", buffering=0) as f:
            left, at = per_file, (i * 7919 * MiB) % len(block)
            while left:
                n = min(left, 8 * MiB, len(block) - at)
                f.write(stamp + block[at + 16 : at + n])  # no two files or runs alike
                left -= n
                at = (at + n) % len(block)
            os.fdatasync(f.fileno())
            if cold:
                os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
    (root / ".commit").write_text("{}")
    return root


def buffer_save(source: Path, dest: Path, durable: bool) -> None:
    """The single-pass alternative: read a buffer, hash it, write it (for comparison)."""
    buf = bytearray(_copy.CHUNK_BYTES)
    view = memoryview(buf)
    files = []
    for path in sorted(p for p in source.rglob("*") if p.is_file()):
        rel = path.relative_to(source).as_posix()
        if rel.startswith(".commit"):
            continue
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        h = hashlib.sha256()
        size = 0
        with open(path, "rb", buffering=0) as src, open(target, "wb", buffering=0) as out:
            while n := src.readinto(buf):
                h.update(view[:n])
                out.write(view[:n])
                size += n
        files.append({"path": rel, "size": size, "sha256": h.hexdigest()})
    if durable:
        _copy.sync_filesystem(dest)
    (dest / "MANIFEST.json").write_text(json.dumps({"files": files}))


def measure(
    work: Path, size_mib: int, files: int, cold: bool, durable: bool, reps: int
) -> dict[str, float]:
    """Median MB/s of cp -r, the store's save, and the buffer save, same data, same disk."""
    times: dict[str, list[float]] = {"cp -r": [], "store.save": [], "buffer save": []}
    store = open_checkpoint_store(str(work / "store"), work, durable=durable)
    runs: dict[str, Callable[[Path, Path], None]] = {
        "cp -r": lambda src, dst: _cp(src, dst, durable),
        "store.save": lambda src, dst: _save(store, src),
        "buffer save": lambda src, dst: buffer_save(src, dst, durable),
    }
    for rep in range(reps):
        order = list(runs) if rep % 2 == 0 else list(reversed(runs))
        for name in order:
            source = write_fresh(work / "src", size_mib, files, cold)
            _clean(work)
            os.sync()
            started = time.perf_counter()
            runs[name](source, work / "dst")
            times[name].append(time.perf_counter() - started)
            _clean(work)
    total_mb = size_mib * MiB / 1e6
    return {name: total_mb / statistics.median(t) for name, t in times.items()}


def _cp(src: Path, dst: Path, durable: bool) -> None:
    subprocess.run(["cp", "-r", str(src), str(dst)], check=True)
    if durable:
        subprocess.run(["sync"], check=True)


def _save(store: object, src: Path) -> None:
    store.save("bench", "task", 1, 1, src, time.time())  # type: ignore[attr-defined]


def _clean(work: Path) -> None:
    for name in ("dst", "store"):
        shutil.rmtree(work / name, ignore_errors=True)


# ---------------------------------------------------------------------- memory
def child_save(source: str, store_dir: str) -> None:
    """In a fresh process: save, then print this process's peak RSS (KiB)."""
    store = open_checkpoint_store(store_dir, Path(store_dir))
    store.save("bench", "task", 1, 1, Path(source), time.time())
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            print(line.split()[1])


def peak_rss_mib(work: Path, size_mib: int, files: int) -> float:
    source = write_fresh(work / "src", size_mib, files, cold=False)
    _clean(work)
    out = subprocess.run(
        [sys.executable, __file__, "--child-save", str(source), str(work / "store")],
        capture_output=True,
        text=True,
        check=True,
    )
    _clean(work)
    return int(out.stdout.split()[-1]) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=Path("."), help="where to work (same disk)")
    parser.add_argument("--size", type=int, default=1024, help="checkpoint size, MiB")
    parser.add_argument("--files", type=int, default=1000, help="files in the many-file case")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--rss-small", type=int, default=256, help="smaller size for RSS, MiB")
    parser.add_argument("--child-save", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_save:
        child_save(*args.child_save)
        return
    with tempfile.TemporaryDirectory(prefix="ckpt-bench-", dir=args.dir) as tmp:
        work = Path(tmp)
        print(
            f"{args.size} MiB checkpoints in {work} ({os.cpu_count()} CPUs), median of {args.reps}"
        )
        head = f"{'case':<34}{'cp -r':>10}{'store.save':>12}{'ratio':>8}"
        print(f"{head}{'buffer save':>13}{'ratio':>8}")
        for files in (1, args.files):
            for durable in (False, True):
                for cold in (False, True):
                    r = measure(work, args.size, files, cold, durable, args.reps)
                    case = (
                        f"{'1 file' if files == 1 else f'{files} files'}, "
                        f"{'cold' if cold else 'warm'}, {'durable' if durable else 'page cache'}"
                    )
                    cp = r["cp -r"]
                    print(
                        f"{case:<34}{cp:>8.0f}MB/s{r['store.save']:>8.0f}MB/s"
                        f"{r['store.save'] / cp:>8.2f}{r['buffer save']:>9.0f}MB/s"
                        f"{r['buffer save'] / cp:>8.2f}",
                        flush=True,
                    )
        for files in (1, args.files):
            small = peak_rss_mib(work, args.rss_small, files)
            large = peak_rss_mib(work, args.size, files)
            label = "1 file" if files == 1 else f"{files} files"
            print(
                f"peak RSS of the saving process, {label}: {small:.0f} MiB at "
                f"{args.rss_small} MiB, {large:.0f} MiB at {args.size} MiB"
            )


if __name__ == "__main__":
    main()
