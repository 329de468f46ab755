"""Where a run's files live under the stormproof home (``./.stormproof`` by default).

::

    .stormproof/
      stormproof.db                      the event log of every run (SQLite, WAL)
      runs/<run>/
        data/                            shared by all tasks of the run (STORMPROOF_DATA_DIR)
        orchestrator.log                 output of a detached driver
        tasks/<task>/attempt-<n>/
          work/                          the attempt's cwd, fresh for every attempt
          stdout.log  stderr.log
        local-executor/                  the local executor's shim: its journal (launches
                                         and exit statuses), lock, socket and log

Run and task names are restricted to a safe alphabet before they get here,
so nothing a workflow says can escape these directories. Nothing planted there can
either: the home itself may be a link (it is resolved once), but inside it nothing is
followed. Directories are made one component at a time, refusing a symbolic link where a
directory should be (``make_inside``), a run's tree is checked when a run starts or
resumes (``check_run_tree``), and files are read through ``open_inside``, which opens
each component with ``O_NOFOLLOW``.

``check`` says whether a home can be used, and how: a path that is a file, a device, or
under a file, one that cannot be created, and one that cannot be written (a read-only
file system, no permission) each get a message that says what to do; a home that cannot
be written is still read by the commands that only read.
"""

from __future__ import annotations

import errno
import os
import re
import stat
import time
from dataclasses import dataclass
from pathlib import Path

from stormproof.errors import StormproofError

RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


def check_run_name(name: str) -> str:
    if not RUN_NAME.match(name):
        raise StormproofError(
            f"run name {name!r} is not allowed: use 1-100 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return name


def default_run_name(workflow_name: str, now: float | None = None) -> str:
    """``<workflow-name-as-slug>-YYYYmmdd-HHMMSS``, like the recipe's execution names."""
    slug = re.sub(r"[^a-z0-9]+", "-", workflow_name.lower()).strip("-")[:60] or "run"
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
    return f"{slug}-{stamp}"


class HomeUnusable(StormproofError):
    """The stormproof home cannot be used (or not for what the command does)."""


_NOT_A_DIR = {
    stat.S_IFREG: "a file",
    stat.S_IFCHR: "a device (like /dev/null)",
    stat.S_IFBLK: "a block device",
    stat.S_IFIFO: "a named pipe",
    stat.S_IFSOCK: "a socket",
}
_FIX = "choose another --home (or STORMPROOF_HOME)"


@dataclass(frozen=True)
class Home:
    root: Path

    def check(self, write: bool) -> bool:
        """Whether the home can be written; ``HomeUnusable`` if it cannot be used at all.

        ``write``: the command writes, so the home must be writable and is created if
        missing. Otherwise a missing home is left missing (it has no runs) and one that
        cannot be written is reported as such (``False``), to be read as it is.
        """
        root = self.root
        if "\0" in str(root):
            raise HomeUnusable(f"stormproof home {str(root)!r}: a path cannot hold a NUL byte")
        try:
            info = os.stat(root)
        except FileNotFoundError:
            if not write:
                return False
            self._create()
            return True
        except OSError as err:
            raise HomeUnusable(f"stormproof home {root}: {_why(err)}; {_FIX}") from None
        if not stat.S_ISDIR(info.st_mode):
            kind = _NOT_A_DIR.get(stat.S_IFMT(info.st_mode), "not a directory")
            raise HomeUnusable(
                f"stormproof home {root} is {kind}, not a directory; {_FIX} "
                "(a directory, created if missing)"
            )
        self._refuse_link(self.db_path)
        why = _unwritable(root, self.db_path)
        if why is None:
            return True
        if write:
            raise HomeUnusable(
                f"stormproof home {root} cannot be written ({why}): runs cannot start or "
                f"change there, though `status`, `history` and `logs` can read it; {_FIX}"
            )
        return False

    def _create(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise HomeUnusable(
                f"stormproof home {self.root} cannot be created: {_why(err)}; {_FIX}"
            ) from None

    def _refuse_link(self, path: Path) -> None:
        if path.is_symlink():
            raise HomeUnusable(
                f"{path} is a symbolic link: stormproof follows no link inside its home "
                f"{self.root} (one may have been planted there); remove it"
            )

    def make_inside(self, path: Path) -> Path:
        """Make the directory ``path`` under the home, following no link on the way."""
        rel = path.relative_to(self.root)
        current = self.root
        for part in rel.parts:
            current = current / part
            try:
                os.mkdir(current)
                continue
            except FileExistsError:
                pass
            except OSError as err:
                raise HomeUnusable(f"cannot create {current}: {_why(err)}; {_FIX}") from None
            self._refuse_link(current)
            if not current.is_dir():
                raise HomeUnusable(f"{current} is not a directory; move it away from the home")
        return path

    def make_run_dir(self, run: str) -> Path:
        return self.make_inside(self.run_dir(run))

    def check_run_tree(self, run: str) -> None:
        """Refuse a run whose directories hold a link where stormproof makes directories."""
        for path in (
            self.root / "runs",
            self.run_dir(run),
            self.data_dir(run),
            self.tasks_dir(run),
        ):
            self._refuse_link(path)
        try:
            entries = list(os.scandir(self.tasks_dir(run)))
        except (FileNotFoundError, NotADirectoryError):
            return
        for entry in entries:
            if entry.is_symlink():
                self._refuse_link(Path(entry.path))

    def open_inside(self, path: Path) -> int:
        """A read descriptor of the file ``path`` under the home, no component followed.

        ``FileNotFoundError`` if it is missing; ``HomeUnusable`` if a link is on the way.
        """
        rel = path.relative_to(self.root)
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            current = self.root
            for part in rel.parts[:-1]:
                current = current / part
                try:
                    sub = os.open(part, flags | os.O_DIRECTORY, dir_fd=fd)
                except OSError as err:
                    raise self._link_or(err, current) from None
                os.close(fd)
                fd = sub
            try:
                return os.open(rel.parts[-1], flags | os.O_NONBLOCK, dir_fd=fd)
            except OSError as err:
                raise self._link_or(err, path) from None
        finally:
            os.close(fd)

    def _link_or(self, err: OSError, path: Path) -> OSError | HomeUnusable:
        if err.errno in (errno.ELOOP, errno.ENOTDIR) and path.is_symlink():
            return HomeUnusable(
                f"{path} is a symbolic link: stormproof follows no link inside its home "
                f"{self.root} (one may have been planted there); remove it"
            )
        return err

    @property
    def db_path(self) -> Path:
        return self.root / "stormproof.db"

    def run_dir(self, run: str) -> Path:
        return self.root / "runs" / check_run_name(run)

    def data_dir(self, run: str) -> Path:
        return self.run_dir(run) / "data"

    def tasks_dir(self, run: str) -> Path:
        return self.run_dir(run) / "tasks"

    def attempt_dir(self, run: str, task_id: str, number: int) -> Path:
        return attempt_dir(self.tasks_dir(run), task_id, number)

    def attempt_numbers(self, run: str, task_id: str) -> list[int]:
        """The attempts of a task that have a directory, in order (links are not followed)."""
        folder = self.tasks_dir(run) / task_id
        for path in (self.root / "runs", self.run_dir(run), self.tasks_dir(run), folder):
            self._refuse_link(path)
        if not folder.is_dir():
            return []
        names = (p.name for p in folder.iterdir() if p.is_dir() and not p.is_symlink())
        return sorted(int(n[8:]) for n in names if n.startswith("attempt-") and n[8:].isdigit())


def attempt_dir(tasks_dir: Path, task_id: str, number: int) -> Path:
    """The one place that says how an attempt's directory is named (the driver's hot path
    calls it with a precomputed ``tasks_dir``)."""
    return tasks_dir / task_id / f"attempt-{number}"


def _why(err: OSError) -> str:
    if isinstance(err, NotADirectoryError) or err.errno == errno.ENOTDIR:
        return "a part of its path is a file, not a directory"
    if isinstance(err, PermissionError):
        return "permission denied"
    if err.errno == errno.EROFS:
        return "read-only file system"
    return err.strerror or str(err)


def _unwritable(root: Path, db: Path) -> str | None:
    """Why the home cannot be written, or ``None`` if it can."""
    try:
        if os.statvfs(root).f_flag & os.ST_RDONLY:
            return "read-only file system"
    except OSError:
        pass
    if not os.access(root, os.W_OK | os.X_OK) or (db.exists() and not os.access(db, os.W_OK)):
        return "permission denied"
    return None
