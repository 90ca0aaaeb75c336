"""Benchmarks (``unolearn bench ...``): each measures one target side by side in one run and returns
JSON-ready figures. ``ingest``, ``cluster``, ``train``, ``throughput`` (against ``server``, a
fixed-latency OpenAI-compatible responder), ``serve`` (the proxy), ``quality`` and ``demo``."""

from __future__ import annotations

import os
import socket


def child_env(store: str | None = None, **extra: str) -> dict[str, str]:
    """The environment of a benchmark's child process: this one's without ``UNOLEARN_STORE``, so a child on a
    throwaway workspace never writes the team's store, unless ``store`` names the one it must use (passed
    here, not on its command line, where every user of the machine could read a password); unbuffered."""
    env = {k: v for k, v in os.environ.items() if k != "UNOLEARN_STORE"}
    if store is not None:
        env["UNOLEARN_STORE"] = store
    return {**env, "PYTHONUNBUFFERED": "1", **extra}


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on now (for a server a benchmark starts)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
