"""The workspace: one directory with a database and a folder of artifacts.

Storage contract:
- The schema is migrated forward on open by the named migrations of :mod:`unolearn.store.migrations`,
  recorded in the ``migrations`` table; a released migration is never edited, only followed.
- Every write happens inside one transaction (:meth:`Base.transaction`), so a killed process leaves
  either all of a batch or none of it. The journal is in WAL mode.
- Records are stored as canonical JSON next to a few indexed columns; their primary key is the
  record's content hash, so inserting the same record twice is a no-op.
- All SQL lives in this package: one module per group of tables, combined into :class:`Workspace`.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from ..errors import WorkspaceError
from . import migrations
from .base import DB_NAME, resolve_dir
from .caches import CacheTables
from .clusters import ClusterTables
from .logs import LogTables
from .modules import ModuleTables
from .rulebook import RulebookTables
from .rules import RuleTables
from .runs import RunTables
from .served import ServedTables


class Workspace(LogTables, ClusterTables, ModuleTables, RulebookTables, RuleTables, ServedTables, CacheTables,
                RunTables):
    """A unolearn workspace. Open with :meth:`open`; use as a context manager to close it."""

    @classmethod
    def open(cls, path: str | os.PathLike[str] | None = None) -> "Workspace":
        """Open (creating if needed) the workspace at ``path`` and migrate its schema."""
        root = resolve_dir(path)
        try:
            root.mkdir(parents=True, exist_ok=True)
            (root / "artifacts").mkdir(exist_ok=True)
            conn = sqlite3.connect(root / DB_NAME, isolation_level=None, timeout=30.0,
                                   check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
        except (OSError, sqlite3.Error) as e:
            raise WorkspaceError(f"cannot open workspace {root}: {e}") from e
        ws = cls(root, conn)
        ws._migrate()
        return ws

    @property
    def artifacts(self) -> Path:
        """The folder for files too large for the database (adapters, reports)."""
        return self.root / "artifacts"

    def close(self) -> None:
        """Close the database connection."""
        self.conn.close()

    def __enter__(self) -> "Workspace":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _migrate(self) -> None:
        """Apply the missing migrations (:mod:`unolearn.store.migrations`), each in one transaction.

        Foreign keys are off while they run (SQLite's procedure for rebuilding a table that others
        refer to; the setting cannot change inside a transaction) and checked before each commit.
        """
        try:
            with self.transaction() as c:
                done = migrations.applied(c)
        except (sqlite3.Error, WorkspaceError) as e:
            raise WorkspaceError(f"workspace {self.root}: {e}") from e
        missing = [fn for fn in migrations.MIGRATIONS if fn.__name__ not in done]
        if not missing:
            return
        self.conn.execute("PRAGMA foreign_keys=OFF")
        try:
            for fn in missing:
                try:
                    with self.transaction() as c:
                        migrations.apply(c, fn)
                        if bad := c.execute("PRAGMA foreign_key_check").fetchall():
                            raise sqlite3.IntegrityError(f"foreign key violations: {bad[:3]}")
                except sqlite3.Error as e:
                    raise WorkspaceError(f"migration {fn.__name__} of {self.root} failed: {e}") from e
        finally:
            self.conn.execute("PRAGMA foreign_keys=ON")

    def schema_version(self) -> int:
        """How many migrations the workspace has applied."""
        return self.conn.execute("SELECT count(*) FROM migrations").fetchone()[0]
