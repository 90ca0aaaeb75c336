"""Clustering versions, clusters and their members, cluster gaps."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any

from ..errors import ClusteringChangedError, NotFoundError
from ..records import Clustering
from .base import Base, now, upsert
from .dialect import Connection

_SET_GAP = upsert("gaps", ("cluster", "scorer", "gap", "gap_mean", "gap_max", "n_logs", "plan", "threshold"),
                  ("cluster",))


def still_current(c: Connection, clustering: int | None, what: str) -> None:
    """Inside a write transaction: nothing when ``clustering`` is still the current version, else a
    ClusteringChangedError (the logs were re-clustered since the stage storing ``what`` started)."""
    now_id = c.execute("SELECT max(id) FROM clusterings").fetchone()[0]
    if now_id != clustering:
        raise ClusteringChangedError(f"the logs were re-clustered (clustering {now_id}) while {what} was made "
                                     f"for clustering {clustering}: not stored; run the stage again")


class ClusterTables(Base):
    """Clustering versions, clusters and their members, cluster gaps."""

    def replace_clustering(self, clustering: Clustering, clusters: Iterable[tuple[int, int, bytes]],
                           members: Iterable[tuple[str, int]],
                           spread: Iterable[tuple[int, float | None, list[int], bool]] = ()) -> int:
        """Store a new clustering version in place of the stored clusters; return its id.

        ``clusters`` are ``(id, size, centroid)``, ``members`` ``(log id, cluster id)``, ``spread``
        ``(cluster id, radius, versions that changed it before, changed now)``. The gaps and the plans
        of the previous clustering go with it, in the same transaction (the published plan stays
        until ``select`` publishes the next one).
        """
        created = now()
        with self.transaction() as c:
            for table in ("gaps", "plans", "cluster_members", "clusters", "cluster_spread"):
                c.execute(f"DELETE FROM {table}")
            new_id = c.insert("INSERT INTO clusterings (embedder, threshold, unseen_distance, fingerprint, created_at, "
                              "mode, added, unfit, settings) VALUES (?,?,?,?,?,?,?,?,?)",
                              (clustering.embedder, clustering.threshold, clustering.unseen_distance,
                               clustering.fingerprint, created, clustering.mode, clustering.added, clustering.unfit,
                               clustering.settings))
            c.executemany("INSERT INTO clusters (id, size, centroid, embedder, created_at) VALUES (?,?,?,?,?)",
                          ((cid, size, centroid, clustering.embedder, created) for cid, size, centroid in clusters))
            c.executemany("INSERT INTO cluster_members (log_id, cluster) VALUES (?,?)", members)
            c.executemany("INSERT INTO cluster_spread (cluster, radius, changes) VALUES (?,?,?)",
                          ((cid, radius, json.dumps(before + [new_id] if changed else before))
                           for cid, radius, before, changed in spread))
        return new_id

    def member_map(self) -> dict[str, int]:
        """Every clustered log's cluster: ``log id → cluster id``."""
        return dict(self.conn.execute("SELECT log_id, cluster FROM cluster_members").fetchall())

    def cluster_spread(self) -> dict[int, tuple[float | None, list[int]]]:
        """Per cluster: its radius (None: unknown) and the clustering versions that made or changed it."""
        return {cid: (radius, json.loads(changes)) for cid, radius, changes in
                self.conn.execute("SELECT cluster, radius, changes FROM cluster_spread")}

    def clustering(self) -> Clustering | None:
        """The current clustering version (None before the first ``cluster``)."""
        keys = ("id", "embedder", "threshold", "unseen_distance", "fingerprint", "created_at", "mode", "added",
                "unfit", "settings")
        row = self.conn.execute(f"SELECT {', '.join(keys)} FROM clusterings ORDER BY id DESC LIMIT 1").fetchone()
        if row is None:
            return None
        return Clustering(**dict(zip(keys, row)))

    def clustering_id(self) -> int | None:
        """The id of the current clustering version (None before the first ``cluster``): what a stage
        that stores modules or plans reads when it starts, and gives back when it stores them."""
        return self.conn.execute("SELECT max(id) FROM clusterings").fetchone()[0]


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

    def gaps(self) -> dict[int, dict[str, Any]]:
        """Every assessed cluster's gap, its mean and max, scorer, plan, threshold and logs scored."""
        keys = ("gap", "gap_mean", "gap_max", "scorer", "plan", "threshold", "n_logs")
        return {r[0]: dict(zip(keys, r[1:])) for r in self.conn.execute(
            f"SELECT cluster, {', '.join(keys)} FROM gaps")}

    def set_gap(self, cluster: int, scorer: str, gap: float, n_logs: int, plan: str, threshold: float) -> None:
        """Store one cluster's gap (mean and max equal to it), as a benchmark that skips assessment does."""
        with self.transaction() as c:
            c.execute(_SET_GAP, (cluster, scorer, gap, gap, gap, n_logs, plan, threshold))
