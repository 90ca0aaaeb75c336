"""Tenants: teams that share a workspace and a proxy never share what is learnt. Each tenant's logs go to its own
store (a folder, a PostgreSQL schema), a run learns per tenant, and the proxy routes, records and takes feedback
by the tenant of the request's key. On each store backend."""

from __future__ import annotations

import json

import httpx
import pytest
from conftest import chat, each_store, write_jsonl  # noqa: F401
from doubles import HashEmbedder
from fake_openai import FakeOpenAI
from test_serve import GUIDE, LAW, RICE, assert_openai_error, make_workspace
from tiny_model import tiny_model_dir  # noqa: F401

from unolearn.bench.server import serve_asgi
from unolearn.config import load_backends
from unolearn.errors import ConfigError, NotFoundError
from unolearn.readers import read_logs
from unolearn.records import Log, Message
from unolearn.serve import ServeConfig, create_app
from unolearn.store import Workspace
from unolearn.store.tenants import tenant_folder, tenant_store
from unolearn.tenants import each_tenant, open_tenant, tenant_names

ACME, GLOBEX = "acme-key-0123456789", "globex-key-0123456789"
KEYS = {ACME: "acme", GLOBEX: "Globex Corp"}


@pytest.fixture
def store_url(each_store):
    return each_store


def logs_of(ws: Workspace) -> list[Log]:
    return sorted(ws.iter_logs(), key=lambda log: log.query)


def test_readers_take_the_tenant_from_the_record_or_its_metadata(tmp_path):
    path = write_jsonl(tmp_path / "l.jsonl", [chat("q1", "a"), chat("q2", "a", tenant="acme"),
                                              chat("q3", "a", metadata={"tenant": "globex"}),
                                              chat("q4", "a", tenant=""), chat("q5", "a", tenant="acme")])
    items = [item for _, item, _ in read_logs(path)]
    assert [getattr(i, "tenant", None) for i in items[:3]] == [None, "acme", "globex"]
    assert items[3].reason.startswith("tenant: expected a non-empty") and items[3].line == 4
    forced = [item for _, item, _ in read_logs(path, tenant="globex")]
    assert [getattr(i, "tenant", None) for i in forced] == ["globex", None, "globex", None, None]
    assert forced[1].line == 2 and "names tenant 'acme', this ingest is for tenant 'globex'" in forced[1].reason
    untagged = Log.from_messages([Message(role="user", content="q1"), Message(role="assistant", content="a")],
                                 source="l.jsonl")
    assert items[0].id == untagged.id  # a log without a tenant keeps the key it had before tenants


def test_ingest_stores_each_log_in_its_tenants_store_only(run_cli, ws_dir, tmp_path, store_url):
    path = write_jsonl(tmp_path / "l.jsonl", [chat("plain question", "a"), chat("acme question", "a", tenant="acme"),
                                              chat("globex question", "a", tenant="Globex Corp")])
    r = run_cli("ingest", str(path), "--json")
    assert r.code == 0, r.err
    assert r.json()["ingested"] == 3
    with Workspace.open(ws_dir, store_url) as ws:
        assert tenant_names(ws) == ["default", "Globex Corp", "acme"]
        with each_tenant(ws) as tenants:
            queries = {name: [log.query for log in logs_of(t)] for name, t in tenants}
    assert queries == {"default": ["plain question"], "acme": ["acme question"], "Globex Corp": ["globex question"]}
    if store_url is None:
        assert (tenant_folder(ws_dir, "acme") / "unolearn.sqlite3").is_file()
        assert tenant_folder(ws_dir, "Globex Corp").name.startswith("globex-corp-")


def test_ingest_for_a_tenant_rejects_a_record_that_names_another(run_cli, ws_dir, tmp_path, store_url):
    path = write_jsonl(tmp_path / "l.jsonl", [chat("mine", "a"), chat("theirs", "a", tenant="globex")])
    r = run_cli("--tenant", "acme", "ingest", str(path))
    assert r.code == 0, r.err
    assert f"{path}:2: tenant: the record names tenant 'globex', this ingest is for tenant 'acme'" in r.err
    with Workspace.open(ws_dir, store_url) as ws:
        assert tenant_names(ws) == ["default", "acme"]  # no store was made for the record's claim
        acme = open_tenant(ws, "acme")
        try:
            assert [(log.query, log.tenant) for log in logs_of(acme)] == [("mine", "acme")]
        finally:
            acme.close()
        assert logs_of(ws) == []


def test_commands_on_an_unknown_tenant_say_so(run_cli):
    assert run_cli("ingest", "--help").code == 0
    r = run_cli("--tenant", "nobody", "rulebook", "list")
    assert r.code != 0 and "no tenant 'nobody'" in r.err and "Traceback" not in r.err
    r = run_cli("--tenant", "bad\nname", "logs", "stats")
    assert r.code == 2 and "--tenant" in r.err


def test_forget_reaches_a_users_logs_in_every_tenant(run_cli, ws_dir, tmp_path, store_url):
    path = write_jsonl(tmp_path / "l.jsonl", [chat("q one", "a", user="u1"), chat("q two", "a", user="u1",
                                                                                   tenant="acme"),
                                              chat("q three", "a", user="u2", tenant="acme")])
    assert run_cli("ingest", str(path)).code == 0
    r = run_cli("forget", "--user", "u1", "--json")
    assert r.code == 0, r.err
    assert r.json()["matched_logs"] == 2
    with Workspace.open(ws_dir, store_url) as ws:
        acme = open_tenant(ws, "acme")
        try:
            assert [log.user for log in logs_of(acme)] == ["u2"] and logs_of(ws) == []
        finally:
            acme.close()


def test_tenant_stores_are_apart(ws_dir, store_url):
    with Workspace.open(ws_dir, store_url) as ws:
        acme = open_tenant(ws, "acme", create=True)
        try:
            acme.add_logs([Log.from_messages([Message(role="user", content="acme only")], source="t", tenant="acme")])
            assert acme.count("logs") == 1 and ws.count("logs") == 0
            assert acme.store == tenant_store(store_url, "acme") and acme.root == tenant_folder(ws_dir, "acme")
        finally:
            acme.close()
        with pytest.raises(NotFoundError, match="no tenant 'globex'"):
            open_tenant(ws, "globex")


# -- the proxy ---------------------------------------------------------------------------------------------------

def two_tenant_workspace(ws_dir, store):
    """The default tenant with serve tests' plans; acme: the same; Globex Corp: nothing published."""
    make_workspace(ws_dir, store)
    with Workspace.open(ws_dir, store) as ws:
        for name in ("acme", "Globex Corp"):
            open_tenant(ws, name, create=True).close()
    make_workspace(tenant_folder(ws_dir, "acme"), tenant_store(store, "acme"))


@pytest.fixture
def proxy(ws_dir, store_url):
    two_tenant_workspace(ws_dir, store_url)
    fake = FakeOpenAI()
    with fake.running():
        cfg = ServeConfig(upstream=fake.url, keys=KEYS, reload_interval_s=0, load_adapters=True)
        with serve_asgi(create_app(ws_dir, cfg, store=store_url, embedder=HashEmbedder()), lifespan="on") as url:
            yield fake, url


def post(url, key, query, system="uno-guided", **body):
    body = {"model": "fake-model", "messages": [{"role": "user", "content": query}], **body}
    headers = {"Authorization": f"Bearer {key}", "X-Unolearn-System": system}
    return httpx.post(url + "/v1/chat/completions", headers=headers, json=body, timeout=20)


def test_each_key_is_routed_by_its_tenants_plan_only(proxy):
    fake, url = proxy
    assert post(url, ACME, LAW).headers["x-unolearn-route"].startswith("path=guide")  # acme has the law guide
    assert GUIDE.split("\n")[1] in fake.history[-1].body["messages"][-1]["content"]
    r = post(url, GLOBEX, LAW)
    assert r.status_code == 200 and r.headers["x-unolearn-route"].startswith("path=base")  # Globex Corp has no plan
    assert "Cite the article" not in json.dumps(fake.history[-1].body)
    assert_openai_error(post(url, "nobody-key", LAW), 401, "invalid_api_key")
    assert post(url, ACME, RICE, system="uno").status_code == 200
    assert fake.history[-1].body["model"] == "exp-rice@2"  # acme's expert
    assert post(url, GLOBEX, RICE, system="uno").status_code == 200
    assert fake.history[-1].body["model"] == "fake-model"  # never acme's adapter


def test_answers_and_feedback_stay_in_their_tenant(proxy, ws_dir, store_url):
    fake, url = proxy
    rid = post(url, ACME, RICE, user="alice").headers["x-unolearn-response-id"]
    fb = {"response_id": rid, "text": "Too long.", "user": "alice"}
    other = httpx.post(url + "/v1/feedback", json=fb, headers={"Authorization": f"Bearer {GLOBEX}"}, timeout=20)
    assert_openai_error(other, 404, "response_not_found")  # another tenant cannot see, let alone rate, the answer
    mine = httpx.post(url + "/v1/feedback", json=fb, headers={"Authorization": f"Bearer {ACME}"}, timeout=20)
    assert mine.status_code == 200, mine.text
    with Workspace.open(ws_dir, store_url) as ws:
        acme = open_tenant(ws, "acme")
        try:
            assert acme.count("served") == 1 and acme.count("feedback") == 1
        finally:
            acme.close()
        assert ws.count("served") == 0


def test_a_tenants_key_sees_neither_the_other_tenants_nor_their_adapters(ws_dir, store_url):
    """Any tenant's key used to reload every tenant's plan and read back the tenants' names and plan ids, read
    all tenants' counts in /metrics, and list the adapters loaded for other tenants in /v1/models."""
    two_tenant_workspace(ws_dir, store_url)
    fake = FakeOpenAI()
    with fake.running():
        cfg = ServeConfig(upstream=fake.url, api_key="operator-key-0123", keys=KEYS, reload_interval_s=0,
                          load_adapters=True)
        with serve_asgi(create_app(ws_dir, cfg, store=store_url, embedder=HashEmbedder()), lifespan="on") as url:
            def call(method, path, key):
                return httpx.request(method, url + path, headers={"Authorization": f"Bearer {key}"}, timeout=20)

            for key in (ACME, GLOBEX):
                assert_openai_error(call("POST", "/v1/admin/reload", key), 403, "operator_only")
                assert_openai_error(call("GET", "/metrics", key), 403, "operator_only")
            reloaded = call("POST", "/v1/admin/reload", "operator-key-0123").json()
            assert set(reloaded["tenants"]) == {"default", "acme", "Globex Corp"}
            assert "unolearn_plan_id" in call("GET", "/metrics", "operator-key-0123").text
            models = {key: {m["id"] for m in call("GET", "/v1/models", key).json()["data"]}
                      for key in (ACME, GLOBEX)}
    assert "exp-rice@2" in fake.adapters and models[ACME] >= {"fake-model", "exp-rice@2"}
    assert models[GLOBEX] == {"fake-model"}  # Globex Corp has no plan: none of the adapters is its own


def test_key_maps_are_checked(tmp_path):
    with pytest.raises(ConfigError, match="serve.keys: expected a mapping"):
        ServeConfig(keys=["k"])
    with pytest.raises(ConfigError, match="the key abcd…: tenant: expected"):
        ServeConfig(keys={"abcdefgh": ""})
    (tmp_path / "keys.yaml").write_text("k1: acme\nk2: null\n")
    cfg = ServeConfig(api_key="main", keys_file=str(tmp_path / "keys.yaml"))
    assert cfg.tenant_keys() == {"main": "default", "k1": "acme", "k2": "default"}
    assert cfg.tenants() == ["default", "acme"]
    with pytest.raises(ConfigError, match="keys_file .*missing.yaml: cannot read"):
        ServeConfig(keys_file=str(tmp_path / "missing.yaml"))
    ServeConfig(host="0.0.0.0", keys={"k": "acme"}).check_exposure()  # a key map is a key


# -- the whole loop ----------------------------------------------------------------------------------------------

SHORT, LONG = "Keep answers short.", "Give long, detailed answers."


def test_two_tenants_with_opposite_preferences_each_get_their_own_rules(run_cli, ws_dir, tmp_path, tiny_model_dir,
                                                                         store_url):
    """Through `run` and the proxy: acme's users want short answers, Globex Corp's long ones. Each tenant's guide
    carries its own rule and never the other's, and a request is guided by its key's tenant only."""
    from fake_openai import FakeOpenAI as Fake
    from test_pipeline import workspace_config
    from test_privacy import respond

    def guided(body):
        text = "\n".join(m["content"] for m in body["messages"])
        if "Users who asked similar questions" in text:
            return "A brief answer. " + text.split("rules:")[1].split("## Question")[0]
        return respond(body)

    logs = [chat(f"how do I cook rice, case {i}", "An answer.", rule, user=f"{name}{i % 4}", tenant=name)
            for name, rule in (("acme", SHORT), ("Globex Corp", LONG)) for i in range(8)]
    fake = Fake(dim=16)
    fake.responder = guided
    with fake.running():
        ws_dir.mkdir(parents=True)
        cfg = json.loads(workspace_config(fake.url, str(tiny_model_dir)))
        cfg["train"].update({"experts": "none"})
        cfg["rulebook"] = {"contradictions": False}
        (ws_dir / "config.yaml").write_text(json.dumps(cfg))
        r = run_cli("run", str(write_jsonl(tmp_path / "logs.jsonl", logs)), "--json", timeout=900)
        assert r.code == 0, r.err
        out = r.json()
        assert set(out["tenants"]) == {"acme", "Globex Corp"}
        texts, bodies = {}, {}
        with Workspace.open(ws_dir, store_url) as ws, each_tenant(ws) as tenants:
            for name, t in tenants:
                texts[name] = " ".join(e.text for e in t.rulebook() if e.in_prompt)
                bodies[name] = " ".join(b for (b,) in t.conn.execute("SELECT body FROM plan_snapshots"))
        assert SHORT in texts["acme"] and LONG not in texts["acme"]
        assert LONG in texts["Globex Corp"] and SHORT not in texts["Globex Corp"]
        assert texts["default"] == "" and out["skipped"] == "no logs"
        assert SHORT in bodies["acme"] and LONG not in bodies["acme"]
        assert LONG in bodies["Globex Corp"] and SHORT not in bodies["Globex Corp"]
        cfg = ServeConfig(upstream=fake.url, keys=KEYS, reload_interval_s=0)
        backends = load_backends(ws_dir / "config.yaml")
        with serve_asgi(create_app(ws_dir, cfg, store=store_url, backends=backends), lifespan="on") as url:
            seen = {}
            for key in (ACME, GLOBEX):
                assert post(url, key, "how do I cook rice, quickly").status_code == 200
                seen[key] = fake.history[-1].body["messages"][-1]["content"]
        assert SHORT in seen[ACME] and LONG not in seen[ACME]
        assert LONG in seen[GLOBEX] and SHORT not in seen[GLOBEX]


def test_tenants_lists_each_tenant(run_cli, tmp_path):
    path = write_jsonl(tmp_path / "l.jsonl", [chat("q", "a"), chat("q2", "a", tenant="acme", user="u")])
    assert run_cli("ingest", str(path)).code == 0
    r = run_cli("tenants", "--json")
    assert r.code == 0, r.err
    assert [(t["tenant"], t["logs"], t["identified_users"]) for t in r.json()] == [("default", 1, False),
                                                                                   ("acme", 1, True)]


def test_a_sqlite_store_named_by_url_puts_each_tenant_in_a_file_beside_it(tmp_path):
    from unolearn.store.tenants import tenant_key

    url = f"sqlite:///{tmp_path}/db/main.sqlite3"
    (tmp_path / "db").mkdir()
    assert tenant_store(None, "acme") is None
    assert tenant_store(url, "acme") == f"sqlite:///{tmp_path}/db/main.tenant-{tenant_key('acme')}.sqlite3"
    with Workspace.open(tmp_path / "ws", url) as ws:
        acme = open_tenant(ws, "acme", create=True)
        try:
            acme.add_logs([Log.from_messages([Message(role="user", content="q")], source="t", tenant="acme")])
        finally:
            acme.close()
        assert ws.count("logs") == 0
    assert (tmp_path / "db" / f"main.tenant-{tenant_key('acme')}.sqlite3").is_file()


def test_serve_takes_the_tenant_from_the_key_not_from_the_command_line(run_cli):
    r = run_cli("--tenant", "acme", "serve", "--embedded")
    assert r.code == 2 and "--tenant does not apply" in r.err
