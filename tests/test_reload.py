"""Published plan snapshots, and the proxy picking up a new one while it serves (real HTTP on 127.0.0.1,
in front of the fake OpenAI upstream), on each store backend."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from urllib.parse import urlsplit

import httpx
import numpy as np
import pytest
from conftest import each_store  # noqa: F401
from doubles import HashEmbedder, as_plans
from fake_openai import FakeOpenAI
from starlette.requests import ClientDisconnect
from starlette.responses import StreamingResponse
from test_serve import AUTH, GUIDE, KEY, LAW, RICE, THEMES, TRAVEL, make_workspace

from unolearn.bench.server import serve_asgi
from unolearn.records import Clustering
from unolearn.serve import ServeConfig, create_app
from unolearn.serve.upstream import Relayed
from unolearn.snapshot import PlanSnapshot
from unolearn.store import Workspace


def add_expert(ws: Workspace, module_id: str, cluster: int) -> None:
    """A trained expert module of ``cluster`` in the current clustering (its adapter folder is fictional)."""
    ws.add_module({"id": module_id, "cluster": cluster, "kind": "expert", "path": f"/adapters/{module_id}",
                   "epochs": 2, "base_model": "base", "data_hash": module_id, "config": "{}", "metrics": "{}",
                   "train_logs": "[]", "val_logs": "[]", "seconds": 1.0}, ws.clustering_id())


def replan_rice(ws: Workspace, module_id: str) -> int:
    """Plans as `select` stores them: rice answered by a new expert, law by its critic; the new plan id."""
    add_expert(ws, module_id, 0)
    plans = [(0, s, "primary", module_id, 1, 1.0, "won") for s in ("uno", "uno-single", "uno-guided")]
    plans += [(1, "uno", "reflective", "crit-law", 1, 1.0, "won"), (2, "uno", "base", None, None, None, "gap")]
    return ws.replace_plans(as_plans(plans), ws.clustering_id())


def test_select_publishes_the_plan_whole_and_a_reclustering_keeps_serving_it(tmp_path, each_store):
    ws_dir, embedder = tmp_path / "ws", HashEmbedder()
    make_workspace(ws_dir, each_store)
    with Workspace.open(ws_dir, each_store) as ws:
        first = PlanSnapshot.load(ws, embedder)
        assert first.id == ws.latest_snapshot_id()
        rice = first.route(RICE, "uno")
        assert (rice.path, rice.module_id, rice.epoch, rice.plan_id) == ("primary", "exp-rice", 2, first.id)
        assert first.route(LAW, "uno-guided").guide == GUIDE
        assert first.adapter_names() == {"exp-rice@2", "crit-law@1"}

        # A new clustering (one cluster, other ids) replaces the live clusters and plans, not the plan served.
        vec = embedder.embed([THEMES[2]])[0].astype(np.float32)
        ws.replace_clustering(Clustering(id=0, embedder="hash", threshold=1.0, fingerprint="fp", created_at=""),
                              [(7, 3, vec.tobytes())], [])
        assert ws.latest_snapshot_id() == first.id
        again = PlanSnapshot.load(ws, embedder)
        assert again.route(RICE, "uno").module_id == "exp-rice"  # old centroids with their own plans

        # `select` on the new clustering stores its plans and publishes them in the same transaction.
        add_expert(ws, "exp-new", 7)
        new_id = ws.replace_plans(as_plans([(7, "uno", "primary", "exp-new", 1, 1.0, "won")]), ws.clustering_id())
        assert new_id == ws.latest_snapshot_id() > first.id
        new = PlanSnapshot.load(ws, embedder)
        assert new.route(RICE, "uno").module_id == "exp-new" and new.route(RICE, "uno").cluster == 7
        assert new.route(RICE, "uno-single").path == "base"  # no plan of that system: base
        assert PlanSnapshot.load(ws, embedder, first.id).route(RICE, "uno").module_id == "exp-rice"


def test_a_workspace_without_a_plan_has_no_snapshot(tmp_path, each_store):
    with Workspace.open(tmp_path / "ws", each_store) as ws:
        assert ws.latest_snapshot_id() is None and ws.publish_snapshot() is None
        assert PlanSnapshot.load(ws, HashEmbedder()) is None


async def _ask(client: httpx.AsyncClient, query: str) -> httpx.Response:
    return await client.post("/v1/chat/completions",
                             json={"model": "fake-model", "messages": [{"role": "user", "content": query}]})


def _route(resp: httpx.Response) -> str:
    assert resp.status_code == 200, resp.text
    return resp.headers["x-unolearn-route"]


def test_reload_under_requests_in_flight_loads_first_swaps_once_and_unloads_after_the_last(tmp_path, each_store):
    ws_dir = tmp_path / "ws"
    make_workspace(ws_dir, each_store)
    fake = FakeOpenAI(latency_s=1.0)
    with fake.running():
        cfg = ServeConfig(upstream=fake.url, api_key=KEY, load_adapters=True, reload_interval_s=0)
        app = create_app(ws_dir, cfg, store=each_store, embedder=HashEmbedder())
        with serve_asgi(app, lifespan="on") as url:

            async def scenario() -> tuple[list[httpx.Response], dict, list[httpx.Response]]:
                async with httpx.AsyncClient(base_url=url, headers=AUTH, timeout=30) as client:
                    old = [asyncio.create_task(_ask(client, RICE)) for _ in range(6)]
                    while fake.in_flight < 6:  # every one routed by plan 1 and waiting on the upstream
                        await asyncio.sleep(0.01)
                    with Workspace.open(ws_dir, each_store) as ws:
                        replan_rice(ws, "exp-rice-2")
                    reloaded = (await client.post("/v1/admin/reload")).json()
                    assert "exp-rice@2" in fake.adapters  # still planned by requests in flight
                    new = await asyncio.gather(*(_ask(client, RICE) for _ in range(3)))
                    return list(await asyncio.gather(*old)), reloaded, list(new)

            old, reloaded, new = asyncio.run(scenario())
            assert reloaded["reloaded"] and reloaded["plan_id"] == reloaded["previous_plan_id"] + 1
            assert all("adapter=exp-rice@2" in _route(r) for r in old)  # finished on the plan they started on
            assert all("adapter=exp-rice-2@1" in _route(r) for r in new)
            history = [(r.path, r.body.get("lora_name") or r.body.get("model")) for r in fake.history]
            loaded_at = history.index(("/v1/load_lora_adapter", "exp-rice-2@1"))
            assert loaded_at < history.index(("/v1/chat/completions", "exp-rice-2@1"))
            deadline = time.monotonic() + 10
            while "exp-rice@2" in fake.adapters and time.monotonic() < deadline:
                time.sleep(0.05)
            assert set(fake.adapters) == {"exp-rice-2@1", "crit-law@1"}  # the retired one unloaded, no other
            with httpx.Client(base_url=url, headers=AUTH) as client:
                health = client.get("/healthz").json()
                metrics = client.get("/metrics").text
                assert client.post("/v1/admin/reload").json() == {"object": "reload", "plan_id": health["plan_id"],
                                                                  "reloaded": False}
                assert httpx.post(url + "/v1/admin/reload").status_code == 401
            assert health["plan_id"] == reloaded["plan_id"] and 0 <= health["plan_age_s"] < 60
            assert f"unolearn_plan_id {reloaded['plan_id']}" in metrics
            assert "unolearn_plan_reloads_total 1" in metrics


def _leave_at_once(url: str, body: dict) -> None:
    """Send a chat request on a raw socket and close it before any answer comes (a client that left)."""
    data = json.dumps(body).encode()
    host, port = urlsplit(url).hostname, urlsplit(url).port
    with socket.create_connection((host, port)) as sock:
        sock.sendall(f"POST /v1/chat/completions HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {KEY}\r\n"
                     f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n".encode() + data)


def test_streams_whose_clients_left_do_not_keep_their_plan_in_flight(tmp_path, each_store):
    ws_dir = tmp_path / "ws"
    make_workspace(ws_dir, each_store)
    fake = FakeOpenAI(latency_s=0.5)  # the clients are gone before the upstream's stream opens
    with fake.running():
        cfg = ServeConfig(upstream=fake.url, api_key=KEY, load_adapters=True, reload_interval_s=0)
        app = create_app(ws_dir, cfg, store=each_store, embedder=HashEmbedder())
        with serve_asgi(app, lifespan="on") as url:
            body = {"model": "fake-model", "stream": True, "messages": [{"role": "user", "content": RICE}]}
            for _ in range(3):
                _leave_at_once(url, body)
            deadline = time.monotonic() + 10
            while sum(r.path == "/v1/chat/completions" for r in fake.history) < 3 and time.monotonic() < deadline:
                time.sleep(0.05)
            with Workspace.open(ws_dir, each_store) as ws:
                replan_rice(ws, "exp-rice-2")
            assert httpx.post(url + "/v1/admin/reload", headers=AUTH).json()["reloaded"]
            while "exp-rice@2" in fake.adapters and time.monotonic() < deadline:
                time.sleep(0.05)
            assert set(fake.adapters) == {"exp-rice-2@1", "crit-law@1"}  # the retired plan's adapter unloaded
            assert sum(app.state.proxy.inflight.values()) == 0


class _Upstream:
    released = False

    def release(self) -> None:
        self.released = True


def test_a_stream_that_never_began_still_ends_its_request():
    """ASGI 2.4: a server may raise OSError on the first send once the client is gone; the event
    generator then never starts, so its ``finally`` cannot end the request — Relayed does."""
    began, closed = [], []

    async def events():
        began.append(1)
        yield b"data: [DONE]\n\n"

    async def send(message):
        raise OSError("client gone")

    async def receive():
        return {"type": "http.disconnect"}

    upstream = _Upstream()
    relayed = Relayed(StreamingResponse(events()), upstream, on_close=lambda: closed.append(1))
    scope = {"type": "http", "asgi": {"spec_version": "2.4"}, "method": "POST", "path": "/"}
    with pytest.raises(ClientDisconnect):
        asyncio.run(relayed(scope, receive, send))
    assert (began, closed, upstream.released) == ([], [1], True)


def test_a_failed_reload_keeps_serving_the_old_plan(tmp_path, each_store):
    ws_dir = tmp_path / "ws"
    make_workspace(ws_dir, each_store)
    fake = FakeOpenAI()
    with fake.running():
        cfg = ServeConfig(upstream=fake.url, load_adapters=True, reload_interval_s=0)
        with serve_asgi(create_app(ws_dir, cfg, store=each_store, embedder=HashEmbedder()), lifespan="on") as url:
            with Workspace.open(ws_dir, each_store) as ws:
                served = ws.latest_snapshot_id()
                replan_rice(ws, "exp-rice-2")
            fake.fail(500, "out of adapter slots")  # the new adapter cannot be loaded
            with httpx.Client(base_url=url) as client:
                assert client.post("/v1/admin/reload").status_code == 502
                assert client.get("/healthz").json()["plan_id"] == served
                resp = client.post("/v1/chat/completions",
                                   json={"model": "fake-model", "messages": [{"role": "user", "content": RICE}]})
                assert "adapter=exp-rice@2" in _route(resp)
                assert client.post("/v1/admin/reload").json()["reloaded"]  # tried again: it loads now
                assert client.get("/healthz").json()["plan_id"] > served


def test_the_proxy_picks_up_the_first_plan_by_polling(tmp_path, each_store):
    ws_dir = tmp_path / "ws"
    Workspace.open(ws_dir, each_store).close()
    fake = FakeOpenAI()
    with fake.running():
        cfg = ServeConfig(upstream=fake.url, load_adapters=True, reload_interval_s=0.1)
        with serve_asgi(create_app(ws_dir, cfg, store=each_store, embedder=HashEmbedder()), lifespan="on") as url:
            with httpx.Client(base_url=url) as client:
                body = {"model": "fake-model", "messages": [{"role": "user", "content": RICE}]}
                assert "path=base" in _route(client.post("/v1/chat/completions", json=body))
                assert client.get("/healthz").json()["plan_id"] is None
                make_workspace(ws_dir, each_store)  # a first `unolearn run` publishes a plan
                deadline = time.monotonic() + 10
                while client.get("/healthz").json()["plan_id"] is None and time.monotonic() < deadline:
                    time.sleep(0.05)
                assert "adapter=exp-rice@2" in _route(client.post("/v1/chat/completions", json=body))


def test_served_rows_record_the_plan_that_routed_them(tmp_path, each_store):
    ws_dir = tmp_path / "ws"
    make_workspace(ws_dir, each_store)
    fake = FakeOpenAI()
    with fake.running():
        cfg = ServeConfig(upstream=fake.url, reload_interval_s=0)
        with serve_asgi(create_app(ws_dir, cfg, store=each_store, embedder=HashEmbedder()), lifespan="on") as url:
            with httpx.Client(base_url=url) as client:
                resp = client.post("/v1/chat/completions",
                                   json={"model": "fake-model", "messages": [{"role": "user", "content": TRAVEL}]})
                assert "path=base" in _route(resp)
    with Workspace.open(ws_dir, each_store) as ws:
        ((route,),) = ws.conn.execute("SELECT route FROM served").fetchall()
        assert f'"plan_id": {ws.latest_snapshot_id()}' in route
