"""A fixed-latency OpenAI-compatible responder: the target of ``unolearn bench throughput``.

It answers ``POST .../chat/completions`` after a fixed delay, so that a client's throughput is bounded
by how many requests it keeps in flight, not by a model. :func:`serve_asgi` runs any ASGI app on
127.0.0.1 in a background thread for the duration of a ``with`` block (the test fake server reuses
it). Needs ``uvicorn`` (``pip install 'unolearn[serve]'``).
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from contextlib import contextmanager
from typing import Any, Literal

from ..errors import ConfigError, UnolearnError
from ..wire import completion

Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[dict]], Callable[[dict], Awaitable[None]]], Awaitable[None]]


def chat_completion(model: str, content: str, *, prompt_tokens: int = 0, completion_tokens: int | None = None,
                    finish_reason: str = "stop") -> dict[str, Any]:
    """An OpenAI ``chat.completion`` response body with one choice (completion tokens: its words by default)."""
    usage = {"prompt_tokens": prompt_tokens,
             "completion_tokens": len(content.split()) if completion_tokens is None else completion_tokens}
    return completion(f"chatcmpl-{uuid.uuid4().hex[:12]}", model, content, usage, finish_reason)


async def _read_body(receive: Callable[[], Awaitable[dict]]) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


async def _send_json(send: Callable[[dict], Awaitable[None]], status: int, body: Any) -> None:
    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]})
    await send({"type": "http.response.body", "body": data})


def fixed_latency_app(latency_s: float, content: str = "ok") -> ASGIApp:
    """An ASGI app answering every chat completion with ``content`` after ``latency_s`` seconds."""

    async def app(scope: Scope, receive: Callable[[], Awaitable[dict]],
                  send: Callable[[dict], Awaitable[None]]) -> None:
        if scope["type"] != "http":
            return
        raw = await _read_body(receive)
        if scope["method"] != "POST" or not scope["path"].endswith("/chat/completions"):
            await _send_json(send, 404, {"error": {"message": f"no route {scope['method']} {scope['path']}"}})
            return
        try:
            request = json.loads(raw)
        except ValueError:
            await _send_json(send, 400, {"error": {"message": "request body is not JSON"}})
            return
        await asyncio.sleep(latency_s)
        prompt = sum(len(str(m.get("content", "")).split()) for m in request.get("messages", []))
        await _send_json(send, 200, chat_completion(str(request.get("model", "bench")), content, prompt_tokens=prompt))

    return app


@contextmanager
def serve_asgi(app: ASGIApp, *, max_lifetime_s: float = 900.0, ready_timeout_s: float = 10.0,
               lifespan: Literal["auto", "on", "off"] = "off") -> Iterator[str]:
    """Run ``app`` on a free port of 127.0.0.1 in a background thread; yields its URL (``http://127.0.0.1:PORT``).

    The server stops when the block exits, or after ``max_lifetime_s`` at the latest. ``lifespan="on"``
    runs the app's startup and shutdown (a startup failure raises here).
    """
    try:
        import uvicorn
    except ImportError as e:
        raise ConfigError("a local HTTP server needs uvicorn: pip install 'unolearn[serve]'") from e
    # proto=IPPROTO_TCP matters: asyncio sets TCP_NODELAY only on such sockets, and without it
    # every keep-alive response stalls ~40 ms (Nagle against delayed ACKs).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan=lifespan,
                            timeout_graceful_shutdown=1, timeout_keep_alive=30)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name=f"asgi-{port}", daemon=True)
    deadline = threading.Timer(max_lifetime_s, lambda: setattr(server, "should_exit", True))
    deadline.daemon = True
    thread.start()
    deadline.start()
    try:
        _wait_started(server, thread, ready_timeout_s)
        yield f"http://127.0.0.1:{port}"
    finally:
        deadline.cancel()
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def _wait_started(server: Any, thread: threading.Thread, timeout_s: float) -> None:
    """Block until the uvicorn ``server`` accepts connections."""
    end = time.monotonic() + timeout_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > end:
            raise UnolearnError("the local HTTP server did not start")
        time.sleep(0.01)


class FixedLatencyProtocol(asyncio.Protocol):
    """A bare HTTP/1.1 keep-alive server: every ``POST .../chat/completions`` is answered after a fixed delay.

    The serve benchmark's upstream. It costs a few tens of microseconds of CPU per request (an ASGI
    server costs about ten times more), so on a small machine the CPU it shares with the proxy under
    test goes to the proxy. Requests on one connection are answered in order; nothing is validated.
    """

    BODY = json.dumps(chat_completion("bench", "ok", prompt_tokens=2)).encode()
    OK = (b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n" % len(BODY)) + BODY
    NOT_FOUND = b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n"

    def __init__(self, latency_s: float) -> None:
        self.latency_s, self.buf = latency_s, b""
        self.transport: asyncio.Transport | None = None
        self.loop = asyncio.get_running_loop()

    def connection_made(self, transport: Any) -> None:  # noqa: D102
        self.transport = transport

    def data_received(self, data: bytes) -> None:  # noqa: D102
        self.buf += data
        while (end := self.buf.find(b"\r\n\r\n")) >= 0:
            request_line, *headers = self.buf[:end].lower().split(b"\r\n")
            length = next((int(v) for k, _, v in (h.partition(b":") for h in headers) if k == b"content-length"), 0)
            if len(self.buf) < end + 4 + length:
                return
            self.buf = self.buf[end + 4 + length:]
            method, path = (request_line.split(b" ") + [b"", b""])[:2]
            answer = self.OK if method == b"post" and path.endswith(b"/chat/completions") else self.NOT_FOUND
            self.loop.call_later(self.latency_s, self._send, answer)

    def _send(self, answer: bytes) -> None:
        assert self.transport is not None  # connection_made set it before any data came
        if not self.transport.is_closing():
            self.transport.write(answer)


async def serve_fixed_latency(latency_s: float, until: Awaitable[Any]) -> None:
    """Serve :class:`FixedLatencyProtocol` on a free port of 127.0.0.1, print its URL, stop when ``until`` ends."""
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: FixedLatencyProtocol(latency_s), "127.0.0.1", 0)
    print(f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}", flush=True)
    try:
        await until
    finally:
        server.close()
