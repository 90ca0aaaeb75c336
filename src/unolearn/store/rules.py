"""Distilled rules and preference pairs."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any

from ..records import Log
from .base import Base, no_nul, now, upsert

_PUT_RULES = upsert("rules", ("log_id", "kind", "rules", "model", "created_at"), ("log_id", "kind"))
_PUT_PAIR = upsert("pairs", ("id", "log_id", "origin", "prompt", "chosen", "rejected", "score", "candidates", "model",
                            "created_at"), ("id",))


class RuleTables(Base):
    """Distilled rules and preference pairs."""

    def rules_of(self, log_id: str, kind: str) -> list[Any] | None:
        """One log's stored rules of ``kind`` (None: not distilled yet)."""
        row = self.conn.execute("SELECT rules FROM rules WHERE log_id = ? AND kind = ?", (log_id, kind)).fetchone()
        return json.loads(row[0]) if row else None

    def rule_ids(self, kind: str, *, nonempty: bool = False) -> set[str]:
        """The ids of the logs with a stored rule set of ``kind`` (only non-empty ones with ``nonempty``)."""
        nonempty_only = f" AND {self.dialect.json_len('rules')} > 0" if nonempty else ""
        sql = "SELECT log_id FROM rules WHERE kind = ?" + nonempty_only
        return {r[0] for r in self.conn.execute(sql, (kind,))}

    def paired_ids(self) -> set[str]:
        """The ids of the logs with at least one preference pair."""
        return {r[0] for r in self.conn.execute("SELECT DISTINCT log_id FROM pairs")}

    def put_rules(self, rows: Iterable[tuple[str, str, list[Any], str]]) -> None:
        """Store rule sets ``(log id, kind, rules, model)``, replacing earlier ones of the same log and kind."""
        created = now()
        with self.transaction() as c:
            c.executemany(_PUT_RULES, [(log_id, kind, json.dumps(rules, ensure_ascii=False), model, created)
                           for log_id, kind, rules, model in rows])

    def put_pairs(self, rows: Iterable[tuple]) -> None:
        """Store preference pairs ``(id, log id, origin, prompt JSON, chosen, rejected, score, candidates JSON,
        model, created at)``, replacing pairs of the same id (a NUL an answer held left out of chosen and
        rejected)."""
        rows = [(*r[:4], no_nul(r[4]), no_nul(r[5]), *r[6:]) for r in rows]
        with self.transaction() as c:
            c.executemany(_PUT_PAIR, rows)

    def all_pair_texts(self) -> Iterator[tuple[str, str, str]]:
        """``(prompt JSON, chosen, rejected)`` of every pair, by pair id."""
        yield from self.conn.execute("SELECT prompt, chosen, rejected FROM pairs ORDER BY id")

    def log_with_rules(self, log_id: str) -> tuple[Log, list[Any]] | None:
        """One log and its feedback rules (None: no feedback rule set)."""
        row = self.conn.execute("SELECT l.record, r.rules FROM logs l JOIN rules r ON r.log_id = l.id "
                                "AND r.kind = 'feedback' WHERE l.id = ?", (log_id,)).fetchone()
        return (Log.model_validate_json(row[0]), json.loads(row[1])) if row else None

    def unpaired_no_rule_log(self, log_id: str) -> Log | None:
        """The log ``log_id`` when its feedback gave no rules and it has no pair, else None."""
        row = self.conn.execute(
            "SELECT l.record FROM logs l JOIN rules r ON r.log_id = l.id AND r.kind = 'feedback' WHERE l.id = ? "
            f"AND {self.dialect.json_len('r.rules')} = 0 AND NOT EXISTS (SELECT 1 FROM pairs p WHERE p.log_id = l.id)",
            (log_id,)).fetchone()
        return Log.model_validate_json(row[0]) if row else None

    def logs_with_feedback_rules(self) -> Iterator[tuple[Log, list[Any]]]:
        """Every log with feedback, with its feedback rules (empty when not distilled), by log id."""
        for record, rules in self.conn.execute(
                "SELECT l.record, r.rules FROM logs l LEFT JOIN rules r ON r.log_id = l.id "
                "AND r.kind = 'feedback' WHERE l.has_feedback <> 0 ORDER BY l.id"):
            yield Log.model_validate_json(record), json.loads(rules) if rules else []

    def cluster_logs(self, cluster: int | None = None) -> list[tuple[int, Log, list[Any]]]:
        """``(cluster, log, feedback rules)`` of every clustered log (of one cluster), by cluster and log id."""
        where, args = ("WHERE m.cluster = ?", (cluster,)) if cluster is not None else ("", ())
        rows = self.conn.execute(
            "SELECT m.cluster, l.record, f.rules FROM cluster_members m JOIN logs l ON l.id = m.log_id "
            f"LEFT JOIN rules f ON f.log_id = m.log_id AND f.kind = 'feedback' {where} "
            "ORDER BY m.cluster, m.log_id", args).fetchall()
        return [(cid, Log.model_validate_json(rec), json.loads(rules or "[]")) for cid, rec, rules in rows]

    def pair_texts(self, log_id: str) -> list[tuple[str, str, str]]:
        """``(prompt, chosen, rejected)`` of one log's preference pairs, by pair id."""
        return self.conn.execute("SELECT prompt, chosen, rejected FROM pairs WHERE log_id = ? ORDER BY id",
                                 (log_id,)).fetchall()
