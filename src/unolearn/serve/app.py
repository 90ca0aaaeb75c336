"""The ASGI app and the server processes (uvicorn, one or several workers)."""

from __future__ import annotations

import dataclasses
import json
import os
from functools import partial
from pathlib import Path
from typing import Any, Literal, TypedDict

from ..config import BackendsConfig, backends_from_dict
from ..errors import ConfigError
from ..redact import RedactConfig
from . import otlp
from .config import ServeConfig
from .proxy import Proxy


def create_app(ws_dir: str | os.PathLike[str], cfg: ServeConfig | None = None, *, store: str | None = None,
               backends: BackendsConfig | None = None, redact: RedactConfig | None = None, **built: Any) -> Any:
    """The proxy's ASGI app on the workspace at ``ws_dir`` and its ``store`` (a URL; None: the workspace's SQLite).

    ``backends`` configures the embedder (routing) and, in embedded mode, the chat model; ``built``
    hands over ready instances as :class:`~unolearn.backends.Models` takes them (``generator=``,
    ``embedder=``). The proxy serves the newest published plan and picks up a newer one while it runs
    (``serve.reload_interval_s``, ``POST /v1/admin/reload``). What it records is redacted by ``redact``
    (default: the default :class:`~unolearn.redact.RedactConfig`)."""
    try:
        import aiohttp  # noqa: F401
        from starlette.applications import Starlette
        from starlette.routing import Route as HTTPRoute
    except ImportError as e:
        raise ConfigError("the proxy needs starlette, uvicorn and aiohttp: pip install 'unolearn[serve]'") from e
    proxy = Proxy(Path(ws_dir), cfg or ServeConfig(), backends, built, store, redact)
    routes = [HTTPRoute("/v1/chat/completions", proxy.chat, methods=["POST"]),
              HTTPRoute("/v1/feedback", proxy.feedback, methods=["POST"]),
              HTTPRoute("/v1/traces", partial(otlp.receive, proxy, signal="traces"), methods=["POST"]),
              HTTPRoute("/v1/logs", partial(otlp.receive, proxy, signal="logs"), methods=["POST"]),
              HTTPRoute("/v1/models", proxy.models_list, methods=["GET"]),
              HTTPRoute("/v1/admin/reload", proxy.admin_reload, methods=["POST"]),
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


class _UvicornOptions(TypedDict):
    """The keyword arguments :func:`serve` hands to ``uvicorn.run`` in every mode."""

    host: str
    port: int
    lifespan: Literal["auto", "on", "off"]
    access_log: bool
    log_level: str
    proxy_headers: bool
    timeout_graceful_shutdown: int


def serve(ws_dir: str | os.PathLike[str], cfg: ServeConfig | None = None, *, store: str | None = None,
          backends: BackendsConfig | None = None, redact: RedactConfig | None = None, **built: Any) -> None:
    """Run the proxy with uvicorn until interrupted (queued records are written before it exits).

    With ``cfg.workers`` > 1, uvicorn starts that many processes on one socket; each builds its app
    with :func:`worker_app` from the settings this process hands over in the environment.
    """
    try:
        import uvicorn
    except ImportError as e:
        raise ConfigError("the proxy needs starlette, uvicorn and aiohttp: pip install 'unolearn[serve]'") from e

    cfg = cfg or ServeConfig()
    cfg.check_exposure()
    run: _UvicornOptions = {"host": cfg.host, "port": cfg.port, "lifespan": "on", "access_log": False,
                            "log_level": "info", "proxy_headers": False, "timeout_graceful_shutdown": 10}
    if cfg.workers == 1:
        uvicorn.run(create_app(ws_dir, cfg, store=store, backends=backends, redact=redact, **built), **run)
        return
    if built:
        raise ConfigError("serve.workers > 1 builds its models in each worker; pass configurations, not instances")
    backends = backends or BackendsConfig()
    os.environ[WORKER_ENV] = json.dumps({"ws_dir": str(ws_dir), "store": store, "serve": dataclasses.asdict(cfg),
                                         "backends": dataclasses.asdict(backends),
                                         "redact": dataclasses.asdict(redact or RedactConfig())})
    uvicorn.run("unolearn.serve.app:worker_app", factory=True, workers=cfg.workers, **run)


def worker_app() -> Any:
    """The app of one worker process of :func:`serve` (its settings come from the environment)."""
    spec = json.loads(os.environ[WORKER_ENV])
    return create_app(spec["ws_dir"], ServeConfig(**spec["serve"]), store=spec["store"],
                      backends=backends_from_dict(spec["backends"]), redact=RedactConfig(**spec["redact"]))
