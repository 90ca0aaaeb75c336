"""Chat and embedding models behind an OpenAI-compatible HTTP server.

Works with vLLM, SGLang, the llama.cpp servers, Ollama and hosted APIs. What this module relies on
from a server (the wire contract):

- ``POST {base}/chat/completions`` answers ``choices[0].message.content`` and ``usage``; a LoRA
  adapter is addressed by putting its name in the ``model`` field (vLLM's ``--enable-lora``
  convention), and loaded at run time with ``POST {base}/load_lora_adapter`` (:mod:`unolearn.lora_endpoints`).
- JSON output is asked for with ``response_format`` type ``json_schema``; a server that rejects that
  type with a 4xx mentioning it (llama-cpp-python's server) is asked with ``json_object`` + ``schema``
  from then on.
- ``POST {base}/embeddings`` answers ``data[i].embedding`` with ``data[i].index``.
- 429 (with ``Retry-After``), 5xx, timeouts and connection errors are transient and retried with
  exponential backoff and full jitter; any other 4xx is the caller's fault and is reported at once.

``base`` is the server URL as given when it has a path (``http://host:8000/v1``,
``https://generativelanguage.googleapis.com/v1beta/openai``), else that URL plus ``/v1``.
"""

from __future__ import annotations

import asyncio
import email.utils
import itertools
import logging
import os
import random
import re
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

import httpx
import numpy as np

from .. import lora_endpoints
from ..errors import BackendError, BackendHTTPError, ConfigError, loads_json
from .base import ChatModel, ChatRequest, ChatResult, Embedder, first_token_logprobs

log = logging.getLogger(__name__)

#: Longest wait between two attempts, whatever the backoff or the server's ``Retry-After`` say.
MAX_WAIT_S = 60.0


def resolve_api_key(explicit: str | None) -> str | None:
    """The API key to send: ``explicit`` (``""`` means none), else ``UNOLEARN_API_KEY``, else ``OPENAI_API_KEY``."""
    if explicit is not None:
        return explicit or None
    return os.environ.get("UNOLEARN_API_KEY") or os.environ.get("OPENAI_API_KEY") or None


def normalize_base_url(base_url: str) -> str:
    """``http://host:port`` → ``http://host:port/v1``; a URL with a path is kept (without a trailing ``/``)."""
    url = base_url.strip().rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"not an http(s) server URL: {base_url!r}")
    return url if parts.path else url + "/v1"


def error_message(resp: httpx.Response) -> str:
    """The server's error message on one line (OpenAI, vLLM, llama.cpp and FastAPI error bodies)."""
    return error_text(resp.content, resp.reason_phrase, json_or_none(resp.content))


def json_or_none(body: bytes) -> Any:
    """``body`` as JSON, else None (not JSON, not Unicode, or nested too deeply)."""
    try:
        return loads_json(body)
    except ValueError:  # UnicodeDecodeError among them
        return None


def error_text(body: bytes, reason: str | None, data: Any) -> str:
    """The message of an error answer on one line: that of its JSON ``data`` (``body`` parsed, or None), else
    its ``body``'s text, else ``reason``."""
    msg = _message_of(data) if data is not None else None
    text = msg or body.decode("utf-8", "replace") or reason or ""
    return re.sub(r"\s+", " ", str(text)).strip()[:500]


def _message_of(body: Any) -> str | None:
    """Find the human-readable message in a JSON error body."""
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])
        if isinstance(err, str):
            return err
        if body.get("message"):
            return str(body["message"])
        if "detail" in body:
            return _message_of(body["detail"]) or str(body["detail"])
    if isinstance(body, list):  # FastAPI/pydantic validation errors: [{"loc": [...], "msg": ...}]
        items = [f"{'.'.join(map(str, d.get('loc', [])))}: {d.get('msg', '')}" for d in body if isinstance(d, dict)]
        return "; ".join(items) or None
    return None


def retry_after_s(headers: httpx.Headers) -> float | None:
    """Seconds to wait as the server asks (``retry-after-ms``, or ``Retry-After`` in seconds or as a date)."""
    if ms := headers.get("retry-after-ms"):
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class OpenAIHTTP:
    """What the chat model and the embedder share: server URL, API key, and the retry policy.

    The retry *decision* is :meth:`_wait_or_raise`, written once; :meth:`_apost` and :meth:`_post` only
    perform the attempts it allows (one awaits, the other blocks).
    """

    def __init__(self, base_url: str, *, api_key: str | None, timeout_s: float, max_retries: int,
                 backoff_s: float) -> None:
        if timeout_s <= 0 or max_retries < 0 or backoff_s < 0:
            raise ConfigError("timeout_s must be > 0, max_retries and backoff_s >= 0")
        self.base_url = normalize_base_url(base_url)
        self.api_key = resolve_api_key(api_key)
        self.timeout_s, self.max_retries, self.backoff_s = timeout_s, max_retries, backoff_s

    def _headers(self) -> dict[str, str]:
        """Request headers (the bearer token when there is a key)."""
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def _url(self, path: str) -> str:
        return self.base_url + path

    def _wait_or_raise(self, path: str, outcome: httpx.Response | httpx.TransportError, attempt: int) -> float:
        """Seconds to wait before attempt ``attempt + 1`` after a failed one, or raise its error.

        Raises at once for a non-retryable status (a 4xx other than 429), and after ``max_retries``
        retries for transient failures.
        """
        message, status, retryable, asked = self._failure(path, outcome)
        if retryable and attempt < self.max_retries:
            wait = asked if asked is not None else random.uniform(0, self.backoff_s * 2 ** attempt)
            wait = min(wait, MAX_WAIT_S)
            log.info("retrying %s in %.2fs after: %s", path, wait, message)
            return wait
        if retryable:
            message += f" (gave up after {attempt + 1} attempts)"
        if status is None:
            assert isinstance(outcome, httpx.TransportError)  # a response has a status
            raise BackendError(message) from outcome
        raise BackendHTTPError(message, status=status, retryable=retryable)

    def _failure(self, path: str, outcome: httpx.Response | httpx.TransportError,
                 ) -> tuple[str, int | None, bool, float | None]:
        """(one-line message, HTTP status or None, retryable?, seconds the server asked to wait)."""
        if isinstance(outcome, httpx.Response):
            status = outcome.status_code
            asked = retry_after_s(outcome.headers) if status in (429, 503) else None
            return (f"HTTP {status} from {self._url(path)}: {error_message(outcome)}", status,
                    status == 429 or status >= 500, asked)
        detail = str(outcome) or "no detail"
        return (f"{type(outcome).__name__} from {self._url(path)}: {detail}", None,
                not isinstance(outcome, httpx.UnsupportedProtocol), None)

    async def _apost(self, client: httpx.AsyncClient, path: str, body: dict[str, Any]) -> httpx.Response:
        """POST ``body`` with retries (async); returns the first 2xx response."""
        for attempt in itertools.count():
            try:
                resp = await client.post(self._url(path), json=body, headers=self._headers())
                if resp.is_success:
                    return resp
                outcome: httpx.Response | httpx.TransportError = resp
            except httpx.TransportError as e:
                outcome = e
            await asyncio.sleep(self._wait_or_raise(path, outcome, attempt))
        raise AssertionError("unreachable")

    def _post(self, client: httpx.Client, path: str, body: dict[str, Any]) -> httpx.Response:
        """POST ``body`` with retries (blocking); returns the first 2xx response."""
        for attempt in itertools.count():
            try:
                resp = client.post(self._url(path), json=body, headers=self._headers())
                if resp.is_success:
                    return resp
                outcome: httpx.Response | httpx.TransportError = resp
            except httpx.TransportError as e:
                outcome = e
            time.sleep(self._wait_or_raise(path, outcome, attempt))
        raise AssertionError("unreachable")

    def _json(self, resp: httpx.Response) -> Any:
        """The JSON body of a 2xx response, or a :class:`BackendError` naming what came instead."""
        try:
            return loads_json(resp.content)
        except ValueError as e:
            raise BackendError(f"non-JSON answer from {resp.request.url}: {resp.text[:200]!r}") from e


def _rejects_json_schema(err: BackendHTTPError, body: dict[str, Any]) -> bool:
    """True when ``err`` is a server refusing ``response_format`` type ``json_schema``."""
    asked = (body.get("response_format") or {}).get("type") == "json_schema"
    text = str(err).lower()
    return asked and not err.retryable and 400 <= err.status < 500 and (
        "response_format" in text or "json_schema" in text)


class OpenAIChatModel(OpenAIHTTP, ChatModel):
    """A chat model served by an OpenAI-compatible server (``/chat/completions``).

    ``concurrency`` requests run at once over one shared connection pool. An adapter name in a
    request becomes the ``model`` field. Call :meth:`aclose` (or use :meth:`generate_sync`, which
    closes after itself) to release the connections.
    """

    def __init__(self, base_url: str, model: str, *, api_key: str | None = None, concurrency: int = 16,
                 timeout_s: float = 120.0, max_retries: int = 5, backoff_s: float = 0.5) -> None:
        ChatModel.__init__(self)
        OpenAIHTTP.__init__(self, base_url, api_key=api_key, timeout_s=timeout_s, max_retries=max_retries,
                            backoff_s=backoff_s)
        if concurrency < 1:
            raise ConfigError("concurrency must be >= 1")
        self.model, self.concurrency = model, concurrency
        self.model_id = f"openai:{self.base_url}:{model}"
        self.json_schema_supported = True  # becomes False once the server rejects it
        self._client: httpx.AsyncClient | None = None
        self._client_loop: asyncio.AbstractEventLoop | None = None

    def client(self) -> httpx.AsyncClient:
        """The shared async client of the running event loop.

        A client cannot outlive its event loop: on a new loop (another ``asyncio.run``) a new client
        is made and the old one, whose loop is gone, is left to the garbage collector. Call
        :meth:`aclose` before leaving a loop to close connections promptly.
        """
        loop = asyncio.get_running_loop()
        if self._client is None or self._client_loop is not loop:
            limits = httpx.Limits(max_connections=2 * self.concurrency, max_keepalive_connections=self.concurrency)
            self._client = httpx.AsyncClient(timeout=httpx.Timeout(self.timeout_s), limits=limits)
            self._client_loop = loop
        return self._client

    def request_body(self, request: ChatRequest) -> dict[str, Any]:
        """The ``/chat/completions`` body for ``request`` (non-streaming)."""
        body: dict[str, Any] = {
            "model": request.adapter or self.model, "messages": [dict(m) for m in request.messages],
            "temperature": request.temperature, "top_p": request.top_p, "max_tokens": request.max_tokens}
        if request.seed is not None:
            body["seed"] = request.seed
        if request.schema is not None:
            body["response_format"] = self._response_format(request.schema)
        if request.logprobs:
            body["logprobs"] = True
            body["top_logprobs"] = min(20, request.logprobs)  # the OpenAI API's maximum
        return body

    def _response_format(self, schema: dict[str, Any]) -> dict[str, Any]:
        if self.json_schema_supported:
            return {"type": "json_schema", "json_schema": {"name": "output", "schema": schema, "strict": True}}
        return {"type": "json_object", "schema": schema}

    async def complete(self, request: ChatRequest) -> ChatResult:
        """Answer one request; raises :class:`BackendError` once retries are exhausted or on a 4xx."""
        start = time.perf_counter()
        body = self.request_body(request)
        try:
            resp = await self._apost(self.client(), "/chat/completions", body)
        except BackendHTTPError as e:
            if not _rejects_json_schema(e, body):
                raise
            log.warning("%s rejects response_format json_schema; using json_object: %s", self.base_url, e)
            self.json_schema_supported = False
            resp = await self._apost(self.client(), "/chat/completions", self.request_body(request))
        return self._result(resp, time.perf_counter() - start)

    def _result(self, resp: httpx.Response, latency_s: float) -> ChatResult:
        data = self._json(resp)
        try:
            text = data["choices"][0]["message"].get("content") or ""
        except (KeyError, IndexError, TypeError, AttributeError) as e:
            raise BackendError(f"answer without choices[0].message from {resp.request.url}: "
                               f"{resp.text[:200]!r}") from e
        usage = data.get("usage") or {}
        return ChatResult(text=text, prompt_tokens=int(usage.get("prompt_tokens") or 0),
                          completion_tokens=int(usage.get("completion_tokens") or 0), latency_s=latency_s,
                          top_logprobs=first_token_logprobs(data["choices"][0]),
                          finish_reason=data["choices"][0].get("finish_reason"))

    async def add_adapter(self, name: str, path: str) -> None:
        """Load a PEFT adapter folder into the server under ``name`` (vLLM runtime LoRA loading); idempotent."""
        await lora_endpoints.load_adapter(self._adapter_post, name, path)

    async def _adapter_post(self, path: str, body: dict[str, Any]) -> httpx.Response:
        return await self._apost(self.client(), path, body)

    def generate_sync(self, requests: Sequence[ChatRequest], **kw: Any) -> list[ChatResult]:
        """:meth:`generate` for synchronous callers; closes the connections before returning."""

        async def run() -> list[ChatResult]:
            try:
                return await self.generate(requests, **kw)
            finally:
                await self.aclose()

        return asyncio.run(run())

    async def aclose(self) -> None:
        """Close the shared client (a later request opens a new one)."""
        client, loop = self._client, self._client_loop
        self._client = self._client_loop = None
        if client is not None and loop is asyncio.get_running_loop():
            await client.aclose()  # a client of a finished loop cannot be closed from here


class OpenAIEmbedder(OpenAIHTTP, Embedder):
    """Embeddings from an OpenAI-compatible server (``/embeddings``), sent ``batch_size`` texts at a time."""

    def __init__(self, base_url: str, model: str, *, api_key: str | None = None, batch_size: int = 64,
                 timeout_s: float = 120.0, max_retries: int = 5, backoff_s: float = 0.5) -> None:
        super().__init__(base_url, api_key=api_key, timeout_s=timeout_s, max_retries=max_retries,
                         backoff_s=backoff_s)
        if batch_size < 1:
            raise ConfigError("batch_size must be >= 1")
        self.model, self.batch_size = model, batch_size
        self.model_id = f"openai:{self.base_url}:{model}"

    def _embed(self, texts: Sequence[str]) -> np.ndarray:
        """Embed ``texts`` batch by batch over one connection (rows in input order)."""
        with httpx.Client(timeout=httpx.Timeout(self.timeout_s)) as client:
            rows = [row for start in range(0, len(texts), self.batch_size)
                    for row in self._batch(client, list(texts[start:start + self.batch_size]))]
        return np.asarray(rows, dtype=np.float32)

    def _batch(self, client: httpx.Client, texts: list[str]) -> list[list[float]]:
        resp = self._post(client, "/embeddings", {"model": self.model, "input": texts})
        data = self._json(resp)
        try:
            items = sorted(data["data"], key=lambda d: d["index"])
            rows = [item["embedding"] for item in items]
        except (KeyError, TypeError) as e:
            raise BackendError(f"unexpected embeddings answer from {resp.request.url}: {resp.text[:200]!r}") from e
        if len(rows) != len(texts):
            raise BackendError(f"{resp.request.url} returned {len(rows)} embeddings for {len(texts)} texts")
        return rows
