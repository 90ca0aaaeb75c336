"""A published plan snapshot, loaded: the router, the plans and the guides one plan id serves.

``select`` publishes a snapshot in the transaction that stores its plans (:mod:`unolearn.store.snapshots`).
The proxy routes every request through the snapshot it loaded, in memory, and swaps it for a newer one
while it runs (:meth:`unolearn.serve.proxy.Proxy.reload`); a request keeps the snapshot it started on.
"""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .answer import Route, check_system, planned_route
from .backends import Embedder
from .cluster import Router
from .errors import ConfigError
from .guide import Guide
from .names import PathName
from .plans import adapter_name
from .store import Workspace
from .store.snapshots import FORMATS


@dataclass
class PlanSnapshot:
    """One published plan: its id (the plan id), when it was published, and what routing needs."""

    id: int
    created_at: str
    router: Router | None
    plans: dict[tuple[int, str], tuple[str, str | None, int | None]]  # (cluster, system) → (path, module, epoch)
    guides: dict[str, Guide]
    adapters: list[tuple[str, int, str]]  # (module id, epoch, adapter folder on this machine)

    @classmethod
    def load(cls, ws: Workspace, embedder: Embedder, snapshot_id: int | None = None) -> PlanSnapshot | None:
        """The snapshot ``snapshot_id`` (default: the newest) of ``ws``; None when none is published."""
        body = ws.snapshot(snapshot_id)
        if body is None:
            return None
        if body.get("format") not in FORMATS:
            raise ConfigError(f"plan snapshot {body['id']} has format {body.get('format')}, unknown to this "
                              "unolearn: upgrade unolearn")
        return cls(body["id"], body["created_at"], _router(ws, embedder, body),
                   {(c, s): (p, m, e) for c, s, p, m, e in body["plans"]},
                   {mid: Guide.from_json(g) for mid, g in body["guides"].items()},
                   [(m, e, str(ws.resolve(p))) for m, e, p in body["adapters"]])

    def route(self, query: str, system: str) -> Route:
        """Where ``query`` goes under ``system`` by this snapshot (the embedding is the only work)."""
        check_system(system)
        if system == "base" or self.router is None:
            return Route(system, PathName.BASE, plan_id=self.id)
        cluster, distance, vec = self.router.locate(query)
        plan = self.plans.get((cluster, system)) if cluster is not None else None
        if plan is None:
            return Route(system, PathName.BASE, cluster, distance, plan_id=self.id)
        path, module_id, epoch = plan
        guide = self.guides.get(module_id) if path == PathName.GUIDE and module_id is not None else None
        text = guide.for_query(vec) if guide is not None else None
        return planned_route(system, cluster, distance, path, module_id, epoch, text, self.id)

    def adapter_names(self) -> set[str]:
        """The served names of the adapters this snapshot's plans use."""
        return {adapter_name(m, e) for m, e, _ in self.adapters}

    def age_s(self, at: float | None = None) -> float:
        """Seconds since the snapshot was published."""
        published = datetime.fromisoformat(self.created_at).timestamp()
        return max(0.0, (time.time() if at is None else at) - published)


def _router(ws: Workspace, embedder: Embedder, body: dict[str, Any]) -> Router | None:
    """The snapshot's router (None when it has no clusters)."""
    rows = [(cid, size, base64.b64decode(vec), body["embedder"]) for cid, size, vec in body["clusters"]]
    return Router.from_rows(ws, embedder, rows, body["unseen_distance"],
                            f"plan snapshot {body['id']} routes") if rows else None
