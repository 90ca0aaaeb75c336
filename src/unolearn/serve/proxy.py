"""The proxy: routes each request through the published plan, to the upstream or the embedded model.

The plan is a published snapshot (:class:`unolearn.snapshot.PlanSnapshot`). The proxy picks up a newer
one while it runs (:meth:`Proxy.reload`: polled, or ``POST /v1/admin/reload``): the adapters of the new
plan are loaded into the upstream first, then the snapshot is swapped in one assignment; a request keeps
the snapshot it was routed by, and adapters no longer planned are unloaded after their last request.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import re
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # annotations only: the upstream client imports it (the serve extra); collect_served does not
    import aiohttp

from ..answer import Route, answer, reflect
from ..backends import Models
from ..config import BackendsConfig
from ..errors import BackendHTTPError, ConfigError, UnolearnError, loads_json
from ..lora_endpoints import load_adapter, unload_adapter
from ..names import PathName
from ..plans import adapter_name, epoch_dir
from ..prompts import guide_messages
from ..redact import RedactConfig, Redactor
from ..snapshot import PlanSnapshot
from ..store import Workspace, now
from ..tenants import DEFAULT_TENANT, open_tenant
from ..wire import chunks, completion, sse, text_of
from .config import EMBEDDED_MODEL, SYSTEM_HEADER, ServeConfig, tenants_of
from .metrics import Metrics
from .problems import HTTPProblem, UpstreamError, error_body, error_response
from .recorder import Recorder, served_row
from .tenancy import TenantPlan, operator_only, own_models
from .upstream import Relayed, Upstream, content_of, finish_of, usage_of
from .wire import Chat, Composed, parse_chat, parse_feedback, route_header

log = logging.getLogger(__name__)

CLIENT_CLOSED = 499  # the status counted for a stream whose client left before it began (nginx's code)


class Proxy:
    """The app's state and handlers (one instance per app)."""

    def __init__(self, ws_dir: Path, cfg: ServeConfig, backends: BackendsConfig | None, built: dict[str, Any],
                 store: str | None = None, redact: RedactConfig | None = None):
        self.ws_dir, self.cfg, self.store = Path(ws_dir), cfg, store
        keys = cfg.tenant_keys()  # read once: a keys file is read here, not again per use
        self.keys = {_digest(f"Bearer {key}"): tenant for key, tenant in keys.items()}
        self.ws = Workspace.open(ws_dir, store)
        self.tenants: dict[str, TenantPlan] = {}
        self.metrics = Metrics()
        self.models = Models(self.ws, backends, **built) if cfg.upstream is None else None
        self.upstream = (Upstream(cfg.upstream, cfg.upstream_api_key, cfg.upstream_timeout_s,
                                  cfg.upstream_connections) if cfg.upstream else None)
        self._backends, self._built = backends, built
        self._route_models: Models | None = None
        self.inflight: Counter[tuple[str, int | None]] = Counter()  # (tenant, plan id) → requests not yet answered
        self.retiring: dict[tuple[str, int], set[str]] = {}  # (tenant, plan id) → adapters to unload after it
        self.loaded: set[str] = set()  # adapters this proxy loaded into the upstream
        self.reloads, self.reload_s, self._reload_lock = 0, 0.0, asyncio.Lock()
        try:
            self._route_pool = ThreadPoolExecutor(1, thread_name_prefix="unolearn-route")
            for name in tenants_of(keys):
                self.tenants[name] = self._open_tenant(name)
        except BaseException:
            self._close_workspaces()
            raise
        self.recorder = Recorder(self.ws_dir, cfg.write_batch, cfg.write_linger_s, store=store,
                                 redactor=Redactor(redact),
                                 places={n: (t.ws.root, t.ws.store) for n, t in self.tenants.items()})

    def _open_tenant(self, name: str) -> TenantPlan:
        """Open tenant ``name``'s workspaces (created when new) and load the plan it serves."""
        ws = open_tenant(self.ws, name, create=True)
        tenant = TenantPlan(name, ws, ws.reopen())  # routing and snapshot reads: their own connection and thread
        if self.models is not None:
            tenant.models = self.models if ws is self.ws else self.models.for_workspace(ws)
        if self._route_models is None:  # the first tenant, the default one: the embedder is built when first used
            embedder = {k: v for k, v in self._built.items() if k == "embedder"}
            self._route_models = tenant.route_models = Models(tenant.route_ws, self._backends, **embedder)
        else:
            tenant.route_models = self._route_models.for_workspace(tenant.route_ws)
        tenant.snapshot = self._load_snapshot(tenant, tenant.route_ws.latest_snapshot_id())
        return tenant

    @property
    def snapshot(self) -> PlanSnapshot | None:
        """The plan the default tenant is served now (None: no plan yet)."""
        return self.tenants[DEFAULT_TENANT].snapshot

    @property
    def router(self) -> Any:
        """The router of the default tenant's plan (None: no plan yet, every request goes to the base model)."""
        return self.snapshot.router if self.snapshot else None

    def _load_snapshot(self, tenant: TenantPlan, snapshot_id: int | None) -> PlanSnapshot | None:
        """Load a published snapshot of ``tenant`` on its routing connection (None: none published)."""
        if snapshot_id is None:
            return None
        assert tenant.route_models is not None  # set when the tenant is opened
        return PlanSnapshot.load(tenant.route_ws, tenant.route_models.embedder, snapshot_id)

    @asynccontextmanager
    async def lifespan(self, app: Any) -> AsyncIterator[None]:
        """Start the recorder and the upstream client (loading adapters if asked); flush and close at the end."""
        await self.recorder.start()
        if self.upstream:
            await self.upstream.start()
        poller = None
        try:
            if self.cfg.load_adapters:
                for tenant in self.tenants.values():
                    if tenant.snapshot:
                        await self.load_adapters(tenant.snapshot)
            if self.cfg.reload_interval_s > 0:
                poller = asyncio.create_task(self.poll())
            yield
        finally:
            if poller:
                poller.cancel()
            await self.recorder.close()
            await self.close()

    async def close(self) -> None:
        """Release clients, threads and connections (the recorder closes apart)."""
        if self.upstream:
            await self.upstream.close()
        if self.models:
            await self.models.aclose()
        self._route_pool.shutdown()
        self._close_workspaces()

    def _close_workspaces(self) -> None:
        """Close every tenant's connections and the workspace's."""
        for tenant in self.tenants.values():
            tenant.route_ws.close()
            if tenant.ws is not self.ws:
                tenant.ws.close()
        self.ws.close()

    async def load_adapters(self, snapshot: PlanSnapshot) -> list[str]:
        """Load the adapters ``snapshot`` plans that this proxy has not loaded yet into the upstream (vLLM
        ``/load_lora_adapter``); their names."""
        names = []
        for module_id, epoch, path in snapshot.adapters:
            name = adapter_name(module_id, epoch)
            if name in self.loaded:
                continue
            try:
                await load_adapter(self._adapter_post, name, str(epoch_dir(path, epoch)))
            except BackendHTTPError as e:
                if e.status in (404, 405):
                    raise ConfigError(f"cannot load adapter {name}: {e}") from e
                raise (e.__cause__ if isinstance(e.__cause__, UpstreamError) else e) from None
            self.loaded.add(name)
            names.append(name)
        log.info("loaded %d adapters into %s", len(names), self.cfg.upstream)
        return names

    async def _adapter_post(self, path: str, body: dict[str, Any]) -> bytes:
        """POST to the upstream's adapter endpoints; a refusal as the backend's error (see lora_endpoints)."""
        assert self.upstream is not None  # upstream mode only
        try:
            return await self.upstream.read("POST", path, json.dumps(body).encode())
        except UpstreamError as e:
            raise BackendHTTPError(str(e), status=e.http_status, retryable=False) from e

    # -- the plan: reload, requests in flight, retired adapters --

    async def poll(self) -> None:
        """Reload every ``reload_interval_s`` (a failed reload is logged and tried again next time)."""
        while True:
            await asyncio.sleep(self.cfg.reload_interval_s)
            try:
                await self.reload()
            except Exception:  # noqa: BLE001 — the proxy keeps serving the plan it has
                log.exception("reloading the plan failed; still serving plan %s", self.plan_id)

    async def reload(self) -> dict[str, Any]:
        """Swap in each tenant's newest published snapshot when it is newer than the one it is served; what
        happened to the default tenant's plan (and with several tenants, each one's plan id)."""
        async with self._reload_lock:
            out = {name: await self._reload_tenant(tenant) for name, tenant in self.tenants.items()}
        result = out[DEFAULT_TENANT]
        if len(out) > 1:
            result["tenants"] = {name: r["plan_id"] for name, r in out.items()}
        return result

    async def _reload_tenant(self, tenant: TenantPlan) -> dict[str, Any]:
        """Swap in ``tenant``'s newest snapshot when it is newer than the one it is served.

        Its adapters are loaded into the upstream before the swap (with ``load_adapters``); requests
        already routed finish on the old plan, and the adapters only it used are unloaded after them.
        """
        start, loop, old = time.perf_counter(), asyncio.get_running_loop(), tenant.snapshot
        newest = await loop.run_in_executor(self._route_pool, tenant.route_ws.latest_snapshot_id)
        if newest is None or (old is not None and newest <= old.id):
            return {"plan_id": tenant.plan_id, "reloaded": False}
        new = await loop.run_in_executor(self._route_pool, self._load_snapshot, tenant, newest)
        assert new is not None  # newest is a published snapshot's id
        if self.upstream and self.cfg.load_adapters:
            await self.load_adapters(new)
        tenant.snapshot = new  # one assignment: a request is routed by the old plan or by the new one
        self.reloads, self.reload_s = self.reloads + 1, time.perf_counter() - start
        if old is not None and self.upstream and self.cfg.load_adapters:
            self.retiring[(tenant.name, old.id)] = old.adapter_names() - new.adapter_names()
            self.release(tenant.name, old.id, 0)
        log.info("tenant %s: serving plan %s (was %s), reloaded in %.3f s", tenant.name, new.id,
                 old.id if old else None, self.reload_s)
        return {"plan_id": new.id, "reloaded": True, "previous_plan_id": old.id if old else None,
                "reload_s": round(self.reload_s, 4)}

    @property
    def plan_id(self) -> int | None:
        """The id of the plan the default tenant is served now (None: none published yet)."""
        return self.snapshot.id if self.snapshot else None

    def planned(self) -> set[str]:
        """The adapters some tenant's served plan uses."""
        return {name for t in self.tenants.values() if t.snapshot for name in t.snapshot.adapter_names()}

    def release(self, tenant: str, plan_id: int | None, n: int = 1) -> None:
        """A request of ``tenant`` routed by plan ``plan_id`` ended; once a retired plan has none left, unload
        the adapters no served plan uses."""
        key = (tenant, plan_id)
        self.inflight[key] -= n
        if self.inflight[key] <= 0 and key in self.retiring:
            del self.inflight[key]
            names = self.retiring.pop(key) - self.planned()
            if names:
                asyncio.get_running_loop().create_task(self.unload_adapters(names))

    async def unload_adapters(self, names: set[str]) -> None:
        """Unload adapters no plan in flight uses any more (vLLM ``/unload_lora_adapter``); failures are logged."""
        for name in sorted(names):
            if name in self.planned():
                continue  # planned again meanwhile
            try:
                await unload_adapter(self._adapter_post, name)
                self.loaded.discard(name)
            except BackendHTTPError as e:
                log.warning("could not unload adapter %s: %s", name, e)

    # -- auth and bodies --

    def authorize(self, request: Any) -> TenantPlan:
        """The tenant of the request's bearer key; 401 unless it carries a configured key (none configured: every
        request is the default tenant's). Keys are looked up by their SHA-256, so the time taken tells nothing
        about how much of a key was right, however many keys there are."""
        if not self.keys:
            return self.tenants[DEFAULT_TENANT]
        found = self.keys.get(_digest(request.headers.get("authorization", "")))
        if found is None:
            raise HTTPProblem("missing or wrong API key (Authorization: Bearer <key>)", 401, "invalid_api_key")
        return self.tenants[found]

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
        start, route, tenant = time.perf_counter(), None, DEFAULT_TENANT
        try:
            tenant = self.authorize(request).name
            system = request.headers.get(SYSTEM_HEADER, self.cfg.system)
            chat = parse_chat(await self.read_body(request), system, self.cfg.max_messages, tenant)
            route = await self.plan(chat)
            refuse_foreign_adapter(chat, route)
            resp = await self.dispatch(chat, route, start)
        except UnolearnError as e:
            self.count_error(e)
            resp = error_response(e)
        except Exception:  # noqa: BLE001 — a bug: logged here, never sent to the client
            log.exception("unexpected error in /v1/chat/completions")
            resp = error_response(HTTPProblem("internal error", 500, "internal_error", "server_error"))
        if not getattr(resp, "streams", False):
            self.finished(tenant, route, resp.status_code, start)
        return resp

    def finished(self, tenant: str, route: Route | None, status: int, start: float) -> None:
        """Count a chat request of ``tenant`` that ended (with its stream, for a streaming one) and release its
        plan."""
        self.metrics.observe(route.path if route else "none", status, time.perf_counter() - start)
        if route is not None:
            self.release(tenant, route.plan_id)

    def count_error(self, e: UnolearnError) -> None:
        """Count an upstream failure in the metrics."""
        if isinstance(e, UpstreamError):
            self.metrics.upstream_errors[e.kind] += 1

    async def plan(self, chat: Chat) -> Route:
        """The route of ``chat`` by the plan its tenant is served now, which counts it in flight until
        :meth:`finished` (embedding runs on the routing thread)."""
        snapshot = self.tenants[chat.tenant].snapshot
        plan_id = snapshot.id if snapshot else None
        self.inflight[(chat.tenant, plan_id)] += 1
        if snapshot is None or chat.system == "base":
            return Route(chat.system, PathName.BASE, plan_id=plan_id)
        try:
            return await asyncio.get_running_loop().run_in_executor(self._route_pool, snapshot.route,
                                                                    chat.query, chat.system)
        except BaseException:
            self.release(chat.tenant, plan_id)
            raise

    async def dispatch(self, chat: Chat, route: Route, start: float) -> Any:
        """Answer ``chat`` along ``route``."""
        if self.upstream is None:
            composed = await self.embedded(chat, route)
        elif route.path == PathName.REFLECTIVE:
            composed = await self.reflective(chat, route)
        elif route.path == PathName.GUIDE:
            assert route.guide is not None  # planned_route sends a guide that is gone along the base path
            body = json.dumps({**chat.body, "messages": guide_messages(chat.body["messages"], route.guide)}).encode()
            return await (self.relay_stream(chat, route, body, chat.model, start) if chat.stream
                          else self.relay(chat, route, body, chat.model))
        else:
            body = chat.raw if route.path == PathName.BASE else json.dumps(
                {**chat.body, "model": adapter_name(*route.adapter())}).encode()
            model = chat.model if route.path == PathName.BASE else adapter_name(*route.adapter())
            if chat.stream:
                return await self.relay_stream(chat, route, body, model, start)
            return await self.relay(chat, route, body, model)
        return self.final(chat, route, composed, start)

    async def relay(self, chat: Chat, route: Route, body: bytes, model: str) -> Any:
        """Forward a non-streaming request; answer the upstream's JSON with our response id."""
        from starlette.responses import Response

        assert self.upstream is not None  # upstream mode only
        data = await self.upstream.post("/chat/completions", body)
        data["id"] = chat.rid
        self.record(chat, route, content_of(data), model)
        return Response(json.dumps(data), media_type="application/json", headers=self.headers(chat, route))

    async def relay_stream(self, chat: Chat, route: Route, body: bytes, model: str, start: float) -> Any:
        """Forward a streaming request; relay its events as they come, with our response id."""
        assert self.upstream is not None  # upstream mode only
        resp = await self.upstream.open_stream(body)
        ended: list[int] = []

        def end(status: int) -> None:  # once: by the generator's finally, or by Relayed if it never ran
            if not ended:
                ended.append(status)
                self.finished(chat.tenant, route, status, start)

        return Relayed(self.streaming(self.events(resp, chat, route, model, end), chat, route), resp,
                       on_close=lambda: end(CLIENT_CLOSED))

    async def events(self, resp: aiohttp.ClientResponse, chat: Chat, route: Route, model: str,
                     end: Callable[[int], None]) -> AsyncIterator[bytes]:
        """The upstream's SSE events, ids replaced; the answer is recorded before ``[DONE]`` goes out."""
        assert self.upstream is not None  # upstream mode only
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
            end(status)
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
            obj = loads_json(payload)
        except ValueError:
            return event + b"\n\n", False
        if isinstance(obj, dict) and "id" in obj:
            obj["id"] = chat.rid
            for choice in obj.get("choices") or []:
                if choice.get("index", 0) == 0:
                    parts.append((choice.get("delta") or {}).get("content") or "")
        return sse(obj), False

    async def reflective(self, chat: Chat, route: Route) -> Composed:
        """Draft, critic rules, revision: three upstream calls; returns the revised answer."""
        upstream = self.upstream
        assert upstream is not None  # upstream mode only
        body = {k: v for k, v in chat.body.items() if k not in ("stream", "stream_options")}
        draft, d1 = await upstream.complete(body)

        async def call(msgs: list[dict[str, Any]], adapter: str | None, max_tokens: int | None) -> tuple[str, Any]:
            if max_tokens is None:
                return await upstream.complete({**body, "messages": msgs})
            return await upstream.complete({"model": adapter, "temperature": 0.0, "messages": msgs,
                                            "max_tokens": max_tokens, "seed": body.get("seed", 42)})

        critic = adapter_name(*route.adapter())
        revised, _, (d2, d3) = await reflect(call, body["messages"], draft, critic, chat.query)
        return Composed(revised, usage_of(d1, d2, d3), chat.model, finish_of(d3))

    async def embedded(self, chat: Chat, route: Route) -> Composed:
        """Answer with the workspace's own chat backend (:func:`unolearn.answer.answer`)."""
        messages = [{"role": m["role"], "content": text_of(m.get("content"))} for m in chat.body["messages"]]
        kw = {"max_tokens": int(chat.body.get("max_tokens") or chat.body.get("max_completion_tokens") or 512),
              "temperature": float(chat.body.get("temperature") or 0.0), "seed": chat.body.get("seed", 42)}
        tenant = self.tenants[chat.tenant]
        assert self.models is not None and tenant.models is not None  # embedded mode
        router = tenant.snapshot.router if tenant.snapshot else None
        out = await answer(tenant.ws, tenant.models, router, messages, chat.system, route=route, **kw)
        return Composed(out.text, out.usage, self.models.generator.model_id, out.finish_reason or "stop")

    def final(self, chat: Chat, route: Route, out: Composed, start: float) -> Any:
        """Answer a text the proxy composed (JSON, or SSE events when streaming); record it."""
        from starlette.responses import Response

        self.record(chat, route, out.text, out.model)
        shown = chat.model or out.model
        if not chat.stream:
            body = json.dumps(completion(chat.rid, shown, out.text, out.usage, out.finish_reason))
            return Response(body, media_type="application/json", headers=self.headers(chat, route))
        sent = chunks(chat.rid, shown, out.text, out.usage if chat.include_usage else None, out.finish_reason)

        async def events() -> AsyncIterator[bytes]:
            try:
                for c in sent:
                    yield c
            finally:
                self.finished(chat.tenant, route, 200, start)

        return self.streaming(events(), chat, route)

    def streaming(self, events: AsyncIterator[bytes], chat: Chat, route: Route) -> Any:
        """An SSE response (its metrics are counted when the stream ends)."""
        from starlette.responses import StreamingResponse

        resp = StreamingResponse(events, media_type="text/event-stream",
                                 headers={**self.headers(chat, route), "cache-control": "no-cache"})
        resp.streams = True  # type: ignore[attr-defined]  # the mark chat() reads (getattr) on every response
        return resp

    @staticmethod
    def headers(chat: Chat, route: Route) -> dict[str, str]:
        """The unolearn response headers."""
        return {"x-unolearn-route": route_header(route), "x-unolearn-response-id": chat.rid}

    def record(self, chat: Chat, route: Route, text: str, model: str) -> None:
        """Queue the served interaction for storage (a NUL the upstream answered with left out: no store keeps
        it in text, and the request was checked for one already)."""
        self.recorder.served(served_row(chat.rid, chat.body["messages"], text, json.dumps(vars(route)), model,
                                        chat.user), chat.tenant)

    async def feedback(self, request: Any) -> Any:
        """``POST /v1/feedback``."""
        from starlette.responses import JSONResponse

        try:
            tenant = self.authorize(request).name
            fb = parse_feedback(await self.read_body(request))
            await self.admit_feedback(fb.response_id, tenant, fb.user)
            await self.recorder.feedback((fb.response_id, fb.text, fb.action, fb.edited, now()), tenant)
        except UnolearnError as e:
            return error_response(e)
        self.metrics.feedback[fb.action or "none"] += 1
        return JSONResponse({"object": "feedback", "response_id": fb.response_id, "stored": True})

    async def admit_feedback(self, rid: str, tenant: str, user: str | None, *, app_attests: bool = False) -> None:
        """An HTTPProblem unless feedback from ``user`` may be stored on answer ``rid`` of ``tenant``: the answer
        exists, comes from that user (``app_attests``: or names none, from the app holding the key), and has had
        fewer than ``feedback_per_response``."""
        served = await self.served_soon(rid, tenant)
        if served is None:
            raise HTTPProblem(f"no response {rid!r}", 404, "response_not_found", param="response_id")
        answered, given = served
        if answered is not None and user != answered and not (app_attests and user is None):
            raise HTTPProblem("feedback on this answer must come from the user it answered", 403, "feedback_forbidden",
                              param="user")
        if given >= self.cfg.feedback_per_response:
            raise HTTPProblem(f"at most {self.cfg.feedback_per_response} feedbacks per response", 429,
                              "too_much_feedback")

    async def served_soon(self, rid: str, tenant: str) -> tuple[str | None, int] | None:
        """``(user, feedbacks so far)`` when ``rid`` was served to ``tenant``, else None. With several workers,
        or on a store named with ``--store`` (which other processes may share, a SQLite file too), an id not seen
        yet is looked up again for a while, since another process may still hold the row in its queue (linger
        plus one commit, longer on a busy machine, where the other worker's redaction process yields the CPU:
        up to 12.8 s in all, as 3.2 s lost 7 of 400 feedbacks on 2 cores under load); a lone worker on its
        workspace's own file knows its queue, so its first answer is final."""
        alone = self.cfg.workers == 1 and self.store is None
        waits = (0.0,) if alone else (0.0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.4)
        for wait in waits:
            await asyncio.sleep(wait)
            if (served := await self.recorder.served_info(rid, tenant)) is not None:
                return served
        return None

    async def models_list(self, request: Any) -> Any:
        """``GET /v1/models``."""
        from starlette.responses import JSONResponse, Response

        try:
            tenant = self.authorize(request)
            if self.upstream is None:
                return JSONResponse({"object": "list", "data": [
                    {"id": EMBEDDED_MODEL, "object": "model", "created": 0, "owned_by": "unolearn"}]})
            listing = own_models(await self.upstream.models(), tenant, self.loaded)
            return Response(listing, media_type="application/json")
        except UnolearnError as e:
            self.count_error(e)
            return error_response(e)

    async def healthz(self, request: Any) -> Any:
        """``GET /healthz`` (no auth)."""
        from starlette.responses import JSONResponse

        return JSONResponse({"status": "ok", "mode": "embedded" if self.upstream is None else "upstream",
                             "routing": self.router is not None, "system": self.cfg.system,
                             "pid": os.getpid(), "plan_id": self.plan_id,
                             "plan_age_s": round(self.snapshot.age_s(), 1) if self.snapshot else None,
                             "redaction": self.recorder.redaction, "tenants": len(self.tenants)})

    async def admin_reload(self, request: Any) -> Any:
        """``POST /v1/admin/reload``: serve the newest published plan now (behind the serve key)."""
        from starlette.responses import JSONResponse

        try:
            operator_only(self.authorize(request))
            return JSONResponse({"object": "reload", **await self.reload()})
        except UnolearnError as e:
            return error_response(e)

    async def metrics_text(self, request: Any) -> Any:
        """``GET /metrics``."""
        from starlette.responses import PlainTextResponse

        try:
            operator_only(self.authorize(request))
        except UnolearnError as e:
            return error_response(e)
        depth = self.recorder.queue.qsize() if self.recorder.queue else 0
        plan = (self.plan_id, self.snapshot.age_s() if self.snapshot else None, self.reloads)
        return PlainTextResponse(self.metrics.render(depth, plan), media_type="text/plain; version=0.0.4")


def _digest(text: str) -> bytes:
    """The SHA-256 of ``text`` (UTF-8; a lone surrogate, which no key holds, replaced)."""
    return hashlib.sha256(text.encode("utf-8", "replace")).digest()


#: The name of one of unolearn's adapters (a module id and an epoch), as the upstream knows them.
ADAPTER_NAME = re.compile(r"(?:expert|critic)-v\d+-[0-9a-f]{24}@\d+")


def refuse_foreign_adapter(chat: Chat, route: Route) -> None:
    """403 when the request names one of unolearn's adapters as its model and its plan did not route it there:
    routing chooses adapters, a client does not (the base and guide paths forward the client's model)."""
    if not ADAPTER_NAME.fullmatch(chat.model):
        return
    planned = adapter_name(route.module_id, route.epoch) if route.module_id and route.epoch is not None else None
    if chat.model != planned:
        raise HTTPProblem(f"model {chat.model!r} is an adapter that this request's plan does not route to", 403,
                          "adapter_forbidden", param="model")
