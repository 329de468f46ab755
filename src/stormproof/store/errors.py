"""The event stores' foreign errors, translated at the seam (one place for every backend).

A store never lets ``sqlite3`` or ``psycopg`` escape: each failure becomes one
of ours, naming the database and the fix, and saying which kind it is::

    StoreFault        it may pass: the server is unreachable or went away, the
                      disk is full, the file is locked. A run stops resumably;
                      ``resume`` carries on once the fault is gone.
    StormproofError   waiting does not mend it: a damaged or foreign database,
                      a wrong password, a database that does not exist.

Programming errors (a closed connection used again, wrong parameters) and
integrity errors, which the stores handle themselves, pass through untouched.
``psycopg`` is imported only when a PostgreSQL error is translated: it is an
optional dependency (``pip install 'stormproof[postgres]'``).
"""

from __future__ import annotations

import re
import socket
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Final

from stormproof.errors import LeaseLost, RunLocked, StoreFault, StormproofError

if TYPE_CHECKING:
    from stormproof.store.base import LeaseHolder

#: What to do about a SQLite file that is not (or no longer) a stormproof database.
SQLITE_DAMAGED: Final = (
    "the file is damaged or is not a stormproof database: move it away (a new one "
    "is created) or restore it from a backup; `sqlite3 FILE .recover` may save its rows"
)
#: What to do about stormproof_* tables that hold something stormproof did not write.
POSTGRES_DAMAGED: Final = (
    "the stormproof_* tables hold something stormproof did not write: restore them from a "
    "backup, or use another database or schema"
)
URL_FORM: Final = "postgresql://USER:PASSWORD@HOST:PORT/DATABASE"
#: Where a PostgreSQL URL is set, for the fixes that say "change it".
STORE_SETTING: Final = "`store:` in stormproof.yaml (or STORMPROOF_STORE)"


# -- the lease ---------------------------------------------------------------------------


def run_locked(run: str, holder: LeaseHolder) -> RunLocked:
    """Another process drives ``run``; the error carries ``holder`` for whoever waits."""
    who = holder.describe(socket.gethostname())
    if holder.expires_in_s is not None:
        who += f"; {holder.lapse()}"
    return RunLocked(
        f"run {run!r} is being driven by another stormproof process ({who}); "
        "wait for it, or stop it first",
        holder,
    )


def lease_lost(run: str, ours: int, holder: LeaseHolder, why: str) -> LeaseLost:
    """This process's lease on ``run`` (token ``ours``) has passed to ``holder``."""
    other = holder.describe(socket.gethostname())
    return LeaseLost(
        f"run {run!r} was taken over by another orchestrator ({other}, lease token "
        f"{holder.token}; this one held {ours}) because {why}; this one stops now and acts on "
        "nothing more: the other carries the run on (see `stormproof status`)"
    )


# -- SQLite -------------------------------------------------------------------------------


@contextmanager
def sqlite_errors(path: Path) -> Iterator[None]:
    """Turn sqlite3's failures into a ``StoreFault`` or ``StormproofError`` naming the file."""
    try:
        yield
    except (sqlite3.ProgrammingError, sqlite3.InterfaceError, sqlite3.IntegrityError):
        raise
    except sqlite3.DatabaseError as exc:
        raise sqlite_error(exc, path) from exc
    except OSError as exc:  # the store's own fsync of the WAL: the disk failed what was written
        raise StoreFault(
            f"stormproof database {path}: {exc.strerror or exc}; check the disk, then try "
            "again (`stormproof resume RUN` for a run)"
        ) from exc


def sqlite_error(exc: sqlite3.DatabaseError, path: Path) -> StormproofError:
    message = str(exc).lower()
    text = f"stormproof database {path}: {exc}"
    if "not a database" in message or "malformed" in message or "corrupt" in message:
        return StormproofError(f"{text}; {SQLITE_DAMAGED}")
    if "locked" in message or "busy" in message:
        return StoreFault(f"{text}; another process holds it for writing; try again in a moment")
    if "full" in message:
        return StoreFault(
            f"{text}; free some disk space, then try again (`stormproof resume RUN` for a run)"
        )
    if "unable to open" in message or "readonly" in message or "read-only" in message:
        return StormproofError(
            f"{text}; check that its directory exists and is writable, or choose another --home"
        )
    if "disk i/o" in message:
        return StoreFault(f"{text}; check the disk, then try again")
    return StormproofError(f"{text}; check the disk and the file's permissions")


# -- PostgreSQL ---------------------------------------------------------------------------

#: libpq's prefix on a failed connection; the reason that follows is what the user needs.
_CONNECT_PREFIX = re.compile(
    r"^(?:connection failed: )?(?:connection to server (?:at|on) .*? failed: )?(?:FATAL:\s+)?"
)
_LOGIN_REFUSED = (
    "password authentication failed",
    "no pg_hba.conf entry",
    "no password supplied",
    "peer authentication failed",
)


def postgres_error(exc: Exception, server: str) -> StormproofError:
    """One of ours for a psycopg failure talking to ``server`` (a URL without its password)."""
    import psycopg
    from psycopg import errors as pg

    reason = _reason(exc)
    lower = reason.lower()
    where = f"PostgreSQL at {server}"
    if "invalid connection option" in lower or "invalid integer value" in lower:
        return StormproofError(
            f"store: {server} is not a PostgreSQL URL this client can use ({reason}); write it "
            f"as {URL_FORM} in {STORE_SETTING}"
        )
    unknown_role = lower.startswith("role ") and "does not exist" in lower
    if unknown_role or any(words in lower for words in _LOGIN_REFUSED):
        return StormproofError(
            f"{where} refused the login: {reason}; check the user and password in "
            f"{STORE_SETTING}, PGPASSWORD or ~/.pgpass"
        )
    if lower.startswith("database ") and "does not exist" in lower:
        return StormproofError(
            f"{where}: {reason}; create it (`createdb NAME` as a PostgreSQL superuser) or fix "
            f"the database name in {STORE_SETTING}"
        )
    if isinstance(exc, pg.InsufficientPrivilege):
        return StormproofError(
            f"{where}: {reason}; the user needs the right to create and write the stormproof_* "
            f"tables (GRANT CREATE ON SCHEMA … TO the user), or use another user in {STORE_SETTING}"
        )
    if isinstance(exc, pg.ReadOnlySqlTransaction):
        return StoreFault(
            f"{where} is read-only ({reason}): it is a standby; point {STORE_SETTING} at the "
            "primary (or at a name that follows failovers)"
        )
    if isinstance(exc, pg.DiskFull):
        return StoreFault(f"{where}: the server's disk is full ({reason}); free space on it")
    if isinstance(exc, (psycopg.OperationalError, psycopg.InterfaceError)):
        if str(exc).startswith("connection failed"):
            return StoreFault(
                f"cannot reach {where} ({reason}); start the server or fix the host and port "
                f"in {STORE_SETTING}, then try again"
            )
        return StoreFault(
            f"lost the connection to {where} ({reason}); once the server is back, try again "
            "(a run carries on with `stormproof resume RUN`)"
        )
    return StormproofError(f"{where}: {reason}")


def _reason(exc: Exception) -> str:
    """The first meaningful line of libpq's message, without its connection boilerplate."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    first = lines[0] if lines else type(exc).__name__
    return _CONNECT_PREFIX.sub("", first) or first
