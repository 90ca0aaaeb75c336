"""Test doubles for the model boundaries (never shipped in the package)."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Sequence
from typing import Any

import numpy as np

from unolearn.backends.base import ChatModel, ChatRequest, ChatResult, Embedder
from unolearn.errors import BackendError


class MockChatModel(ChatModel):
    """Answers with queued texts (or a default), recording every request in ``history``.

    ``enqueue("text")`` queues one answer; ``enqueue(error=BackendError(...))`` queues a failure;
    ``responder`` (request → text) answers whatever the queue does not; ``scorer`` (request → log-probability)
    scores the requests that carry a ``continuation`` (without it the model cannot score).
    """

    def __init__(self, default: str = "ok", *, responder=None, scorer=None, concurrency: int = 4,
                 delay_s: float = 0.0, model_id: str = "mock") -> None:
        super().__init__()
        self.default, self.responder, self.delay_s = default, responder, delay_s
        self.scorer, self.scores_continuations = scorer, scorer is not None
        self.concurrency, self.model_id = concurrency, model_id
        self.queue: list[Any] = []
        self.history: list[ChatRequest] = []
        self.adapters: dict[str, str] = {}

    async def add_adapter(self, name: str, path: str) -> None:
        self.adapters[name] = path

    def enqueue(self, *texts: str, error: BackendError | None = None) -> MockChatModel:
        self.queue.extend(texts)
        if error is not None:
            self.queue.append(error)
        return self

    async def complete(self, request: ChatRequest) -> ChatResult:
        self.history.append(request)
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if request.continuation is not None:
            if self.scorer is None:
                raise BackendError("mock: no scorer")
            return ChatResult(text=request.continuation, completion_tokens=len(request.continuation.split()),
                              logprob=float(self.scorer(request)))
        item = self.queue.pop(0) if self.queue else (
            self.responder(request) if self.responder else self.default)
        if isinstance(item, BackendError):
            raise item
        text = item if isinstance(item, str) else json.dumps(item)
        top = None
        if request.logprobs:  # the answer is the likeliest first token; "yes" and "no" compete
            other = "no" if text.strip().lower() == "yes" else "yes"
            top = {text: -0.1, other: -2.4}
        n = len(text.split())  # a "token" is a word; an answer of max_tokens words or more ran out of budget
        return ChatResult(text=text, prompt_tokens=sum(len(m["content"].split()) for m in request.messages),
                          completion_tokens=n, top_logprobs=top,
                          finish_reason="length" if n >= request.max_tokens else "stop")


class HashEmbedder(Embedder):
    """Deterministic bag-of-words vectors: texts sharing words are close. Counts its calls."""

    def __init__(self, dim: int = 64) -> None:
        self.dim, self.model_id, self.calls, self.texts_seen = dim, "hash", 0, 0

    def _embed(self, texts: Sequence[str]) -> np.ndarray:
        self.calls += 1
        self.texts_seen += len(texts)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, t in enumerate(texts):
            for w in t.lower().split() or [""]:
                out[i, int(hashlib.md5(w.encode()).hexdigest(), 16) % self.dim] += 1.0
        return out


def as_plans(rows):
    """Plans from ``(cluster, system, path, module id, epoch, win rate, reason)`` tuples."""
    from unolearn.records import Plan

    keys = ("cluster", "system", "path", "module_id", "epoch", "win_rate", "reason")
    return [Plan(**dict(zip(keys, r))) for r in rows]
