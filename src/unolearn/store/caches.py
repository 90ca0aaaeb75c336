"""The model response cache and the embedding cache."""

from __future__ import annotations

from collections.abc import Iterable

from .base import Base, now, upsert

_PUT_RESPONSE = upsert("llm_cache", ("key", "model", "response", "created_at"), ("key",))
_PUT_VECTOR = upsert("embeddings", ("model", "text_hash", "vector"), ("model", "text_hash"))


class CacheTables(Base):
    """The model response cache and the embedding cache."""

    def cache_get(self, key: str) -> str | None:
        """The cached response stored under ``key``, if any."""
        row = self.conn.execute("SELECT response FROM llm_cache WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def cache_put(self, key: str, model: str, response: str, owners: Iterable[str] = ()) -> None:
        """Store one model response and what it was asked about (logs, modules: see :class:`ChatRequest`;
        its own transaction: finished calls
        survive an interruption; upserts that read nothing, so it does not wait for the store's write lock)."""
        with self.transaction(lock=False) as c:
            c.execute(_PUT_RESPONSE, (key, model, response, now()))
            c.executemany("INSERT INTO cache_owners (key, owner) VALUES (?, ?) ON CONFLICT DO NOTHING",
                          [(key, o) for o in sorted(set(owners))])

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
        """Store vectors (text hash, float32 bytes) of ``model`` in one transaction, without the write lock
        (upserts in key order: concurrent writers of the same keys wait for each other, never deadlock)."""
        with self.transaction(lock=False) as c:
            c.executemany(_PUT_VECTOR, [(model, h, v) for h, v in sorted(items)])
