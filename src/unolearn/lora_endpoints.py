"""vLLM's runtime LoRA endpoints, spoken in one place for the HTTP backend (``select`` and the benchmarks load
experts and critics through it) and the proxy (``serve --load-adapters``).

Each caller brings its own transport — httpx with retries in the backend, the proxy's aiohttp upstream — as a
``post(path, body)`` that raises :class:`~unolearn.errors.BackendHTTPError` when the server refuses; what the
server's answers mean is decided here.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from .errors import BackendHTTPError

LOAD = "/load_lora_adapter"
UNLOAD = "/unload_lora_adapter"
#: Why a server refuses the endpoints with 404 or 405.
NOT_ENABLED = ("a vLLM server loads adapters at run time only when started with --enable-lora and "
               "VLLM_ALLOW_RUNTIME_LORA_UPDATING=True")

#: Why a server that has the endpoints refuses a folder (vLLM 0.32: 404 "Loading lora NAME failed: No adapter found
#: for PATH"): it reads the folder itself, at the path it is given.
UNREADABLE = ("the server reads the adapter folder itself and cannot at {path}: it must see the workspace's "
              "artifacts folder at the same path (a shared file system, or the folder copied there)")

#: POST one JSON body to the server; raises BackendHTTPError on a refusal.
Post = Callable[[str, dict[str, Any]], Awaitable[Any]]


async def load_adapter(post: Post, name: str, path: str) -> None:
    """Load the adapter folder ``path`` (as the server sees it) under ``name``; one already loaded is success."""
    try:
        await post(LOAD, {"lora_name": name, "lora_path": path})
    except BackendHTTPError as e:
        text = str(e).lower()
        if "already" in text:
            return
        if "no adapter found" in text or "loading lora" in text:  # the endpoint exists; the folder is not there
            raise BackendHTTPError(f"{e} ({UNREADABLE.format(path=path)})", status=e.status, retryable=False) from e
        if e.status in (404, 405):
            raise BackendHTTPError(f"{e} ({NOT_ENABLED})", status=e.status, retryable=False) from e
        raise


async def unload_adapter(post: Post, name: str) -> None:
    """Unload the adapter ``name``; one the server does not know is not an error."""
    try:
        await post(UNLOAD, {"lora_name": name})
    except BackendHTTPError as e:
        text = str(e).lower()
        if name.lower() in text and ("not found" in text or "cannot be found" in text):
            return
        raise
