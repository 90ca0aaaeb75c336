"""What every table group of the store shares: the connection, transactions, and small helpers."""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

DEFAULT_DIR = "unolearn-workspace"
DB_NAME = "unolearn.sqlite3"


def now() -> str:
    """The current UTC time as an ISO-8601 string."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


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


def resolve_dir(path: str | os.PathLike[str] | None) -> Path:
    """The workspace directory: ``path``, else ``$UNOLEARN_HOME``, else ``./unolearn-workspace``."""
    return Path(path or os.environ.get("UNOLEARN_HOME") or DEFAULT_DIR)


class Base:
    """The connection to a workspace's database and its folder; the table groups build on it."""

    def __init__(self, root: Path, conn: sqlite3.Connection) -> None:
        self.root = root
        self.conn = conn

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """Run the enclosed writes atomically: all of them are committed, or none."""
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")
