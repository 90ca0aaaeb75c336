"""The main job: ingest → distill → cluster → assess → rulebook → train → select, resumable.

Each stage is resumable on its own (distil skips finished logs and every model call is cached;
training reuses a module whose data and configuration are unchanged; selection's calls are cached).
Clustering is skipped when its input (the logs with usable feedback, the embedder and the cluster
configuration) is unchanged since the last clustering, so cluster ids — which trained modules refer
to — stay stable across re-runs.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import click

from . import assess, cluster, distill, ingest, rulebook, selection, train
from .assess import AssessConfig
from .backends import Models
from .cluster import ClusterConfig
from .distill import DistillConfig
from .errors import InputError
from .executor import ExecutorConfig
from .forget import RetentionConfig, apply_retention
from .funnel import funnel
from .records import content_hash
from .redact import RedactConfig, Redactor
from .rulebook import RulebookConfig
from .selection import SelectConfig
from .store import Workspace
from .tenants import each_tenant
from .train import TrainConfig


@dataclass
class RunConfigs:
    """The configuration of every stage of the main job."""

    distill: DistillConfig = field(default_factory=DistillConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    assess: AssessConfig = field(default_factory=AssessConfig)
    rulebook: RulebookConfig = field(default_factory=RulebookConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    select: SelectConfig = field(default_factory=SelectConfig)
    redact: RedactConfig = field(default_factory=RedactConfig)
    retention: RetentionConfig = field(default_factory=RetentionConfig)
    executor: ExecutorConfig = field(default_factory=ExecutorConfig)


def run_configs(build: Callable[[type, str], Any]) -> RunConfigs:
    """Every stage's config, each built by ``build(dataclass, config section)``."""
    return RunConfigs(build(DistillConfig, "distill"), build(ClusterConfig, "cluster"), build(AssessConfig, "assess"),
                      build(RulebookConfig, "rulebook"), build(TrainConfig, "train"), build(SelectConfig, "select"),
                      build(RedactConfig, "redact"), build(RetentionConfig, "retention"),
                      build(ExecutorConfig, "executor"))


def cluster_fingerprint(ws: Workspace, embedder_id: str, cfg: ClusterConfig) -> str:
    """A key of everything the clustering depends on."""
    usable = sorted(ws.rule_ids("feedback"))
    return content_hash("clustering", {"logs": usable, "embedder": embedder_id, "cfg": asdict(cfg)})


def run(ws: Workspace, models: Models, paths: Sequence[Path | str] = (), cfgs: RunConfigs | None = None,
        echo: Callable[[str], None] = click.echo, stop_after: str | None = None,
        tenant: str | None = None) -> dict[str, Any]:
    """Ingest ``paths`` (files, or ``langfuse+https://HOST`` to pull from) into their tenants' stores, then run
    every stage in order (``stop_after`` ends early) for every tenant in turn, or only for ``tenant`` (also the
    tenant of the logs that name none).

    Returns each stage's summary and the funnel: the default tenant's (or ``tenant``'s) at the top, and with
    several tenants, each other tenant's under ``tenants``."""
    cfgs = cfgs or RunConfigs()
    files = (ingest.ingest_args(ws, [str(p) for p in paths], redactor=Redactor(cfgs.redact),
                                tenant=tenant).as_dict() if paths else {})
    out: dict[str, dict[str, Any]] = {}
    several = tenant is None and bool(ws.tenant_names())
    with each_tenant(ws, tenant) as tenants:
        for name, tenant_ws in tenants:
            if several:
                echo(f"tenant {name}")
            try:
                out[name] = run_tenant(tenant_ws, models if tenant_ws is ws else models.for_workspace(tenant_ws),
                                       cfgs, echo, stop_after, {} if out else files)
            except InputError as e:  # one tenant's logs not ready (no feedback yet) do not stop the others
                if not several:
                    raise
                echo(f"      tenant {name}: {e}")
                out[name] = {"error": str(e)}
    first, *others = out
    summary = out[first]
    if others:
        summary["tenants"] = {name: out[name] for name in others}
    return summary


def run_tenant(ws: Workspace, models: Models, cfgs: RunConfigs, echo: Callable[[str], None],
               stop_after: str | None = None, files: dict[str, Any] | None = None) -> dict[str, Any]:
    """Every stage on one tenant's workspace (its logs already ingested: ``files`` says how); each stage's summary."""
    summary: dict[str, Any] = {}
    steps: list[tuple[str, Callable[[], Any]]] = [
        ("ingest", lambda: _ingest(ws, cfgs, files or {})),
        ("distill", lambda: distill.run(ws, models, cfgs.distill, executor=cfgs.executor).as_dict()),
        ("cluster", lambda: _cluster(ws, models, cfgs.cluster)),
        ("assess", lambda: [asdict(g) for g in assess.run(ws, models, cfgs.assess)]),
        ("rulebook", lambda: rulebook.summary(rulebook.run(
            ws, models, cfgs.rulebook, split=cfgs.train), ws.has_identified_users())),
        ("train", lambda: [_module_summary(m) for m in train.run_in_child(ws.root, cfgs.train, store=ws.store,
                                                                                 executor=cfgs.executor)]),
        ("select", lambda: [p.model_dump() for p in selection.run(ws, models, cfgs.select, cfgs.executor)]),
    ]
    for i, (name, step) in enumerate(steps, 1):
        if name == "distill" and not ws.count("logs"):
            summary["skipped"] = "no logs"
            break
        echo(f"[{i}/{len(steps)}] {name}")
        start = time.perf_counter()
        summary[name] = step()
        echo(f"      {name} done in {time.perf_counter() - start:.0f} s")
        if isinstance(summary[name], dict) and summary[name].get("warning"):
            echo(f"      warning: {summary[name]['warning']}")
        if isinstance(summary[name], dict) and summary[name].get("failed"):
            echo(f"      warning: {summary[name]['failed']} model requests failed (re-run to retry them); "
                 f"first error: {summary[name].get('first_error')}")
        if name == stop_after:
            break
    summary["funnel"] = funnel(ws)
    return summary


def _ingest(ws: Workspace, cfgs: RunConfigs, files: dict[str, Any]) -> dict[str, Any]:
    """Apply the retention period and turn served interactions that got feedback into logs (the files were
    ingested before: ``files`` says how)."""
    from .serve import collect_served

    forgotten = apply_retention(ws, cfgs.retention)
    out = dict(files)
    out["served_with_feedback"] = collect_served(ws)
    if forgotten is not None:
        out["retention"] = forgotten.as_dict()
    return out


def _cluster(ws: Workspace, models: Models, cfg: ClusterConfig) -> dict[str, Any]:
    fingerprint = cluster_fingerprint(ws, models.embedder.model_id, cfg)
    current = ws.clustering()
    if current and fingerprint == current.fingerprint and ws.count("clusters"):
        return {"skipped": "input unchanged", "clusters": ws.count("clusters")}
    return asdict(cluster.run(ws, models.embedder, cfg, fingerprint=fingerprint))


def _module_summary(m: Any) -> dict[str, Any]:
    return {"id": m.id, "cluster": m.cluster, "kind": m.kind, "seconds": round(m.seconds, 1), "reused": m.reused}
