"""Experience modules, their validation, and the plans."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..records import Plan, ValidationItem
from .base import Base, now
from .clusters import still_current
from .snapshots import publish


class ModuleTables(Base):
    """Experience modules, their validation, and the plans."""

    def relative(self, path: Path) -> str:
        """``path`` as stored: relative to the workspace when inside it, so a moved workspace still works."""
        try:
            return path.resolve().relative_to(self.root.resolve()).as_posix()
        except ValueError:
            return str(path.resolve())

    def resolve(self, stored: str) -> Path:
        """A stored path (see :meth:`relative`) as a path on this machine."""
        return Path(stored) if Path(stored).is_absolute() else self.root / stored

    def add_module(self, row: dict[str, Any], clustering: int | None) -> None:
        """Record a module trained for ``clustering`` (the version its stage started on: a
        ClusteringChangedError when no longer current); ``row``: the ``modules`` columns but ``clustering``
        and ``created_at``, ``path`` as :meth:`relative` gives it."""
        row = {**row, "clustering": clustering, "created_at": now()}
        with self.transaction() as c:
            still_current(c, clustering, f"module {row['id']}")
            c.execute(f"INSERT INTO modules ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
                      tuple(row.values()))

    def module(self, module_id: str) -> dict[str, Any] | None:
        """One module's columns (JSON columns decoded, ``path`` resolved); None: no such module."""
        cur = self.conn.execute("SELECT * FROM modules WHERE id = ?", (module_id,))
        row = cur.fetchone()
        return self._module_dict(cur.description, row) if row else None

    def modules(self, cluster: int | None = None, kind: str | None = None) -> list[dict[str, Any]]:
        """The modules of the current clustering (of one cluster and kind), newest first."""
        sql = f"SELECT * FROM modules WHERE clustering {self.dialect.same} (SELECT max(id) FROM clusterings)"
        args: list[Any] = []
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

    def adopt_module(self, module_id: str, clustering: int | None) -> None:
        """Make an identical module trained for an earlier clustering (same data, model and settings)
        part of ``clustering`` (the version its stage started on, still current), as the newest of its
        cluster and kind."""
        with self.transaction() as c:
            still_current(c, clustering, f"module {module_id}")
            c.execute("UPDATE modules SET clustering = ?, created_at = ? WHERE id = ?", (clustering, now(), module_id))

    def _module_dict(self, description: Any, row: tuple) -> dict[str, Any]:
        out = dict(zip((d[0] for d in description), row))
        for key in ("config", "metrics", "train_logs", "val_logs"):
            out[key] = json.loads(out[key])
        out["path"] = str(self.resolve(out["path"])) if out["path"] else ""
        return out

    def replace_plans(self, plans: Iterable[Plan], clustering: int | None) -> int | None:
        """Store every cluster's plans for ``clustering`` (the version selection started on, still current), in
        place of the previous ones, and publish them as a snapshot in the same transaction; the snapshot's id
        (the plan id)."""
        rows = [(p.cluster, p.system, p.path, p.module_id, p.epoch, p.win_rate, p.reason, clustering) for p in plans]
        with self.transaction() as c:
            still_current(c, clustering, "the plans")
            c.execute("DELETE FROM plans")
            c.executemany("INSERT INTO plans (cluster, system, path, module_id, epoch, win_rate, reason, clustering) "
                          "VALUES (?,?,?,?,?,?,?,?)", rows)
            return publish(c)

    def plan(self, cluster: int, system: str) -> Plan | None:
        """One cluster's plan for ``system`` in the current clustering (None: not selected yet)."""
        row = self.conn.execute("SELECT path, module_id, epoch, win_rate, reason FROM plans WHERE cluster = ? "
                                f"AND system = ? AND clustering {self.dialect.same} (SELECT max(id) FROM clusterings)",
                                (cluster, system)).fetchone()
        if row is None:
            return None
        return Plan(cluster=cluster, system=system, path=row[0], module_id=row[1], epoch=row[2], win_rate=row[3],
                    reason=row[4] or "")

    def replace_validation(self, module_id: str, items: Iterable[ValidationItem]) -> None:
        """Store a module's validation items in place of its earlier ones."""
        rows = [(v.module_id, v.epoch, v.log_id, 0, v.score_initial, v.score_module, v.bleu, v.length_ratio,
                 v.outcome, int(v.same_as_base)) for v in items]
        with self.transaction() as c:
            c.execute("DELETE FROM validation WHERE module_id = ?", (module_id,))
            c.executemany("INSERT INTO validation (module_id, epoch, log_id, sample, score_initial, score_module, "
                          "bleu, length_ratio, outcome, same_as_base) VALUES (?,?,?,?,?,?,?,?,?,?)", rows)
