"""One tenant's share of the proxy (:mod:`unolearn.tenants`): its workspace, the plan it is served, its models."""

from __future__ import annotations

from dataclasses import dataclass

from ..backends import Models
from ..snapshot import PlanSnapshot
from ..store import Workspace


@dataclass
class TenantPlan:
    """A tenant of the proxy: whose requests a key's holder sends, routed only by this tenant's plan and recorded
    only in its store."""

    name: str
    ws: Workspace  #: the tenant's workspace (embedded answers read it)
    route_ws: Workspace  #: its own connection, for routing and snapshot reads on the routing thread
    snapshot: PlanSnapshot | None = None  #: the plan served now (None: none published: the base model)
    models: Models | None = None  #: embedded mode: the proxy's models, caching in this tenant's store
    route_models: Models | None = None  #: the embedder that routes, caching in this tenant's store

    @property
    def plan_id(self) -> int | None:
        """The id of the plan served now (None: none published yet)."""
        return self.snapshot.id if self.snapshot else None
