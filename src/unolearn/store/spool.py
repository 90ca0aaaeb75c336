"""A scratch file that gathers a platform export's pieces by conversation, so an export of any size is
assembled without being held in memory: the turns of one conversation spread over many traces, and the
feedback that names an answer by id, perhaps far later in the file.

The spool is a SQLite file in a private temporary folder, removed when the spool closes (also on error):
it holds text that has not been redacted yet, so it never outlives the ingest that made it.
"""

from __future__ import annotations

import json
import sqlite3
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE turns (seq INTEGER PRIMARY KEY, conversation TEXT NOT NULL, at TEXT NOT NULL, body TEXT NOT NULL);
CREATE INDEX turns_by_conversation ON turns (conversation, at, seq);
CREATE TABLE answer_ids (answer TEXT PRIMARY KEY, conversation TEXT NOT NULL);
CREATE TABLE verdicts (seq INTEGER PRIMARY KEY, target TEXT NOT NULL, body TEXT NOT NULL);
CREATE INDEX verdicts_by_target ON verdicts (target);
"""


class Spool:
    """Turns and verdicts (feedback naming an answer by id) as JSON bodies, grouped on the way out."""

    def __init__(self) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="unolearn-spool-")
        self._conn = sqlite3.connect(Path(self._dir.name) / "spool.db", isolation_level=None)
        self._conn.executescript("PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF;" + SCHEMA)
        self._conn.execute("BEGIN")

    def add_turn(self, conversation: str, at: str, ids: list[str], body: dict[str, Any]) -> None:
        """Keep one turn of ``conversation``; ``ids`` are the names feedback may give its answer by."""
        self._conn.execute("INSERT INTO turns (conversation, at, body) VALUES (?, ?, ?)",
                           (conversation, at, json.dumps(body, ensure_ascii=False)))
        self._conn.executemany("INSERT OR IGNORE INTO answer_ids (answer, conversation) VALUES (?, ?)",
                               [(i, conversation) for i in ids])

    def add_verdict(self, target: str, body: dict[str, Any]) -> None:
        """Keep one piece of feedback about the answer named ``target``."""
        self._conn.execute("INSERT INTO verdicts (target, body) VALUES (?, ?)",
                           (target, json.dumps(body, ensure_ascii=False)))

    def conversations(self) -> Iterator[tuple[str, list[dict[str, Any]], list[dict[str, Any]]]]:
        """Every conversation with its turns (in time order, then file order) and the verdicts naming one of
        its answers (in file order)."""
        self._conn.execute("COMMIT")
        rows = self._conn.execute("SELECT conversation, body FROM turns ORDER BY conversation, at, seq")
        current: str | None = None
        turns: list[dict[str, Any]] = []
        for conversation, body in rows:
            if conversation != current and current is not None:
                yield current, turns, self._verdicts(current)
                turns = []
            current = conversation
            turns.append(json.loads(body))
        if current is not None:
            yield current, turns, self._verdicts(current)

    def _verdicts(self, conversation: str) -> list[dict[str, Any]]:
        rows = self._conn.execute(
            "SELECT v.body FROM verdicts v JOIN answer_ids a ON a.answer = v.target WHERE a.conversation = ? "
            "ORDER BY v.seq", (conversation,)).fetchall()
        return [json.loads(b) for (b,) in rows]

    def orphans(self) -> Iterator[dict[str, Any]]:
        """The verdicts naming no answer of this export, in file order."""
        rows = self._conn.execute("SELECT v.body FROM verdicts v LEFT JOIN answer_ids a ON a.answer = v.target "
                                  "WHERE a.answer IS NULL ORDER BY v.seq")
        for (body,) in rows:
            yield json.loads(body)

    def close(self) -> None:
        """Remove the spool's file."""
        self._conn.close()
        self._dir.cleanup()

    def __enter__(self) -> Spool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
