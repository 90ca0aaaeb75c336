"""The workspace: one directory with a folder of artifacts, and a store holding every table.

Storage contract:
- The store is the workspace's SQLite file (``unolearn.sqlite3``) unless a URL names another one
  (:mod:`unolearn.store.dialect`): a PostgreSQL database that several workspace folders, processes
  and machines share (proxy replicas). Every table lives in the store, the caches included; the
  artifacts (adapters, reports) stay in the folder, which machines that train or load adapters share.
- The schema is migrated forward on open by the named migrations of :mod:`unolearn.store.migrations`,
  recorded in the ``migrations`` table; a released migration is never edited, only followed.
- Every write happens inside one transaction (:meth:`Base.transaction`), so a killed process leaves
  either all of a batch or none of it; write transactions run one at a time. SQLite's journal is in
  WAL mode.
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
from .dialect import check_url, connect, database_errors, is_postgres, redacted, require_driver
from .forget import ForgetTables
from .logs import LogTables
from .modules import ModuleTables
from .rulebook import RulebookTables
from .rules import RuleTables
from .runs import RunTables
from .served import ServedTables
from .snapshots import SnapshotTables
from .tenants import TenantTables


class Workspace(LogTables, ClusterTables, ModuleTables, RulebookTables, RuleTables, ServedTables, CacheTables,
                ForgetTables, RunTables, SnapshotTables, TenantTables):
    """A unolearn workspace. Open with :meth:`open`; use as a context manager to close it."""

    @classmethod
    def open(cls, path: str | os.PathLike[str] | None = None, store: str | None = None, *,
             migrate: bool = True) -> Workspace:
        """Open (creating if needed) the workspace at ``path`` on ``store`` and migrate its schema.

        ``store``: a store URL (``sqlite:///PATH``, ``postgresql://USER@HOST[:PORT]/DB``); None: the
        workspace's own ``unolearn.sqlite3``. A malformed URL or a missing driver is a ConfigError.
        ``migrate=False`` leaves the schema as it is (to inspect a store, as ``doctor`` does).
        """
        root = resolve_dir(path)
        if store is not None:
            require_driver(check_url(store))  # before anything is created
        # A server is reached before the folder is made, so a wrong URL leaves nothing behind.
        conn = connect(store, root / DB_NAME) if is_postgres(store) else None
        try:
            root.mkdir(parents=True, exist_ok=True)
            (root / "artifacts").mkdir(exist_ok=True)
            conn = conn or connect(store, root / DB_NAME)
        except (OSError, sqlite3.Error) as e:
            if conn is not None:
                conn.close()
            raise WorkspaceError(f"cannot open workspace {root}: {e}") from e
        ws = cls(root, conn, store)
        try:
            if migrate:
                ws._migrate()
        except BaseException:
            conn.close()
            raise
        return ws

    def reopen(self) -> Workspace:
        """Another connection to the same workspace and store (for another thread or writer)."""
        return type(self).open(self.root, self.store)

    @property
    def where(self) -> str:
        """The workspace folder and, when it is not the folder's own SQLite file, the store (password hidden)."""
        return str(self.root) if self.store is None else f"{self.root} (store {redacted(self.store)})"

    @property
    def artifacts(self) -> Path:
        """The folder for files too large for the database (adapters, reports)."""
        return self.root / "artifacts"

    def close(self) -> None:
        """Close the database connection."""
        self.conn.close()

    def __enter__(self) -> Workspace:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _migrate(self) -> None:
        """Apply the missing migrations (:mod:`unolearn.store.migrations`), each in one transaction.

        A store with every migration applied is only read (no write lock, no CREATE privilege needed).
        Otherwise each missing one is looked up again inside its transaction, so processes that open a
        new store at once apply it once. On SQLite foreign keys are off while they run (its procedure
        for rebuilding a table that others refer to) and checked before each commit.
        """
        errors = database_errors()
        failures: tuple[type[BaseException], ...] = (*errors, WorkspaceError)
        try:
            done = migrations.applied(self.conn)
            if migrations.unrecorded(self.conn):
                with self.transaction() as c:
                    migrations.record_table(c)
        except failures as e:
            raise WorkspaceError(f"workspace {self.where}: {e}") from e
        missing = [fn for fn in migrations.MIGRATIONS if fn.__name__ not in done]
        if not missing:
            return
        with self.conn.schema_change():
            for fn in missing:
                try:
                    with self.transaction() as c:
                        migrations.record_table(c)
                        if fn.__name__ not in migrations.applied(c):
                            migrations.apply(c, fn)
                            c.check()
                except errors as e:
                    raise WorkspaceError(f"migration {fn.__name__} of {self.where} failed: {e}") from e

    def schema_version(self) -> int:
        """How many migrations the workspace has applied."""
        return len(migrations.applied(self.conn))
