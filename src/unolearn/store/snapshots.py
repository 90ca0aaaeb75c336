"""Published plan snapshots: what the proxy serves, versioned and whole.

A snapshot holds everything a request's route needs — the router (the clusters' centroids), every
cluster's plans, the rulebook texts of the guides and the adapters planned — written in the same
transaction as the plans it copies. Its id is the plan id. Readers load a published snapshot and
never the live tables, which the next ``cluster`` and ``select`` rewrite one after the other.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from .base import Base, now
from .dialect import Connection

#: The layout of a snapshot's ``body``; a reader refuses another. 2: a guide is its entries with their anchors
#: (:meth:`unolearn.guide.Guide.as_json`); 1: its text.
FORMAT = 2
#: Layouts this version reads.
FORMATS = (1, 2)


def snapshot_body(c: Connection, empty_ok: bool = False) -> dict[str, Any] | None:
    """The snapshot of the current clustering's clusters and plans, read on ``c`` (None: nothing to publish,
    unless ``empty_ok``: then a snapshot without clusters, which routes every request to the base model)."""
    clusters = c.execute("SELECT id, size, centroid, embedder FROM clusters ORDER BY id").fetchall()
    if not clusters and not empty_ok:
        return None
    version = c.execute("SELECT id, unseen_distance FROM clusterings ORDER BY id DESC LIMIT 1").fetchone()
    clustering, unseen = version or (None, None)
    same = c.dialect.same
    plans = c.execute(f"SELECT cluster, system, path, module_id, epoch FROM plans WHERE clustering {same} ? "
                      "ORDER BY cluster, system", (clustering,)).fetchall()
    modules = {mid: (kind, path, metrics) for mid, kind, path, metrics in c.execute(
        "SELECT id, kind, path, metrics FROM modules WHERE id IN "
        f"(SELECT module_id FROM plans WHERE clustering {same} ?)", (clustering,))}
    guides = {mid: stored_guide(json.loads(m[2])) for mid, m in modules.items() if m[0] == "guide"}
    adapters = sorted({(p[3], p[4], modules[p[3]][1]) for p in plans
                       if p[2] in ("primary", "reflective") and p[3] in modules})
    embedder = clusters[0][3] if clusters else None
    return {"format": FORMAT, "clustering": clustering, "embedder": embedder, "unseen_distance": unseen,
            "clusters": [[cid, size, base64.b64encode(bytes(vec)).decode()] for cid, size, vec, _ in clusters],
            "plans": [list(p) for p in plans], "guides": guides, "adapters": [list(a) for a in adapters]}


def stored_guide(metrics: dict[str, Any]) -> dict[str, Any] | str:
    """A guide module's stored guide (its text for one recorded before anchors existed)."""
    return metrics.get("guide") or metrics["text"]


def publish(c: Connection, empty_ok: bool = False) -> int | None:
    """Inside the caller's write transaction: publish the current plans as a new snapshot; its id (None:
    no clusters yet, unless ``empty_ok``)."""
    body = snapshot_body(c, empty_ok)
    if body is None:
        return None
    return c.insert("INSERT INTO plan_snapshots (clustering, body, created_at) VALUES (?,?,?)",
                    (body["clustering"], json.dumps(body), now()))


class SnapshotTables(Base):
    """Published plan snapshots."""

    def publish_snapshot(self) -> int | None:
        """Publish the current plans as a new snapshot (one transaction); its id, None without clusters.

        ``select`` publishes by itself (:meth:`replace_plans`); this is for plans written otherwise."""
        with self.transaction() as c:
            return publish(c)

    def latest_snapshot_id(self) -> int | None:
        """The id of the newest published snapshot (None: none yet). One indexed read: cheap to poll."""
        return self.conn.execute("SELECT max(id) FROM plan_snapshots").fetchone()[0]

    def snapshot(self, snapshot_id: int | None = None) -> dict[str, Any] | None:
        """A published snapshot (the newest when ``snapshot_id`` is None): its body with ``id`` and
        ``created_at``; None when there is none."""
        sql = "SELECT id, body, created_at FROM plan_snapshots "
        row = self.conn.execute(sql + "ORDER BY id DESC LIMIT 1" if snapshot_id is None else sql + "WHERE id = ?",
                                () if snapshot_id is None else (snapshot_id,)).fetchone()
        if row is None:
            return None
        return {**json.loads(row[1]), "id": row[0], "created_at": row[2]}
