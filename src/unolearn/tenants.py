"""Tenants: teams that share a workspace (and a proxy) but never each other's learning.

A tenant's logs, and everything made from them — rules, pairs, clusters, rulebook, adapters, plans — live in
a store of their own (:mod:`unolearn.store.tenants`), so isolation does not depend on every query filtering
by tenant. Logs without a tenant belong to the *default* tenant, whose store is the workspace's own: a
workspace made before tenants existed is its default tenant, unchanged. Who may set a log's tenant is the
deployer's decision (the exporter of the logs, the proxy's key → tenant map), never the end user's.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from .errors import NotFoundError
from .store import Workspace
from .store.tenants import make_tenant_store, tenant_folder, tenant_store

DEFAULT_TENANT = "default"
MAX_NAME = 128


def check_tenant(value: Any, field: str = "tenant") -> str:
    """``value`` as a tenant name: a non-empty string of at most 128 printable characters (an integer id is
    kept as text); else a ValueError naming ``field``."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_NAME or not value.isprintable():
        raise ValueError(f"{field}: expected a non-empty printable string of at most {MAX_NAME} characters, "
                         f"got {str(value)[:40]!r}")
    return value.strip()


def tenant_names(ws: Workspace) -> list[str]:
    """Every tenant of the workspace whose default tenant is ``ws``: the default first, then by name."""
    return [DEFAULT_TENANT, *(n for n in ws.tenant_names() if n != DEFAULT_TENANT)]


def open_tenant(ws: Workspace, name: str, *, create: bool = False) -> Workspace:
    """The workspace of tenant ``name`` of ``ws`` (the default tenant's); a NotFoundError for a tenant
    never ingested, unless ``create``. The default tenant is ``ws`` itself: the caller keeps closing it."""
    if name == DEFAULT_TENANT:
        return ws
    known = name in ws.tenant_names()
    if not known and not create:
        raise NotFoundError(f"no tenant {name!r} in workspace {ws.where} (known: {', '.join(tenant_names(ws))})")
    if not known:
        make_tenant_store(ws.store, name)
    tenant = Workspace.open(tenant_folder(ws.root, name), tenant_store(ws.store, name))
    if not known:  # recorded once its store exists: a store that could not be made leaves no tenant behind
        try:
            ws.register_tenant(name)
        except BaseException:
            tenant.close()
            raise
    return tenant


@contextmanager
def each_tenant(ws: Workspace, only: str | None = None) -> Iterator[Iterator[tuple[str, Workspace]]]:
    """``(name, workspace)`` of every tenant of ``ws`` (or only ``only``), each opened when reached and
    closed on exit (the default tenant's, ``ws``, stays open)."""
    opened: list[Workspace] = []

    def walk() -> Iterator[tuple[str, Workspace]]:
        for name in [only] if only else tenant_names(ws):
            tenant = open_tenant(ws, name)
            if tenant is not ws:
                opened.append(tenant)
            yield name, tenant

    try:
        yield walk()
    finally:
        for t in opened:
            t.close()


class TenantWorkspaces:
    """The open workspaces of the tenants an ingest writes to, each opened once, created on first use; closed
    together."""

    def __init__(self, ws: Workspace) -> None:
        self.ws, self.open = ws, {DEFAULT_TENANT: ws}

    def __call__(self, name: str | None) -> Workspace:
        """The workspace of tenant ``name`` (None: the default tenant)."""
        name = name or DEFAULT_TENANT
        if name not in self.open:
            self.open[name] = open_tenant(self.ws, name, create=True)
        return self.open[name]

    def close(self) -> None:
        """Close every tenant workspace this opened (not the default tenant's)."""
        for name, tenant in self.open.items():
            if name != DEFAULT_TENANT:
                tenant.close()
        self.open = {DEFAULT_TENANT: self.ws}
