"""An OpenAI-compatible proxy that routes each request through the workspace's plan and records it.

Why: the deployed app talks to this proxy instead of its model server. Each request goes to the
cluster's expert, critic-then-revise or the base model (the UNO plan), and every served answer is kept
with the feedback users later give on it, so the next ``unolearn run`` learns from served traffic
(:func:`collect_served` turns them into logs): the loop closes.

HTTP contract (JSON bodies; errors are ``{"error": {"message", "type", "code"}}``, never a traceback):

- ``POST /v1/chat/completions`` — an OpenAI chat completion request (``stream`` true or false).
  Routed on the last user message. The header ``X-Unolearn-System: uno|uno-single|uno-guided|base``
  overrides the configured system for one request. The answer is OpenAI-shaped (``chat.completion``, or
  ``chat.completion.chunk`` SSE events ending with ``data: [DONE]``); its ``id`` is the proxy's
  *response id* (also in ``X-Unolearn-Response-Id``), the one ``/v1/feedback`` takes. The header
  ``X-Unolearn-Route`` says ``path=…; cluster=…; system=…[; adapter=module@epoch | guide=module]``.
  Upstream mode: *base* forwards the client's body unchanged; *primary* forwards it with ``model`` set
  to the expert adapter (vLLM ``--enable-lora`` naming: ``module@epoch``); streamed events are
  relayed one by one as they arrive, only their ``id`` replaced. *reflective* makes three upstream
  calls (draft, critic adapter, revision) and returns only the revised answer (as SSE events when
  streaming). *guide* forwards the body with the cluster's rulebook as system message (any upstream:
  no adapter). Embedded mode (no upstream): :func:`unolearn.answer.answer` on the workspace's models.
- ``GET /v1/models`` — the upstream's model list (embedded mode: the one model ``unolearn``).
- ``POST /v1/feedback`` — ``{"response_id", "text"?, "action"?: like|dislike|copy|regenerate|edit,
  "edited"?}`` (text or action required; ``edited`` exactly with ``edit``). 200 once stored, 404 for an
  unknown response id, 400 for a bad body.
- ``GET /healthz`` — liveness, no auth. ``GET /metrics`` — Prometheus text format.

Statuses: 401 without ``Authorization: Bearer <key>`` when a key is set; 400 invalid JSON or body;
413 body over ``max_body_bytes`` or more than ``max_messages`` messages; 4xx from the upstream is
relayed with its message; upstream timeout, connection error or 5xx → 502; other unolearn errors by
their ``http_status``.

Storage contract (tables ``served`` and ``feedback``, migration 5): a served row is queued and
written off the request path by one writer (batches, in a thread, flushed on shutdown); a feedback
is answered only after its row is committed, after the row of its response (one queue, in order).
Logs and feedback never leave through the API.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hmac
import json
import logging
import os
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

try:
    import aiohttp
except ImportError:  # only the proxy's upstream client needs it (the serve extra); collect_served does not
    aiohttp = None

from .answer import Route, answer, plan_route, reflect
from .backends import Models
from .backends.openai_http import error_text, normalize_base_url, resolve_api_key
from .config import BackendsConfig, backends_from_dict, opt
from .errors import ConfigError, UnolearnError, WorkspaceError
from .names import SERVED_SYSTEMS
from .records import Action, Log, Message, detect_lang
from .rulebook import guide_messages
from .selection import adapter_name
from .store import Workspace, now
from .train import epoch_dir

log = logging.getLogger(__name__)

EMBEDDED_MODEL = "unolearn"
SYSTEM_HEADER = "x-unolearn-system"
ACTIONS = ("like", "dislike", "copy", "regenerate", "edit")
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


@dataclass
class ServeConfig:
    """Settings of the routing proxy."""

    upstream: str | None = opt(None, "The OpenAI-compatible model server answers are forwarded to (e.g. vLLM "
                                     "at http://127.0.0.1:8000/v1, started with --enable-lora); None: embedded "
                                     "mode, answers come from the workspace's configured chat backend.")
    host: str = opt("127.0.0.1", "Interface to listen on.")
    port: int = opt(8400, "Port to listen on (0: any free port).")
    system: str = opt("uno", "Default system: 'uno' (expert, critic or base), 'uno-single' (expert or base), "
                             "'uno-guided' (the best validated path, the rulebook guide among them) or 'base'; "
                             "a request overrides it with the header X-Unolearn-System.")
    api_key: str | None = opt(None, "Clients must send 'Authorization: Bearer <key>' (default: "
                                    "$UNOLEARN_SERVE_KEY; empty: no key).")
    upstream_api_key: str | None = opt(None, "Key sent to the upstream (default: $UNOLEARN_API_KEY, then "
                                             "$OPENAI_API_KEY; empty: none).")
    max_body_bytes: int = opt(1_000_000, "Largest request body accepted (413 above).")
    max_messages: int = opt(256, "Most messages in one chat request (413 above).")
    upstream_timeout_s: float = opt(120.0, "Timeout of one upstream call (connect, between received bytes, "
                                           "and waiting for a free connection).")
    upstream_connections: int = opt(256, "Most connections open to the upstream, busy or idle.")
    load_adapters: bool = opt(False, "At start, load every adapter the workspace's plans use into the upstream "
                                     "(vLLM POST /v1/load_lora_adapter).")
    workers: int = opt(1, "Server processes sharing the port (upstream mode only: each one is a full proxy with "
                          "its own writer; /metrics then counts the worker that answers the scrape).")
    write_batch: int = opt(512, "Most served rows and feedbacks written in one transaction.")
    write_linger_s: float = opt(0.02, "The writer waits this long after a first queued row for more to join its "
                                      "transaction (fewer commits under load; a feedback answer waits at most this "
                                      "much longer).")

    def __post_init__(self) -> None:
        if self.api_key is None:
            self.api_key = os.environ.get("UNOLEARN_SERVE_KEY") or None
        self.api_key = self.api_key or None
        if self.upstream is not None:
            self.upstream = normalize_base_url(self.upstream)
        if self.system not in SERVED_SYSTEMS:
            raise ConfigError(f"serve.system: {self.system!r} is not one of {', '.join(SERVED_SYSTEMS)}")
        if not 0 <= self.port <= 65535:
            raise ConfigError("serve.port must be between 0 and 65535")
        if self.max_body_bytes < 1024 or self.max_messages < 1 or self.write_batch < 1 or self.write_linger_s < 0:
            raise ConfigError("serve.max_body_bytes ≥ 1024, max_messages ≥ 1, write_batch ≥ 1 and "
                              "write_linger_s ≥ 0 are required")
        if self.upstream_timeout_s <= 0 or self.upstream_connections < 1:
            raise ConfigError("serve.upstream_timeout_s must be > 0 and upstream_connections ≥ 1")
        if self.load_adapters and self.upstream is None:
            raise ConfigError("serve.load_adapters needs an upstream")
        if self.workers < 1 or (self.workers > 1 and self.upstream is None):
            raise ConfigError("serve.workers must be ≥ 1, and more than 1 needs an upstream (each worker would "
                              "load the embedded model)")


# -- errors ----------------------------------------------------------------------------------------


class HTTPProblem(UnolearnError):
    """An error answered with a chosen HTTP status and OpenAI error ``type`` and ``code``."""

    def __init__(self, message: str, status: int, code: str, type_: str | None = None) -> None:
        super().__init__(message)
        self.http_status, self.code = status, code
        self.type = type_ or ("invalid_request_error" if status < 500 else "upstream_error")


class UpstreamError(HTTPProblem):
    """The upstream failed: timeout, connection error or 5xx (502), or refused the request (its 4xx)."""

    def __init__(self, message: str, kind: str, status: int = 502) -> None:
        super().__init__(message, status, f"upstream_{kind}")
        self.kind = kind


def error_body(e: UnolearnError) -> dict[str, Any]:
    """The OpenAI-style error body of ``e``."""
    status = e.http_status
    kind = getattr(e, "type", None) or ("invalid_request_error" if status < 500 else "server_error")
    code = getattr(e, "code", None) or type(e).__name__
    return {"error": {"message": str(e), "type": kind, "code": code}}


def error_response(e: UnolearnError, headers: dict[str, str] | None = None) -> Any:
    """A JSON error response for ``e`` (status ``e.http_status``)."""
    from starlette.responses import Response

    return Response(json.dumps(error_body(e)), status_code=e.http_status, media_type="application/json",
                    headers=headers)


# -- metrics ---------------------------------------------------------------------------------------


class Metrics:
    """Counters and a latency histogram, exposed in the Prometheus text format."""

    def __init__(self) -> None:
        self.requests: Counter[tuple[str, int]] = Counter()
        self.upstream_errors: Counter[str] = Counter()
        self.feedback: Counter[str] = Counter()
        self.buckets: dict[str, list[int]] = defaultdict(lambda: [0] * len(BUCKETS))
        self.sums: Counter[str] = Counter()

    def observe(self, path: str, status: int, seconds: float) -> None:
        """Count one chat request that took ``path`` and ended with ``status`` after ``seconds``."""
        self.requests[(path, status)] += 1
        self.sums[path] += seconds
        counts = self.buckets[path]
        for i, le in enumerate(BUCKETS):
            if seconds <= le:
                counts[i] += 1

    def render(self, queue_depth: int) -> str:
        """The text exposition."""
        lines = ["# HELP unolearn_requests_total Chat completion requests by path taken and HTTP status.",
                 "# TYPE unolearn_requests_total counter"]
        lines += [f'unolearn_requests_total{{path="{p}",status="{s}"}} {n}'
                  for (p, s), n in sorted(self.requests.items())]
        lines += ["# HELP unolearn_request_duration_seconds Chat completion latency by path taken.",
                  "# TYPE unolearn_request_duration_seconds histogram"]
        for path, counts in sorted(self.buckets.items()):
            total = sum(n for (p, _), n in self.requests.items() if p == path)
            lines += [f'unolearn_request_duration_seconds_bucket{{path="{path}",le="{le:g}"}} {n}'
                      for le, n in zip(BUCKETS, counts)]
            lines += [f'unolearn_request_duration_seconds_bucket{{path="{path}",le="+Inf"}} {total}',
                      f'unolearn_request_duration_seconds_sum{{path="{path}"}} {self.sums[path]:.6f}',
                      f'unolearn_request_duration_seconds_count{{path="{path}"}} {total}']
        lines += _counter("unolearn_upstream_errors_total", "Failed upstream calls by kind.", "kind",
                          self.upstream_errors)
        lines += _counter("unolearn_feedback_total", "Feedback stored, by action (none: text only).", "action",
                          self.feedback)
        lines += ["# HELP unolearn_write_queue_depth Served rows and feedback waiting to be written.",
                  "# TYPE unolearn_write_queue_depth gauge", f"unolearn_write_queue_depth {queue_depth}"]
        return "\n".join(lines) + "\n"


def _counter(name: str, help_: str, label: str, values: Counter[str]) -> list[str]:
    return [f"# HELP {name} {help_}", f"# TYPE {name} counter",
            *(f'{name}{{{label}="{k}"}} {n}' for k, n in sorted(values.items()))]


# -- recording -------------------------------------------------------------------------------------


class Recorder:
    """Writes served rows and feedback off the request path: one queue, one writer task, one thread.

    A served row is queued (and its id kept in ``pending`` until committed); a feedback is queued
    behind it and awaited until committed, so it never refers to a row not yet written.
    """

    def __init__(self, ws_dir: Path, batch: int, linger_s: float = 0.0) -> None:
        self.ws_dir, self.batch, self.linger_s = ws_dir, batch, linger_s
        self.pending: set[str] = set()
        self.queue: asyncio.Queue | None = None
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        """Open the writer's and the reader's connections and start the writer task."""
        self._writer = Workspace.open(self.ws_dir)
        self._reader = Workspace.open(self.ws_dir)
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="unolearn-writer")
        self.queue = asyncio.Queue()
        self._task = asyncio.create_task(self._run())

    def served(self, row: tuple) -> None:
        """Queue one served row ``(response_id, messages, answer, route, model, created_at, user)``."""
        self.pending.add(row[0])
        self.queue.put_nowait(("served", row, None))

    async def feedback(self, row: tuple) -> None:
        """Queue one feedback row ``(response_id, text, action, edited, created_at)``; wait for its commit."""
        done = asyncio.get_running_loop().create_future()
        self.queue.put_nowait(("feedback", row, done))
        await done

    def known(self, response_id: str) -> bool:
        """True when ``response_id`` was served (committed or still queued)."""
        if response_id in self.pending:
            return True
        return self._reader.is_served(response_id)

    async def _run(self) -> None:
        while True:
            batch = [await self.queue.get()]
            if batch[0] is not None and self.linger_s:
                await asyncio.sleep(self.linger_s)  # let more rows join this transaction
            while len(batch) < self.batch and not self.queue.empty():
                batch.append(self.queue.get_nowait())
            items = [b for b in batch if b is not None]
            if items:
                await self._write(items)
            if len(items) < len(batch):
                return

    async def _write(self, items: list[tuple]) -> None:
        served = [row for kind, row, _ in items if kind == "served"]
        feedback = [row for kind, row, _ in items if kind == "feedback"]
        waiting = [f for _, _, f in items if f is not None]
        try:
            await asyncio.get_running_loop().run_in_executor(self._pool, self._commit, served, feedback)
        except Exception as e:  # noqa: BLE001 — reported to waiting feedback, logged for served rows
            log.error("could not store %d served rows and %d feedbacks: %s", len(served), len(feedback), e)
            for f in waiting:
                f.done() or f.set_exception(WorkspaceError(f"feedback not stored: {e}"))
        else:
            for f in waiting:
                f.done() or f.set_result(None)
        finally:
            self.pending.difference_update(row[0] for row in served)

    def _commit(self, served: list[tuple], feedback: list[tuple]) -> None:
        self._writer.record_served(served, feedback)

    async def close(self) -> None:
        """Write everything queued, then close the connections."""
        if self._task is not None:
            self.queue.put_nowait(None)
            await self._task
            self._pool.shutdown()
            self._writer.close()
            self._reader.close()
            self._task = None


# -- upstream --------------------------------------------------------------------------------------


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
        except asyncio.TimeoutError as e:
            raise UpstreamError(f"upstream timed out after {self.timeout_s:g} s ({type(e).__name__})", "timeout") from e
        except aiohttp.ClientPayloadError as e:
            raise UpstreamError(f"upstream sent a body that cannot be decoded: {e}", "bad_answer") from e
        except aiohttp.ClientError as e:
            raise UpstreamError(f"upstream unreachable at {self.base_url}: {type(e).__name__} {e}".strip(),
                                "unreachable") from e

    async def send(self, method: str, path: str, body: bytes | None = None) -> aiohttp.ClientResponse:
        """The upstream's answer, headers read; a non-2xx is read, released and raised (:func:`check`)."""
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
            return json.loads(data)
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
    message = f"upstream answered HTTP {status}: {error_text(body, reason)}"
    if 400 <= status < 500:
        raise UpstreamError(message, "rejected", status)
    raise UpstreamError(message, "error")


class Relayed:
    """An ASGI response relaying an upstream stream; the upstream answer is released once it is sent.

    Releasing here, not only in the event generator, frees the pooled connection also when the client
    left before the generator started or while it waited on a send (an answer not read to its end
    closes its connection).
    """

    streams = True

    def __init__(self, response: Any, upstream: aiohttp.ClientResponse) -> None:
        self.response, self.upstream = response, upstream

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        """Send the response, then release the upstream answer."""
        try:
            await self.response(scope, receive, send)
        finally:
            self.upstream.release()

def content_of(data: Any) -> str:
    """``choices[0].message.content`` of a chat completion ('' when absent)."""
    try:
        return data["choices"][0]["message"].get("content") or ""
    except (KeyError, IndexError, TypeError, AttributeError):
        return ""


# -- OpenAI shapes ---------------------------------------------------------------------------------


def completion(rid: str, model: str, text: str, usage: dict[str, int]) -> dict[str, Any]:
    """A ``chat.completion`` body with one choice."""
    prompt, done = usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0)
    return {"id": rid, "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": prompt, "completion_tokens": done, "total_tokens": prompt + done}}


def sse(obj: Any) -> bytes:
    """One server-sent event carrying ``obj`` as JSON."""
    return b"data: " + json.dumps(obj).encode() + b"\n\n"


def chunks(rid: str, model: str, text: str, usage: dict[str, int] | None) -> list[bytes]:
    """``text`` as ``chat.completion.chunk`` events: role, content, finish, [usage], ``[DONE]``."""
    base = {"id": rid, "object": "chat.completion.chunk", "created": int(time.time()), "model": model}
    deltas = [({"role": "assistant", "content": ""}, None), ({"content": text}, None), ({}, "stop")]
    out = [sse({**base, "choices": [{"index": 0, "delta": d, "finish_reason": f}]}) for d, f in deltas]
    if usage is not None:
        out.append(sse({**base, "choices": [], "usage": completion(rid, model, "", usage)["usage"]}))
    return [*out, b"data: [DONE]\n\n"]


def text_of(content: Any) -> str:
    """The text of a message's content (a string, or a list of parts of which the text ones count)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


# -- requests --------------------------------------------------------------------------------------


@dataclass
class Chat:
    """One parsed chat completion request."""

    raw: bytes
    body: dict[str, Any]
    query: str
    stream: bool
    system: str
    rid: str = field(default_factory=lambda: f"chatcmpl-{uuid.uuid4().hex}")

    @property
    def user(self) -> str | None:
        """The OpenAI ``user`` parameter: who asked (a string id; None when absent or not a string)."""
        user = self.body.get("user")
        return user if isinstance(user, str) and user.strip() else None

    @property
    def model(self) -> str:
        """The model the client asked for."""
        return str(self.body.get("model") or "")

    @property
    def include_usage(self) -> bool:
        """True when the client asked for a final usage chunk."""
        return bool((self.body.get("stream_options") or {}).get("include_usage"))


def parse_json(raw: bytes) -> dict[str, Any]:
    """The JSON object in ``raw``; 400 otherwise."""
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise HTTPProblem(f"the request body is not valid JSON: {e}", 400, "invalid_json") from e
    if not isinstance(body, dict):
        raise HTTPProblem("the request body must be a JSON object", 400, "invalid_request")
    return body


def parse_chat(raw: bytes, system: str, max_messages: int) -> Chat:
    """Validate a chat completion body and find the query it is routed on."""
    body = parse_json(raw)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise HTTPProblem("'messages' must be a non-empty list", 400, "invalid_request")
    if len(messages) > max_messages:
        raise HTTPProblem(f"too many messages: {len(messages)} > {max_messages}", 413, "too_many_messages")
    if not all(isinstance(m, dict) and isinstance(m.get("role"), str) for m in messages):
        raise HTTPProblem("every message must be an object with a 'role'", 400, "invalid_request")
    users = [text_of(m.get("content")) for m in messages if m["role"] == "user"]
    if not users or not users[-1].strip():
        raise HTTPProblem("the request needs a last user message with text", 400, "invalid_request")
    if system not in SERVED_SYSTEMS:
        raise HTTPProblem(f"X-Unolearn-System must be one of {', '.join(SERVED_SYSTEMS)}", 400, "invalid_system")
    return Chat(raw, body, users[-1], bool(body.get("stream")), system)


def parse_feedback(raw: bytes) -> tuple[str, str | None, str | None, str | None]:
    """``(response_id, text, action, edited)`` of a feedback body; 400 when it is malformed."""
    body = parse_json(raw)
    unknown = sorted(set(body) - {"response_id", "text", "action", "edited"})
    rid, text, action, edited = (body.get(k) for k in ("response_id", "text", "action", "edited"))
    problem = (f"unknown field {unknown[0]!r}" if unknown
               else "'response_id' must be a non-empty string" if not (isinstance(rid, str) and rid)
               else "'text' must be a string" if text is not None and not isinstance(text, str)
               else f"'action' must be one of {', '.join(ACTIONS)}" if action is not None and action not in ACTIONS
               else "give 'text' or 'action'" if not (text and text.strip()) and action is None
               else "'edit' needs the edited answer in 'edited'" if action == "edit" and not (
                   isinstance(edited, str) and edited.strip())
               else "'edited' goes only with action 'edit'" if action != "edit" and edited is not None
               else None)
    if problem:
        raise HTTPProblem(problem, 400, "invalid_feedback")
    return rid, text, action, edited


def route_header(route: Route) -> str:
    """The ``X-Unolearn-Route`` value."""
    parts = [f"path={route.path}", f"cluster={'-' if route.cluster is None else route.cluster}",
             f"system={route.system}"]
    if route.path == "guide":
        parts.append(f"guide={route.module_id}")
    elif route.module_id is not None:
        parts.append(f"adapter={adapter_name(route.module_id, route.epoch)}")
    return "; ".join(parts)


# -- the proxy -------------------------------------------------------------------------------------


class Proxy:
    """The app's state and handlers (one instance per app)."""

    def __init__(self, ws_dir: Path, cfg: ServeConfig, backends: BackendsConfig | None, built: dict[str, Any]):
        self.ws_dir, self.cfg = Path(ws_dir), cfg
        self.ws = Workspace.open(ws_dir)
        self.metrics = Metrics()
        self.recorder = Recorder(self.ws_dir, cfg.write_batch, cfg.write_linger_s)
        self.models = Models(self.ws, backends, **built) if cfg.upstream is None else None
        self.upstream = (Upstream(cfg.upstream, cfg.upstream_api_key, cfg.upstream_timeout_s,
                                  cfg.upstream_connections) if cfg.upstream else None)
        try:
            self.router, self._route_ws, self._route_pool = self._load_router(backends, built)
        except BaseException:
            self.ws.close()
            raise

    def _load_router(self, backends: BackendsConfig | None, built: dict[str, Any]) -> tuple:
        """A Router on its own connection and thread, or None when there is nothing to route to."""
        if not self.ws.count("clusters") or not self.ws.count("plans"):
            return None, None, None
        from .cluster import Router

        route_ws = Workspace.open(self.ws_dir)
        embedder = Models(route_ws, backends, **{k: v for k, v in built.items() if k == "embedder"}).embedder
        return Router.load(route_ws, embedder), route_ws, ThreadPoolExecutor(1, thread_name_prefix="unolearn-route")

    @asynccontextmanager
    async def lifespan(self, app: Any) -> AsyncIterator[None]:
        """Start the recorder and the upstream client (loading adapters if asked); flush and close at the end."""
        await self.recorder.start()
        if self.upstream:
            await self.upstream.start()
        try:
            if self.cfg.load_adapters:
                await self.load_adapters()
            yield
        finally:
            await self.recorder.close()
            await self.close()

    async def close(self) -> None:
        """Release clients, threads and connections (the recorder closes apart)."""
        if self.upstream:
            await self.upstream.close()
        if self.models:
            await self.models.aclose()
        if self._route_pool:
            self._route_pool.shutdown()
            self._route_ws.close()
        self.ws.close()

    async def load_adapters(self) -> list[str]:
        """Load every adapter the plans use into the upstream (vLLM ``/load_lora_adapter``); their names."""
        names = []
        for module_id, epoch, path in self.ws.planned_adapters():
            name = adapter_name(module_id, epoch)
            body = json.dumps({"lora_name": name, "lora_path": str(epoch_dir(path, epoch))}).encode()
            try:
                await self.upstream.read("POST", "/load_lora_adapter", body)
            except UpstreamError as e:
                if e.http_status in (404, 405):
                    raise ConfigError(f"cannot load adapter {name}: {e} (vLLM loads adapters at run time only when "
                                      "started with --enable-lora and VLLM_ALLOW_RUNTIME_LORA_UPDATING=True)") from e
                if "already" not in str(e).lower():
                    raise
            names.append(name)
        log.info("loaded %d adapters into %s", len(names), self.cfg.upstream)
        return names

    # -- auth and bodies --

    def authorize(self, request: Any) -> None:
        """401 unless the request carries the configured bearer key."""
        if self.cfg.api_key is None:
            return
        given = request.headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {self.cfg.api_key}".encode()):
            raise HTTPProblem("missing or wrong API key (Authorization: Bearer <key>)", 401, "invalid_api_key")

    async def read_body(self, request: Any) -> bytes:
        """The request body; 413 beyond ``max_body_bytes``."""
        limit = self.cfg.max_body_bytes
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise HTTPProblem(f"request body over {limit} bytes", 413, "request_too_large")
        parts, size = [], 0
        async for part in request.stream():
            size += len(part)
            if size > limit:
                raise HTTPProblem(f"request body over {limit} bytes", 413, "request_too_large")
            parts.append(part)
        return b"".join(parts)

    # -- handlers --

    async def chat(self, request: Any) -> Any:
        """``POST /v1/chat/completions``."""
        start, path = time.perf_counter(), "none"
        try:
            self.authorize(request)
            system = request.headers.get(SYSTEM_HEADER, self.cfg.system)
            chat = parse_chat(await self.read_body(request), system, self.cfg.max_messages)
            route = await self.plan(chat)
            path = route.path
            resp = await self.dispatch(chat, route, start)
        except UnolearnError as e:
            self.count_error(e)
            resp = error_response(e)
        except Exception:  # noqa: BLE001 — a bug: logged here, never sent to the client
            log.exception("unexpected error in /v1/chat/completions")
            resp = error_response(HTTPProblem("internal error", 500, "internal_error", "server_error"))
        if not getattr(resp, "streams", False):
            self.metrics.observe(path, resp.status_code, time.perf_counter() - start)
        return resp

    def count_error(self, e: UnolearnError) -> None:
        """Count an upstream failure in the metrics."""
        if isinstance(e, UpstreamError):
            self.metrics.upstream_errors[e.kind] += 1

    async def plan(self, chat: Chat) -> Route:
        """The route of ``chat`` (embedding runs on the router's own thread)."""
        if self.router is None or chat.system == "base":
            return Route(chat.system, "base")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._route_pool, plan_route, self._route_ws, self.router,
                                          chat.query, chat.system)

    async def dispatch(self, chat: Chat, route: Route, start: float) -> Any:
        """Answer ``chat`` along ``route``."""
        if self.upstream is None:
            text, usage, model = await self.embedded(chat, route)
        elif route.path == "reflective":
            text, usage, model = await self.reflective(chat, route)
        elif route.path == "guide":
            body = json.dumps({**chat.body, "messages": guide_messages(chat.body["messages"], route.guide)}).encode()
            return await (self.relay_stream(chat, route, body, chat.model, start) if chat.stream
                          else self.relay(chat, route, body, chat.model))
        else:
            body = chat.raw if route.path == "base" else json.dumps(
                {**chat.body, "model": adapter_name(route.module_id, route.epoch)}).encode()
            model = chat.model if route.path == "base" else adapter_name(route.module_id, route.epoch)
            if chat.stream:
                return await self.relay_stream(chat, route, body, model, start)
            return await self.relay(chat, route, body, model)
        return self.final(chat, route, text, usage, model, start)

    async def relay(self, chat: Chat, route: Route, body: bytes, model: str) -> Any:
        """Forward a non-streaming request; answer the upstream's JSON with our response id."""
        from starlette.responses import Response

        data = await self.upstream.post("/chat/completions", body)
        data["id"] = chat.rid
        self.record(chat, route, content_of(data), model)
        return Response(json.dumps(data), media_type="application/json", headers=self.headers(chat, route))

    async def relay_stream(self, chat: Chat, route: Route, body: bytes, model: str, start: float) -> Any:
        """Forward a streaming request; relay its events as they come, with our response id."""
        resp = await self.upstream.open_stream(body)
        return Relayed(self.streaming(self.events(resp, chat, route, model, start), chat, route), resp)

    async def events(self, resp: aiohttp.ClientResponse, chat: Chat, route: Route, model: str,
                     start: float) -> AsyncIterator[bytes]:
        """The upstream's SSE events, ids replaced; the answer is recorded before ``[DONE]`` goes out."""
        parts: list[str] = []
        status, buf, done = 200, b"", False
        try:
            with self.upstream.errors():
                async for data in resp.content.iter_any():
                    buf = (buf + data).replace(b"\r\n", b"\n")
                    while b"\n\n" in buf and not done:
                        event, buf = buf.split(b"\n\n", 1)
                        out, done = self.event(event, chat, parts)
                        if done:
                            self.record(chat, route, "".join(parts), model)
                        yield out
            if not done:
                self.record(chat, route, "".join(parts), model)
        except UpstreamError as e:
            status = e.http_status
            self.count_error(e)
            yield sse(error_body(e))
        finally:
            self.metrics.observe(route.path, status, time.perf_counter() - start)
            resp.release()

    @staticmethod
    def event(event: bytes, chat: Chat, parts: list[str]) -> tuple[bytes, bool]:
        """One relayed event (its ``id`` replaced, its content kept in ``parts``) and whether it was ``[DONE]``."""
        if not event.startswith(b"data:"):
            return event + b"\n\n", False
        payload = event[5:].strip()
        if payload == b"[DONE]":
            return b"data: [DONE]\n\n", True
        try:
            obj = json.loads(payload)
        except ValueError:
            return event + b"\n\n", False
        if isinstance(obj, dict) and "id" in obj:
            obj["id"] = chat.rid
            for choice in obj.get("choices") or []:
                if choice.get("index", 0) == 0:
                    parts.append((choice.get("delta") or {}).get("content") or "")
        return sse(obj), False

    async def reflective(self, chat: Chat, route: Route) -> tuple[str, dict[str, int], str]:
        """Draft, critic rules, revision: three upstream calls; returns the revised answer."""
        body = {k: v for k, v in chat.body.items() if k not in ("stream", "stream_options")}
        draft, d1 = await self.upstream.complete(body)

        async def call(msgs: list[dict[str, Any]], adapter: str | None, max_tokens: int | None) -> tuple[str, Any]:
            if max_tokens is None:
                return await self.upstream.complete({**body, "messages": msgs})
            return await self.upstream.complete({"model": adapter, "temperature": 0.0, "messages": msgs,
                                                 "max_tokens": max_tokens, "seed": body.get("seed", 42)})

        critic = adapter_name(route.module_id, route.epoch)
        revised, _, (d2, d3) = await reflect(call, body["messages"], draft, critic, chat.query)
        usage = {k: sum(int((d.get("usage") or {}).get(k) or 0) for d in (d1, d2, d3))
                 for k in ("prompt_tokens", "completion_tokens")}
        return revised, usage, chat.model

    async def embedded(self, chat: Chat, route: Route) -> tuple[str, dict[str, int], str]:
        """Answer with the workspace's own chat backend (:func:`unolearn.answer.answer`)."""
        messages = [{"role": m["role"], "content": text_of(m.get("content"))} for m in chat.body["messages"]]
        kw = {"max_tokens": int(chat.body.get("max_tokens") or chat.body.get("max_completion_tokens") or 512),
              "temperature": float(chat.body.get("temperature") or 0.0), "seed": chat.body.get("seed", 42)}
        out = await answer(self.ws, self.models, self.router, messages, chat.system, route=route, **kw)
        return out.text, out.usage, self.models.generator.model_id

    def final(self, chat: Chat, route: Route, text: str, usage: dict[str, int], model: str, start: float) -> Any:
        """Answer a text the proxy composed (JSON, or SSE events when streaming); record it."""
        from starlette.responses import Response

        self.record(chat, route, text, model)
        shown = chat.model or model
        if not chat.stream:
            body = json.dumps(completion(chat.rid, shown, text, usage))
            return Response(body, media_type="application/json", headers=self.headers(chat, route))

        async def events() -> AsyncIterator[bytes]:
            try:
                for c in chunks(chat.rid, shown, text, usage if chat.include_usage else None):
                    yield c
            finally:
                self.metrics.observe(route.path, 200, time.perf_counter() - start)

        return self.streaming(events(), chat, route)

    def streaming(self, events: AsyncIterator[bytes], chat: Chat, route: Route) -> Any:
        """An SSE response (its metrics are counted when the stream ends)."""
        from starlette.responses import StreamingResponse

        resp = StreamingResponse(events, media_type="text/event-stream",
                                 headers={**self.headers(chat, route), "cache-control": "no-cache"})
        resp.streams = True
        return resp

    @staticmethod
    def headers(chat: Chat, route: Route) -> dict[str, str]:
        """The unolearn response headers."""
        return {"x-unolearn-route": route_header(route), "x-unolearn-response-id": chat.rid}

    def record(self, chat: Chat, route: Route, text: str, model: str) -> None:
        """Queue the served interaction for storage."""
        row = (chat.rid, json.dumps(chat.body["messages"], ensure_ascii=False), text,
               json.dumps(vars(route)), model, now(), chat.user)
        self.recorder.served(row)

    async def feedback(self, request: Any) -> Any:
        """``POST /v1/feedback``."""
        from starlette.responses import JSONResponse

        try:
            self.authorize(request)
            rid, text, action, edited = parse_feedback(await self.read_body(request))
            if not await self.known_soon(rid):
                raise HTTPProblem(f"no response {rid!r}", 404, "response_not_found")
            await self.recorder.feedback((rid, text, action, edited, now()))
        except UnolearnError as e:
            return error_response(e)
        self.metrics.feedback[action or "none"] += 1
        return JSONResponse({"object": "feedback", "response_id": rid, "stored": True})

    async def known_soon(self, rid: str) -> bool:
        """True when ``rid`` was served. With several workers an id not seen yet is looked up again for a
        moment, since another worker may still hold the row in its queue (linger plus one commit); one
        worker knows its own queue, so its first answer is final."""
        waits = (0.0, 0.01, 0.02, 0.05, 0.1, 0.2) if self.cfg.workers > 1 else (0.0,)
        for wait in waits:
            await asyncio.sleep(wait)
            if self.recorder.known(rid):
                return True
        return False

    async def models_list(self, request: Any) -> Any:
        """``GET /v1/models``."""
        from starlette.responses import JSONResponse, Response

        try:
            self.authorize(request)
            if self.upstream is None:
                return JSONResponse({"object": "list", "data": [
                    {"id": EMBEDDED_MODEL, "object": "model", "created": 0, "owned_by": "unolearn"}]})
            return Response(await self.upstream.models(), media_type="application/json")
        except UnolearnError as e:
            self.count_error(e)
            return error_response(e)

    async def healthz(self, request: Any) -> Any:
        """``GET /healthz`` (no auth)."""
        from starlette.responses import JSONResponse

        return JSONResponse({"status": "ok", "mode": "embedded" if self.upstream is None else "upstream",
                             "routing": self.router is not None, "system": self.cfg.system})

    async def metrics_text(self, request: Any) -> Any:
        """``GET /metrics``."""
        from starlette.responses import PlainTextResponse

        try:
            self.authorize(request)
        except UnolearnError as e:
            return error_response(e)
        depth = self.recorder.queue.qsize() if self.recorder.queue else 0
        return PlainTextResponse(self.metrics.render(depth), media_type="text/plain; version=0.0.4")


def create_app(ws_dir: str | os.PathLike[str], cfg: ServeConfig | None = None, *,
               backends: BackendsConfig | None = None, **built: Any) -> Any:
    """The proxy's ASGI app on the workspace at ``ws_dir``.

    ``backends`` configures the embedder (routing) and, in embedded mode, the chat model; ``built``
    hands over ready instances as :class:`~unolearn.backends.Models` takes them (``generator=``,
    ``embedder=``). Clusters and plans are read now: restart the proxy after a new ``unolearn run``.
    """
    try:
        from starlette.applications import Starlette
        from starlette.routing import Route as HTTPRoute
        import aiohttp  # noqa: F401
    except ImportError as e:
        raise ConfigError("the proxy needs starlette, uvicorn and aiohttp: pip install 'unolearn[serve]'") from e
    proxy = Proxy(Path(ws_dir), cfg or ServeConfig(), backends, built)
    routes = [HTTPRoute("/v1/chat/completions", proxy.chat, methods=["POST"]),
              HTTPRoute("/v1/feedback", proxy.feedback, methods=["POST"]),
              HTTPRoute("/v1/models", proxy.models_list, methods=["GET"]),
              HTTPRoute("/healthz", proxy.healthz, methods=["GET"]),
              HTTPRoute("/metrics", proxy.metrics_text, methods=["GET"])]
    return ChatFastPath(Starlette(routes=routes, lifespan=proxy.lifespan), proxy)


class ChatFastPath:
    """The proxy's ASGI app: chat completions go straight to :meth:`Proxy.chat`, the rest through Starlette.

    The chat handler answers every error itself, so Starlette's exception middleware and routing add
    only CPU on that path (about a tenth of the proxy's per-request cost, measured with py-spy).
    """

    def __init__(self, app: Any, proxy: Proxy) -> None:
        self.app, self.proxy, self.state = app, proxy, app.state
        self.state.proxy = proxy

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        """Serve one ASGI connection scope."""
        if scope["type"] == "http" and scope["path"] == "/v1/chat/completions" and scope["method"] == "POST":
            from starlette.requests import Request

            response = await self.proxy.chat(Request(scope, receive))
            await response(scope, receive, send)
        else:
            await self.app(scope, receive, send)


WORKER_ENV = "UNOLEARN_SERVE_WORKER"


def serve(ws_dir: str | os.PathLike[str], cfg: ServeConfig | None = None, *,
          backends: BackendsConfig | None = None, **built: Any) -> None:
    """Run the proxy with uvicorn until interrupted (queued records are written before it exits).

    With ``cfg.workers`` > 1, uvicorn starts that many processes on one socket; each builds its app
    with :func:`worker_app` from the settings this process hands over in the environment.
    """
    try:
        import uvicorn
    except ImportError as e:
        raise ConfigError("the proxy needs starlette, uvicorn and aiohttp: pip install 'unolearn[serve]'") from e

    cfg = cfg or ServeConfig()
    run = {"host": cfg.host, "port": cfg.port, "lifespan": "on", "access_log": False, "log_level": "info",
           "proxy_headers": False, "timeout_graceful_shutdown": 10}
    if cfg.workers == 1:
        uvicorn.run(create_app(ws_dir, cfg, backends=backends, **built), **run)
        return
    if built:
        raise ConfigError("serve.workers > 1 builds its models in each worker; pass configurations, not instances")
    backends = backends or BackendsConfig()
    os.environ[WORKER_ENV] = json.dumps({"ws_dir": str(ws_dir), "serve": dataclasses.asdict(cfg),
                                         "backends": dataclasses.asdict(backends)})
    uvicorn.run("unolearn.serve:worker_app", factory=True, workers=cfg.workers, **run)


def worker_app() -> Any:
    """The app of one worker process of :func:`serve` (its settings come from the environment)."""
    spec = json.loads(os.environ[WORKER_ENV])
    return create_app(spec["ws_dir"], ServeConfig(**spec["serve"]), backends=backends_from_dict(spec["backends"]))


# -- closing the loop ------------------------------------------------------------------------------


def collect_served(ws: Workspace) -> int:
    """Turn served interactions that received feedback (and no log yet) into logs; return how many.

    Each becomes a :class:`~unolearn.records.Log` (source ``serve``): the request's conversation, the
    served answer as first answer, the feedback texts as feedback turns and the actions as actions;
    ``served.log_id`` is set. Feedback given after its interaction was collected is not added.
    """
    logs = [(row[0], served_log(ws, *row)) for row in ws.uncollected_served()]
    ws.add_served_logs(logs)
    return len(logs)


def served_log(ws: Workspace, rid: str, messages: str, answer_text: str, route: str, created_at: str,
               user: str | None = None) -> Log:
    """The log of one served interaction with its feedback."""
    feedback = ws.feedback_of(rid)
    turns = [Message(role=m["role"], content=text_of(m.get("content"))) for m in json.loads(messages)
             if m.get("role") in ("system", "user", "assistant")]
    query = next(m.content for m in reversed(turns) if m.role == "user")
    texts = tuple(t for t, _, _ in feedback if t and t.strip())
    actions = tuple(Action(kind=a, turn=0, edited=e) for _, a, e in feedback if a)
    convo = (*turns, Message(role="assistant", content=answer_text), *(Message(role="user", content=t) for t in texts))
    return Log(messages=convo, query=query, first_answer=answer_text, feedback=texts, actions=actions,
               lang=detect_lang(query + "\n" + answer_text), source="serve", timestamp=created_at, user=user,
               metadata={"response_id": rid, "route": json.loads(route)})
