"""The PostgreSQL server as the store meets it: the URL made into connection settings (with
defaults that turn a dead or partitioned server into an error in seconds, and without the
password wherever it is shown), and the tables: made on first use under an advisory lock,
upgraded in place, their version checked. Separate from ``postgres.py``, whose subject is the
event log's rules (flushes, fencing, the lease).
"""

from __future__ import annotations

import os
from typing import Any, Final

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from stormproof.errors import ConfigError, StormproofError
from stormproof.store import postgres_results, postgres_views
from stormproof.store.errors import (
    POSTGRES_DAMAGED,
    STORE_SETTING,
    URL_FORM,
)

SCHEMA_VERSION: Final = 1
#: Defaults for what the URL does not set: a dead or partitioned server is an error in seconds.
_CONNECTION_DEFAULTS: Final = {
    "connect_timeout": "10",
    "tcp_user_timeout": "10000",  # ms: a write the server never acknowledges fails after this
    "application_name": "stormproof",
}
#: Key of the advisory lock that makes concurrent first openers create the tables once.
_SCHEMA_LOCK: Final = 0x5707_3970_0F00
_SCHEMA: Final = (
    """CREATE TABLE IF NOT EXISTS stormproof_info (
        key   text PRIMARY KEY,
        value text NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS stormproof_runs (
        name          text PRIMARY KEY,
        created_at    double precision NOT NULL,
        workflow_name text NOT NULL,
        meta          text NOT NULL,
        created_order bigint GENERATED ALWAYS AS IDENTITY
    )""",
    """CREATE TABLE IF NOT EXISTS stormproof_rows (
        run      text   NOT NULL REFERENCES stormproof_runs (name),
        seq      bigint NOT NULL CHECK (seq > 0),
        category text   NOT NULL CHECK (category IN ('event', 'decision')),
        kind     text   NOT NULL,
        at       double precision NOT NULL,
        cause    bigint,
        data     text   NOT NULL,
        PRIMARY KEY (run, seq)
    )""",
    """CREATE TABLE IF NOT EXISTS stormproof_requests (
        id   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        run  text NOT NULL REFERENCES stormproof_runs (name),
        kind text NOT NULL,
        at   double precision NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS stormproof_requests_by_run ON stormproof_requests (run, id)",
    # no foreign key: a lease row outlives a deleted run, its token with it (``delete_run``)
    """CREATE TABLE IF NOT EXISTS stormproof_leases (
        run         text PRIMARY KEY,
        token       bigint NOT NULL,
        holder_pid  integer,
        holder_host text,
        expires_at  timestamptz NOT NULL
    )""",
    "INSERT INTO stormproof_info (key, value) VALUES ('schema_version', '1')"
    " ON CONFLICT (key) DO NOTHING",
    *postgres_results.SCHEMA,
    *postgres_views.SCHEMA,
)
#: Every table of ``_SCHEMA``: a database that lacks one (made by an older stormproof, same
#: schema version) gets it when opened. An older stormproof ignores the tables it does not know.
_TABLES: Final = (
    "stormproof_info",
    "stormproof_runs",
    "stormproof_rows",
    "stormproof_requests",
    "stormproof_leases",
    "stormproof_results",
    *postgres_views.TABLES,
)
#: What a database from before ``delete_run`` needs: its lease rows referred to their runs.
_UPGRADES: Final = (
    "ALTER TABLE stormproof_leases DROP CONSTRAINT IF EXISTS stormproof_leases_run_fkey",
)


def connection_settings(url: str) -> tuple[str, str]:
    """The connection string with our defaults, and how to show the server without secrets."""
    try:
        params: dict[str, Any] = conninfo_to_dict(url)
    except psycopg.ProgrammingError as exc:
        reason = str(exc).splitlines()[0] if str(exc) else "cannot parse it"
        raise ConfigError(
            f"store: {without_password(url)} is not a PostgreSQL URL this client can use "
            f"({reason}); write it as {URL_FORM} in {STORE_SETTING}"
        ) from None
    for key, value in _CONNECTION_DEFAULTS.items():
        params.setdefault(key, value)
    host = str(params.get("host") or os.environ.get("PGHOST") or "localhost")
    port = str(params.get("port") or os.environ.get("PGPORT") or "5432")
    user = str(params.get("user") or os.environ.get("PGUSER") or "")
    dbname = str(params.get("dbname") or os.environ.get("PGDATABASE") or user or "")
    shown = f"postgresql://{user + '@' if user else ''}{host}:{port}/{dbname}"
    return make_conninfo("", **params), shown


def without_password(url: str) -> str:
    """``url`` as it may be printed: a password between ``:`` and ``@`` becomes ``***``."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    credentials, _, host = rest.rpartition("@")
    user = credentials.split(":", 1)[0]
    return f"{scheme}://{user}{':***' if ':' in credentials else ''}@{host}"


def ensure_schema(conn: psycopg.Connection[tuple[Any, ...]], server: str) -> None:
    """Refuse a newer or damaged schema; create the tables this database lacks (all of them
    the first time, those added since for a database made by an older stormproof)."""
    info, missing = conn.execute(
        "SELECT to_regclass('stormproof_info') IS NOT NULL,"
        " count(*) FILTER (WHERE to_regclass(t) IS NULL) FROM unnest(%s::text[]) AS t",
        (list(_TABLES),),
    ).fetchone() or (False, len(_TABLES))
    if info:
        check_version(conn, server)
    if missing:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
            for statement in (*_SCHEMA, *(_UPGRADES if info else ())):
                conn.execute(statement)


def check_version(conn: psycopg.Connection[tuple[Any, ...]], server: str) -> None:
    version_row = conn.execute(
        "SELECT value FROM stormproof_info WHERE key = 'schema_version'"
    ).fetchone()
    version = int(version_row[0]) if version_row and str(version_row[0]).isdigit() else 0
    if version > SCHEMA_VERSION:
        raise StormproofError(
            f"{server} was written by a newer stormproof (schema version {version}; this one "
            f"reads up to {SCHEMA_VERSION}); upgrade with `pip install -U stormproof`"
        )
    if version < 1:
        raise StormproofError(
            f"{server}: stormproof_info has no schema version; {POSTGRES_DAMAGED}"
        )
