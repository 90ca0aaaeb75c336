"""One tenant's share of the proxy (:mod:`unolearn.tenants`): its workspace, the plan it is served, its models."""

from __future__ import annotations

import json
from dataclasses import dataclass

from ..backends import Models
from ..errors import loads_json
from ..snapshot import PlanSnapshot
from ..store import Workspace
from ..tenants import DEFAULT_TENANT
from .problems import HTTPProblem


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


def operator_only(tenant: TenantPlan) -> None:
    """403 unless ``tenant`` is the default one, whose key (``serve.api_key``) is the operator's: another tenant's
    key must not learn the tenants' names, plan ids and counts (``/metrics``, the reload's answer), nor reload
    every tenant's plan."""
    if tenant.name != DEFAULT_TENANT:
        raise HTTPProblem("this endpoint answers the default tenant's key (serve.api_key) only", 403, "operator_only")


def own_models(listing: bytes, tenant: TenantPlan, loaded: set[str]) -> bytes:
    """The upstream's model list (``GET /v1/models``) without the adapters loaded for other tenants' plans, whose
    names would tell ``tenant`` which modules they have; ``listing`` as it came when it is no list of models."""
    others = loaded - (tenant.snapshot.adapter_names() if tenant.snapshot else set())
    try:
        body = loads_json(listing)
    except ValueError:
        return listing
    if not (isinstance(body, dict) and isinstance(body.get("data"), list)):
        return listing
    body["data"] = [m for m in body["data"] if not (isinstance(m, dict) and m.get("id") in others)]
    return json.dumps(body).encode()
