"""A scriptable OpenAI-compatible server on 127.0.0.1 for tests (a real HTTP server, in a thread).

Like simonw/llm's ``MockModel``: ``enqueue()`` scripts the next answers, ``fail()``/``hang()`` script
the next failures (taken before answers, by any endpoint), and ``history`` records every request
received. Without a scripted answer a chat completion echoes the last user message.

Serves ``/v1/chat/completions`` (JSON, or SSE with ``stream: true``), ``/v1/embeddings``
(deterministic hash-based vectors), ``/v1/models``, ``/v1/load_lora_adapter`` and
``/v1/unload_lora_adapter``; error bodies look like vLLM's, and a json_schema rejection like
llama-cpp-python's (FastAPI 422).

Use the ``fake_openai`` fixture (import it into the test module) or ``with FakeOpenAI().running():``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from unolearn.bench.server import chat_completion, serve_asgi


@dataclass
class Received:
    """One request the fake server received."""

    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class _Failure:
    status: int
    message: str
    retry_after: float | None = None
    hang_s: float = 0.0
    param: str | None = None
    body: str | None = None  #: answered as it is, instead of an error body
    media_type: str = "application/json"


def fake_vector(text: str, dim: int) -> list[float]:
    """A deterministic pseudo-random vector for ``text`` (not normalised)."""
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
    return (np.random.default_rng(seed).standard_normal(dim) * 3.0).round(6).tolist()


def vllm_error(status: int, message: str, headers: dict[str, str] | None = None,
               param: str | None = None) -> JSONResponse:
    """An error response shaped like vLLM's."""
    body = {"object": "error", "message": message, "type": "BadRequestError", "param": param, "code": status}
    return JSONResponse(body, status_code=status, headers=headers)


class FakeOpenAI:
    """A scriptable OpenAI-compatible server; see the module docstring."""

    def __init__(self, *, model: str = "fake-model", latency_s: float = 0.0, dim: int = 32) -> None:
        self.model, self.latency_s, self.dim = model, latency_s, dim
        self.url = ""  #: base URL including ``/v1`` while running
        self.history: list[Received] = []
        self.adapters: dict[str, str] = {}
        self.unreadable: set[str] = set()  #: adapter folders refused as vLLM refuses a path it cannot read
        self.reject_json_schema = False  #: answer 422 to ``response_format`` type json_schema
        self.api_key: str | None = None  #: when set, other keys get 401
        self.reverse_embeddings = False  #: return embeddings in reverse ``index`` order
        self.in_flight = self.max_in_flight = 0
        self.responder: Callable[[dict[str, Any]], str] | None = None  #: answers when nothing is queued
        self.finish_reason = "stop"  #: of every chat answer ("length": as if max_tokens cut it)
        self._answers: deque[str] = deque()
        self._failures: deque[_Failure] = deque()
        self._lock = threading.Lock()

    # --- scripting -------------------------------------------------------------------------------
    def enqueue(self, *answers: str | dict | list) -> None:
        """Script the contents of the next chat answers (a dict or list is sent as JSON text)."""
        for a in answers:
            self._answers.append(a if isinstance(a, str) else json.dumps(a))

    def fail(self, status: int, message: str = "scripted failure", *, retry_after: float | None = None,
             times: int = 1, param: str | None = None) -> None:
        """Make the next ``times`` requests fail with ``status`` (and a ``Retry-After`` header, the field at
        fault in ``param``, if given)."""
        self._failures.extend(_Failure(status, message, retry_after, param=param) for _ in range(times))

    def answer_raw(self, status: int, body: str, *, media_type: str = "application/json") -> None:
        """Make the next request (of any endpoint, as a failure) be answered with ``status`` and ``body`` as is."""
        self._failures.append(_Failure(status, "", body=body, media_type=media_type))

    def hang(self, seconds: float, *, times: int = 1) -> None:
        """Make the next ``times`` requests wait ``seconds`` before failing with 503 (client timeouts)."""
        self._failures.extend(_Failure(503, "hung", hang_s=seconds) for _ in range(times))

    def requests(self, path_suffix: str = "/chat/completions") -> list[Received]:
        """The received requests whose path ends with ``path_suffix``."""
        with self._lock:
            return [r for r in self.history if r.path.endswith(path_suffix)]

    # --- running ---------------------------------------------------------------------------------
    @contextmanager
    def running(self) -> Iterator[FakeOpenAI]:
        """Serve on a free port of 127.0.0.1 while the block runs."""
        with serve_asgi(self.app()) as root:
            self.url = root + "/v1"
            try:
                yield self
            finally:
                self.url = ""

    def app(self) -> Starlette:
        """The ASGI app."""
        routes = [Route("/v1/chat/completions", self._chat, methods=["POST"]),
                  Route("/v1/embeddings", self._embeddings, methods=["POST"]),
                  Route("/v1/models", self._models, methods=["GET"]),
                  Route("/v1/load_lora_adapter", self._load, methods=["POST"]),
                  Route("/v1/unload_lora_adapter", self._unload, methods=["POST"])]
        return Starlette(routes=routes)

    # --- handlers --------------------------------------------------------------------------------
    async def _admit(self, request: Request) -> tuple[Any, Response | None]:
        """Record the request, apply latency, auth and a scripted failure; returns (body, early response)."""
        raw = await request.body()
        body = json.loads(raw) if raw else None
        with self._lock:
            self.history.append(Received(request.url.path, dict(request.headers), body))
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        if self.api_key and request.headers.get("authorization") != f"Bearer {self.api_key}":
            return body, vllm_error(401, "Incorrect API key provided.")
        failure = self._failures.popleft() if self._failures else None
        if failure is None:
            return body, None
        if failure.hang_s:
            await asyncio.sleep(failure.hang_s)
        if failure.body is not None:
            return body, Response(failure.body, failure.status, media_type=failure.media_type)
        headers = {"Retry-After": f"{failure.retry_after:g}"} if failure.retry_after is not None else None
        return body, vllm_error(failure.status, failure.message, headers, failure.param)

    async def _chat(self, request: Request) -> Response:
        with self._lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            body, early = await self._admit(request)
            return early or self._chat_answer(body)
        finally:
            with self._lock:
                self.in_flight -= 1

    def _chat_answer(self, body: dict[str, Any]) -> Response:
        model = body.get("model")
        if model != self.model and model not in self.adapters:
            return vllm_error(404, f"The model `{model}` does not exist.")
        fmt = body.get("response_format") or {}
        if self.reject_json_schema and fmt.get("type") == "json_schema":
            return JSONResponse({"detail": [{"type": "literal_error", "loc": ["body", "response_format", "type"],
                                             "msg": "Input should be 'text' or 'json_object'",
                                             "input": "json_schema"}]}, status_code=422)
        content = self._answers.popleft() if self._answers else (
            self.responder(body) if self.responder else self._echo(body))
        prompt = sum(len(str(m.get("content", "")).split()) for m in body.get("messages", []))
        if body.get("stream"):
            return StreamingResponse(self._sse(model, content, prompt, body), media_type="text/event-stream")
        out = chat_completion(model, content, prompt_tokens=prompt, finish_reason=self.finish_reason)
        if body.get("logprobs"):  # OpenAI's shape; the scripted answer is the likeliest first token
            alts = [{"token": content, "logprob": -0.1}, {"token": "No", "logprob": -2.5}]
            out["choices"][0]["logprobs"] = {"content": [{"token": content, "logprob": -0.1,
                                                          "top_logprobs": alts[:body.get("top_logprobs", 1)]}]}
        return JSONResponse(out)

    @staticmethod
    def _echo(body: dict[str, Any]) -> str:
        users = [m.get("content", "") for m in body.get("messages", []) if m.get("role") == "user"]
        return f"echo: {users[-1] if users else ''}"

    async def _sse(self, model: str, content: str, prompt: int, body: dict[str, Any]) -> AsyncIterator[str]:
        """``chat.completion.chunk`` events: role, the content word by word, finish, [usage], [DONE]."""
        words = content.split(" ")
        deltas = [{"role": "assistant", "content": ""}] + [
            {"content": w if i == 0 else " " + w} for i, w in enumerate(words)]
        base = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "model": model}
        for d in deltas:
            yield _event({**base, "choices": [{"index": 0, "delta": d, "finish_reason": None}]})
        yield _event({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": self.finish_reason}]})
        if (body.get("stream_options") or {}).get("include_usage"):
            usage = {"prompt_tokens": prompt, "completion_tokens": len(words), "total_tokens": prompt + len(words)}
            yield _event({**base, "choices": [], "usage": usage})
        yield "data: [DONE]\n\n"

    async def _embeddings(self, request: Request) -> Response:
        body, early = await self._admit(request)
        if early:
            return early
        texts = body["input"] if isinstance(body["input"], list) else [body["input"]]
        data = [{"object": "embedding", "index": i, "embedding": fake_vector(t, self.dim)} for i, t in enumerate(texts)]
        if self.reverse_embeddings:
            data.reverse()
        tokens = sum(len(t.split()) for t in texts)
        return JSONResponse({"object": "list", "data": data, "model": body.get("model"),
                             "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})

    async def _models(self, request: Request) -> Response:
        _, early = await self._admit(request)
        ids = [self.model, *self.adapters]
        return early or JSONResponse({"object": "list", "data": [
            {"id": i, "object": "model", "owned_by": "fake"} for i in ids]})

    async def _load(self, request: Request) -> Response:
        body, early = await self._admit(request)
        if early:
            return early
        name = body["lora_name"]
        if name in self.adapters:
            return vllm_error(400, f"The lora adapter '{name}' has already been loaded.")
        if body["lora_path"] in self.unreadable:  # as vLLM 0.32 answers a folder it cannot read
            return vllm_error(404, f"Loading lora {name} failed: No adapter found for {body['lora_path']}")
        self.adapters[name] = body["lora_path"]
        return Response(f"Success: LoRA adapter '{name}' added successfully.", media_type="text/plain")

    async def _unload(self, request: Request) -> Response:
        body, early = await self._admit(request)
        if early:
            return early
        name = body["lora_name"]
        if self.adapters.pop(name, None) is None:
            return vllm_error(404, f"The lora adapter '{name}' cannot be found.")
        return Response(f"Success: LoRA adapter '{name}' removed successfully.", media_type="text/plain")


def _event(obj: dict[str, Any]) -> str:
    return f"data: {json.dumps(obj)}\n\n"


@pytest.fixture
def fake_openai() -> Iterator[FakeOpenAI]:
    """A running :class:`FakeOpenAI` (fresh per test)."""
    fake = FakeOpenAI()
    with fake.running():
        yield fake
