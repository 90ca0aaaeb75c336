"""Interactions served by the proxy and the feedback attached to them."""

from __future__ import annotations

from ..records import Log
from .base import Base
from .logs import _INSERT_LOG, _log_row


class ServedTables(Base):
    """Interactions served by the proxy and the feedback attached to them."""

    def served_owner(self, response_id: str) -> tuple[str | None, int] | None:
        """``(user, feedbacks stored)`` of a served answer; None when no answer has ``response_id``."""
        row = self.conn.execute(f"SELECT {self.dialect.quote('user')}, (SELECT count(*) FROM feedback f "
                                "WHERE f.response_id = s.response_id) FROM served s WHERE response_id = ?",
                                (response_id,)).fetchone()
        return None if row is None else (row[0], row[1])

    def record_served(self, served: list[tuple], feedback: list[tuple]) -> None:
        """Store served answers ``(response id, messages JSON, answer, route JSON, model, created at, user)``
        and feedback ``(response id, text, action, edited, created at, uid)`` in one transaction.

        Both are idempotent (an answer is stored once per response id, a feedback once per uid), so a batch
        retried after a lost connection stores nothing twice; they read nothing, so they do not wait for
        the store's write lock.
        """
        with self.transaction(lock=False) as c:
            c.executemany("INSERT INTO served (response_id, messages, answer, route, model, created_at, "
                          f"{self.dialect.quote('user')}) VALUES (?,?,?,?,?,?,?) ON CONFLICT DO NOTHING", served)
            c.executemany("INSERT INTO feedback (response_id, text, action, edited, created_at, uid) "
                          "VALUES (?,?,?,?,?,?) ON CONFLICT DO NOTHING", feedback)

    def uncollected_served(self) -> list[tuple[str, str, str, str, str, str | None]]:
        """``(response id, messages, answer, route, created at, user)`` of the served answers with feedback not
        collected into a log yet (an answer already collected, too, when more feedback came later), oldest
        first."""
        return self.conn.execute(
            f"SELECT response_id, messages, answer, route, created_at, {self.dialect.quote('user')} FROM served s "
            "WHERE EXISTS (SELECT 1 FROM feedback f WHERE f.response_id = s.response_id AND f.log_id IS NULL) "
            "ORDER BY created_at, response_id").fetchall()

    def feedback_of(self, response_id: str) -> list[tuple[str | None, str | None, str | None]]:
        """``(text, action, edited)`` of every feedback on one served answer, in arrival order."""
        return self.conn.execute("SELECT text, action, edited FROM feedback WHERE response_id = ? ORDER BY id",
                                 (response_id,)).fetchall()

    def pending_feedback(self, response_id: str) -> list[tuple[int, str | None, str | None, str | None]]:
        """``(id, text, action, edited)`` of the feedback on one served answer not collected yet, in arrival
        order."""
        return self.conn.execute("SELECT id, text, action, edited FROM feedback WHERE response_id = ? "
                                 "AND log_id IS NULL ORDER BY id", (response_id,)).fetchall()

    def responses_with_feedback(self) -> set[str]:
        """The response ids that received at least one feedback."""
        return {r[0] for r in self.conn.execute("SELECT DISTINCT response_id FROM feedback")}

    def add_served_logs(self, logs: list[tuple[str, Log, list[int]]]) -> None:
        """Store the logs made from served answers ``(response id, log, ids of the feedback it holds)``, link
        each answer to its newest log and each feedback to the log that holds it, in one transaction."""
        with self.transaction() as c:
            c.executemany(_INSERT_LOG, [_log_row(lg) for _, lg, _ in logs])
            c.executemany("UPDATE served SET log_id = ? WHERE response_id = ?", [(lg.id, rid) for rid, lg, _ in logs])
            c.executemany("UPDATE feedback SET log_id = ? WHERE id = ?",
                          [(lg.id, fid) for _, lg, ids in logs for fid in ids])
