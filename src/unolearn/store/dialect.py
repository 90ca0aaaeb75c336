"""Where a store's tables live, SQLite or PostgreSQL, and the SQL the two differ on, written once.

Storage contract:
- A store is named by a URL: ``sqlite:///PATH`` (a file; relative to the current directory, or
  absolute with a fourth slash: ``sqlite:////srv/unolearn.sqlite3``) or
  ``postgresql://USER[:PASSWORD]@HOST[:PORT]/DATABASE``. No URL: the workspace's own SQLite file.
- The table groups write each statement once, in the SQL both databases understand, with ``?``
  placeholders; :class:`PostgresConnection` hands them to psycopg as ``%s``. What differs is asked of
  the connection's :class:`Dialect`: the column types of the DDL, a JSON field or array length,
  null-safe equality, a reserved column name.
- Writers never lose an update. On SQLite ``BEGIN IMMEDIATE`` takes the database's write lock when
  the transaction starts, so write transactions run one at a time and a read inside one sees every
  write committed before it. PostgreSQL does the same for every process and machine on the store: a
  write transaction first takes one transaction-level advisory lock, in READ COMMITTED, so each of its
  statements sees what the writers before it committed. Reads outside a transaction take no lock, nor
  do the writes that read nothing and are idempotent (``transaction(lock=False)``: cache entries,
  vectors, logs and served answers inserted ``ON CONFLICT DO NOTHING``), so a long ingest does not
  stall every replica's recorder.
- No writer waits for ever: the write lock is awaited at most :data:`LOCK_TIMEOUT_S` seconds (SQLite's
  busy timeout; PostgreSQL's ``lock_timeout``), then :class:`StoreBusyError`. On PostgreSQL a
  transaction left idle for :data:`IDLE_TIMEOUT_S` seconds is ended by the server (its locks freed).
  Both are set per transaction (``SET LOCAL``), which a pooler in transaction mode (PgBouncer) passes
  through, where startup ``options`` would be refused. TCP keepalives notice a dead server or network.
- A PostgreSQL connection that broke (server restart, ``pg_terminate_backend``) is replaced by a new
  one at its next statement. A read outside a transaction that meets the break is run once more on the
  new connection; a write transaction that meets it raises, and :meth:`Connection.transient` tells the
  caller such an error is worth a retry (the recorder retries with backoff).
- PostgreSQL 13 or newer (scratch databases are dropped ``WITH (FORCE)``).
"""

from __future__ import annotations

import logging
import re
import sqlite3
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ..errors import ConfigError, StoreBusyError, StoreUnavailableError

log = logging.getLogger(__name__)

SQLITE_PREFIX = "sqlite:///"
POSTGRES_SCHEMES = ("postgresql", "postgres")
URL_FORMS = "sqlite:///PATH or postgresql://USER@HOST[:PORT]/DATABASE"

#: Seconds a writer waits for the store's write lock before :class:`StoreBusyError`.
LOCK_TIMEOUT_S = 30.0
#: Seconds a PostgreSQL transaction may sit idle before the server ends its session (and frees its locks).
IDLE_TIMEOUT_S = 60.0
#: libpq's TCP keepalive settings (a URL's own win): probe after 60 s idle, every 10 s, give up after 5.
KEEPALIVES = {"keepalives": "1", "keepalives_idle": "60", "keepalives_interval": "10", "keepalives_count": "5"}

#: A statement that only reads (safe to run again when the connection broke under it).
_READ = re.compile(r"\s*SELECT\b", re.IGNORECASE)
#: A quoted SQL literal or identifier ('it''s', "user"): the store's rewrites leave them as written.
_QUOTED = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"")


def outside_quotes(sql: str, rewrite: Callable[[str], str]) -> str:
    """``sql`` with ``rewrite`` applied to every part outside quoted literals and identifiers."""
    out, end = [], 0
    for m in _QUOTED.finditer(sql):
        out += [rewrite(sql[end:m.start()]), m.group()]
        end = m.end()
    return "".join([*out, rewrite(sql[end:])])


@dataclass(frozen=True)
class Dialect:
    """The SQL one database speaks where the store's statements cannot be the same on both."""

    name: str
    #: null-safe equality (``a IS b`` is true when both are NULL)
    same: str
    #: DDL written with SQLite's type names → this database's (whole words, upper case)
    types: dict[str, str] = field(default_factory=dict)
    #: column names this database reserves, quoted wherever the store names them
    reserved: frozenset[str] = frozenset()

    def ddl(self, sql: str) -> str:
        """``sql`` (DDL with SQLite's type names) in this database's types (quoted literals left as written)."""
        def types(part: str) -> str:
            for sqlite_type, own in self.types.items():
                part = re.sub(rf"\b{sqlite_type}\b", own, part)
            return part

        return outside_quotes(sql, types)

    def quote(self, column: str) -> str:
        """``column`` as a statement must name it (quoted when this database reserves the word)."""
        return f'"{column}"' if column in self.reserved else column

    # PostgreSQL reads the stored JSON text as ``json``, not ``jsonb``: jsonb refuses a string holding
    # ``\u0000`` (which a log may), json only when that very string is extracted as text.

    def json_text(self, column: str, key: str) -> str:
        """The SQL value of a top-level string field ``key`` of the JSON text in ``column``."""
        if self.name == "sqlite":
            return f"json_extract({column}, '$.{key}')"
        return f"(CAST({column} AS json) ->> '{key}')"

    def json_real(self, column: str, key: str) -> str:
        """The SQL value of a top-level number field ``key`` of the JSON text in ``column``."""
        if self.name == "sqlite":
            return f"json_extract({column}, '$.{key}')"
        return f"CAST(CAST({column} AS json) ->> '{key}' AS DOUBLE PRECISION)"

    def json_len(self, column: str) -> str:
        """The length of the JSON array text in ``column``."""
        if self.name == "sqlite":
            return f"json_array_length({column})"
        return f"json_array_length(CAST({column} AS json))"

    def json_items(self, column: str, key: str, alias: str) -> str:
        """A FROM item: one row per element of the JSON array ``key`` of ``column``, its element ``alias.value``."""
        if self.name == "sqlite":
            return f"json_each({column}, '$.{key}') AS {alias}"
        return f"json_array_elements(CAST({column} AS json) -> '{key}') AS {alias}(value)"

    def item_text(self, alias: str, key: str) -> str:
        """The string field ``key`` of the JSON object ``alias.value`` that :meth:`json_items` yields."""
        if self.name == "sqlite":
            return f"json_extract({alias}.value, '$.{key}')"
        return f"({alias}.value ->> '{key}')"


SQLITE = Dialect("sqlite", same="IS")
POSTGRES = Dialect(
    "postgresql", same="IS NOT DISTINCT FROM", reserved=frozenset({"user"}),
    # Byte order for text (as SQLite's BINARY collation: the same ORDER BY, and key prefixes as ranges);
    # 8-byte floats; identity columns.
    types={"INTEGER PRIMARY KEY AUTOINCREMENT": "INTEGER GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY",
           "TEXT": 'TEXT COLLATE "C"', "REAL": "DOUBLE PRECISION", "BLOB": "BYTEA"})


class Connection(ABC):
    """A connection to a store: ``?``-placeholder SQL on either database, transactions, its dialect."""

    dialect: Dialect

    @abstractmethod
    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        """Run one statement; return its DB-API cursor (``fetchone``, ``fetchall``, iteration, ``rowcount``)."""

    @abstractmethod
    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> Any:
        """Run one statement per row; return the cursor (its ``rowcount``: rows changed in all)."""

    @abstractmethod
    def insert(self, sql: str, params: Sequence[Any]) -> int:
        """Run one INSERT into a table with an ``id`` key the database assigns; return the new row's id."""

    @abstractmethod
    def transaction(self, lock: bool = True) -> AbstractContextManager[Connection]:
        """A context manager: the enclosed statements are committed together, or rolled back on an error.

        ``lock=False`` (PostgreSQL): without the store's write lock, for writes that read nothing and are
        idempotent; SQLite has one writer at a time either way.
        """

    @abstractmethod
    def has_table(self, name: str) -> bool:
        """True when the database has a table ``name``."""

    def user_version(self) -> int:
        """SQLite's ``PRAGMA user_version`` (how early workspaces counted migrations); 0 elsewhere."""
        return 0

    def set_user_version(self, version: int) -> None:  # noqa: B027 — SQLite only: a no-op elsewhere
        """Set SQLite's ``PRAGMA user_version`` (kept equal to the migrations applied); nothing elsewhere."""

    @abstractmethod
    def set_lock_timeout(self, seconds: float) -> None:
        """How long a transaction waits for the write lock before :class:`StoreBusyError`."""

    def transient(self, error: BaseException) -> bool:
        """True when ``error`` may pass on a retry (the server went away, the write lock was busy)."""
        return isinstance(error, StoreBusyError)

    @contextmanager
    def schema_change(self) -> Iterator[None]:
        """Around migrations: what a database needs to rebuild tables that others refer to."""
        yield

    def check(self) -> None:  # noqa: B027 — SQLite only: a no-op elsewhere
        """Before a migration commits: raise when the schema change left a broken reference."""

    @abstractmethod
    def compact(self) -> None:
        """After a deletion, outside any transaction: make the deleted rows unreadable in the files."""

    @abstractmethod
    def close(self) -> None:
        """Close the connection."""


def wal_mode(raw: sqlite3.Connection, timeout_s: float) -> None:
    """``PRAGMA journal_mode=WAL``, tried again for up to ``timeout_s`` while another connection holds the
    lock it needs: when several processes open a new file at once, SQLite answers it "database is locked"
    at once instead of waiting the busy timeout (1 in 13 openings of 4 threads failed so, before this)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            raw.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


class SQLiteConnection(Connection):
    """A SQLite file: WAL journal, foreign keys on, ``BEGIN IMMEDIATE`` transactions."""

    dialect = SQLITE

    def __init__(self, path: Path) -> None:
        self.raw = sqlite3.connect(path, isolation_level=None, timeout=LOCK_TIMEOUT_S, check_same_thread=False)
        try:
            wal_mode(self.raw, LOCK_TIMEOUT_S)
        except BaseException:
            self.raw.close()
            raise
        self.raw.execute("PRAGMA synchronous=NORMAL")
        self.raw.execute("PRAGMA foreign_keys=ON")
        self.raw.execute("PRAGMA secure_delete=ON")  # deleted text is overwritten, not left in free pages
        self.lock_timeout_s = LOCK_TIMEOUT_S

    def compact(self) -> None:
        """``VACUUM`` (the file rewritten without free pages), then the WAL checkpointed and truncated: no
        deleted row's bytes stay in either file. A StoreBusyError when another connection's read keeps the
        WAL from being truncated."""
        self.raw.execute("VACUUM")
        busy, _, _ = self.raw.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        if busy:
            raise StoreBusyError("the deletion is committed, but another connection kept the WAL file from being "
                                 "truncated; run `unolearn forget --compact` when it is idle")

    def execute(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Cursor:
        """Run one statement."""
        return self.raw.execute(sql, params)

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> sqlite3.Cursor:
        """Run one statement per row."""
        return self.raw.executemany(sql, rows)

    def insert(self, sql: str, params: Sequence[Any]) -> int:
        """Run one INSERT; the new row's id."""
        rowid = self.raw.execute(sql, params).lastrowid
        assert rowid is not None  # an INSERT sets it
        return int(rowid)

    @contextmanager
    def transaction(self, lock: bool = True) -> Iterator[SQLiteConnection]:
        """``BEGIN IMMEDIATE`` … ``COMMIT`` (``ROLLBACK`` on any exception); ``lock`` changes nothing here."""
        try:
            self.raw.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as e:
            if "locked" in str(e) or "busy" in str(e):
                raise StoreBusyError(f"the workspace database is busy: another writer held it for "
                                     f"{self.lock_timeout_s:g} s") from e
            raise
        try:
            yield self
        except BaseException:
            self.raw.execute("ROLLBACK")
            raise
        self.raw.execute("COMMIT")

    def has_table(self, name: str) -> bool:
        """True when the file has a table ``name``."""
        return self.raw.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
                                (name,)).fetchone() is not None

    def user_version(self) -> int:
        """``PRAGMA user_version``."""
        return self.raw.execute("PRAGMA user_version").fetchone()[0]

    def set_user_version(self, version: int) -> None:
        """``PRAGMA user_version = version``."""
        self.raw.execute(f"PRAGMA user_version = {int(version)}")

    def set_lock_timeout(self, seconds: float) -> None:
        """SQLite's busy timeout."""
        self.lock_timeout_s = seconds
        self.raw.execute(f"PRAGMA busy_timeout = {int(seconds * 1000)}")

    @contextmanager
    def schema_change(self) -> Iterator[None]:
        """Foreign keys off while migrations run (SQLite's procedure for rebuilding a table that others refer
        to; the setting cannot change inside a transaction), on again afterwards."""
        self.raw.execute("PRAGMA foreign_keys=OFF")
        try:
            yield
        finally:
            self.raw.execute("PRAGMA foreign_keys=ON")

    def check(self) -> None:
        """Raise ``sqlite3.IntegrityError`` when a row refers to a missing one."""
        if bad := self.raw.execute("PRAGMA foreign_key_check").fetchall():
            raise sqlite3.IntegrityError(f"foreign key violations: {bad[:3]}")

    def close(self) -> None:
        """Close the connection."""
        self.raw.close()


#: The advisory lock every write transaction on a PostgreSQL store takes first (any constant will do).
WRITE_LOCK = 0x756E6F6C6561726E  # 'unolearn'


class PostgresConnection(Connection):
    """A PostgreSQL database through psycopg 3: autocommit reads, write transactions in READ COMMITTED
    behind one advisory lock, timeouts, and a new connection in place of a broken one (see the module
    docstring). Server-side prepared statements are off, so a pooler in transaction mode can sit between."""

    dialect = POSTGRES

    def __init__(self, url: str) -> None:
        self.url = url
        self.lock_timeout_s = LOCK_TIMEOUT_S
        self._closed = False  # by close(): never reconnected
        self._depth = 0  # open transactions
        self.raw = self._connect()

    def _connect(self) -> Any:
        psycopg = _psycopg()
        params = psycopg.conninfo.conninfo_to_dict(self.url)
        extra = {k: v for k, v in KEEPALIVES.items() if k not in params}
        try:
            raw = psycopg.connect(self.url, autocommit=True, connect_timeout=10, prepare_threshold=None, **extra)
        except psycopg.Error as e:
            raise StoreUnavailableError(f"cannot reach the store {redacted(self.url)}: {_first_line(e)}") from e
        raw.isolation_level = psycopg.IsolationLevel.READ_COMMITTED
        return raw

    def _alive(self) -> Any:
        """The connection, a new one in place of a broken one (only ever between statements; while the
        server cannot be reached, StoreUnavailableError, and the next call tries again)."""
        if self.raw.closed and not self._closed and not self._depth:
            log.warning("the connection to %s broke; reconnecting", redacted(self.url))
            self.raw = self._connect()
        return self.raw

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        """Run one statement (``?`` placeholders); a read outside a transaction that meets a broken
        connection runs once more on a new one."""
        query, args = _pyformat(sql), tuple(params)
        try:
            return self._alive().execute(query, args)
        except _psycopg().OperationalError:
            if self._depth or not self.raw.broken or not _READ.match(sql):
                raise
        return self._alive().execute(query, args)

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> Any:
        """Run one statement per row (``?`` placeholders)."""
        cur = self._alive().cursor()
        cur.executemany(_pyformat(sql), [tuple(r) for r in rows])
        return cur

    def insert(self, sql: str, params: Sequence[Any]) -> int:
        """Run one INSERT ``… RETURNING id``; the new row's id."""
        return int(self.execute(sql + " RETURNING id", params).fetchone()[0])

    @contextmanager
    def transaction(self, lock: bool = True) -> Iterator[PostgresConnection]:
        """``BEGIN``, the timeouts, the store's write lock (unless ``lock=False``), the enclosed statements,
        ``COMMIT`` (``ROLLBACK`` on an exception). A write lock not free in time is a StoreBusyError."""
        psycopg = _psycopg()
        with self._alive().transaction():
            self._depth += 1
            try:
                self._begin(psycopg, lock)
                yield self
            finally:
                self._depth -= 1

    def _begin(self, psycopg: Any, lock: bool) -> None:
        """The first statement of a transaction: its timeouts and, with ``lock``, the store's write lock."""
        setup = (f"SET LOCAL lock_timeout = '{int(self.lock_timeout_s * 1000)}ms'; "
                 f"SET LOCAL idle_in_transaction_session_timeout = '{int(IDLE_TIMEOUT_S * 1000)}ms'")
        try:
            self.raw.execute(setup + (f"; SELECT pg_advisory_xact_lock({WRITE_LOCK})" if lock else ""))
        except psycopg.errors.LockNotAvailable as e:
            raise StoreBusyError(f"the store {redacted(self.url)} is busy: another writer held its write lock "
                                 f"for {self.lock_timeout_s:g} s") from e

    def has_table(self, name: str) -> bool:
        """True when the store's schema (the first of the search path) has a table ``name``.

        Read from ``pg_tables`` with the statement's snapshot: ``to_regclass`` may answer from the
        session's catalog cache, blind to a table another writer created while this one awaited the lock.
        """
        return self.execute("SELECT 1 FROM pg_catalog.pg_tables WHERE schemaname = current_schema() "
                            "AND tablename = ?", (name,)).fetchone() is not None

    def set_lock_timeout(self, seconds: float) -> None:
        """PostgreSQL's ``lock_timeout`` of this connection's transactions."""
        self.lock_timeout_s = seconds

    def transient(self, error: BaseException) -> bool:
        """True for a lost connection, a server out of reach, a timeout, a busy write lock (a retry may pass)."""
        return (isinstance(error, (StoreBusyError, StoreUnavailableError, _psycopg().OperationalError))
                or (isinstance(error, _psycopg().Error) and self.raw.broken))

    def compact(self) -> None:
        """``VACUUM`` of every table (dead rows become reusable space and leave the indexes; their bytes stay
        in the data files until overwritten, or until ``VACUUM FULL`` rewrites them: see the README)."""
        self.execute("VACUUM")

    def close(self) -> None:
        """Close the connection."""
        self._closed = True
        self.raw.close()


def _pyformat(sql: str) -> str:
    """``?`` placeholders as psycopg's ``%s``, a literal ``%`` doubled; a ``?`` inside quotes is left alone."""
    return outside_quotes(sql.replace("%", "%%"), lambda part: part.replace("?", "%s"))


def _psycopg() -> Any:
    try:
        import psycopg
    except ImportError as e:
        raise ConfigError("a postgresql:// store needs psycopg 3: pip install 'unolearn[postgres]'") from e
    return psycopg


def _first_line(e: BaseException) -> str:
    """The line of a driver's error that says what failed: for psycopg's "Multiple connection attempts
    failed" list, the last attempt's reason rather than that header."""
    lines = [line.strip().removeprefix("- ") for line in str(e).splitlines() if line.strip()]
    lines = [line for line in lines if not line.startswith("Multiple connection attempts failed")]
    reasons = [line for line in lines if "failed" in line]
    return (reasons or lines or [type(e).__name__])[-1 if reasons else 0]


_QUERY_SECRET = re.compile(r"(?i)((?:^|&)(?:ssl)?password=)[^&]*")


def redacted(url: str) -> str:
    """``url`` with its password, if any, replaced by ``***`` (safe to print): in the user part, and a
    ``password`` (or ``sslpassword``) parameter of its query string."""
    password = urlsplit(url).password
    if password is not None:
        url = url.replace(f":{password}@", ":***@", 1)
    base, mark, query = url.partition("?")
    return base + mark + _QUERY_SECRET.sub(r"\1***", query)


def sqlite_path(url: str) -> Path:
    """The file of a ``sqlite:///PATH`` URL."""
    path = url[len(SQLITE_PREFIX):]
    if not url.startswith(SQLITE_PREFIX) or not path:
        raise ConfigError(f"store URL {url!r}: a SQLite store is sqlite:///PATH (sqlite:////ABSOLUTE/PATH)")
    return Path(path)


def is_postgres(url: str | None) -> bool:
    """True when ``url`` names a PostgreSQL store (by its scheme; :func:`check_url` checks the rest)."""
    return url is not None and url.partition(":")[0].lower() in POSTGRES_SCHEMES


def check_url(url: str) -> str:
    """``url`` when it names a store unolearn can open (see the module docstring), else a ConfigError.

    A PostgreSQL URL names one database; its host may be left out (libpq's default Unix socket) or given
    as a socket folder (``postgresql:///db?host=/run/postgresql``, ``postgresql://%2Frun%2Fpostgresql/db``).
    """
    scheme = url.partition(":")[0].lower()
    if scheme == "sqlite":
        sqlite_path(url)
        return url
    if scheme not in POSTGRES_SCHEMES or not url[len(scheme):].startswith("://"):
        raise ConfigError(f"store URL {redacted(url)!r}: expected {URL_FORMS}")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 — raises ValueError on a malformed port
    except ValueError as e:
        raise ConfigError(f"store URL {redacted(url)!r}: {e}") from e
    database = parts.path.strip("/")
    if not database or "/" in database:
        raise ConfigError(f"store URL {redacted(url)!r}: expected postgresql://USER@HOST[:PORT]/DATABASE")
    return url


def require_driver(url: str | None) -> None:
    """A ConfigError when the store at ``url`` needs a database driver that is not installed."""
    if is_postgres(url):
        _psycopg()


def connect(url: str | None, default: Path) -> Connection:
    """A connection to the store at ``url``; None: the SQLite file ``default``.

    Raises ConfigError for a malformed URL or a missing driver, WorkspaceError when a PostgreSQL
    server cannot be reached, ``sqlite3.Error`` when a SQLite file cannot be opened.
    """
    if url is not None and is_postgres(check_url(url)):
        return PostgresConnection(url)
    return SQLiteConnection(default if url is None else sqlite_path(url))


def database_errors() -> tuple[type[BaseException], ...]:
    """The exception classes of the database drivers installed (for a one-line report of any of them)."""
    try:
        import psycopg
    except ImportError:
        return (sqlite3.Error,)
    return (sqlite3.Error, psycopg.Error)
