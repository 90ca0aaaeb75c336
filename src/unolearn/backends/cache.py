"""Caching wrappers: a re-run of a stage makes no repeated model or embedding calls.

A chat response is stored under :meth:`ChatRequest.key` (model, adapter, messages, schema,
sampling parameters) as soon as it arrives, so an interrupted stage resumes without repeating
finished calls; with it, the logs the request was about (:attr:`ChatRequest.owners`), so that forgetting
a log deletes the answers it shaped. Failed requests are not cached. Vectors are stored per (model, sha256 of text).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

from ..store import Workspace
from .base import ChatModel, ChatRequest, ChatResult, Embedder


class CachedChatModel(ChatModel):
    """A :class:`ChatModel` that answers from the workspace cache when it can."""

    def __init__(self, inner: ChatModel, ws: Workspace) -> None:
        super().__init__()
        self.inner, self.ws = inner, ws
        self.model_id = inner.model_id
        self.concurrency = inner.concurrency
        self.schema_retries = inner.schema_retries
        self.scores_continuations = inner.scores_continuations

    async def complete(self, request: ChatRequest) -> ChatResult:
        """Delegate one uncached request to the wrapped model."""
        return await self.inner.complete(request)

    async def _answer(self, request: ChatRequest) -> ChatResult:
        key = request.key(self.model_id)
        hit = self.ws.cache_get(key)
        if hit is not None:
            return ChatResult.from_json(hit)
        res = await self.inner._answer(request)
        if res.ok:
            self.ws.cache_put(key, self.model_id, res.to_json(), request.owners)
        return res

    async def add_adapter(self, name: str, path: str) -> None:
        """Load the adapter into the wrapped model."""
        await self.inner.add_adapter(name, path)

    async def aclose(self) -> None:
        """Close the wrapped model."""
        await self.inner.aclose()


def text_hash(text: str) -> str:
    """The cache key of a text."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class CachedEmbedder(Embedder):
    """An :class:`Embedder` that stores every vector in the workspace and embeds each text once."""

    def __init__(self, inner: Embedder, ws: Workspace) -> None:
        self.inner, self.ws = inner, ws
        self.model_id = inner.model_id
        self.calls = 0

    def _embed(self, texts: Sequence[str]) -> np.ndarray:
        hashes = [text_hash(t) for t in texts]
        found = self.ws.embeddings_get(self.model_id, sorted(set(hashes)))
        missing = {h: t for h, t in zip(hashes, texts) if h not in found}
        if missing:
            self.calls += 1
            vecs = self.inner.embed(list(missing.values()))
            new = [(h, v.astype(np.float32).tobytes()) for h, v in zip(missing, vecs)]
            self.ws.embeddings_put(self.model_id, new)
            found.update(new)
        return np.stack([np.frombuffer(found[h], dtype=np.float32) for h in hashes])
