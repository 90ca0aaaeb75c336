"""Deletion: the rows of forgotten logs, served answers and users, and everything derived from them.

Storage contract: a deletion is one transaction. It removes the logs, the served answers and their feedback,
then every row that names those logs (rules, pairs, cluster members, novelty, validation items, people's
decisions, cached model answers asked about them, their embedding vectors), the rulebook entries that had
one of them as a member, and the modules trained or validated on them (retired: their plans fall back to the
base model). Clusters left without members go with their gap and spread; a clustering that lost members is
marked to be rebuilt by the next ``run`` (its centroids were averaged over the forgotten queries too). Every
published plan snapshot is deleted and a new one published, so no old snapshot keeps a retired guide's text
and a running proxy drops the retired modules at its next reload. On SQLite the database is then vacuumed
(with ``secure_delete`` on), so no deleted text survives in the file or its WAL.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from ..raw_users import users_in_text
from .base import Base
from .dialect import Connection
from .snapshots import publish

#: Tables whose rows name a log in ``log_id``, children before parents (foreign keys).
_BY_LOG = ("rules", "pairs", "cluster_members", "novelty", "validation", "rule_decisions")
#: How many values one ``IN (…)`` list carries.
_CHUNK = 500


@dataclass
class ForgetSelection:
    """What a deletion removes: found by :meth:`ForgetTables.select_forgotten`, counted or deleted as a whole."""

    logs: list[str] = field(default_factory=list)
    served: list[str] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)
    entries: list[str] = field(default_factory=list)
    modules: list[tuple[str, str]] = field(default_factory=list)  #: (module id, kind)
    vectors: list[str] = field(default_factory=list)  #: text hashes of the logs' embedded texts

    @property
    def empty(self) -> bool:
        """True when nothing matched."""
        return not (self.logs or self.served or self.rejected)


def _in(values: Sequence[str | int]) -> Iterable[tuple[str, list[str | int]]]:
    """``(placeholders, chunk)`` for each chunk of ``values`` in an ``IN (…)`` list."""
    for i in range(0, len(values), _CHUNK):
        chunk = list(values[i:i + _CHUNK])
        yield ",".join("?" * len(chunk)), chunk


def _delete(c: Connection, table: str, column: str, values: Sequence[str | int], dry_run: bool = False) -> int:
    """Delete (or, with ``dry_run``, count) the rows of ``table`` whose ``column`` is one of ``values``."""
    n = 0
    for marks, chunk in _in(values):
        where = f"FROM {table} WHERE {column} IN ({marks})"
        n += (c.execute(f"SELECT count(*) {where}", chunk).fetchone()[0] if dry_run
              else c.execute(f"DELETE {where}", chunk).rowcount)
    return n


class ForgetTables(Base):
    """Finding and deleting what a user, a log or a date range left in the store."""

    def select_forgotten(self, users: Sequence[str] = (), log_prefixes: Sequence[str] = (),
                         before: str | None = None) -> ForgetSelection:
        """The logs, served answers and rejected records of ``users``, of logs whose id starts with one of
        ``log_prefixes``, or ingested (served, rejected) before ``before`` (ISO-8601), and what derives from
        them (rulebook entries and modules; the vectors are added by the caller, who knows the texts)."""
        c, user = self.conn, self.dialect.quote("user")
        logs: set[str] = set()
        served: set[str] = set()
        for marks, chunk in _in(list(users)):
            logs |= {r[0] for r in c.execute(f"SELECT id FROM logs WHERE user_id IN ({marks})", chunk)}
            served |= {r[0] for r in c.execute(f"SELECT response_id FROM served WHERE {user} IN ({marks})", chunk)}
        for prefix in log_prefixes:
            logs |= {r[0] for r in c.execute("SELECT id FROM logs WHERE id >= ? AND id < ?",
                                              (prefix, prefix + "\U0010ffff"))}
        if before is not None:
            logs |= {r[0] for r in c.execute("SELECT id FROM logs WHERE ingested_at < ?", (before,))}
            served |= {r[0] for r in c.execute("SELECT response_id FROM served WHERE created_at < ?", (before,))}
        for marks, chunk in _in(sorted(served)):  # a served answer's logs (from its feedback too) go with it
            for table in ("served", "feedback"):
                logs |= {r[0] for r in c.execute(f"SELECT log_id FROM {table} WHERE response_id IN ({marks}) "
                                                  "AND log_id IS NOT NULL", chunk)}
        for marks, chunk in _in(sorted(logs)):
            served |= {r[0] for r in c.execute(f"SELECT response_id FROM served WHERE log_id IN ({marks})", chunk)}
            served |= {r[0] for r in c.execute(f"SELECT response_id FROM feedback WHERE log_id IN ({marks})", chunk)}
        return ForgetSelection(sorted(logs), sorted(served), self._rejected_of(users, before),
                               self._entries_of(logs), self._modules_of(logs))

    def _rejected_of(self, users: Sequence[str], before: str | None) -> list[str]:
        """Rejected input records of ``users`` (naming one as its user id wherever its format puts it, recorded
        at ingest or found in the raw text; or, in a record that is not JSON, the quoted id anywhere), or
        rejected before ``before``."""
        out = []
        wanted = {str(u) for u in users}
        for rid, raw, at, named in self.conn.execute("SELECT id, raw, rejected_at, users FROM rejected"):
            if before is not None and at < before:
                out.append(rid)
            elif wanted and _names_user(raw, named, wanted):
                out.append(rid)
        return sorted(out)

    def _entries_of(self, logs: set[str]) -> list[str]:
        """Rulebook entries with a member rule from one of ``logs``."""
        return sorted(eid for eid, members in self.conn.execute("SELECT id, members FROM rulebook")
                      if any(m["log_id"] in logs for m in json.loads(members)))

    def _modules_of(self, logs: set[str]) -> list[tuple[str, str]]:
        """``(id, kind)`` of the modules trained or validated on one of ``logs``."""
        return sorted((mid, kind) for mid, kind, train, val in
                      self.conn.execute("SELECT id, kind, train_logs, val_logs FROM modules")
                      if logs & set(json.loads(train)) or logs & set(json.loads(val)))

    def forget(self, sel: ForgetSelection, dry_run: bool = False) -> dict[str, int]:
        """Delete everything ``sel`` names and what derives from it, in one transaction (see the module
        docstring); with ``dry_run`` only count. Returns the rows per kind."""
        with self.transaction() as c:
            counts = self._forget_rows(c, sel, dry_run)
            if not dry_run and (sel.logs or sel.served or sel.modules or sel.entries):
                counts.update(self._after_forget(c, sel, counts["cluster_members"] > 0))
        return counts

    def _forget_rows(self, c: Connection, sel: ForgetSelection, dry_run: bool) -> dict[str, int]:
        """The deletions (or counts) of the rows ``sel`` names, children before parents."""
        modules = [m for m, _ in sel.modules]
        owners = sorted({*sel.logs, *modules})
        keys = sorted({k for marks, chunk in _in(owners) for (k,) in
                       c.execute(f"SELECT key FROM cache_owners WHERE owner IN ({marks})", chunk)})
        counts = {"llm_cache": _delete(c, "llm_cache", "key", keys, dry_run)}
        counts["cache_owners"] = _delete(c, "cache_owners", "key", keys, dry_run)
        counts |= {t: _delete(c, t, "log_id", sel.logs, dry_run) for t in _BY_LOG}
        counts["validation"] += _delete(c, "validation", "module_id", modules, dry_run)
        counts["embeddings"] = _delete(c, "embeddings", "text_hash", sel.vectors, dry_run)
        counts["feedback"] = _delete(c, "feedback", "response_id", sel.served, dry_run)
        counts["served"] = _delete(c, "served", "response_id", sel.served, dry_run)
        counts["logs"] = _delete(c, "logs", "id", sel.logs, dry_run)
        counts["rejected"] = _delete(c, "rejected", "id", sel.rejected, dry_run)
        counts["rulebook"] = _delete(c, "rulebook", "id", sel.entries, dry_run)
        if not dry_run:
            for marks, chunk in _in(modules):
                c.execute(f"UPDATE plans SET path = 'base', module_id = NULL, epoch = NULL, win_rate = NULL, "
                          f"reason = 'its module was retired: trained on forgotten data' "
                          f"WHERE module_id IN ({marks})", chunk)
        counts["modules"] = _delete(c, "modules", "id", modules, dry_run)
        return counts

    def _after_forget(self, c: Connection, sel: ForgetSelection, members_gone: bool) -> dict[str, int]:
        """Clusters left empty go; a clustering that lost members is rebuilt next; snapshots are replaced."""
        empty = [r[0] for r in c.execute("SELECT id FROM clusters WHERE id NOT IN "
                                         "(SELECT cluster FROM cluster_members)")]
        for table in ("gaps", "cluster_spread", "plans"):
            _delete(c, table, "cluster", empty)
        _delete(c, "clusters", "id", empty)
        if members_gone:
            c.execute("UPDATE clusterings SET settings = NULL WHERE id = (SELECT max(id) FROM clusterings)")
        snapshots = c.execute("DELETE FROM plan_snapshots").rowcount
        if snapshots or c.execute("SELECT 1 FROM clusters LIMIT 1").fetchone():
            publish(c, empty_ok=True)  # a proxy serving a deleted snapshot moves to this one
        return {"clusters": len(empty), "plan_snapshots": snapshots}

    def compact(self) -> None:
        """Make deleted rows unreadable in the database files: on SQLite a vacuum with ``secure_delete``
        (and the WAL truncated); on PostgreSQL a ``VACUUM`` of the database (the space of dead rows is reused;
        ``VACUUM FULL`` would rewrite the files, see the README)."""
        self.conn.compact()


def _names_user(raw: str, named: str | None, wanted: set[str]) -> bool:
    """Whether a rejected record belongs to one of the ``wanted`` users: one of the ids ``named`` at ingest
    (JSON; NULL in rows kept before), or one its raw text names as a user."""
    if wanted & set(json.loads(named) if named else ()) or wanted & set(users_in_text(raw)):
        return True
    try:
        json.loads(raw)
    except (ValueError, RecursionError):
        return any(json.dumps(u) in raw for u in wanted)
    return False
