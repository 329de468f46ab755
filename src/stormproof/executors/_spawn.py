"""Start one attempt's process, as cheaply as possible, the way a shell would.

Why ``os.posix_spawn`` and not ``subprocess.Popen`` or ``fork``: glibc's posix_spawn is a
``clone(CLONE_VM | CLONE_VFORK)`` followed by ``exec``, with no Python code in between. In our
measurements it was about 15 % cheaper per spawn than ``Popen`` (which also uses vfork on
3.11 but sets up an error pipe and more objects), and far cheaper than ``fork`` of the
interpreter. It cannot change the directory, but the shim is single-threaded, so it can
``chdir`` into the work dir just before the spawn. All the shim's own paths are absolute.

Shell compatibility: a command that cannot be found gives 127, and one that exists but cannot
be executed gives 126. In both cases a one-line message goes to the attempt's stderr.log. A
list command is looked up on the *attempt's* ``PATH`` and runs without a shell; a string runs
under ``sh -c``. Problems that are not the command's fault (the work dir cannot be entered,
no more processes) are returned as a submit failure instead.
"""

from __future__ import annotations

import errno
import os
import signal
import stat
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from stormproof.executors._files import LOG_FLAGS, LOG_NAMES, boottime

#: Python ignores these at start-up and ignored signals survive exec: restore them for the child.
_RESET_SIGNALS = (signal.SIGPIPE, signal.SIGXFSZ)
#: errno from exec of a file we found -> the shell's exit code.
_NOT_EXECUTABLE = {
    errno.EACCES,
    errno.EPERM,
    errno.ENOEXEC,
    errno.EISDIR,
    errno.E2BIG,
    errno.ETXTBSY,
    errno.ENOENT,  # the file exists: its interpreter (#!) or loader is missing
    errno.ELOOP,
    errno.ENOTDIR,
}
#: (name, PATH) -> where the name was found, like a shell's ``hash`` table. An entry whose
#: file has vanished is dropped and looked up again. This saves a stat per PATH entry per spawn.
_found: dict[tuple[str, str], str] = {}


@dataclass(frozen=True, slots=True)
class Spawned:
    pid: int
    #: ``CLOCK_BOOTTIME`` just after the spawn: identifies the process later (see ``_files``).
    spawned_boottime: float
    at: float


@dataclass(frozen=True, slots=True)
class Refused:
    """The attempt did not start. ``exit_code`` is set when a shell would have exited with it
    (127/126). Otherwise this is a submit failure."""

    message: str
    exit_code: int | None
    at: float


def spawn(
    attempt_dir: str, command: Sequence[str] | str, env: Mapping[str, str]
) -> Spawned | Refused:
    """Start the command in its own session, with cwd, logs and environment set.

    The work dir must exist already (``_files.create_attempt`` makes it).
    """
    logs = open_logs(attempt_dir)
    if isinstance(logs, Refused):
        return logs
    return spawn_with_logs(attempt_dir, command, env, logs)


def open_logs(attempt_dir: str) -> tuple[int, int] | Refused:
    """Open the attempt's stdout.log and stderr.log; the caller owns the two fds.

    The orchestrator created both (``create_attempt``), so this is a lookup; they are
    created here only if something removed them since.

    A queued successor opens them when it is submitted, so that starting it when its
    predecessor ends costs only the spawn.
    """
    out_name, err_name = LOG_NAMES
    try:
        out_fd = os.open(f"{attempt_dir}/{out_name}", LOG_FLAGS, 0o644)
    except OSError as exc:
        return Refused(f"cannot open {out_name}: {exc}", None, time.time())
    try:
        err_fd = os.open(f"{attempt_dir}/{err_name}", LOG_FLAGS, 0o644)
    except OSError as exc:
        os.close(out_fd)
        return Refused(f"cannot open {err_name}: {exc}", None, time.time())
    return out_fd, err_fd


def spawn_with_logs(
    attempt_dir: str, command: Sequence[str] | str, env: Mapping[str, str], logs: tuple[int, int]
) -> Spawned | Refused:
    """``spawn`` with the logs already open (``open_logs``); closes them either way."""
    out_fd, err_fd = logs
    try:
        result = _spawn_with_logs(attempt_dir + "/work", command, env, out_fd, err_fd)
        if isinstance(result, Refused) and result.exit_code is not None:
            os.write(err_fd, f"stormproof: {result.message}\n".encode(errors="replace"))
        return result
    finally:
        os.close(out_fd)
        os.close(err_fd)


def _spawn_with_logs(
    work: str, command: Sequence[str] | str, env: Mapping[str, str], out_fd: int, err_fd: int
) -> Spawned | Refused:
    if isinstance(command, str):
        return _exec(work, "/bin/sh", ["sh", "-c", command], env, out_fd, err_fd)
    if not command:
        return Refused("the command is an empty list", None, time.time())
    argv = list(command)
    key = (argv[0], env.get("PATH", os.defpath))
    cached = _found.get(key)
    if cached is not None:
        result = _exec(work, cached, argv, env, out_fd, err_fd)
        if not (isinstance(result, Refused) and result.exit_code == 126):
            return result
        del _found[key]  # moved or removed since: look again, as a shell would after `hash -r`
    found = resolve(argv[0], work, key[1])
    if isinstance(found, Refused):
        return found
    if "/" not in argv[0] and not found.startswith(work + "/"):
        _found[key] = found  # only absolute PATH entries: a relative one depends on the cwd
    return _exec(work, found, argv, env, out_fd, err_fd)


def _exec(
    work: str, path: str, argv: list[str], env: Mapping[str, str], out_fd: int, err_fd: int
) -> Spawned | Refused:
    try:
        os.chdir(work)
    except OSError as exc:
        return Refused(f"cannot enter the work dir: {exc}", None, time.time())
    try:
        pid = os.posix_spawn(
            path,
            argv,
            env,
            file_actions=[(os.POSIX_SPAWN_DUP2, out_fd, 1), (os.POSIX_SPAWN_DUP2, err_fd, 2)],
            setsid=True,
            setsigmask=(),
            setsigdef=_RESET_SIGNALS,
        )
    except OSError as exc:
        return _refused_by_exec(path, exc)
    except ValueError as exc:  # an embedded NUL byte in an argument or variable
        return Refused(f"{argv[0]}: {exc}", None, time.time())
    return Spawned(pid, boottime(), time.time())


def _refused_by_exec(path: str, exc: OSError) -> Refused:
    reason = exc.strerror or str(exc)
    if exc.errno in _NOT_EXECUTABLE:
        if exc.errno == errno.ENOENT:
            reason = "bad interpreter or loader: No such file or directory"
        return Refused(f"{path}: {reason}", 126, time.time())
    return Refused(f"cannot start {path}: {reason}", None, time.time())


def resolve(name: str, work: str, search_path: str) -> str | Refused:
    """Find the executable the way ``execvp`` would, but on the attempt's own ``PATH``."""
    if "/" in name:
        path = os.path.join(work, name)
        if not os.path.exists(path):
            return Refused(f"{name}: No such file or directory", 127, time.time())
        return _check_executable(name, path)
    denied: str | None = None
    for directory in search_path.split(os.pathsep):
        # join() keeps an absolute directory as it is; a relative one is relative to the cwd.
        candidate = os.path.join(work, directory or ".", name)
        try:
            st = os.stat(candidate)
        except OSError:
            continue
        if not stat.S_ISREG(st.st_mode):
            continue
        if os.access(candidate, os.X_OK):
            return candidate
        if denied is None:
            denied = candidate
    if denied is not None:
        return Refused(f"{denied}: Permission denied", 126, time.time())
    return Refused(f"{name}: command not found", 127, time.time())


def _check_executable(name: str, path: str) -> str | Refused:
    if os.path.isdir(path):
        return Refused(f"{name}: Is a directory", 126, time.time())
    if not os.access(path, os.X_OK):
        return Refused(f"{name}: Permission denied", 126, time.time())
    return path
