"""Tenants: their registry, and where each tenant's store and folder live.

Storage contract: the workspace's own store and folder hold the *default* tenant (every log without a tenant,
and every workspace made before tenants existed). Each other tenant keeps its logs and everything made from
them — rules, clusters, rulebook, modules, plans, caches — in a store and a folder of its own, so that no
query of one tenant can read another's rows: in ``tenants/<slug>-<key>/`` under the workspace folder, and
there its own SQLite file; with an explicit SQLite URL, a file beside that one; on PostgreSQL, a schema of
its own in the same database (``unolearn_t_<key>``, set as the connection's search path). ``key`` is a hash
of the tenant's name, so any name maps to a safe file and schema name. The registry (``tenants``) lives in
the default tenant's store.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from urllib.parse import parse_qsl, quote, urlencode

from .admin import ensure_schema
from .base import Base, now
from .dialect import check_url, is_postgres, sqlite_path

TENANT_DIR = "tenants"


def tenant_key(name: str) -> str:
    """A short hash of a tenant's name: what its folder, file and schema are named by."""
    return hashlib.sha256(name.encode("utf-8")).hexdigest()[:16]


def tenant_folder(root: Path, name: str) -> Path:
    """The folder of tenant ``name`` under the workspace folder ``root`` (its name kept readable in front)."""
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:32] or "tenant"
    return root / TENANT_DIR / f"{slug}-{tenant_key(name)}"


def tenant_schema(name: str) -> str:
    """The PostgreSQL schema of tenant ``name``."""
    return f"unolearn_t_{tenant_key(name)}"


def tenant_store(store: str | None, name: str) -> str | None:
    """The store URL of tenant ``name`` when the workspace's store is ``store`` (None: the tenant folder's own
    SQLite file; on PostgreSQL the tenant's schema, which :func:`make_tenant_store` creates)."""
    if store is None:
        return None
    if not is_postgres(check_url(store)):
        path = sqlite_path(store)
        return f"sqlite:///{path.with_name(f'{path.stem}.tenant-{tenant_key(name)}{path.suffix}')}"
    base, _, query = store.partition("?")
    params = parse_qsl(query, keep_blank_values=True)
    options = " ".join([v for k, v in params if k == "options"] + [f"-csearch_path={tenant_schema(name)}"])
    kept = [(k, v) for k, v in params if k != "options"]
    return f"{base}?{urlencode([*kept, ('options', options)], quote_via=quote)}"


def make_tenant_store(store: str | None, name: str) -> None:
    """What a new tenant's store needs before it is opened: on PostgreSQL its schema (a SQLite file is made
    by opening it)."""
    if store is not None and is_postgres(store):
        ensure_schema(store, tenant_schema(name))


class TenantTables(Base):
    """The registry of a workspace's tenants (in the default tenant's store)."""

    def register_tenant(self, name: str) -> bool:
        """Record tenant ``name``; True when it is new."""
        with self.transaction() as c:
            if c.execute("SELECT 1 FROM tenants WHERE name = ?", (name,)).fetchone():
                return False
            c.execute("INSERT INTO tenants (name, created_at) VALUES (?, ?)", (name, now()))
        return True

    def tenant_names(self) -> list[str]:
        """The names of the recorded tenants (the default one is not recorded), sorted."""
        return [r[0] for r in self.conn.execute("SELECT name FROM tenants ORDER BY name")]
