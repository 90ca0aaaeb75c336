"""Stage runs: provenance of every stage executed."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ..records import canonical_json
from .base import Base, now


class RunTables(Base):
    """Stage runs: provenance of every stage executed."""

    def start_run(self, stage: str, config: dict[str, Any]) -> int:
        """Record the start of a stage run; return its id."""
        with self.transaction() as c:
            return c.insert("INSERT INTO runs (stage, started_at, status, config) VALUES (?,?,?,?)",
                            (stage, now(), "running", canonical_json(config)))

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
