"""Throughput of the OpenAI-compatible chat backend: sequential vs concurrent requests.

Both runs send the same ``n`` requests to a local fixed-latency responder (:mod:`.server`), so
the ratio measures how well :class:`~.backends.openai_http.OpenAIChatModel` overlaps requests
(ideally ``concurrency``), not a model's speed.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from ..backends.base import ChatRequest
from ..backends.openai_http import OpenAIChatModel
from ..errors import BackendError, ConfigError
from .server import fixed_latency_app, serve_asgi


def bench_throughput(n: int = 200, latency_s: float = 0.1, concurrency: int = 16) -> dict[str, Any]:
    """Send ``n`` requests with concurrency 1, then with ``concurrency``, to a responder answering after
    ``latency_s``; returns requests per second of both runs and their ratio."""
    if n < 1 or latency_s < 0 or concurrency < 1:
        raise ConfigError("n and concurrency must be >= 1, latency_s >= 0")
    with serve_asgi(fixed_latency_app(latency_s)) as url:
        sequential = _requests_per_s(url, n, 1)
        concurrent = _requests_per_s(url, n, concurrency)
    return {"n": n, "latency_s": latency_s, "concurrency": concurrency,
            "sequential_rps": round(sequential, 2), "concurrent_rps": round(concurrent, 2),
            "ratio": round(concurrent / sequential, 2)}


def _requests_per_s(url: str, n: int, concurrency: int) -> float:
    """Run ``n`` distinct requests through a fresh model; fails if any request failed."""
    model = OpenAIChatModel(url, "bench", api_key="", concurrency=concurrency, max_retries=0, timeout_s=60)
    requests = [ChatRequest.of(f"benchmark request {i}", max_tokens=8) for i in range(n)]

    async def run() -> float:
        try:
            start = time.perf_counter()
            results = await model.generate(requests, progress=False)
            seconds = time.perf_counter() - start
        finally:
            await model.aclose()
        if failed := [r for r in results if not r.ok]:
            raise BackendError(f"{len(failed)} of {n} benchmark requests failed: {failed[0].error}")
        return n / seconds

    return asyncio.run(run())
