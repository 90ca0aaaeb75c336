"""The workspace: one directory with a SQLite database and a folder of artifacts.

Storage contract:
- The schema is migrated forward on open by the named migrations of :mod:`unolearn.migrations`,
  recorded in the ``migrations`` table; a released migration is never edited, only followed.
- Every write happens inside one transaction (:meth:`Workspace.transaction`), so a killed process
  leaves either all of a batch or none of it. The journal is in WAL mode.
- Records are stored as canonical JSON next to a few indexed columns; their primary key is the
  record's content hash, so inserting the same record twice is a no-op.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from . import migrations
from .errors import NotFoundError, WorkspaceError
from .records import Clustering, Log, Rejected, RuleEntry, RuleMember, canonical_json, content_hash

DEFAULT_DIR = "unolearn-workspace"
DB_NAME = "unolearn.sqlite3"



#: The rulebook columns that :func:`_entry` reads, in its order.
_ENTRY_SELECT = "SELECT id, cluster, text, lang, members, novelty, status, contradicted_by FROM rulebook"


def _entry(row: tuple) -> RuleEntry:
    eid, cluster, text, lang, members, novelty, status, contradicted_by = row
    return RuleEntry(id=eid, cluster=cluster, text=text, lang=lang, novelty=novelty, status=status,
                     contradicted_by=contradicted_by, members=tuple(RuleMember(**m) for m in json.loads(members)))


_INSERT_LOG = ("INSERT OR IGNORE INTO logs (id, source, lang, has_feedback, ingested_at, record) "
               "VALUES (?,?,?,?,?,?)")


def _log_row(log: Log) -> tuple:
    """The ``logs`` row of a log (its columns in :data:`_INSERT_LOG`'s order)."""
    return (log.id, log.source, log.lang, int(log.has_feedback), now(), canonical_json(log.model_dump(mode="json")))


def now() -> str:
    """The current UTC time as an ISO-8601 string."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def write_lines_atomic(path: Path, lines: Iterable[str]) -> int:
    """Write ``lines`` (each ended by a newline) to ``path`` through a temporary file renamed into place.

    A reader never sees a half-written file, and an interrupted write leaves the old file as it was.
    Returns the number of lines written.
    """
    tmp = path.with_name(path.name + ".tmp")
    n = 0
    with tmp.open("w", encoding="utf-8") as fh:
        for line in lines:
            fh.write(line + "\n")
            n += 1
    tmp.replace(path)
    return n


def write_jsonl_atomic(path: Path, records: Iterable[Any]) -> int:
    """Write ``records`` as JSON lines (UTF-8, unescaped) atomically; return how many."""
    return write_lines_atomic(path, (json.dumps(r, ensure_ascii=False) for r in records))


def resolve_dir(path: str | os.PathLike[str] | None) -> Path:
    """The workspace directory: ``path``, else ``$UNOLEARN_HOME``, else ``./unolearn-workspace``."""
    return Path(path or os.environ.get("UNOLEARN_HOME") or DEFAULT_DIR)


class Workspace:
    """A unolearn workspace. Open with :meth:`open`; use as a context manager to close it."""

    def __init__(self, root: Path, conn: sqlite3.Connection) -> None:
        self.root = root
        self.conn = conn

    @classmethod
    def open(cls, path: str | os.PathLike[str] | None = None) -> "Workspace":
        """Open (creating if needed) the workspace at ``path`` and migrate its schema."""
        root = resolve_dir(path)
        try:
            root.mkdir(parents=True, exist_ok=True)
            (root / "artifacts").mkdir(exist_ok=True)
            conn = sqlite3.connect(root / DB_NAME, isolation_level=None, timeout=30.0,
                                   check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
        except (OSError, sqlite3.Error) as e:
            raise WorkspaceError(f"cannot open workspace {root}: {e}") from e
        ws = cls(root, conn)
        ws._migrate()
        return ws

    @property
    def artifacts(self) -> Path:
        """The folder for files too large for the database (adapters, reports)."""
        return self.root / "artifacts"

    def close(self) -> None:
        """Close the database connection."""
        self.conn.close()

    def __enter__(self) -> "Workspace":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """Run the enclosed writes atomically: all of them are committed, or none."""
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    def _migrate(self) -> None:
        """Apply the missing migrations (:mod:`unolearn.migrations`), each in one transaction.

        Foreign keys are off while they run (SQLite's procedure for rebuilding a table that others
        refer to; the setting cannot change inside a transaction) and checked before each commit.
        """
        try:
            with self.transaction() as c:
                done = migrations.applied(c)
        except (sqlite3.Error, WorkspaceError) as e:
            raise WorkspaceError(f"workspace {self.root}: {e}") from e
        missing = [fn for fn in migrations.MIGRATIONS if fn.__name__ not in done]
        if not missing:
            return
        self.conn.execute("PRAGMA foreign_keys=OFF")
        try:
            for fn in missing:
                try:
                    with self.transaction() as c:
                        migrations.apply(c, fn)
                        if bad := c.execute("PRAGMA foreign_key_check").fetchall():
                            raise sqlite3.IntegrityError(f"foreign key violations: {bad[:3]}")
                except sqlite3.Error as e:
                    raise WorkspaceError(f"migration {fn.__name__} of {self.root} failed: {e}") from e
        finally:
            self.conn.execute("PRAGMA foreign_keys=ON")

    # -- logs ---------------------------------------------------------------------------------

    def add_logs(self, logs: Iterable[Log], rejected: Iterable[Rejected] = ()) -> tuple[int, int]:
        """Store ``logs`` and keep ``rejected`` records, all in one transaction.

        Returns ``(added, duplicates)``: how many logs were new and how many were already stored.
        """
        rows = [_log_row(log) for log in logs]
        bad = [(r.id, r.file, r.line, r.reason, r.raw, now()) for r in rejected]
        with self.transaction() as c:
            before = c.total_changes
            c.executemany(_INSERT_LOG, rows)
            added = c.total_changes - before
            c.executemany("INSERT OR IGNORE INTO rejected (id, file, line, reason, raw, rejected_at) "
                          "VALUES (?,?,?,?,?,?)", bad)
        return added, len(rows) - added

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
        sql, args = "SELECT record FROM logs", ()
        if with_feedback is not None:
            sql, args = sql + " WHERE has_feedback = ?", (int(with_feedback),)
        for (record,) in self.conn.execute(sql + " ORDER BY id", args):
            yield Log.model_validate_json(record)

    def count(self, table: str) -> int:
        """The number of rows in ``table``."""
        return self.conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]

    def funnel_rows(self) -> dict[str, Any]:
        """Raw counts of the learning funnel, per cluster where they belong (see :mod:`unolearn.funnel`)."""
        c = self.conn
        one = lambda sql: c.execute(sql).fetchone()[0]  # noqa: E731
        clusters = c.execute(
            "SELECT k.id, k.size, (SELECT count(*) FROM cluster_members m JOIN rules r ON r.log_id = m.log_id "
            "AND r.kind = 'feedback' AND json_array_length(r.rules) > 0 WHERE m.cluster = k.id), "
            "(SELECT count(*) FROM cluster_members m JOIN pairs p ON p.log_id = m.log_id WHERE m.cluster = k.id) "
            "FROM clusters k ORDER BY k.id").fetchall()
        modules = c.execute(
            "SELECT m.id, m.cluster, m.kind, json_extract(m.metrics, '$.steps'), json_array_length(m.val_logs), "
            "(SELECT count(*) FROM validation v WHERE v.module_id = m.id), "
            "(SELECT coalesce(sum(v.same_as_base), 0) FROM validation v WHERE v.module_id = m.id) "
            "FROM modules m WHERE m.cluster IN (SELECT id FROM clusters) "
            "AND m.clustering IS (SELECT max(id) FROM clusterings) ORDER BY m.cluster, m.kind, m.created_at"
        ).fetchall()
        epoch_rates: dict[str, dict[int, float]] = {}
        for mid, epoch, rate in c.execute("SELECT module_id, epoch, avg(outcome) FROM validation "
                                          "GROUP BY module_id, epoch ORDER BY module_id, epoch"):
            epoch_rates.setdefault(mid, {})[epoch] = rate
        threshold = c.execute("SELECT json_extract(config, '$.win_threshold') FROM runs WHERE stage = 'select' "
                              "AND status = 'ok' ORDER BY id DESC LIMIT 1").fetchone()
        return {
            "logs": self.count("logs"),
            "epoch_win_rates": epoch_rates,
            "win_threshold": threshold[0] if threshold else None,
            "with_feedback": one("SELECT count(*) FROM logs WHERE has_feedback"),
            "feedback_rules_nonempty": one("SELECT count(*) FROM rules WHERE kind = 'feedback' "
                                           "AND json_array_length(rules) > 0"),
            "pairs": self.count("pairs"),
            "clusters": [dict(zip(("cluster", "size", "feedback_rules_nonempty", "pairs"), r)) for r in clusters],
            "plans": [dict(zip(("cluster", "system", "path", "module_id", "win_rate"), r)) for r in
                      c.execute("SELECT cluster, system, path, module_id, win_rate FROM plans "
                                "ORDER BY cluster, system")],
            "gaps": {r[0]: dict(zip(("plan", "gap", "threshold", "scorer", "n_logs"), r[1:])) for r in
                     c.execute("SELECT cluster, plan, gap, threshold, scorer, n_logs FROM gaps")},
            "modules": [dict(zip(("id", "cluster", "kind", "steps", "val_items", "val_answers", "same_as_base"), r))
                        for r in modules],
        }

    def log_stats(self) -> dict[str, Any]:
        """Counts of logs by source, language, feedback and implicit action; rejected records."""
        c = self.conn

        def grouped(sql: str) -> dict[str, int]:
            return {str(k): n for k, n in c.execute(sql)}

        return {
            "logs": self.count("logs"),
            "by_source": grouped("SELECT source, count(*) FROM logs GROUP BY source ORDER BY 2 DESC"),
            "by_lang": grouped("SELECT lang, count(*) FROM logs GROUP BY lang ORDER BY 2 DESC"),
            "with_feedback": c.execute("SELECT count(*) FROM logs WHERE has_feedback").fetchone()[0],
            "without_feedback": c.execute("SELECT count(*) FROM logs WHERE NOT has_feedback").fetchone()[0],
            "actions": grouped("SELECT json_extract(a.value, '$.kind'), count(*) FROM logs, "
                               "json_each(logs.record, '$.actions') AS a GROUP BY 1 ORDER BY 2 DESC"),
            "rejected": self.count("rejected"),
            "distilled": {
                "prior_rules": c.execute("SELECT count(*) FROM rules WHERE kind = 'prior'").fetchone()[0],
                "feedback_rules": c.execute("SELECT count(*) FROM rules WHERE kind = 'feedback'").fetchone()[0],
                "usable_feedback": c.execute("SELECT count(*) FROM rules WHERE kind = 'feedback' "
                                             "AND json_array_length(rules) > 0").fetchone()[0],
                "filtered_as_noise": c.execute("SELECT count(*) FROM rules WHERE kind = 'feedback' "
                                               "AND json_array_length(rules) = 0").fetchone()[0],
                "pairs": grouped("SELECT origin, count(*) FROM pairs GROUP BY origin ORDER BY 2 DESC"),
            },
        }

    # -- clusters ----------------------------------------------------------------------------

    def replace_clustering(self, clustering: Clustering, clusters: Iterable[tuple[int, int, bytes]],
                           members: Iterable[tuple[str, int]]) -> int:
        """Store a new clustering version in place of the stored clusters; return its id.

        ``clusters`` are ``(id, size, centroid)``, ``members`` ``(log id, cluster id)``. The gaps and
        the plans of the previous clustering go with it, in the same transaction: no reader ever sees
        new clusters routed through old plans.
        """
        created = now()
        with self.transaction() as c:
            for table in ("gaps", "plans", "cluster_members", "clusters"):
                c.execute(f"DELETE FROM {table}")
            cur = c.execute("INSERT INTO clusterings (embedder, threshold, unseen_distance, fingerprint, created_at) "
                            "VALUES (?,?,?,?,?)", (clustering.embedder, clustering.threshold,
                                                   clustering.unseen_distance, clustering.fingerprint, created))
            c.executemany("INSERT INTO clusters (id, size, centroid, embedder, created_at) VALUES (?,?,?,?,?)",
                          ((cid, size, centroid, clustering.embedder, created) for cid, size, centroid in clusters))
            c.executemany("INSERT INTO cluster_members (log_id, cluster) VALUES (?,?)", members)
        return int(cur.lastrowid)

    def clustering(self) -> Clustering | None:
        """The current clustering version (None before the first ``cluster``)."""
        row = self.conn.execute("SELECT id, embedder, threshold, unseen_distance, fingerprint, created_at "
                                "FROM clusterings ORDER BY id DESC LIMIT 1").fetchone()
        if row is None:
            return None
        keys = ("id", "embedder", "threshold", "unseen_distance", "fingerprint", "created_at")
        return Clustering(**dict(zip(keys, row)))

    def _clustering_id(self) -> int | None:
        row = self.conn.execute("SELECT max(id) FROM clusterings").fetchone()
        return row[0]

    def cluster_ids(self) -> list[int]:
        """The ids of the stored clusters, ascending."""
        return [r[0] for r in self.conn.execute("SELECT id FROM clusters ORDER BY id")]

    def cluster_rows(self) -> list[tuple[int, int, bytes, str]]:
        """``(id, size, centroid, embedder)`` of every stored cluster, by id."""
        return self.conn.execute("SELECT id, size, centroid, embedder FROM clusters ORDER BY id").fetchall()

    def cluster_members(self, cluster: int) -> list[str]:
        """The log ids of one cluster, in key order."""
        return [r[0] for r in self.conn.execute(
            "SELECT log_id FROM cluster_members WHERE cluster = ? ORDER BY log_id", (cluster,))]

    def add_member(self, log_id: str, cluster: int,
                   move: Callable[[int, bytes], tuple[int, bytes]]) -> int | None:
        """Add a stored log to ``cluster``, whose ``(size, centroid)`` ``move`` turns into the new ones.

        Read and written in one transaction, so concurrent adds are not lost. Returns the log's
        cluster when it already had one (nothing changes), else None. Raises NotFoundError when the
        log or the cluster does not exist.
        """
        if not self.conn.execute("SELECT 1 FROM logs WHERE id = ?", (log_id,)).fetchone():
            raise NotFoundError(f"no log {log_id!r}")
        with self.transaction() as t:
            member = t.execute("SELECT cluster FROM cluster_members WHERE log_id = ?", (log_id,)).fetchone()
            if member:
                return int(member[0])
            row = t.execute("SELECT size, centroid FROM clusters WHERE id = ?", (cluster,)).fetchone()
            if row is None:
                raise NotFoundError(f"cluster {cluster} is gone (re-clustered since this router was loaded)")
            size, centroid = move(row[0], row[1])
            t.execute("UPDATE clusters SET size = ?, centroid = ? WHERE id = ?", (size, centroid, cluster))
            t.execute("INSERT INTO cluster_members (log_id, cluster) VALUES (?,?)", (log_id, cluster))
        return None

    def feedback_rule_rows(self) -> list[tuple[str, str, str]]:
        """``(log id, log record JSON, feedback rules JSON)`` of every log with a feedback rule set, by log id."""
        return self.conn.execute(
            "SELECT r.log_id, l.record, r.rules FROM rules r JOIN logs l ON l.id = r.log_id "
            "WHERE r.kind = 'feedback' ORDER BY r.log_id").fetchall()

    def pair_texts(self, log_id: str) -> list[tuple[str, str, str]]:
        """``(prompt, chosen, rejected)`` of one log's preference pairs, by pair id."""
        return self.conn.execute("SELECT prompt, chosen, rejected FROM pairs WHERE log_id = ? ORDER BY id",
                                 (log_id,)).fetchall()

    def clustered_rule_rows(self) -> list[tuple[int, str, str, str, str | None]]:
        """``(cluster, log id, lang, feedback rules JSON, prior rules JSON or None)`` of every clustered
        log with a feedback rule set, by cluster and log id."""
        return self.conn.execute(
            "SELECT m.cluster, m.log_id, l.lang, f.rules, p.rules FROM cluster_members m "
            "JOIN logs l ON l.id = m.log_id JOIN rules f ON f.log_id = m.log_id AND f.kind = 'feedback' "
            "LEFT JOIN rules p ON p.log_id = m.log_id AND p.kind = 'prior' ORDER BY m.cluster, m.log_id").fetchall()

    def replace_gaps(self, scorer: str, novelty: list[tuple[str, int, str, float]],
                     gaps: list[tuple[int, str, float, float, float, int, str, float]]) -> None:
        """Store a scorer's novelty per rule ``(log id, rule index, scorer, novelty)`` and every cluster's
        gap ``(cluster, scorer, gap, mean, max, n logs, plan, threshold)``, replacing the previous ones."""
        with self.transaction() as c:
            c.execute("DELETE FROM novelty WHERE scorer = ?", (scorer,))
            c.executemany("INSERT INTO novelty (log_id, rule_index, scorer, novelty) VALUES (?,?,?,?)", novelty)
            c.execute("DELETE FROM gaps")
            c.executemany("INSERT INTO gaps (cluster, scorer, gap, gap_mean, gap_max, n_logs, plan, threshold) "
                          "VALUES (?,?,?,?,?,?,?,?)", gaps)

    # -- modules and plans ---------------------------------------------------------------------

    def relative(self, path: Path) -> str:
        """``path`` as stored: relative to the workspace when inside it, so a moved workspace still works."""
        try:
            return path.resolve().relative_to(self.root.resolve()).as_posix()
        except ValueError:
            return str(path.resolve())

    def resolve(self, stored: str) -> Path:
        """A stored path (see :meth:`relative`) as a path on this machine."""
        return Path(stored) if Path(stored).is_absolute() else self.root / stored

    def add_module(self, row: dict[str, Any]) -> None:
        """Record a trained module of the current clustering (``row``: the ``modules`` columns but
        ``clustering`` and ``created_at``; ``path`` as :meth:`relative` gives it)."""
        row = {**row, "clustering": self._clustering_id(), "created_at": now()}
        with self.transaction() as c:
            c.execute(f"INSERT INTO modules ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
                      tuple(row.values()))

    def module(self, module_id: str) -> dict[str, Any] | None:
        """One module's columns (JSON columns decoded, ``path`` resolved); None: no such module."""
        cur = self.conn.execute("SELECT * FROM modules WHERE id = ?", (module_id,))
        row = cur.fetchone()
        return self._module_dict(cur.description, row) if row else None

    def modules(self, cluster: int | None = None, kind: str | None = None) -> list[dict[str, Any]]:
        """The modules of the current clustering (of one cluster and kind), newest first."""
        sql, args = "SELECT * FROM modules WHERE clustering IS ?", [self._clustering_id()]
        if cluster is not None:
            sql, args = sql + " AND cluster = ?", [*args, cluster]
        if kind is not None:
            sql, args = sql + " AND kind = ?", [*args, kind]
        cur = self.conn.execute(sql + " ORDER BY created_at DESC, id", args)
        return [self._module_dict(cur.description, r) for r in cur.fetchall()]

    def all_modules(self) -> list[dict[str, Any]]:
        """Every stored module, of any clustering, by cluster and kind."""
        cur = self.conn.execute("SELECT * FROM modules ORDER BY cluster, kind, created_at")
        return [self._module_dict(cur.description, r) for r in cur.fetchall()]

    def adopt_module(self, module_id: str) -> None:
        """Make an identical module trained for an earlier clustering (same data, model and settings)
        part of the current one, as the newest of its cluster and kind."""
        with self.transaction() as c:
            c.execute("UPDATE modules SET clustering = ?, created_at = ? WHERE id = ?",
                      (self._clustering_id(), now(), module_id))

    def _module_dict(self, description: Any, row: tuple) -> dict[str, Any]:
        out = dict(zip((d[0] for d in description), row))
        for key in ("config", "metrics", "train_logs", "val_logs"):
            out[key] = json.loads(out[key])
        out["path"] = str(self.resolve(out["path"])) if out["path"] else ""
        return out

    def replace_plans(self, plans: Iterable[tuple[int, str, str, str | None, int | None, float | None, str]]) -> None:
        """Store every cluster's plans ``(cluster, system, path, module id, epoch, win rate, reason)`` for the
        current clustering, in place of the previous ones."""
        clustering = self._clustering_id()
        with self.transaction() as c:
            c.execute("DELETE FROM plans")
            c.executemany("INSERT INTO plans (cluster, system, path, module_id, epoch, win_rate, reason, clustering) "
                          "VALUES (?,?,?,?,?,?,?,?)", [(*p, clustering) for p in plans])

    def plan_row(self, cluster: int, system: str) -> tuple | None:
        """``(path, module id, epoch, win rate, reason)`` of one cluster's plan for ``system`` in the current
        clustering (None: not selected yet)."""
        return self.conn.execute("SELECT path, module_id, epoch, win_rate, reason FROM plans WHERE cluster = ? "
                                 "AND system = ? AND clustering IS ?",
                                 (cluster, system, self._clustering_id())).fetchone()

    def gap_rows(self) -> list[tuple[int, str, float, float, str, int]]:
        """``(cluster, plan, gap, threshold, scorer, n logs)`` of every assessed cluster."""
        return self.conn.execute("SELECT cluster, plan, gap, threshold, scorer, n_logs FROM gaps").fetchall()

    def replace_validation(self, module_id: str, rows: list[tuple]) -> None:
        """Store a module's validation items in place of its earlier ones (``validation`` columns in order)."""
        with self.transaction() as c:
            c.execute("DELETE FROM validation WHERE module_id = ?", (module_id,))
            c.executemany("INSERT INTO validation (module_id, epoch, log_id, sample, score_initial, score_module, "
                          "bleu, length_ratio, outcome, same_as_base) VALUES (?,?,?,?,?,?,?,?,?,?)", rows)

    # -- rulebook ----------------------------------------------------------------------------

    def replace_rulebook(self, entries: Iterable[RuleEntry]) -> None:
        """Store a rebuilt rulebook (every cluster's entries) in place of the previous one."""
        rows = [(e.id, e.cluster, e.text, e.lang, canonical_json([m.model_dump() for m in e.members]), e.n_logs,
                 e.n_users, e.novelty, e.status, e.contradicted_by, now()) for e in entries]
        with self.transaction() as c:
            c.execute("DELETE FROM rulebook")
            c.executemany("INSERT INTO rulebook (id, cluster, text, lang, members, n_logs, n_users, novelty, status, "
                          "contradicted_by, created_at) VALUES (?,?,?,?,?,?,?,?,?,?,?)", rows)

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

    def ensure_guide(self, cluster: int, text: str, entry_ids: list[str], train_ids: list[str],
                     val_ids: list[str], config: dict[str, Any]) -> str:
        """The ``guide`` module of ``cluster`` with rulebook ``text`` (recorded once; made newest); its id."""
        module_id = content_hash("guide", {"cluster": cluster, "text": text, "val": sorted(val_ids)})
        metrics = canonical_json({"text": text, "entries": entry_ids})
        with self.transaction() as c:
            c.execute("INSERT INTO modules (id, cluster, kind, path, epochs, base_model, data_hash, config, metrics, "
                      "train_logs, val_logs, seconds, created_at, clustering) "
                      "VALUES (?,?,'guide','',1,'',?,?,?,?,?,0,?,?) ON CONFLICT(id) DO UPDATE SET "
                      "created_at = excluded.created_at, clustering = excluded.clustering",
                      (module_id, cluster, module_id, canonical_json(config), metrics, canonical_json(train_ids),
                       canonical_json(val_ids), now(), self._clustering_id()))
        return module_id

    def guide_text(self, module_id: str) -> str | None:
        """The rulebook text of a ``guide`` module (None: no such guide)."""
        row = self.conn.execute("SELECT json_extract(metrics, '$.text') FROM modules WHERE id = ? AND kind = 'guide'",
                                (module_id,)).fetchone()
        return row[0] if row else None

    def rule_sets(self, kind: str) -> Iterator[tuple[str, list[str]]]:
        """``(log id, rules)`` of every stored rule set of ``kind`` (prior / feedback)."""
        for log_id, rules in self.conn.execute("SELECT log_id, rules FROM rules WHERE kind = ?", (kind,)):
            yield log_id, json.loads(rules)

    def rule_decisions(self) -> dict[tuple[str, str], str]:
        """People's decisions on feedback rules: ``(log id, rule) → approved | rejected``."""
        return {(log_id, rule): d for log_id, rule, d in
                self.conn.execute("SELECT log_id, rule, decision FROM rule_decisions")}

    def decide_entry(self, entry: RuleEntry, decision: str) -> int:
        """Record ``decision`` (approved / rejected) on every member rule of ``entry``; return how many logs.

        Rejecting also removes the rules from their logs' feedback rules and deletes those logs' pairs
        (revised under them), so the next run redistils the pairs and retrains what learned from them.
        """
        logs = sorted({m.log_id for m in entry.members})
        with self.transaction() as c:
            c.executemany("INSERT OR REPLACE INTO rule_decisions (log_id, rule, decision, entry_id, decided_at) "
                          "VALUES (?,?,?,?,?)", [(m.log_id, m.rule, decision, entry.id, now()) for m in entry.members])
            c.execute("UPDATE rulebook SET status = ? WHERE id = ?", (decision, entry.id))
            if decision == "rejected":
                gone = {(m.log_id, m.rule) for m in entry.members}
                for log_id in logs:
                    row = c.execute("SELECT rules FROM rules WHERE log_id = ? AND kind = 'feedback'",
                                    (log_id,)).fetchone()
                    if row:
                        kept = [r for r in json.loads(row[0]) if (log_id, r) not in gone]
                        c.execute("UPDATE rules SET rules = ? WHERE log_id = ? AND kind = 'feedback'",
                                  (canonical_json(kept), log_id))
                    c.execute("DELETE FROM pairs WHERE log_id = ? AND origin = 'revision'", (log_id,))
        return len(logs)

    # -- caches ------------------------------------------------------------------------------

    def cache_get(self, key: str) -> str | None:
        """The cached response stored under ``key``, if any."""
        row = self.conn.execute("SELECT response FROM llm_cache WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def cache_put(self, key: str, model: str, response: str) -> None:
        """Store one model response (its own transaction: finished calls survive an interruption)."""
        with self.transaction() as c:
            c.execute("INSERT OR REPLACE INTO llm_cache VALUES (?,?,?,?)", (key, model, response, now()))

    def embeddings_get(self, model: str, hashes: list[str]) -> dict[str, bytes]:
        """Stored vectors (float32 bytes) of ``model`` for the given text hashes."""
        found: dict[str, bytes] = {}
        for i in range(0, len(hashes), 500):
            chunk = hashes[i:i + 500]
            marks = ",".join("?" * len(chunk))
            found.update(self.conn.execute(
                f"SELECT text_hash, vector FROM embeddings WHERE model = ? AND text_hash IN ({marks})",
                (model, *chunk)))
        return found

    def embeddings_put(self, model: str, items: list[tuple[str, bytes]]) -> None:
        """Store vectors (text hash, float32 bytes) of ``model`` in one transaction."""
        with self.transaction() as c:
            c.executemany("INSERT OR REPLACE INTO embeddings VALUES (?,?,?)",
                          [(model, h, v) for h, v in items])

    # -- runs (provenance) --------------------------------------------------------------------

    def start_run(self, stage: str, config: dict[str, Any]) -> int:
        """Record the start of a stage run; return its id."""
        with self.transaction() as c:
            cur = c.execute("INSERT INTO runs (stage, started_at, status, config) VALUES (?,?,?,?)",
                            (stage, now(), "running", canonical_json(config)))
            return int(cur.lastrowid)

    @contextmanager
    def recorded_run(self, stage: str, config: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """Record one stage run around the block: ``ok`` with the result the block puts in the yielded
        dict, or ``failed`` with the error when the block raises (the error is raised on)."""
        run_id = self.start_run(stage, config)
        result: dict[str, Any] = {}
        try:
            yield result
        except BaseException as e:
            self.finish_run(run_id, "failed", {**result, "error": f"{type(e).__name__}: {e}"})
            raise
        self.finish_run(run_id, "ok", result)

    def finish_run(self, run_id: int, status: str, result: dict[str, Any] | None = None) -> None:
        """Record the end of a stage run with its status and result summary."""
        with self.transaction() as c:
            c.execute("UPDATE runs SET finished_at=?, status=?, result=? WHERE id=?",
                      (now(), status, canonical_json(result or {}), run_id))

    def schema_version(self) -> int:
        """How many migrations the workspace has applied."""
        return self.conn.execute("SELECT count(*) FROM migrations").fetchone()[0]

    # -- distilled rules and preference pairs ----------------------------------------------------

    def rules_of(self, log_id: str, kind: str) -> list[Any] | None:
        """One log's stored rules of ``kind`` (None: not distilled yet)."""
        row = self.conn.execute("SELECT rules FROM rules WHERE log_id = ? AND kind = ?", (log_id, kind)).fetchone()
        return json.loads(row[0]) if row else None

    def rule_ids(self, kind: str, *, nonempty: bool = False) -> set[str]:
        """The ids of the logs with a stored rule set of ``kind`` (only non-empty ones with ``nonempty``)."""
        sql = "SELECT log_id FROM rules WHERE kind = ?" + (" AND json_array_length(rules) > 0" if nonempty else "")
        return {r[0] for r in self.conn.execute(sql, (kind,))}

    def paired_ids(self) -> set[str]:
        """The ids of the logs with at least one preference pair."""
        return {r[0] for r in self.conn.execute("SELECT DISTINCT log_id FROM pairs")}

    def put_rules(self, rows: Iterable[tuple[str, str, list[Any], str]]) -> None:
        """Store rule sets ``(log id, kind, rules, model)``, replacing earlier ones of the same log and kind."""
        created = now()
        with self.transaction() as c:
            c.executemany("INSERT OR REPLACE INTO rules (log_id, kind, rules, model, created_at) VALUES (?,?,?,?,?)",
                          [(log_id, kind, json.dumps(rules, ensure_ascii=False), model, created)
                           for log_id, kind, rules, model in rows])

    def put_pairs(self, rows: Iterable[tuple]) -> None:
        """Store preference pairs ``(id, log id, origin, prompt JSON, chosen, rejected, score, candidates JSON,
        model, created at)``, replacing pairs of the same id."""
        with self.transaction() as c:
            c.executemany("INSERT OR REPLACE INTO pairs (id, log_id, origin, prompt, chosen, rejected, score, "
                          "candidates, model, created_at) VALUES (?,?,?,?,?,?,?,?,?,?)", list(rows))

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
            "AND json_array_length(r.rules) = 0 AND NOT EXISTS (SELECT 1 FROM pairs p WHERE p.log_id = l.id)",
            (log_id,)).fetchone()
        return Log.model_validate_json(row[0]) if row else None

    def logs_with_feedback_rules(self) -> Iterator[tuple[Log, list[Any]]]:
        """Every log with feedback, with its feedback rules (empty when not distilled), by log id."""
        for record, rules in self.conn.execute(
                "SELECT l.record, r.rules FROM logs l LEFT JOIN rules r ON r.log_id = l.id "
                "AND r.kind = 'feedback' WHERE l.has_feedback ORDER BY l.id"):
            yield Log.model_validate_json(record), json.loads(rules) if rules else []

    def cluster_logs(self, cluster: int | None = None) -> list[tuple[int, Log, list[Any]]]:
        """``(cluster, log, feedback rules)`` of every clustered log (of one cluster), by cluster and log id."""
        where, args = ("WHERE m.cluster = ?", (cluster,)) if cluster is not None else ("", ())
        rows = self.conn.execute(
            "SELECT m.cluster, l.record, f.rules FROM cluster_members m JOIN logs l ON l.id = m.log_id "
            f"LEFT JOIN rules f ON f.log_id = m.log_id AND f.kind = 'feedback' {where} "
            "ORDER BY m.cluster, m.log_id", args).fetchall()
        return [(cid, Log.model_validate_json(rec), json.loads(rules or "[]")) for cid, rec, rules in rows]

    def gaps(self) -> dict[int, dict[str, Any]]:
        """Every assessed cluster's gap, its mean and max, scorer, plan, threshold and logs scored."""
        keys = ("gap", "gap_mean", "gap_max", "scorer", "plan", "threshold", "n_logs")
        return {r[0]: dict(zip(keys, r[1:])) for r in self.conn.execute(
            f"SELECT cluster, {', '.join(keys)} FROM gaps")}

    def set_gap(self, cluster: int, scorer: str, gap: float, n_logs: int, plan: str, threshold: float) -> None:
        """Store one cluster's gap (mean and max equal to it), as a benchmark that skips assessment does."""
        with self.transaction() as c:
            c.execute("INSERT OR REPLACE INTO gaps (cluster, scorer, gap, gap_mean, gap_max, n_logs, plan, threshold) "
                      "VALUES (?,?,?,?,?,?,?,?)", (cluster, scorer, gap, gap, gap, n_logs, plan, threshold))

    # -- served interactions and their feedback -----------------------------------------------

    def is_served(self, response_id: str) -> bool:
        """True when an answer with ``response_id`` is stored."""
        return self.conn.execute("SELECT 1 FROM served WHERE response_id = ?", (response_id,)).fetchone() is not None

    def record_served(self, served: list[tuple], feedback: list[tuple]) -> None:
        """Store served answers ``(response id, messages JSON, answer, route JSON, model, created at, user)``
        and feedback ``(response id, text, action, edited, created at)`` in one transaction."""
        with self.transaction() as c:
            c.executemany("INSERT OR IGNORE INTO served (response_id, messages, answer, route, model, created_at, "
                          "user) VALUES (?,?,?,?,?,?,?)", served)
            c.executemany("INSERT INTO feedback (response_id, text, action, edited, created_at) "
                          "VALUES (?,?,?,?,?)", feedback)

    def uncollected_served(self) -> list[tuple[str, str, str, str, str, str | None]]:
        """``(response id, messages, answer, route, created at, user)`` of the served answers with feedback
        and no log yet, oldest first."""
        return self.conn.execute(
            "SELECT response_id, messages, answer, route, created_at, user FROM served s WHERE log_id IS NULL AND "
            "EXISTS (SELECT 1 FROM feedback f WHERE f.response_id = s.response_id) ORDER BY created_at, response_id"
        ).fetchall()

    def feedback_of(self, response_id: str) -> list[tuple[str | None, str | None, str | None]]:
        """``(text, action, edited)`` of every feedback on one served answer, in arrival order."""
        return self.conn.execute("SELECT text, action, edited FROM feedback WHERE response_id = ? ORDER BY id",
                                 (response_id,)).fetchall()

    def responses_with_feedback(self) -> set[str]:
        """The response ids that received at least one feedback."""
        return {r[0] for r in self.conn.execute("SELECT DISTINCT response_id FROM feedback")}

    def add_served_logs(self, logs: list[tuple[str, Log]]) -> None:
        """Store the logs made from served answers ``(response id, log)`` and link each answer to its log,
        in one transaction."""
        with self.transaction() as c:
            c.executemany(_INSERT_LOG, [_log_row(lg) for _, lg in logs])
            c.executemany("UPDATE served SET log_id = ? WHERE response_id = ?", [(lg.id, rid) for rid, lg in logs])

    def planned_adapters(self) -> list[tuple[str, int, str]]:
        """``(module id, epoch, adapter folder)`` of every adapter a plan of the current clustering uses."""
        rows = self.conn.execute("SELECT DISTINCT p.module_id, p.epoch, m.path FROM plans p JOIN modules m "
                                 "ON m.id = p.module_id WHERE p.path IN ('primary', 'reflective') "
                                 "AND p.clustering IS ? ORDER BY 1, 2", (self._clustering_id(),)).fetchall()
        return [(mid, epoch, str(self.resolve(path))) for mid, epoch, path in rows]
