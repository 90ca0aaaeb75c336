"""The client of the upstream OpenAI-compatible server."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

try:
    import aiohttp
except ImportError:  # only the proxy's upstream client needs it (the serve extra); collect_served does not
    aiohttp = None  # type: ignore[assignment]  # a module or None: Upstream is used only with the serve extra

from ..backends.openai_http import error_text, json_or_none, resolve_api_key
from ..errors import loads_json
from .problems import UpstreamError

log = logging.getLogger(__name__)


class Upstream:
    """The OpenAI-compatible server answers are forwarded to, through one shared ``aiohttp.ClientSession``.

    The session is opened by :meth:`start` (on the running loop) and closed by :meth:`close` (the app's
    lifespan); its connector holds up to ``connections`` connections, busy or idle. ``timeout_s`` bounds
    the wait for a free connection plus connecting, and every wait for bytes. Redirects are not followed.
    """

    def __init__(self, base_url: str, api_key: str | None, timeout_s: float, connections: int) -> None:
        self.base_url, self.timeout_s, self.connections = base_url, timeout_s, connections
        key = resolve_api_key(api_key)
        self.headers = {"content-type": "application/json", **({"authorization": f"Bearer {key}"} if key else {})}
        self.session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        """Open the session (connections open on demand)."""
        timeout = aiohttp.ClientTimeout(total=None, connect=self.timeout_s, sock_read=self.timeout_s)
        self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=self.connections),
                                             headers=self.headers, timeout=timeout,
                                             cookie_jar=aiohttp.DummyCookieJar())  # a proxy keeps no cookies

    async def close(self) -> None:
        """Close the session and its connections."""
        if self.session is not None:
            await self.session.close()
            self.session = None

    @contextmanager
    def errors(self) -> Iterator[None]:
        """Raise aiohttp's failures as :class:`UpstreamError` (502): timeout, bad answer or unreachable."""
        try:
            yield
        except TimeoutError as e:
            raise UpstreamError(f"upstream timed out after {self.timeout_s:g} s ({type(e).__name__})", "timeout") from e
        except aiohttp.ClientPayloadError as e:
            raise UpstreamError(f"upstream sent a body that cannot be decoded: {e}", "bad_answer") from e
        except aiohttp.ClientError as e:
            log.warning("upstream unreachable at %s: %s %s", self.base_url, type(e).__name__, e)
            raise UpstreamError(f"the model server could not be reached ({type(e).__name__})",
                                "unreachable") from e

    async def send(self, method: str, path: str, body: bytes | None = None) -> aiohttp.ClientResponse:
        """The upstream's answer, headers read; a non-2xx is read, released and raised (:func:`check`)."""
        assert self.session is not None, "Upstream.start() opens the session"
        with self.errors():
            resp = await self.session.request(method, self.base_url + path, data=body, allow_redirects=False)
            if not 200 <= resp.status < 300:
                try:
                    body = await resp.read()
                finally:
                    resp.release()
                check(resp.status, resp.reason, body)
        return resp

    async def read(self, method: str, path: str, body: bytes | None = None) -> bytes:
        """The body of a 2xx answer; :class:`UpstreamError` otherwise."""
        resp = await self.send(method, path, body)
        try:
            with self.errors():
                return await resp.read()
        finally:
            resp.release()

    async def post(self, path: str, body: bytes) -> dict[str, Any]:
        """POST ``body`` and return the JSON answer of a 2xx."""
        data = await self.read("POST", path, body)
        try:
            return loads_json(data)
        except ValueError as e:
            raise UpstreamError(f"upstream answered non-JSON: {data[:200]!r}", "bad_answer") from e

    async def complete(self, body: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """A non-streaming chat completion: its text and JSON answer."""
        data = await self.post("/chat/completions", json.dumps(body).encode())
        return content_of(data), data

    async def open_stream(self, body: bytes) -> aiohttp.ClientResponse:
        """Start a streaming chat completion (2xx checked, body not read); the caller must release the answer."""
        return await self.send("POST", "/chat/completions", body)

    async def models(self) -> bytes:
        """The upstream's ``/models`` answer."""
        return await self.read("GET", "/models")


def check(status: int, reason: str | None, body: bytes) -> None:
    """Raise for a non-2xx upstream answer: its 4xx as is, a 5xx (or anything else) as 502."""
    data = json_or_none(body)
    message = f"upstream answered HTTP {status}: {error_text(body, reason, data)}"
    if 400 <= status < 500:
        raise UpstreamError(message, "rejected", status, param=_param_of(data))
    raise UpstreamError(message, "error")


def _param_of(data: Any) -> str | None:
    """The ``param`` of an upstream's error body parsed (the field it refused; OpenAI nests it under ``error``,
    vLLM has written it at the top), else None."""
    error = data.get("error") if isinstance(data, dict) and isinstance(data.get("error"), dict) else data
    param = error.get("param") if isinstance(error, dict) else None
    return param[:200] if isinstance(param, str) else None


class Relayed:
    """An ASGI response relaying an upstream stream; the upstream answer is released once it is sent.

    Releasing here, not only in the event generator, frees the pooled connection also when the client
    left before the generator started or while it waited on a send (an answer not read to its end
    closes its connection); ``on_close`` then ends the request's bookkeeping the generator's own
    ``finally`` never reached (it must be safe to call twice).
    """

    streams = True

    def __init__(self, response: Any, upstream: aiohttp.ClientResponse,
                 on_close: Callable[[], None] | None = None) -> None:
        self.response, self.upstream, self.on_close = response, upstream, on_close

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        """Send the response, then release the upstream answer."""
        try:
            await self.response(scope, receive, send)
        finally:
            self.upstream.release()
            if self.on_close is not None:
                self.on_close()

def content_of(data: Any) -> str:
    """``choices[0].message.content`` of a chat completion ('' when absent)."""
    try:
        return data["choices"][0]["message"].get("content") or ""
    except (KeyError, IndexError, TypeError, AttributeError):
        return ""


def finish_of(data: Any) -> str:
    """``choices[0].finish_reason`` of a chat completion ("stop" when absent): "length" when max_tokens cut it."""
    try:
        return data["choices"][0].get("finish_reason") or "stop"
    except (KeyError, IndexError, TypeError, AttributeError):
        return "stop"


def usage_of(*answers: Any) -> dict[str, int]:
    """The prompt and completion tokens of chat completions, added up (0 for what an answer leaves out)."""
    return {k: sum(int((d.get("usage") or {}).get(k) or 0) for d in answers)
            for k in ("prompt_tokens", "completion_tokens")}
