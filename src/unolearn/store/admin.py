"""PostgreSQL administration the stores need: throwaway databases (benchmarks, tests) and tenants' schemas —
statements that run outside a transaction, on the server rather than in a workspace's tables."""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

from ..errors import ConfigError, WorkspaceError
from .dialect import PostgresConnection, _first_line, _psycopg, check_url, is_postgres, redacted

log = logging.getLogger(__name__)


def with_database(url: str, name: str) -> str:
    """``url`` (a PostgreSQL store) naming the database ``name`` instead of its own (its query kept)."""
    scheme, _, rest = url.partition("://")
    authority, _, tail = rest.partition("/")
    query = tail.partition("?")[2]
    return f"{scheme}://{authority}/{name}" + (f"?{query}" if query else "")


#: How a scratch database is named: its prefix, when it was made (UTC), a random part.
SCRATCH_STAMP = "%Y%m%d%H%M%S"
#: Scratch databases older than this are dropped by the next scratch store of the same prefix
#: (left behind by a killed run).
SCRATCH_MAX_AGE = timedelta(days=1)


@contextmanager
def scratch_store(url: str | None, prefix: str = "unolearn_scratch") -> Iterator[str | None]:
    """A throwaway store like ``url``'s: on a PostgreSQL server, a new empty database, dropped on exit
    (needs the CREATEDB privilege and PostgreSQL 13+; the database of ``url`` is never written); yields
    its URL. Scratch databases of ``prefix`` older than a day (a killed run's) are dropped first. For
    SQLite (or None) yields None: the caller's throwaway workspace holds its own file.
    """
    if url is None or not is_postgres(check_url(url)):
        yield None
        return
    sweep_scratch(url, prefix)
    name = f"{prefix}_{datetime.now(UTC).strftime(SCRATCH_STAMP)}_{secrets.token_hex(4)}"
    _admin(url, f'CREATE DATABASE "{name}"')
    try:
        yield with_database(url, name)
    except BaseException:
        try:
            _drop(url, name)
        except WorkspaceError as e:  # the error that ended the block is the one to report
            log.warning("%s", e)
        raise
    _drop(url, name)


def sweep_scratch(url: str, prefix: str, now: datetime | None = None) -> list[str]:
    """Drop the scratch databases of ``prefix`` on ``url``'s server older than :data:`SCRATCH_MAX_AGE`; their names."""
    pattern = re.compile(rf"{re.escape(prefix)}_(\d{{14}})_[0-9a-f]{{8}}")
    cutoff = (now or datetime.now(UTC)) - SCRATCH_MAX_AGE
    conn = PostgresConnection(url)
    try:
        names = [r[0] for r in conn.execute("SELECT datname FROM pg_database")]
    finally:
        conn.close()
    old = [n for n in names if (m := pattern.fullmatch(n))
           and datetime.strptime(m[1], SCRATCH_STAMP).replace(tzinfo=UTC) < cutoff]
    for name in old:
        _drop(url, name)
    return old


def ensure_schema(url: str, schema: str) -> None:
    """Create the schema ``schema`` (a plain identifier) in the PostgreSQL database of ``url`` unless it exists."""
    if not re.fullmatch(r"[a-z_][a-z0-9_]*", schema):
        raise ConfigError(f"not a schema name: {schema!r}")
    conn = PostgresConnection(url)
    try:
        if conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = ?", (schema,)).fetchone():
            return  # no CREATE privilege needed where it exists
        try:
            conn.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
        except _psycopg().Error as e:  # another process made it at the same moment, or no privilege
            if not conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = ?", (schema,)).fetchone():
                raise WorkspaceError(f"cannot create schema {schema} on {redacted(url)}: {_first_line(e)}") from e
    finally:
        conn.close()


def _drop(url: str, name: str) -> None:
    _admin(url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _admin(url: str, statement: str) -> None:
    """Run one statement that cannot run in a transaction (CREATE / DROP DATABASE) on ``url``'s server."""
    conn = PostgresConnection(url)
    try:
        conn.execute(statement)
    except _psycopg().Error as e:
        raise WorkspaceError(f"{statement} on {redacted(url)}: {_first_line(e)}") from e
    finally:
        conn.close()
