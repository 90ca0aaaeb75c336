"""Overhead of the routing proxy: the same load sent through it and directly to its upstream.

Honest figures on a small machine need the three parties in separate processes (threads of one
process would share one interpreter lock). The fixed-latency upstream is a bare asyncio protocol
(:class:`.server.FixedLatencyProtocol`), so that it takes little of the CPU the proxy needs. The
proxy is the real ``unolearn serve --upstream URL [--workers N]`` on a fresh empty workspace, so every
request takes the base path and routing's embedding cost is not part of the figure. Its store is the
workspace's SQLite file, or, given a PostgreSQL store, a throwaway database created on that server
for the run and dropped after it (the store's own tables are never touched). This process is
the client: a minimal keep-alive HTTP/1.1 client on asyncio streams (one connection per worker, on
uvloop when installed). After the proxied run, one feedback is posted per proxied response; the proxy
is then interrupted (its workers write what they queued) and the stored feedback is counted.

Run the upstream by hand: ``python -m unolearn.bench.serve LATENCY_S``; it prints its URL and serves
until its standard input closes.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ..errors import ConfigError, UnolearnError
from ..store.admin import scratch_store
from . import child_env, free_port

WARMUP = 200


#: What every benchmark request (and feedback) says: personal data the recorder must redact.
SAID = "hello proxy, I am bob.smith@example.com, call me at +1 415-555-0132"


def bench_serve(n: int = 2000, concurrency: int = 64, latency_s: float = 0.02, workers: int = 1,
                store: str | None = None, redact: bool = True) -> dict[str, Any]:
    """Send ``n`` chat requests at ``concurrency`` through the proxy and directly to the upstream.

    The proxy is the real ``unolearn serve --upstream URL --workers N`` in a child process, on a fresh
    workspace, its tables in a scratch database of ``store``'s server when that is PostgreSQL. Returns
    ``{"proxy": {"rps", "p50_ms", "p99_ms"}, "direct": {...}, "added_p50_ms", "errors", "lost_feedback",
    "feedback_errors", "cpu_ms_per_request": {"upstream", "proxy", "client"}, "store"}``; the CPU figures
    are per request of the proxied run (Linux only; the proxy's counts all its workers), to tell overhead
    from a busy machine; they count clock ticks (10 ms), so they need a few hundred requests to read above 0.
    Every request and feedback holds an e-mail address and a phone number, so the recorder redacts each row
    (``redact=False``: the proxy's ``redact: {enabled: false}``, to measure what redaction costs).
    """
    if n < 1 or concurrency < 1 or latency_s < 0 or workers < 1:
        raise ConfigError("n, concurrency and workers must be >= 1, latency_s >= 0")
    with tempfile.TemporaryDirectory(prefix="unolearn-bench-serve-") as tmp, scratch_store(store) as scratch:
        upstream = _Child(str(latency_s))
        try:
            (Path(tmp) / "ws").mkdir()
            (Path(tmp) / "ws" / "config.yaml").write_text(f"redact: {{enabled: {str(redact).lower()}}}\n")
            proxy = ServeProcess(Path(tmp) / "ws", upstream.url, workers, store=scratch)
            try:
                out = run_fast(_measure(upstream.url, proxy.url, n, concurrency,
                                        lambda: (_cpu_s([upstream.proc.pid])[0], sum(_cpu_s(proxy.pids())))))
            finally:
                proxy.stop()
        finally:
            upstream.stop()
        stored = _stored_feedback(Path(tmp) / "ws", out.pop("ids"), scratch)
    out["lost_feedback"] = out.pop("feedback_sent") - stored
    return {"n": n, "concurrency": concurrency, "latency_s": latency_s, "workers": workers,
            "store": "postgresql" if scratch else "sqlite", "redact": redact, **out}


async def _measure(upstream: str, proxy: str, n: int, concurrency: int,
                   servers_cpu: Callable[[], tuple[float, float]]) -> dict[str, Any]:
    """Warm both, run direct then proxied, then post one feedback per proxied response."""
    body = json.dumps({"model": "bench", "messages": [{"role": "user", "content": SAID}],
                       "max_tokens": 8}).encode()
    for url in (upstream, proxy):
        await _load(url, "/v1/chat/completions", [body] * WARMUP, concurrency)
    direct = await _load(upstream, "/v1/chat/completions", [body] * n, concurrency)
    cpu = [*servers_cpu(), time.process_time()]
    proxied = await _load(proxy, "/v1/chat/completions", [body] * n, concurrency)
    cpu = [round((b - a) / n * 1000, 3) for a, b in zip(cpu, [*servers_cpu(), time.process_time()])]
    ids = [json.loads(r)["id"] for s, r in proxied.answers if s == 200]
    feedback = [json.dumps({"response_id": i, "action": "like", "text": f"good. {SAID}"}).encode() for i in ids]
    sent = await _load(proxy, "/v1/feedback", feedback, concurrency)
    direct_s, proxy_s = direct.summary(), proxied.summary()
    return {"proxy": proxy_s, "direct": direct_s, "added_p50_ms": round(proxy_s["p50_ms"] - direct_s["p50_ms"], 2),
            "errors": direct.errors + proxied.errors, "feedback_errors": sent.errors,
            "cpu_ms_per_request": {"upstream": cpu[0], "proxy": cpu[1], "client": cpu[2]},
            "feedback_sent": len(ids), "ids": ids}


class Run:
    """Latencies, answers and errors of one load run."""

    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.answers: list[tuple[int, bytes]] = []
        self.errors = 0
        self.seconds = 0.0

    def summary(self) -> dict[str, float]:
        """Requests per second, median and 99th percentile latency (ms)."""
        lat = sorted(self.latencies) or [0.0]
        p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
        return {"rps": round(len(self.latencies) / self.seconds, 1) if self.seconds else 0.0,
                "p50_ms": round(statistics.median(lat) * 1000, 2), "p99_ms": round(p99 * 1000, 2)}


async def _load(url: str, path: str, bodies: list[bytes], concurrency: int) -> Run:
    """POST every body with ``concurrency`` workers, each on its own keep-alive connection."""
    run, todo = Run(), iter(bodies)
    host, port = urlsplit(url).hostname, urlsplit(url).port
    assert host is not None, f"no host in {url}"

    async def worker() -> None:
        conn = None
        for body in todo:
            start = time.perf_counter()
            try:
                conn = conn or await asyncio.open_connection(host, port)
                status, answer = await _post(*conn, host, path, body)
            except (OSError, asyncio.IncompleteReadError, ValueError):
                run.errors += 1
                conn = None
                continue
            run.latencies.append(time.perf_counter() - start)
            run.answers.append((status, answer))
            run.errors += status != 200
        if conn:
            conn[1].close()

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    run.seconds = time.perf_counter() - start
    return run


async def _post(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str, path: str,
                body: bytes) -> tuple[int, bytes]:
    """One HTTP/1.1 POST on a kept-alive connection; the answer must carry a Content-Length."""
    writer.write(f"POST {path} HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\n"
                 f"content-length: {len(body)}\r\n\r\n".encode() + body)
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    length = next(int(v) for k, _, v in (h.partition(":") for h in lines[1:]) if k.lower() == "content-length")
    return status, await reader.readexactly(length)


class _Child:
    """A server in a child process; its URL is the first line it prints."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "unolearn.bench.serve", *args], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, env=child_env())
        assert self.proc.stdout is not None  # stdout=PIPE
        self.url = (self.proc.stdout.readline() or "").strip()
        if not self.url.startswith("http://"):
            self.stop()
            raise UnolearnError("the benchmark's upstream server did not start")

    def stop(self) -> None:
        """Close its standard input (it shuts down, flushing what it queued) and wait for it."""
        if self.proc.stdin and not self.proc.stdin.closed:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class ServeProcess:
    """``unolearn serve --upstream URL`` (``--embedded`` when ``upstream`` is None) on a free port of
    127.0.0.1, in a child process, on ``store`` (given in its environment, not on its command line, which
    other users of the machine can read).

    Without ``store`` it uses the workspace's SQLite file, whatever ``$UNOLEARN_STORE`` says; ``env`` adds
    environment variables (the embedder's settings, say), ``args`` more ``serve`` options. ``ready_timeout_s``:
    how long its redaction process may take to load (it returns as soon as it has; a CI run on 2 cores shared
    with a training job once took over 60 s).
    """

    def __init__(self, ws_dir: Path, upstream: str | None, workers: int, ready_timeout_s: float = 300.0, *,
                 store: str | None = None, env: dict[str, str] | None = None, args: Sequence[str] = ()) -> None:
        port = free_port()
        target = ["--upstream", upstream] if upstream else ["--embedded"]
        cmd = [sys.executable, "-m", "unolearn", "-d", str(ws_dir),
               "serve", *target, "--port", str(port), "--workers", str(workers), *args]
        self.log = ws_dir.parent / f"serve-{port}.log"  # a file, not a pipe: a full pipe would stall the server
        with self.log.open("w") as log:
            self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log,
                                         env=child_env(store, UNOLEARN_SERVE_KEY="", **(env or {})))
        self.url = f"http://127.0.0.1:{port}"
        self._wait_ready(port, ready_timeout_s)

    def _wait_ready(self, port: int, timeout_s: float) -> None:
        """Until ``/healthz`` answers (a worker has started) with its redaction process loaded (steady state is
        measured, not the seconds after a start); the warm-up then reaches the others."""
        end = time.monotonic() + timeout_s
        while time.monotonic() < end and self.proc.poll() is None:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            try:
                conn.request("GET", "/healthz")
                resp = conn.getresponse()
                if resp.status == 200 and json.loads(resp.read()).get("redaction") != "thread":
                    return
            except OSError:
                pass
            finally:
                conn.close()
            time.sleep(0.1)
        self.stop()
        raise UnolearnError(f"unolearn serve did not start: {self.log.read_text().strip()[-500:]}")

    def pids(self) -> list[int]:
        """The server's process and its workers."""
        try:
            children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split()
        except OSError:
            children = []
        return [self.proc.pid, *map(int, children)]

    def stop(self) -> None:
        """Interrupt it (it writes what it queued, then exits) and wait."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _cpu_s(pids: list[int] | tuple[int, ...]) -> list[float]:
    """CPU seconds (user + system) used so far by each process (Linux ``/proc``; 0 elsewhere)."""
    out = []
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            out.append((int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"))
        except (OSError, IndexError, ValueError):
            out.append(0.0)
    return out


def _stored_feedback(ws_dir: Path, ids: list[str], store: str | None) -> int:
    """How many of ``ids`` have a stored feedback."""
    from ..store import Workspace

    with Workspace.open(ws_dir, store) as ws:
        stored = ws.responses_with_feedback()
    return len(stored & set(ids))


def run_fast(coro: Any) -> Any:
    """Run ``coro`` on a uvloop event loop when uvloop is installed (as uvicorn does), else on asyncio's."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


def _main(argv: list[str]) -> None:
    """Child process entry (the upstream): serve until standard input closes."""
    from .server import serve_fixed_latency

    async def upstream() -> None:
        stdin_closed = asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
        await serve_fixed_latency(float(argv[0]), stdin_closed)

    run_fast(upstream())


if __name__ == "__main__":
    _main(sys.argv[1:])
