"""Cluster rulebooks, people's decisions on their entries, and guide modules."""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import NotFoundError
from ..records import RuleEntry, RuleMember, canonical_json, content_hash
from ..rulefilter import without_sentences
from .base import Base, now, upsert
from .clusters import still_current
from .snapshots import publish, stored_guide

_DECIDE = upsert("rule_decisions", ("log_id", "rule", "decision", "entry_id", "decided_at"), ("log_id", "rule"))

#: The rulebook columns that :func:`_entry` reads, in its order.
_ENTRY_SELECT = "SELECT id, cluster, text, lang, members, novelty, status, contradicted_by, screened FROM rulebook"


def _entry(row: tuple) -> RuleEntry:
    eid, cluster, text, lang, members, novelty, status, contradicted_by, screened = row
    return RuleEntry(id=eid, cluster=cluster, text=text, lang=lang, novelty=novelty, status=status,
                     contradicted_by=contradicted_by, screened=screened,
                     members=tuple(RuleMember(**m) for m in json.loads(members)))


def normalised(text: str) -> str:
    """A rule's text as rejections compare it: NFKC, lower case, single spaces, no end punctuation."""
    return " ".join(unicodedata.normalize("NFKC", text).lower().split()).strip(" .!?;:,。！？；：，")


def digest(key: str, text: str) -> str:
    """The keyed hash (HMAC-SHA256) by which a rejected rule is recognised without keeping its text."""
    return hmac.new(key.encode(), normalised(text).encode("utf-8"), hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class Rejections:
    """What recognises the rejected rules: the hash key, the digests, and per embedder the vectors."""

    key: str
    digests: frozenset[str]
    vectors: dict[str, np.ndarray]

    def rejects(self, text: str, vector: np.ndarray | None, embedder: str | None, similarity: float) -> bool:
        """Whether ``text`` (with its unit ``vector`` under ``embedder``) is a rejected rule or a paraphrase."""
        if digest(self.key, text) in self.digests:
            return True
        known = self.vectors.get(embedder or "")
        return vector is not None and known is not None and bool((known @ vector >= similarity).any())


class RulebookTables(Base):
    """Cluster rulebooks, people's decisions on their entries, and guide modules."""

    def replace_rulebook(self, entries: Iterable[RuleEntry], vectors: dict[str, np.ndarray] | None = None,
                         embedder: str | None = None, similarity: float = 1.0) -> None:
        """Store a rebuilt rulebook (every cluster's entries) in place of the previous one. The rejections are
        read again inside the write: an entry rejected (or paraphrased by a rejection, cosine ≥ ``similarity``
        of its ``vectors[entry id]`` under ``embedder``) while the build ran is stored as rejected."""
        with self.transaction() as c:
            rejected = self._rejections(c)
            rows = []
            for e in entries:
                status = ("rejected" if e.in_prompt and rejected.rejects(e.text, (vectors or {}).get(e.id), embedder,
                                                                         similarity) else e.status)
                rows.append((e.id, e.cluster, e.text, e.lang, canonical_json([m.model_dump() for m in e.members]),
                             e.n_logs, e.n_users, e.novelty, status, e.contradicted_by, e.screened, now()))
            c.execute("DELETE FROM rulebook")
            c.executemany("INSERT INTO rulebook (id, cluster, text, lang, members, n_logs, n_users, novelty, status, "
                          "contradicted_by, screened, created_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)", rows)

    def rejections(self) -> Rejections:
        """What recognises every rejected rule (creating the hash key on first use)."""
        with self.transaction() as c:
            return self._rejections(c)

    def _rejections(self, c: Any) -> Rejections:
        key = self._secret(c, "rejection_key")
        vectors: dict[str, list[np.ndarray]] = {}
        digests = set()
        for d, embedder, vector in c.execute("SELECT digest, embedder, vector FROM rejections"):
            digests.add(d)
            if embedder and vector is not None:
                vectors.setdefault(embedder, []).append(np.frombuffer(bytes(vector), dtype=np.float32))
        return Rejections(key, frozenset(digests), {e: np.stack(v) for e, v in vectors.items()})

    @staticmethod
    def _secret(c: Any, name: str) -> str:
        """A random secret of the workspace, made once."""
        row = c.execute("SELECT value FROM secrets WHERE name = ?", (name,)).fetchone()
        if row:
            return row[0]
        c.execute("INSERT INTO secrets (name, value) VALUES (?, ?) ON CONFLICT DO NOTHING",
                  (name, secrets.token_hex(32)))
        return c.execute("SELECT value FROM secrets WHERE name = ?", (name,)).fetchone()[0]

    def rulebook(self, cluster: int | None = None) -> list[RuleEntry]:
        """The rulebook's entries (of one cluster), by cluster, then users and logs behind them."""
        where, args = ("WHERE cluster = ?", (cluster,)) if cluster is not None else ("", ())
        rows = self.conn.execute(f"{_ENTRY_SELECT} {where} ORDER BY cluster, n_users DESC, n_logs DESC, id",
                                 args).fetchall()
        return [_entry(r) for r in rows]

    def rulebook_entry(self, entry_id: str) -> RuleEntry:
        """One entry by its id (a unique prefix is enough)."""
        rows = self.conn.execute(f"{_ENTRY_SELECT} WHERE id >= ? AND id < ? LIMIT 2",
                                 (entry_id, entry_id + "\U0010ffff")).fetchall()
        if len(rows) != 1:
            raise NotFoundError(f"no rulebook entry {entry_id!r}" if not rows
                                else f"rulebook entry prefix {entry_id!r} is ambiguous")
        return _entry(rows[0])

    def ensure_guide(self, cluster: int, text: str, entry_ids: list[str], train_ids: list[str], val_ids: list[str],
                     config: dict[str, Any], clustering: int | None, guide: dict[str, Any] | str | None = None
                     ) -> str:
        """The ``guide`` module of ``cluster`` with rulebook ``text`` (recorded once; made newest) in ``clustering``
        (the version selection started on, still current); its id. ``guide``: the entries ``entry_ids`` with their
        anchors (:meth:`unolearn.guide.Guide.as_json`; None: every question gets ``text``). The id covers ``guide``
        too: a guide whose text stayed but whose anchors or wordings changed is another module, validated anew."""
        body = {"guide": guide} if guide else {}
        module_id = content_hash("guide", {"cluster": cluster, "text": text, "val": sorted(val_ids),
                                           "train": sorted(train_ids), **body})
        metrics = canonical_json({"text": text, "entries": entry_ids, **body})
        with self.transaction() as c:
            still_current(c, clustering, f"guide {module_id}")
            c.execute("INSERT INTO modules (id, cluster, kind, path, epochs, base_model, data_hash, config, metrics, "
                      "train_logs, val_logs, seconds, created_at, clustering) "
                      "VALUES (?,?,'guide','',1,'',?,?,?,?,?,0,?,?) ON CONFLICT(id) DO UPDATE SET "
                      "created_at = excluded.created_at, clustering = excluded.clustering",
                      (module_id, cluster, module_id, canonical_json(config), metrics, canonical_json(train_ids),
                       canonical_json(val_ids), now(), clustering))
        return module_id

    def guide_body(self, module_id: str) -> dict[str, Any] | str | None:
        """The stored guide of a ``guide`` module (:meth:`unolearn.guide.Guide.as_json`; its text alone for a guide
        recorded before anchors existed; None: no such guide)."""
        row = self.conn.execute("SELECT metrics FROM modules WHERE id = ? AND kind = 'guide'", (module_id,)).fetchone()
        if row is None:
            return None
        return stored_guide(json.loads(row[0]))

    def _reject(self, c: Any, entry: RuleEntry, vector: np.ndarray | None, embedder: str | None) -> None:
        """Record the rejection and unplan the guides that carry the entry (publishing the plans at once)."""
        key = self._secret(c, "rejection_key")
        blob = None if vector is None else np.asarray(vector, dtype=np.float32).tobytes()
        for text in {entry.text, *(m.rule for m in entry.members)}:
            c.execute("INSERT INTO rejections (digest, embedder, vector, decided_at) VALUES (?,?,?,?) "
                      "ON CONFLICT DO NOTHING", (digest(key, text), embedder, blob if text == entry.text else None,
                                                 now()))
        guides = [mid for mid, metrics in c.execute("SELECT id, metrics FROM modules WHERE kind = 'guide'")
                  if entry.id in json.loads(metrics).get("entries", [])]
        for mid in guides:
            c.execute("UPDATE plans SET path = 'base', module_id = NULL, epoch = NULL, win_rate = NULL, "
                      "reason = 'its guide carried a rejected rulebook entry' WHERE module_id = ?", (mid,))
        if guides:
            publish(c)

    def rule_sets(self, kind: str) -> Iterator[tuple[str, list[str]]]:
        """``(log id, rules)`` of every stored rule set of ``kind`` (prior / feedback)."""
        for log_id, rules in self.conn.execute("SELECT log_id, rules FROM rules WHERE kind = ?", (kind,)):
            yield log_id, json.loads(rules)

    def rule_decisions(self) -> dict[tuple[str, str], str]:
        """People's decisions on feedback rules: ``(log id, rule) → approved | rejected``."""
        return {(log_id, rule): d for log_id, rule, d in
                self.conn.execute("SELECT log_id, rule, decision FROM rule_decisions")}

    def decide_entry(self, entry: RuleEntry, decision: str, vector: np.ndarray | None = None,
                     embedder: str | None = None) -> int:
        """Record ``decision`` (approved / rejected) on every member rule of ``entry``; return how many logs.

        Rejecting also records what recognises the text (its keyed hash, and ``vector`` under ``embedder``) so
        that the same text or a paraphrase never returns, from any log; takes the entry out of every plan that
        serves it in a guide (those plans fall back to the base model, and a new snapshot is published at once);
        removes the rules from their logs' feedback rules (a sentence of a longer rule from that rule: the rulebook
        takes rules sentence by sentence) and deletes those logs' pairs (revised under them), so
        the next run redistils the pairs and retrains what learned from them.
        """
        logs = sorted({m.log_id for m in entry.members})
        with self.transaction() as c:
            c.executemany(_DECIDE, [(m.log_id, m.rule, decision, entry.id, now()) for m in entry.members])
            c.execute("UPDATE rulebook SET status = ? WHERE id = ?", (decision, entry.id))
            if decision == "rejected":
                self._reject(c, entry, vector, embedder)
                for log_id in logs:
                    row = c.execute("SELECT r.rules, l.lang FROM rules r JOIN logs l ON l.id = r.log_id "
                                    "WHERE r.log_id = ? AND r.kind = 'feedback'", (log_id,)).fetchone()
                    if row:
                        gone = {m.rule for m in entry.members if m.log_id == log_id}
                        kept = [k for r in json.loads(row[0]) if (k := without_sentences(r, gone, row[1]))]
                        c.execute("UPDATE rules SET rules = ? WHERE log_id = ? AND kind = 'feedback'",
                                  (canonical_json(kept), log_id))
                    c.execute("DELETE FROM pairs WHERE log_id = ? AND origin = 'revision'", (log_id,))
        return len(logs)
