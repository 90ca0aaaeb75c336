"""The two model boundaries every stage talks through: :class:`ChatModel` and :class:`Embedder`.

Contract:
- ``ChatModel.generate(requests)`` is async, takes a batch and returns one :class:`ChatResult` per
  request *in the same order*. A failed request yields a result whose ``error`` is set; the batch
  itself never raises for one bad request. Implementations only write :meth:`ChatModel.complete`
  (one request); concurrency, JSON-schema validation with re-asking, progress and token accounting
  live here, once.
- ``ChatRequest.key()`` is a hash of everything that determines the answer (model, adapter,
  messages, schema, sampling parameters): it is the response-cache key.
- ``Embedder.embed(texts)`` returns an ``(n, dim)`` float32 array of L2-normalised rows.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import jsonschema
import numpy as np
from tqdm import tqdm

from ..errors import BackendError, SchemaError, UnolearnError, loads_json
from ..records import canonical_json, content_hash


@dataclass(frozen=True)
class ChatRequest:
    """One chat completion request."""

    messages: tuple[dict[str, str], ...]
    schema: dict[str, Any] | None = None
    adapter: str | None = None
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    max_tokens: int = 512
    logprobs: int | None = None  # ask for this many top log-probabilities of the first answer token
    #: Score instead of generate: the log-probability of this text as the assistant's whole reply
    #: (its tokens and the end of the turn), in :attr:`ChatResult.logprob`. Sampling fields are unused.
    continuation: str | None = None
    #: The logs whose text, and the modules whose adapter or guide, the request carries (not part of the cache
    #: key): a cached answer to it is deleted when one of them is forgotten or retired (``unolearn forget``).
    owners: tuple[str, ...] = ()

    @classmethod
    def of(cls, messages: Sequence[dict[str, str]] | str, **kw: Any) -> ChatRequest:
        """Build a request from messages, or from one user prompt."""
        if isinstance(messages, str):
            messages = [{"role": "user", "content": messages}]
        return cls(messages=tuple({"role": m["role"], "content": m["content"]} for m in messages), **kw)

    def key(self, model_id: str) -> str:
        """The response-cache key of this request sent to ``model_id``."""
        fields = {k: v for k, v in self.__dict__.items()
                  if k != "owners" and not (k == "continuation" and v is None)}  # older keys
        return content_hash("chat", {"model": model_id, **fields, "messages": list(self.messages)})


def first_token_logprobs(choice: dict[str, Any]) -> dict[str, float] | None:
    """``{token: logprob}`` of the first answer token's top alternatives in an OpenAI-format chat choice
    (``choice["logprobs"]["content"][0]["top_logprobs"]``), or None when the answer has none."""
    try:
        first = (choice.get("logprobs") or {})["content"][0]
        return {t["token"]: float(t["logprob"]) for t in first.get("top_logprobs") or []} or None
    except (TypeError, IndexError, KeyError, AttributeError, ValueError):
        return None


@dataclass
class ChatResult:
    """The answer to one :class:`ChatRequest`: text, parsed object (with a schema), usage, or an error."""

    text: str = ""
    parsed: Any = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0
    error: UnolearnError | None = None
    cached: bool = False
    top_logprobs: dict[str, float] | None = None  # first answer token → log-probability (with logprobs)
    logprob: float | None = None  # with a continuation: the sum of its tokens' log-probabilities
    finish_reason: str | None = None  # "stop" (the answer ended), "length" (max_tokens cut it); None: not told

    @property
    def ok(self) -> bool:
        """True when the request succeeded."""
        return self.error is None

    def to_json(self) -> str:
        """Serialise a successful result (for the response cache)."""
        return canonical_json({"text": self.text, "parsed": self.parsed, "prompt_tokens": self.prompt_tokens,
                               "completion_tokens": self.completion_tokens, "latency_s": self.latency_s,
                               "top_logprobs": self.top_logprobs, "logprob": self.logprob,
                               "finish_reason": self.finish_reason})

    @classmethod
    def from_json(cls, text: str) -> ChatResult:
        """Inverse of :meth:`to_json`; the result is marked ``cached``."""
        return cls(**json.loads(text), cached=True)


@dataclass
class Usage:
    """Running totals of one chat model's calls and tokens."""

    calls: int = 0
    cached: int = 0
    errors: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def add(self, r: ChatResult) -> None:
        """Count one result."""
        if r.cached:
            self.cached += 1
            return
        self.calls += 1
        self.errors += r.error is not None
        self.prompt_tokens += r.prompt_tokens
        self.completion_tokens += r.completion_tokens


def parse_json_output(text: str, schema: dict[str, Any]) -> Any:
    """Parse a model's JSON answer (tolerating a fenced code block) and validate it against ``schema``."""
    body = text.strip()
    if body.startswith("```"):
        body = body.split("\n", 1)[1] if "\n" in body else ""
        body = body.rsplit("```", 1)[0]
    try:
        obj = loads_json(body)
    except json.JSONDecodeError as e:
        raise SchemaError(f"answer is not valid JSON ({e.msg})") from e
    try:
        jsonschema.validate(obj, schema)
    except jsonschema.ValidationError as e:
        raise SchemaError(f"answer does not match the schema: {e.message}") from e
    return obj


class ChatModel(ABC):
    """A chat model behind some backend. Subclasses implement :meth:`complete`."""

    #: Identifies the model in cache keys and provenance (e.g. ``openai:http://host/v1:qwen3-8b``).
    model_id: str = "chat"
    #: How many requests run at once.
    concurrency: int = 1
    #: How many times a schema-constrained request is re-asked after invalid output.
    schema_retries: int = 2
    #: Whether :attr:`ChatRequest.continuation` (scoring a given reply) is supported.
    scores_continuations: bool = False

    def __init__(self) -> None:
        self.usage = Usage()

    @abstractmethod
    async def complete(self, request: ChatRequest) -> ChatResult:
        """Answer one request (raise :class:`BackendError` on failure). ``parsed`` may stay unset."""

    async def generate(self, requests: Sequence[ChatRequest], *, desc: str | None = None,
                       progress: bool | None = None) -> list[ChatResult]:
        """Answer a batch concurrently; results come back in request order.

        ``progress=None`` shows a progress bar only on a terminal and for batches of more than one.
        """
        sem = asyncio.Semaphore(max(1, self.concurrency))
        disable = (len(requests) <= 1 or None) if progress is None else not progress
        with tqdm(total=len(requests), desc=desc or "generate", unit="req", disable=disable) as bar:

            async def one(r: ChatRequest) -> ChatResult:
                async with sem:
                    res = await self._answer(r)
                self.usage.add(res)
                bar.update(1)
                return res

            return list(await asyncio.gather(*(one(r) for r in requests)))

    def generate_sync(self, requests: Sequence[ChatRequest], **kw: Any) -> list[ChatResult]:
        """:meth:`generate` for synchronous callers."""
        return asyncio.run(self.generate(requests, **kw))

    async def _answer(self, request: ChatRequest) -> ChatResult:
        """One request with schema validation and re-asking; failures become ``result.error``."""
        start = time.perf_counter()
        last: UnolearnError | None = None
        asked = request
        for attempt in range(1 + (self.schema_retries if request.schema else 0)):
            try:
                res = await self.complete(asked)
            except BackendError as e:
                return ChatResult(error=e, latency_s=time.perf_counter() - start)
            res.latency_s = time.perf_counter() - start  # re-asks included
            if request.schema is None or res.parsed is not None:
                return res
            try:
                res.parsed = parse_json_output(res.text, request.schema)
                return res
            except SchemaError as e:
                last = e
                if request.seed is not None:  # a re-ask must be able to differ
                    asked = dataclasses.replace(request, seed=request.seed + 1000 + attempt)
        return ChatResult(error=last, latency_s=time.perf_counter() - start)

    async def add_adapter(self, name: str, path: str) -> None:
        """Make the PEFT LoRA adapter folder ``path`` usable as ``ChatRequest(adapter=name)``."""
        raise BackendError(f"the {type(self).__name__} backend cannot load LoRA adapters")

    async def aclose(self) -> None:  # noqa: B027 — an optional hook: nothing to release by default
        """Release connections or model memory (optional)."""


class Embedder(ABC):
    """A text embedding model. Subclasses implement :meth:`_embed`."""

    model_id: str = "embedder"

    @abstractmethod
    def _embed(self, texts: Sequence[str]) -> np.ndarray:
        """Embed ``texts`` (no cache, no normalisation required)."""

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Return an ``(n, dim)`` float32 array of L2-normalised embeddings of ``texts``."""
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        vecs = np.asarray(self._embed(list(texts)), dtype=np.float32)
        norms = np.linalg.norm(vecs, axis=1, keepdims=True)
        return vecs / np.where(norms == 0, 1.0, norms)

