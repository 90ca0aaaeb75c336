"""Logs and rejected input records, and the counts read across tables (stats, funnel)."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Iterator
from typing import Any

from ..errors import NotFoundError
from ..records import Log, Rejected, canonical_json
from .base import Base, no_nul, now, upsert

_PUT_PULL = upsert("pulls", ("source", "state", "updated_at"), ("source",))
_INSERT_LOG = ("INSERT INTO logs (id, source, lang, has_feedback, ingested_at, record, user_id) "
               "VALUES (?,?,?,?,?,?,?) ON CONFLICT DO NOTHING")


def _log_row(log: Log) -> tuple:
    """The ``logs`` row of a log (its columns in :data:`_INSERT_LOG`'s order)."""
    return (log.id, log.source, log.lang, int(log.has_feedback), now(), canonical_json(log.model_dump(mode="json")),
            log.user)


class LogTables(Base):
    """Logs and rejected input records, and the counts read across tables (stats, funnel)."""

    def add_logs(self, logs: Iterable[Log], rejected: Iterable[Rejected] = ()) -> tuple[int, int]:
        """Store ``logs`` and keep ``rejected`` records (a NUL in their raw text shown as ``\\0``), all in one
        transaction.

        Returns ``(added, duplicates)``: how many logs were new and how many were already stored. Inserts
        ``ON CONFLICT DO NOTHING`` read nothing, so they do not wait for the store's write lock; rows go in
        key order, so concurrent ingests of the same logs wait for each other and never deadlock.
        """
        rows = sorted(_log_row(log) for log in logs)
        bad = sorted(((r.id, r.file, r.line, no_nul(r.reason, "\\0"), no_nul(r.raw, "\\0"), now(),
                       None if r.users is None else json.dumps(list(r.users))) for r in rejected), key=lambda b: b[0])
        with self.transaction(lock=False) as c:
            added = c.executemany(_INSERT_LOG, rows).rowcount if rows else 0
            c.executemany("INSERT INTO rejected (id, file, line, reason, raw, rejected_at, users) "
                          "VALUES (?,?,?,?,?,?,?) ON CONFLICT DO NOTHING", bad)
        return added, len(rows) - added

    def pull_state(self, source: str) -> dict[str, Any]:
        """Where the last pull from ``source`` stopped (empty: never pulled)."""
        row = self.conn.execute("SELECT state FROM pulls WHERE source = ?", (source,)).fetchone()
        return json.loads(row[0]) if row else {}

    def set_pull_state(self, source: str, state: dict[str, Any]) -> None:
        """Record where a pull from ``source`` stopped."""
        with self.transaction(lock=False) as c:
            c.execute(_PUT_PULL, (source, json.dumps(state, sort_keys=True), now()))

    def has_identified_users(self) -> bool:
        """Whether any stored log names its user."""
        return self.conn.execute("SELECT 1 FROM logs WHERE user_id IS NOT NULL LIMIT 1").fetchone() is not None

    def get_log(self, log_id: str) -> Log:
        """The log with key ``log_id`` (a unique prefix is enough)."""
        rows = self.conn.execute(
            "SELECT record FROM logs WHERE id >= ? AND id < ? LIMIT 2",
            (log_id, log_id + "\U0010ffff")).fetchall()
        if len(rows) != 1:
            raise NotFoundError(f"no log {log_id!r}" if not rows else f"log id prefix {log_id!r} is ambiguous")
        return Log.model_validate_json(rows[0][0])

    def iter_logs(self, *, with_feedback: bool | None = None) -> Iterator[Log]:
        """Every stored log in key order, optionally only those with (or without) feedback."""
        sql = "SELECT record FROM logs"
        args: tuple[int, ...] = ()
        if with_feedback is not None:
            sql, args = sql + " WHERE has_feedback = ?", (int(with_feedback),)
        for (record,) in self.conn.execute(sql + " ORDER BY id", args):
            yield Log.model_validate_json(record)

    def count(self, table: str) -> int:
        """The number of rows in ``table``."""
        return self.conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]

    def funnel_rows(self) -> dict[str, Any]:
        """Raw counts of the learning funnel, per cluster where they belong (see :mod:`unolearn.funnel`)."""
        c, d = self.conn, self.dialect
        one = lambda sql: c.execute(sql).fetchone()[0]  # noqa: E731
        clusters = c.execute(
            "SELECT k.id, k.size, (SELECT count(*) FROM cluster_members m JOIN rules r ON r.log_id = m.log_id "
            f"AND r.kind = 'feedback' AND {d.json_len('r.rules')} > 0 WHERE m.cluster = k.id), "
            "(SELECT count(*) FROM cluster_members m JOIN pairs p ON p.log_id = m.log_id WHERE m.cluster = k.id) "
            "FROM clusters k ORDER BY k.id").fetchall()
        modules = []
        for mid, cluster, kind, metrics, val_logs, *counts in c.execute(
                "SELECT m.id, m.cluster, m.kind, m.metrics, m.val_logs, "
                "(SELECT count(*) FROM validation v WHERE v.module_id = m.id), "
                "(SELECT coalesce(sum(v.same_as_base), 0) FROM validation v WHERE v.module_id = m.id) "
                "FROM modules m WHERE m.cluster IN (SELECT id FROM clusters) "
                f"AND m.clustering {d.same} (SELECT max(id) FROM clusterings) "
                "ORDER BY m.cluster, m.kind, m.created_at"):
            m = json.loads(metrics)
            modules.append((mid, cluster, kind, m.get("steps"), m.get("rows_left_out"), m.get("rows_cut"),
                            len(json.loads(val_logs)), *counts, m.get("logs_quarantined"), m.get("logs_capped")))
        epoch_rates: dict[str, dict[int, float]] = {}
        for mid, epoch, rate in c.execute("SELECT module_id, epoch, avg(outcome) FROM validation "
                                          "GROUP BY module_id, epoch ORDER BY module_id, epoch"):
            epoch_rates.setdefault(mid, {})[epoch] = rate
        select_run = c.execute("SELECT config FROM runs WHERE stage = 'select' "
                               "AND status = 'ok' ORDER BY id DESC LIMIT 1").fetchone()
        return {
            "logs": self.count("logs"),
            "epoch_win_rates": epoch_rates,
            "win_threshold": json.loads(select_run[0]).get("win_threshold") if select_run else None,
            "with_feedback": one("SELECT count(*) FROM logs WHERE has_feedback <> 0"),
            "feedback_rules_nonempty": one("SELECT count(*) FROM rules WHERE kind = 'feedback' "
                                           f"AND {d.json_len('rules')} > 0"),
            "pairs": self.count("pairs"),
            "clusters": [dict(zip(("cluster", "size", "feedback_rules_nonempty", "pairs"), r)) for r in clusters],
            "plans": [dict(zip(("cluster", "system", "path", "module_id", "win_rate"), r)) for r in
                      c.execute("SELECT cluster, system, path, module_id, win_rate FROM plans "
                                "ORDER BY cluster, system")],
            "gaps": {r[0]: dict(zip(("plan", "gap", "threshold", "scorer", "n_logs"), r[1:])) for r in
                     c.execute("SELECT cluster, plan, gap, threshold, scorer, n_logs FROM gaps")},
            "modules": [dict(zip(("id", "cluster", "kind", "steps", "rows_left_out", "rows_cut", "val_items",
                                  "val_answers", "same_as_base", "logs_quarantined", "logs_capped"), r))
                        for r in modules],
        }

    def action_counts(self) -> dict[str, int]:
        """How many implicit actions of each kind the logs hold, most frequent first.

        Counted in SQL, but for the records holding the JSON escape ``\\u0000`` (a NUL a client sent), which
        are decoded here: PostgreSQL refuses to extract any field of such JSON.
        """
        c, d = self.conn, self.dialect
        nul = r"logs.record LIKE '%\u0000%' ESCAPE '!'"
        counts = Counter({str(k): n for k, n in c.execute(
            f"SELECT {d.item_text('a', 'kind')}, count(*) FROM logs, {d.json_items('logs.record', 'actions', 'a')} "
            f"WHERE NOT {nul} GROUP BY 1")})
        for (record,) in c.execute(f"SELECT record FROM logs WHERE {nul}"):
            counts.update(a["kind"] for a in json.loads(record).get("actions") or ())
        return dict(counts.most_common())

    def log_stats(self) -> dict[str, Any]:
        """Counts of logs by source, language, feedback and implicit action; rejected records."""
        c, d = self.conn, self.dialect

        def grouped(sql: str) -> dict[str, int]:
            return {str(k): n for k, n in c.execute(sql)}

        return {
            "logs": self.count("logs"),
            "by_source": grouped("SELECT source, count(*) FROM logs GROUP BY source ORDER BY 2 DESC"),
            "by_lang": grouped("SELECT lang, count(*) FROM logs GROUP BY lang ORDER BY 2 DESC"),
            "with_feedback": c.execute("SELECT count(*) FROM logs WHERE has_feedback <> 0").fetchone()[0],
            "without_feedback": c.execute("SELECT count(*) FROM logs WHERE has_feedback = 0").fetchone()[0],
            "actions": self.action_counts(),
            "rejected": self.count("rejected"),
            "distilled": {
                "prior_rules": c.execute("SELECT count(*) FROM rules WHERE kind = 'prior'").fetchone()[0],
                "feedback_rules": c.execute("SELECT count(*) FROM rules WHERE kind = 'feedback'").fetchone()[0],
                "usable_feedback": c.execute("SELECT count(*) FROM rules WHERE kind = 'feedback' "
                                             f"AND {d.json_len('rules')} > 0").fetchone()[0],
                "filtered_as_noise": c.execute("SELECT count(*) FROM rules WHERE kind = 'feedback' "
                                               f"AND {d.json_len('rules')} = 0").fetchone()[0],
                "pairs": grouped("SELECT origin, count(*) FROM pairs GROUP BY origin ORDER BY 2 DESC"),
            },
        }
