"""What every table group of the store shares: the connection, transactions, and small helpers."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .dialect import Connection, Dialect

DEFAULT_DIR = "unolearn-workspace"
DB_NAME = "unolearn.sqlite3"


def now() -> str:
    """The current UTC time as an ISO-8601 string."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def write_lines_atomic(path: Path, lines: Iterable[str]) -> int:
    """Write ``lines`` (each ended by a newline) to ``path`` through a temporary file renamed into place.

    A reader never sees a half-written file, and an interrupted write leaves the old file as it was.
    Returns the number of lines written.
    """
    tmp = path.with_name(path.name + ".tmp")
    n = 0
    with tmp.open("w", encoding="utf-8") as fh:
        for line in lines:
            fh.write(line + "\n")
            n += 1
    tmp.replace(path)
    return n


def write_jsonl_atomic(path: Path, records: Iterable[Any]) -> int:
    """Write ``records`` as JSON lines (UTF-8, unescaped) atomically; return how many."""
    return write_lines_atomic(path, (json.dumps(r, ensure_ascii=False) for r in records))


def no_nul(text: str | None, mark: str = "") -> str | None:
    """``text`` without U+0000, which PostgreSQL's text cannot hold (``mark`` in its place); None stays None.

    For the free texts that enter the store from outside (a malformed input line, an answer from a log
    that a pair keeps): on either store the same, and one such row never sinks its batch.
    """
    return text if text is None or "\x00" not in text else text.replace("\x00", mark)


def resolve_dir(path: str | os.PathLike[str] | None) -> Path:
    """The workspace directory: ``path``, else ``$UNOLEARN_HOME``, else ``./unolearn-workspace``."""
    return Path(path or os.environ.get("UNOLEARN_HOME") or DEFAULT_DIR)


def upsert(table: str, columns: Sequence[str], key: Sequence[str]) -> str:
    """An INSERT of ``columns`` into ``table`` that replaces the row with the same ``key`` (both databases)."""
    updates = ", ".join(f"{c} = excluded.{c}" for c in columns if c not in key)
    return (f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))}) "
            f"ON CONFLICT ({', '.join(key)}) DO UPDATE SET {updates}")


class Base:
    """The connection to a workspace's store and its folder; the table groups build on it."""

    def __init__(self, root: Path, conn: Connection, store: str | None = None) -> None:
        self.root = root
        self.conn = conn
        self.store = store  #: the store's URL as given (None: the workspace's SQLite file)

    @property
    def dialect(self) -> Dialect:
        """The SQL the store's database speaks where the two differ."""
        return self.conn.dialect

    @contextmanager
    def transaction(self, lock: bool = True) -> Iterator[Connection]:
        """Run the enclosed writes atomically: all of them are committed, or none (see :mod:`.dialect` on locking).

        ``lock=False`` only for writes that read nothing and are idempotent (inserts ``ON CONFLICT``): they
        need not wait for the store's write lock, which serialises read-modify-write transactions.
        """
        with self.conn.transaction(lock=lock):
            yield self.conn
