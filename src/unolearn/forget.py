"""Forgetting: a user's, a log's or a period's data deleted from the workspace, with all that derives from it.

Why a stage of its own: what one user wrote reaches rules, pairs, caches, rulebook entries, adapters, guides
and the published plans. Deleting a log alone would leave all of those serving its words; so a deletion
follows every derivation in one transaction (:mod:`unolearn.store.forget`), retires the modules that learned
from it (their adapter folders deleted, their plans back to the base model, a new plan snapshot published for
running proxies), and makes the bytes unreadable in the database files. The next ``run`` trains what was
retired again, on the data that remains.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from .backends.cache import text_hash
from .config import opt
from .errors import ConfigError, InputError
from .records import Log
from .store import Workspace
from .store.forget import ForgetSelection


@dataclass
class RetentionConfig:
    """How long logs are kept (config.yaml ``retention:``), applied at the start of every ``run``."""

    days: int | None = opt(None, "Forget logs, served answers and rejected records ingested more than this many "
                                 "days ago (counted from ingestion, not from the log's own timestamp); null: keep.")

    def __post_init__(self) -> None:
        if self.days is not None and (isinstance(self.days, bool) or self.days < 1):
            raise ConfigError("retention.days must be a whole number of days ≥ 1 (or null)")


@dataclass
class ForgetResult:
    """What a deletion removed (or, dry, would remove): rows per kind and the modules retired."""

    dry_run: bool
    matched_logs: int
    matched_served: int
    removed: dict[str, int] = field(default_factory=dict)
    retired: list[dict[str, str]] = field(default_factory=list)
    adapter_dirs: int = 0

    @property
    def nothing(self) -> bool:
        """True when nothing matched."""
        return not any(self.removed.values()) and not self.retired

    def as_dict(self) -> dict[str, Any]:
        """The result as a plain dict (what ``--json`` prints)."""
        return asdict(self)

    def plus(self, other: ForgetResult) -> ForgetResult:
        """This result and ``other`` (another tenant's) together."""
        removed = {k: self.removed.get(k, 0) + other.removed.get(k, 0) for k in {**self.removed, **other.removed}}
        return ForgetResult(self.dry_run, self.matched_logs + other.matched_logs,
                            self.matched_served + other.matched_served, removed, self.retired + other.retired,
                            self.adapter_dirs + other.adapter_dirs)


def parse_before(value: str) -> str:
    """An ISO-8601 date or time as the stored timestamps compare (UTC, seconds); an InputError otherwise."""
    try:
        at = datetime.fromisoformat(value)
    except ValueError as e:
        raise InputError(f"--before {value!r}: not an ISO-8601 date or time (e.g. 2026-01-31)") from e
    at = at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)
    return at.isoformat(timespec="seconds")


def forget(ws: Workspace, *, users: tuple[str, ...] = (), logs: tuple[str, ...] = (), before: str | None = None,
           dry_run: bool = False, compact: bool = False) -> ForgetResult:
    """Delete the data of ``users``, of the logs with these ids (unique prefixes), and of everything ingested
    (served, rejected) before ``before``; retire the modules that learned from it. ``dry_run``: only count.
    ``compact``: make the files unreadable where deleted rows were even when nothing new matches (after a
    deletion whose compaction another process kept from finishing)."""
    if not (users or logs or before or compact):
        raise InputError("say what to forget: --user, --log or --before (or --compact)")
    sel = ws.select_forgotten(users, logs, before)
    sel.vectors = _vector_hashes(ws, sel.logs)
    run_id = None if dry_run else ws.start_run("forget", {"users": len(users), "logs": len(logs), "before": before})
    removed = ws.forget(sel, dry_run=dry_run)
    result = ForgetResult(dry_run, len(sel.logs), len(sel.served), removed,
                          [{"id": m, "kind": k} for m, k in sel.modules])
    if not dry_run:
        result.adapter_dirs = _delete_adapters(ws, sel)
        if compact or not sel.empty or sel.modules:
            ws.compact()
        assert run_id is not None  # started unless dry_run
        ws.finish_run(run_id, "ok", {k: v for k, v in removed.items() if v})
    return result


def forget_tenants(ws: Workspace, tenant: str | None = None, **what: Any) -> ForgetResult:
    """:func:`forget` in every tenant of the workspace ``ws`` (its default tenant), or only in ``tenant``: a
    user's data is deleted wherever its logs went. One result, summed over the tenants."""
    from .tenants import each_tenant

    total: ForgetResult | None = None
    with each_tenant(ws, tenant) as tenants:
        for _, tenant_ws in tenants:
            result = forget(tenant_ws, **what)
            total = result if total is None else total.plus(result)
    assert total is not None  # the default tenant at least
    return total


def apply_retention(ws: Workspace, cfg: RetentionConfig, now: datetime | None = None) -> ForgetResult | None:
    """Forget what was ingested more than ``cfg.days`` days ago (None when no retention is set)."""
    if cfg.days is None:
        return None
    cutoff = (now or datetime.now(UTC)) - timedelta(days=cfg.days)
    return forget(ws, before=cutoff.isoformat(timespec="seconds"))


def _vector_hashes(ws: Workspace, log_ids: list[str]) -> list[str]:
    """The embedding-cache keys of every text of ``log_ids`` that a stage embeds: queries, answers, feedback,
    each rule, and each log's feedback rules joined as clustering embeds them."""
    texts: set[str] = set()
    for log_id in log_ids:
        log = ws.get_log(log_id)
        texts |= _texts_of(log)
        for kind in ("prior", "feedback"):
            rules = [r.strip() if isinstance(r, str) else json.dumps(r, ensure_ascii=False, sort_keys=True)
                     for r in ws.rules_of(log_id, kind) or []]
            texts |= set(rules) | {"\n".join(r for r in rules if r)}
    return sorted({text_hash(t) for t in texts if t})


def _texts_of(log: Log) -> set[str]:
    return {log.query, log.first_answer or "", *log.feedback, *(m.content for m in log.messages)}


def _delete_adapters(ws: Workspace, sel: ForgetSelection) -> int:
    """Delete the adapter folders of the retired modules; how many there were."""
    n = 0
    for module_id, _ in sel.modules:
        folder = ws.artifacts / "modules" / module_id
        if folder.exists():
            shutil.rmtree(folder)
            n += 1
    return n
