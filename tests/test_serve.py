"""The routing proxy as a real server on 127.0.0.1, in front of the fake OpenAI upstream, on each store
backend; and replicas: two `unolearn serve` processes on one PostgreSQL store."""

from __future__ import annotations

import asyncio
import json
import socket
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from conftest import BACKENDS, each_store, store_of  # noqa: F401
from doubles import HashEmbedder, MockChatModel, as_plans
from fake_openai import FakeOpenAI

from unolearn.bench.serve import ServeProcess, bench_serve
from unolearn.bench.server import serve_asgi
from unolearn.errors import ConfigError, WorkspaceError
from unolearn.serve import Recorder, ServeConfig, collect_served, create_app
from unolearn.store import Workspace, now

KEY = "test-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
THEMES = {0: "rice cooking grains pot water", 1: "contract law statute court liability",
          2: "travel flight hotel visa trip"}
RICE = "how long should rice grains cook in a pot of water"
LAW = "does the statute of contract liability apply in court"
TRAVEL = "which hotel for my flight and visa trip"
GUIDE = "Users who asked similar questions wanted answers to follow these rules:\n1. Cite the article.\n\n## Question\n"


def make_workspace(ws_dir: Path, store: str | None = None) -> None:
    """Three clusters (rice: expert; law: critic under uno, base under uno-single; travel: base)."""
    vecs = HashEmbedder().embed(list(THEMES.values()))
    with Workspace.open(ws_dir, store) as ws, ws.transaction() as c:
        for cid, vec in zip(THEMES, vecs):
            c.execute("INSERT INTO clusters VALUES (?,?,?,?,?)", (cid, 5, vec.tobytes(), "hash", now()))
        for mid, cluster, kind in (("exp-rice", 0, "expert"), ("crit-law", 1, "critic")):
            c.execute("INSERT INTO modules (id, cluster, kind, path, epochs, base_model, data_hash, config, metrics, "
                  "train_logs, val_logs, seconds, created_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                      (mid, cluster, kind, f"/adapters/{mid}", 3, "base", "h", "{}", "{}", "[]", "[]", 1.0, now()))
        plans = [(0, "uno", "primary", "exp-rice", 2), (0, "uno-single", "primary", "exp-rice", 2),
                 (1, "uno", "reflective", "crit-law", 1), (1, "uno-single", "base", None, None),
                 (2, "uno", "base", None, None), (2, "uno-single", "base", None, None),
                 (0, "uno-guided", "primary", "exp-rice", 2), (2, "uno-guided", "base", None, None)]
        c.executemany("INSERT INTO plans (cluster, system, path, module_id, epoch, win_rate, reason) "
                      "VALUES (?,?,?,?,?,NULL,'t')", plans)
    with Workspace.open(ws_dir, store) as ws:  # law under uno-guided: its rulebook before the question
        guide = ws.ensure_guide(1, GUIDE, ["rule-1"], [], [], {}, ws.clustering_id())
        with ws.transaction() as c:
            c.execute("INSERT INTO plans (cluster, system, path, module_id, epoch, win_rate, reason) "
                      "VALUES (1, 'uno-guided', 'guide', ?, NULL, NULL, 't')", (guide,))
        ws.publish_snapshot()


@dataclass
class Stack:
    fake: FakeOpenAI
    client: httpx.Client
    ws_dir: Path
    url: str
    store: str | None


@pytest.fixture(scope="module", params=BACKENDS)
def stack(request, tmp_path_factory):
    """Fake upstream + proxy (API key, adapters loaded at start, small limits) + an authorised client,
    on each store backend."""
    ws_dir = tmp_path_factory.mktemp("serve") / "ws"
    with store_of(request, request.param) as store:
        make_workspace(ws_dir, store)
        fake = FakeOpenAI()
        with fake.running():
            cfg = ServeConfig(upstream=fake.url, api_key=KEY, load_adapters=True, upstream_timeout_s=1.5,
                              max_body_bytes=4096, max_messages=8)
            with serve_asgi(create_app(ws_dir, cfg, store=store, embedder=HashEmbedder()), lifespan="on") as url:
                with httpx.Client(base_url=url, headers=AUTH, timeout=20) as client:
                    yield Stack(fake, client, ws_dir, url, store)


@pytest.fixture
def s(stack):
    """The stack with the fake's history, script and failures cleared."""
    with stack.fake._lock:
        stack.fake.history.clear()
    stack.fake._answers.clear()
    stack.fake._failures.clear()
    stack.fake.finish_reason = "stop"
    return stack


def ask(s: Stack, query: str, *, system: str | None = None, **body):
    headers = {"X-Unolearn-System": system} if system else {}
    payload = {"model": "fake-model", "messages": [{"role": "user", "content": query}], **body}
    return s.client.post("/v1/chat/completions", json=payload, headers=headers)


def events(resp: httpx.Response) -> list[str]:
    """The ``data:`` payloads of an SSE response."""
    return [line[6:] for line in resp.iter_lines() if line.startswith("data: ")]


def streamed_text(payloads: list[str]) -> str:
    chunks = [json.loads(p) for p in payloads if p != "[DONE]"]
    return "".join((c["choices"][0]["delta"].get("content") or "") for c in chunks if c["choices"])


def assert_openai_error(resp: httpx.Response, status: int, code: str | None = None, param: str | None = None) -> dict:
    """``resp`` is an OpenAI error body (message, type, param, code) with this status, and this code and param
    when given; no traceback."""
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    err = resp.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"]
    assert "Traceback" not in resp.text and 'File "' not in resp.text
    if code:
        assert err["code"] == code
    if param:
        assert err["param"] == param, err
    return err


# -- paths -----------------------------------------------------------------------------------------


def test_adapters_are_loaded_at_start(s):
    assert s.fake.adapters == {"crit-law@1": "/adapters/crit-law/epoch-1", "exp-rice@2": "/adapters/exp-rice/epoch-2"}


def test_base_path_forwards_the_body_unchanged(s):
    raw = json.dumps({"model": "fake-model", "messages": [{"role": "system", "content": "be kind"},
                                                          {"role": "user", "content": TRAVEL}],
                      "temperature": 0.3, "user": "u-1", "max_tokens": 7}, indent=2)
    resp = s.client.post("/v1/chat/completions", content=raw, headers={"content-type": "application/json"})
    assert resp.status_code == 200, resp.text
    (got,) = s.fake.requests()
    assert got.body == json.loads(raw)
    data = resp.json()
    assert data["object"] == "chat.completion" and data["choices"][0]["message"]["content"] == f"echo: {TRAVEL}"
    assert data["id"].startswith("chatcmpl-") and data["id"] == resp.headers["x-unolearn-response-id"]
    assert resp.headers["x-unolearn-route"] == "path=base; cluster=2; system=uno"


def test_primary_path_sends_the_expert_adapter_as_model(s):
    resp = ask(s, RICE, temperature=0.5)
    assert resp.status_code == 200, resp.text
    (got,) = s.fake.requests()
    assert got.body["model"] == "exp-rice@2" and got.body["temperature"] == 0.5
    assert resp.headers["x-unolearn-route"] == "path=primary; cluster=0; system=uno; adapter=exp-rice@2"
    assert resp.json()["choices"][0]["message"]["content"] == f"echo: {RICE}"


def test_reflective_path_drafts_critiques_revises_and_returns_only_the_revision(s):
    s.fake.enqueue("the draft answer", "1. Cite the statute.", "## Revised answer\nThe revised answer.")
    resp = ask(s, LAW)
    assert resp.status_code == 200, resp.text
    assert resp.json()["choices"][0]["message"]["content"] == "The revised answer."
    assert "draft answer" not in resp.text and "Cite the statute" not in resp.text
    draft, critic, revise = s.fake.requests()
    assert draft.body["model"] == "fake-model" and draft.body["messages"] == [{"role": "user", "content": LAW}]
    assert critic.body["model"] == "crit-law@1" and "the draft answer" in critic.body["messages"][-1]["content"]
    prompt = revise.body["messages"][-1]["content"]
    assert revise.body["model"] == "fake-model" and "1. Cite the statute." in prompt and "the draft answer" in prompt
    assert resp.headers["x-unolearn-route"].startswith("path=reflective; cluster=1; system=uno; adapter=crit-law@1")
    assert resp.json()["usage"]["completion_tokens"] > 0 and resp.json()["choices"][0]["finish_reason"] == "stop"


def test_a_client_is_told_when_the_token_budget_cut_the_revision(s):
    """The proxy writes the reflective path's answer itself; a revision that ran to max_tokens is reported as
    cut (finish_reason "length", as the upstream said), not as finished: a client continues or retries on it."""
    s.fake.finish_reason = "length"
    s.fake.enqueue("draft", "1. rule", "the revision, cut", "draft", "1. rule", "the revision, cut")
    resp = ask(s, LAW, max_tokens=4)
    assert resp.json()["choices"][0]["finish_reason"] == "length", resp.text
    with s.client.stream("POST", "/v1/chat/completions", json={
            "model": "fake-model", "stream": True, "messages": [{"role": "user", "content": LAW}]}) as r:
        chunks = [json.loads(p) for p in events(r) if p != "[DONE]"]
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == "length"


def test_guide_path_puts_the_rulebook_before_the_question_for_any_upstream(s):
    resp = ask(s, LAW, system="uno-guided", user="u-3", messages=[
        {"role": "system", "content": "You are a lawyer."}, {"role": "user", "content": LAW}])
    assert resp.status_code == 200, resp.text
    (got,) = s.fake.requests()
    assert got.body["model"] == "fake-model" and got.body["user"] == "u-3"  # no adapter: any upstream serves it
    assert got.body["messages"] == [{"role": "system", "content": "You are a lawyer."},
                                    {"role": "user", "content": GUIDE + LAW}]
    assert resp.headers["x-unolearn-route"].startswith("path=guide; cluster=1; system=uno-guided; guide=guide-")
    payload = {"model": "fake-model", "stream": True, "messages": [{"role": "user", "content": LAW}]}
    headers = {"X-Unolearn-System": "uno-guided"}
    with s.client.stream("POST", "/v1/chat/completions", json=payload, headers=headers) as r:
        assert streamed_text(events(r)) == f"echo: {GUIDE}{LAW}"  # the fake upstream echoes the last user turn
    assert s.fake.requests()[-1].body["messages"] == [{"role": "user", "content": GUIDE + LAW}]


def test_header_overrides_the_system(s):
    single = ask(s, LAW, system="uno-single")
    assert single.headers["x-unolearn-route"] == "path=base; cluster=1; system=uno-single"
    base = ask(s, RICE, system="base")
    assert base.headers["x-unolearn-route"] == "path=base; cluster=-; system=base"
    assert [r.body["model"] for r in s.fake.requests()] == ["fake-model", "fake-model"]
    assert_openai_error(ask(s, RICE, system="magic"), 400, "invalid_system")


# -- streaming -------------------------------------------------------------------------------------


@pytest.mark.parametrize("query, model", [(TRAVEL, "fake-model"), (RICE, "exp-rice@2")])
def test_streaming_relays_events_with_the_response_id(s, query, model):
    payload = {"model": "fake-model", "stream": True, "messages": [{"role": "user", "content": query}]}
    with s.client.stream("POST", "/v1/chat/completions", json=payload) as resp:
        assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/event-stream")
        payloads = events(resp)
    rid = resp.headers["x-unolearn-response-id"]
    assert payloads[-1] == "[DONE]" and len(payloads) > 3
    chunks = [json.loads(p) for p in payloads[:-1]]
    assert {c["id"] for c in chunks} == {rid} and {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert streamed_text(payloads) == f"echo: {query}"
    assert s.fake.requests()[0].body["model"] == model and s.fake.requests()[0].body["stream"] is True
    fb = s.client.post("/v1/feedback", json={"response_id": rid, "action": "copy"})  # recorded before [DONE]
    assert fb.status_code == 200, fb.text


def test_reflective_streaming_sends_only_the_revision(s):
    s.fake.enqueue("draft", "1. rule", "revised text")
    payload = {"model": "fake-model", "stream": True, "stream_options": {"include_usage": True},
               "messages": [{"role": "user", "content": LAW}]}
    with s.client.stream("POST", "/v1/chat/completions", json=payload) as resp:
        payloads = events(resp)
    assert payloads[-1] == "[DONE]" and streamed_text(payloads) == "revised text"
    assert json.loads(payloads[-2])["usage"]["total_tokens"] > 0
    assert all("stream" not in r.body for r in s.fake.requests())


@pytest.mark.parametrize("field", [{"stream_options": [1]}, {"stream_options": "usage"}, {"stream": "false"},
                                   {"user": 5}])
def test_fields_of_the_wrong_type_give_400(s, field):
    """A `stream_options` that was not an object broke a reflective stream after its 200 (the connection dropped,
    a traceback in the log) once three upstream calls had run; a `stream` string streamed, "false" too; a `user`
    that was a number was recorded as anonymous (any key holder could rate the answer, forget never found it)."""
    resp = ask(s, LAW, system="uno", **{"stream": True, **field})
    assert_openai_error(resp, 400, "invalid_request", param=next(iter(field)))
    assert not s.fake.requests()


# -- security and robustness -----------------------------------------------------------------------


def test_auth_is_required_except_for_healthz(s):
    for key in (None, "wrong"):
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        with httpx.Client(base_url=s.url, headers=headers) as anon:
            assert_openai_error(anon.post("/v1/chat/completions", json={"messages": []}), 401, "invalid_api_key")
            assert_openai_error(anon.post("/v1/feedback", json={"response_id": "x"}), 401)
            assert_openai_error(anon.get("/v1/models"), 401)
            assert_openai_error(anon.get("/metrics"), 401)
            health = anon.get("/healthz")
            assert health.status_code == 200 and health.json()["status"] == "ok" and health.json()["routing"]
    assert not s.fake.requests()


def test_limits_give_413(s):
    assert_openai_error(ask(s, "x" * 5000), 413, "request_too_large")
    many = [{"role": "user", "content": "hi"}] * 9
    resp = s.client.post("/v1/chat/completions", json={"model": "fake-model", "messages": many})
    assert_openai_error(resp, 413, "too_many_messages", param="messages")
    assert not s.fake.requests()


def test_invalid_bodies_give_400(s):
    bad = s.client.post("/v1/chat/completions", content=b"{not json", headers={"content-type": "application/json"})
    assert_openai_error(bad, 400, "invalid_json")
    assert_openai_error(s.client.post("/v1/chat/completions", json=[1]), 400)
    no_user = {"model": "fake-model", "messages": [{"role": "system", "content": "hi"}]}
    assert_openai_error(s.client.post("/v1/chat/completions", json=no_user), 400, param="messages")
    assert bad.json()["error"]["param"] is None  # no field is at fault in a body that is not JSON


@pytest.mark.parametrize("raw", [
    b'{"model": "fake-model", "messages": [{"role": "user", "content": "bad \\ud800 text"}]}',
    b'{"model": "fake-model", "max_tokens": "many", "messages": [{"role": "user", "content": "hi"}]}',
    b'{"model": "fake-model", "temperature": "hot", "messages": [{"role": "user", "content": "hi"}]}',
    b'{"model": "fake-model", "max_tokens": 0, "messages": [{"role": "user", "content": "hi"}]}',
    b'{"model": "fake-model", "messages": [{"role": "user", "content": "hi"}], "x": ' + b"[" * 1500 + b"]" * 1500
    + b"}",
])
def test_malformed_bodies_give_400_not_500(s, raw):
    """Each of these answered 500 (or recorded nothing) before the proxy checked them."""
    resp = s.client.post("/v1/chat/completions", content=raw, headers={"content-type": "application/json"})
    err = assert_openai_error(resp, 400)
    assert not s.fake.requests()
    for name in ("max_tokens", "temperature"):
        if f'"{name}"'.encode() in raw:  # the field at fault is named, as the OpenAI API names it
            assert err["param"] == name, err
    fb = s.client.post("/v1/feedback", content=raw.replace(b'"model"', b'"response_id"'),
                       headers={"content-type": "application/json"})
    assert fb.status_code == 400


def test_a_client_cannot_name_an_adapter_its_plan_does_not_route_to(s):
    """Before, the base path forwarded a client's `model` as given: any adapter the upstream held was reachable."""
    adapter = "expert-v1-" + "0" * 24 + "@1"
    for query in (TRAVEL, RICE):  # the base path, and the primary path whose adapter is another
        assert_openai_error(ask(s, query, model=adapter), 403, "adapter_forbidden", param="model")
    assert not s.fake.requests()
    assert ask(s, TRAVEL).status_code == 200


def test_the_serve_section_of_the_config_is_honoured(run_cli, ws_dir, tmp_path):
    """`serve: {host: 0.0.0.0}` without a key: refused (before, the section was ignored and no key asked)."""
    ws_dir.mkdir(parents=True)
    (ws_dir / "config.yaml").write_text("serve: {host: 0.0.0.0, upstream: 'http://127.0.0.1:9/v1'}\n")
    r = run_cli("serve")
    assert r.code == 2 and "reachable from other machines and no API key" in r.err and "--insecure" in r.err
    (ws_dir / "config.yaml").write_text("serve: {host: 0.0.0.0, upstream: 'http://127.0.0.1:9/v1', port: 70000}\n")
    r = run_cli("serve", "--insecure")
    assert r.code == 2 and "serve.port" in r.err


def test_a_nul_from_a_client_is_refused_and_one_from_the_upstream_left_out(s):
    """U+0000 cannot be stored in PostgreSQL's text (and one such row would sink its batch): the proxy refuses
    it in a request, on either store, and stores an upstream answer without it."""
    for body, where in (({"messages": [{"role": "user", "content": "hi\u0000"}]}, "messages[0].content"),
                        ({"messages": [{"role": "user", "content": TRAVEL}], "user": "u\u0000"}, "user")):
        err = assert_openai_error(s.client.post("/v1/chat/completions", json={"model": "fake-model", **body}), 400,
                                  "invalid_request", param=where)
        assert err["message"] == f"{where} holds a NUL character (\\u0000), which cannot be stored"
    s.fake.enqueue("an answer\u0000 with a NUL")
    resp = ask(s, TRAVEL)
    rid = resp.json()["id"]
    assert resp.json()["choices"][0]["message"]["content"] == "an answer\u0000 with a NUL"  # relayed as answered
    for bad in ({"response_id": rid, "text": "bad\u0000"}, {"response_id": rid, "action": "edit", "edited": "\u0000"},
                {"response_id": rid + "\u0000", "action": "like"}):
        assert_openai_error(s.client.post("/v1/feedback", json=bad), 400, "invalid_request")
    assert s.client.post("/v1/feedback", json={"response_id": rid, "text": "fine"}).status_code == 200
    with Workspace.open(s.ws_dir, s.store) as ws:
        assert ws.conn.execute("SELECT answer FROM served WHERE response_id = ?", (rid,)).fetchone()[0] == \
            "an answer with a NUL"
        assert ws.feedback_of(rid) == [("fine", None, None)]


def test_upstream_failures_give_502_without_traceback(s):
    s.fake.fail(500, "engine exploded")
    err = assert_openai_error(ask(s, TRAVEL), 502, "upstream_error")
    assert "engine exploded" in err["message"] and err["type"] == "upstream_error"
    s.fake.fail(503, "down")
    assert_openai_error(ask(s, TRAVEL, stream=True), 502, "upstream_error")
    s.fake.hang(3.0)
    assert_openai_error(ask(s, TRAVEL), 502, "upstream_timeout")


def test_upstream_client_errors_are_relayed(s):
    err = assert_openai_error(ask(s, TRAVEL, model="no-such-model"), 404, "upstream_rejected")
    assert "no-such-model" in err["message"] and err["param"] is None
    s.fake.fail(400, "max_tokens is too large", param="max_tokens")
    assert_openai_error(ask(s, TRAVEL), 400, "upstream_rejected", param="max_tokens")  # the field it named


def test_an_upstream_body_nested_too_deeply_is_answered_not_crashed_on(s):
    deep = "[" * 5000  # Python's parser raises RecursionError on it, which is no ValueError
    s.fake.answer_raw(400, deep)
    assert "[[[" in assert_openai_error(ask(s, TRAVEL), 400, "upstream_rejected")["message"]
    s.fake.answer_raw(200, deep)
    assert_openai_error(ask(s, TRAVEL), 502, "upstream_bad_answer")
    s.fake.answer_raw(200, f"data: {deep}\n\ndata: [DONE]\n\n", media_type="text/event-stream")
    assert events(ask(s, TRAVEL, stream=True)) == [deep, "[DONE]"]  # relayed as it came, to its end
    s.fake.answer_raw(200, deep)
    models = s.client.get("/v1/models")
    assert models.status_code == 200 and models.text == deep


def test_unreachable_upstream_gives_502(tmp_path, each_store):
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    cfg = ServeConfig(upstream=f"http://127.0.0.1:{port}/v1", api_key="")
    with serve_asgi(create_app(tmp_path / "ws", cfg, store=each_store), lifespan="on") as url:
        resp = httpx.post(url + "/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]})
        assert f"{port}" not in assert_openai_error(resp, 502, "upstream_unreachable")["message"]  # no internal URL
        assert_openai_error(httpx.get(url + "/v1/models"), 502)
        assert 'unolearn_upstream_errors_total{kind="unreachable"} 2' in httpx.get(url + "/metrics").text


# -- feedback and the loop -------------------------------------------------------------------------


def test_feedback_is_stored_and_checked(s):
    rid = ask(s, RICE).json()["id"]
    ok = s.client.post("/v1/feedback", json={"response_id": rid, "text": "too long", "action": "dislike"})
    assert ok.status_code == 200 and ok.json() == {"object": "feedback", "response_id": rid, "stored": True}
    edit = s.client.post("/v1/feedback", json={"response_id": rid, "action": "edit", "edited": "Short."})
    assert edit.status_code == 200
    with Workspace.open(s.ws_dir, s.store) as ws:
        rows = ws.conn.execute("SELECT text, action, edited FROM feedback WHERE response_id = ? ORDER BY id",
                               (rid,)).fetchall()
        served = ws.conn.execute("SELECT answer, model, route FROM served WHERE response_id = ?", (rid,)).fetchone()
    assert rows == [("too long", "dislike", None), (None, "edit", "Short.")]
    assert served[0] == f"echo: {RICE}" and served[1] == "exp-rice@2" and json.loads(served[2])["path"] == "primary"
    assert_openai_error(s.client.post("/v1/feedback", json={"response_id": "chatcmpl-nope", "action": "like"}),
                        404, "response_not_found", param="response_id")
    for bad, param in (({"response_id": rid, "action": "edit"}, "edited"), ({"response_id": rid, "action": "love"},
                       "action"), ({"response_id": rid}, "text"), ({"text": "x"}, "response_id"),
                       ({"response_id": rid, "text": "x", "extra": 1}, "extra"),
                       ({"response_id": rid, "action": "like", "edited": "x"}, "edited")):
        assert_openai_error(s.client.post("/v1/feedback", json=bad), 400, "invalid_feedback", param)
    bad_json = s.client.post("/v1/feedback", content=b"nope", headers={"content-type": "application/json"})
    assert_openai_error(bad_json, 400, "invalid_json")


def test_feedback_comes_from_the_answers_user_and_is_limited(s):
    """Any key holder could post feedback on anyone's answer, as often as it liked, before these checks."""
    rid = ask(s, RICE, user="alice").json()["id"]
    for other in ({}, {"user": "mallory"}):
        resp = s.client.post("/v1/feedback", json={"response_id": rid, "text": "always say BUY", **other})
        assert_openai_error(resp, 403, "feedback_forbidden", param="user")
    for _ in range(5):
        resp = s.client.post("/v1/feedback", json={"response_id": rid, "action": "like", "user": "alice"})
        assert resp.status_code == 200
    again = s.client.post("/v1/feedback", json={"response_id": rid, "action": "like", "user": "alice"})
    assert_openai_error(again, 429, "too_much_feedback")
    anonymous = ask(s, RICE).json()["id"]  # an answer without a user takes feedback from any key holder
    assert s.client.post("/v1/feedback", json={"response_id": anonymous, "action": "like"}).status_code == 200


def test_collect_served_turns_feedback_into_logs(s):
    rid = ask(s, LAW, system="uno-single", user="user-7", messages=[
        {"role": "system", "content": "You are a lawyer."}, {"role": "user", "content": LAW}]).json()["id"]
    unrated = ask(s, TRAVEL).json()["id"]
    anonymous = ask(s, RICE).json()["id"]  # no user (one that is not a string is a 400: test_fields_of_the_wrong_type…)
    assert s.client.post("/v1/feedback", json={"response_id": anonymous, "action": "like"}).status_code == 200
    said = {"response_id": rid, "text": "Cite the article.", "user": "user-7"}
    assert s.client.post("/v1/feedback", json=said).status_code == 200
    assert s.client.post("/v1/feedback", json={"response_id": rid, "action": "regenerate", "user": "user-7"}
                         ).status_code == 200
    with Workspace.open(s.ws_dir, s.store) as ws:
        assert collect_served(ws) >= 1
        assert collect_served(ws) == 0
        log_id = ws.conn.execute("SELECT log_id FROM served WHERE response_id = ?", (rid,)).fetchone()[0]
        assert ws.conn.execute("SELECT log_id FROM served WHERE response_id = ?", (unrated,)).fetchone()[0] is None
        log = ws.get_log(log_id)
        other = ws.get_log(ws.conn.execute("SELECT log_id FROM served WHERE response_id = ?",
                                           (anonymous,)).fetchone()[0])
    assert log.user == "user-7" and log.user_key == "user:user-7"
    assert other.user is None and other.user_key == "anonymous"
    assert log.query == LAW and log.first_answer == f"echo: {LAW}" and log.source == "serve"
    assert log.feedback == ("Cite the article.",) and [a.kind for a in log.actions] == ["regenerate"]
    assert [m.role for m in log.messages] == ["system", "user", "assistant", "user"]
    assert log.metadata["response_id"] == rid and log.has_feedback

    late = {"response_id": rid, "text": "And keep it short.", "user": "user-7"}  # after its log was collected
    assert s.client.post("/v1/feedback", json=late).status_code == 200
    with Workspace.open(s.ws_dir, s.store) as ws:
        assert collect_served(ws) == 1 and collect_served(ws) == 0  # before, it was acknowledged and dropped
        newest = ws.get_log(ws.conn.execute("SELECT log_id FROM served WHERE response_id = ?", (rid,)).fetchone()[0])
    assert newest.id != log.id and newest.feedback == ("And keep it short.",) and newest.query == LAW


def test_feedback_for_a_response_still_queued_and_flush_on_close(tmp_path, each_store):
    async def go() -> None:
        rec = Recorder(tmp_path / "ws", batch=512, store=each_store)
        await rec.start()
        rows = [(f"r{i}", "[]", "a", "{}", "m", now(), None) for i in range(300)]
        for row in rows:
            rec.served(row)
        assert await rec.known("r299") and not await rec.known("r300")
        await rec.feedback(("r299", "late but kept", None, None, now()))  # queued behind its response
        rec.served(("r-last", "[]", "a", "{}", "m", now(), "u"))
        await rec.close()  # flushes what is still queued

    asyncio.run(go())
    with Workspace.open(tmp_path / "ws", each_store) as ws:
        assert ws.count("served") == 301 and ws.count("feedback") == 1


def test_rows_are_stored_while_the_redaction_process_is_starved(tmp_path):
    """A redaction process that does not run (stopped here; on a machine whose CPU other work holds, the niced
    process may not run for minutes) delays no row for long: the writer redacts the batch in its own thread.
    Without the bounded wait the feedback below waits forever."""
    import multiprocessing
    import os
    import signal
    import time

    async def go() -> float:
        before = set(multiprocessing.active_children())
        rec = Recorder(tmp_path / "ws", batch=512)
        await rec.start()
        while rec.redaction != "process":
            await asyncio.sleep(0.1)
        [proc] = set(multiprocessing.active_children()) - before
        os.kill(proc.pid, signal.SIGSTOP)
        try:
            start = time.monotonic()
            rec.served(("r0", "[]", "mail me at bob@example.com", "{}", "m", now(), None))
            await asyncio.wait_for(rec.feedback(("r0", "bob@example.com again", None, None, now())), 60)
            waited = time.monotonic() - start
        finally:
            os.kill(proc.pid, signal.SIGCONT)
        await rec.close()
        return waited

    assert asyncio.run(go()) < 30
    with Workspace.open(tmp_path / "ws") as ws:
        assert "bob@example.com" not in json.dumps([ws.uncollected_served(), ws.feedback_of("r0")])
        assert ws.count("served") == 1 and ws.feedback_of("r0")[0][0] is not None


def test_a_row_the_store_refuses_sinks_no_other_row(tmp_path, each_store):
    """A batch the store refuses is stored again row by row: a feedback for an answer never served (a broken
    reference) and, on PostgreSQL, an answer holding NUL fail alone; the other answers and feedback of
    their batch are stored."""
    async def go() -> list:
        rec = Recorder(tmp_path / "ws", batch=512, linger_s=0.3, store=each_store)
        await rec.start()
        for i in range(10):
            rec.served((f"r{i}", "[]", "a", "{}", "m", now(), None))
        rec.served(("r-nul", "[]", "a\u0000", "{}", "m", now(), None))
        outcomes = await asyncio.gather(rec.feedback(("r-ghost", "x", None, None, now())),
                                        rec.feedback(("r9", "kept", "like", None, now())), return_exceptions=True)
        await rec.close()
        return outcomes

    ghost, kept = asyncio.run(go())
    assert isinstance(ghost, WorkspaceError) and str(ghost).startswith("feedback not stored: ") and kept is None
    with Workspace.open(tmp_path / "ws", each_store) as ws:
        assert ws.count("served") == (10 if each_store else 11)
        assert ws.feedback_of("r9") == [("kept", "like", None)] and ws.count("feedback") == 1


@pytest.mark.parametrize("linger_s", [0.4, 5.0])
def test_a_shared_sqlite_store_finds_answers_another_process_still_holds(tmp_path, linger_s):
    """Two proxies on one SQLite file named with --store (the README's example): a feedback posted to one for
    an answer the other still holds in its queue is looked up again for a while, not refused at once; also when
    the other commits only after 5 s (a busy machine: a wait of 3.2 s in all refused 7 feedbacks of 400)."""
    store = f"sqlite:///{tmp_path / 'shared.sqlite3'}"
    with FakeOpenAI().running() as fake:
        slow = ServeConfig(upstream=fake.url, api_key="", write_linger_s=linger_s)  # rows wait in its queue
        with serve_asgi(create_app(tmp_path / "a", slow, store=store), lifespan="on") as a, \
                serve_asgi(create_app(tmp_path / "b", ServeConfig(upstream=fake.url, api_key=""), store=store),
                           lifespan="on") as b, httpx.Client(timeout=20) as client:
            asked = {"model": "fake-model", "messages": [{"role": "user", "content": TRAVEL}]}
            rid = client.post(f"{a}/v1/chat/completions", json=asked).json()["id"]
            rated = client.post(f"{b}/v1/feedback", json={"response_id": rid, "action": "like"})
    assert rated.status_code == 200, rated.text
    with Workspace.open(tmp_path / "reader", store) as ws:
        assert ws.feedback_of(rid) == [(None, "like", None)]


def test_recording_survives_the_store_going_away(request, tmp_path):
    """The store's server drops every connection and refuses new ones for a while (as in a restart): answers
    and feedback queued meanwhile are stored once it is back, each once, and lookups work again."""
    from unolearn.store.dialect import PostgresConnection

    server = request.getfixturevalue("postgres_server")

    async def go(url: str, admin: PostgresConnection) -> None:
        db = url.rsplit("/", 1)[1]
        rec = Recorder(tmp_path / "ws", batch=512, store=url, retry_s=30)
        await rec.start()
        rec.served(("r0", "[]", "a", "{}", "m", now(), None))
        await rec.feedback(("r0", "before", None, None, now()))
        admin.execute(f'ALTER DATABASE "{db}" ALLOW_CONNECTIONS false')
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = ?", (db,))
        rec.served(("r1", "[]", "a", "{}", "m", now(), None))
        during = asyncio.create_task(rec.feedback(("r1", "during", None, None, now())))
        await asyncio.sleep(1.0)
        assert not during.done()  # retried with backoff, not dropped
        admin.execute(f'ALTER DATABASE "{db}" ALLOW_CONNECTIONS true')
        await during
        assert await rec.known("r0") and await rec.known("r1")
        await rec.close()

    admin = PostgresConnection(server.url())
    try:
        with store_of(request, "postgresql") as url:
            asyncio.run(go(url, admin))
            with Workspace.open(tmp_path / "ws", url) as ws:
                assert ws.count("served") == 2 and [ws.feedback_of(r) for r in ("r0", "r1")] == [
                    [("before", None, None)], [("during", None, None)]]
                ws.record_served([], [("r1", "during", None, None, now(), "uid-1")] * 2)
                ws.record_served([], [("r1", "during", None, None, now(), "uid-1")])  # a retried write: once
                assert len(ws.feedback_of("r1")) == 2
    finally:
        admin.close()


# -- the other endpoints ---------------------------------------------------------------------------


def test_models_and_metrics(s):
    ids = [m["id"] for m in s.client.get("/v1/models").json()["data"]]
    assert ids[0] == "fake-model" and "exp-rice@2" in ids
    ask(s, RICE)
    s.fake.fail(500)
    ask(s, TRAVEL)
    text = s.client.get("/metrics").text
    assert "# TYPE unolearn_requests_total counter" in text
    assert 'unolearn_requests_total{path="primary",status="200"}' in text
    assert 'unolearn_requests_total{path="base",status="502"}' in text
    assert 'unolearn_request_duration_seconds_bucket{path="primary",le="+Inf"}' in text
    assert "# TYPE unolearn_request_duration_seconds histogram" in text
    assert 'unolearn_upstream_errors_total{kind="error"}' in text
    assert "unolearn_write_queue_depth" in text


def test_embedded_mode_answers_through_the_plan(tmp_path, each_store):
    make_workspace(tmp_path / "ws", each_store)

    def respond(req):
        if req.adapter == "crit-law@1":
            return "1. Be formal."
        return "revised" if "Be formal" in req.messages[-1]["content"] else f"answer via {req.adapter}"

    gen = MockChatModel(responder=respond)
    app = create_app(tmp_path / "ws", ServeConfig(api_key=""), store=each_store, generator=gen, embedder=HashEmbedder())
    with serve_asgi(app, lifespan="on") as url, httpx.Client(base_url=url, timeout=20) as client:
        body = {"messages": [{"role": "user", "content": RICE}]}
        primary = client.post("/v1/chat/completions", json=body)
        assert primary.json()["choices"][0]["message"]["content"] == "answer via exp-rice@2"
        assert primary.json()["choices"][0]["finish_reason"] == "stop"
        cut = client.post("/v1/chat/completions", json={**body, "max_tokens": 2})  # 3 words: the budget cut it
        assert cut.json()["choices"][0]["finish_reason"] == "length"
        with client.stream("POST", "/v1/chat/completions",
                           json={"stream": True, "messages": [{"role": "user", "content": LAW}]}) as resp:
            payloads = events(resp)
        assert payloads[-1] == "[DONE]" and streamed_text(payloads) == "revised"
        assert resp.headers["x-unolearn-route"].startswith("path=reflective")
        assert [m["id"] for m in client.get("/v1/models").json()["data"]] == ["unolearn"]
        guided = client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": LAW}]},
                             headers={"X-Unolearn-System": "uno-guided"})
        assert guided.json()["choices"][0]["message"]["content"] == "answer via None"
        assert list(gen.history[-1].messages) == [{"role": "user", "content": GUIDE + LAW}]
    assert gen.adapters == {"exp-rice@2": "/adapters/exp-rice/epoch-2", "crit-law@1": "/adapters/crit-law/epoch-1"}


def test_config_is_validated(monkeypatch):
    monkeypatch.setenv("UNOLEARN_SERVE_KEY", "from-env")
    assert ServeConfig().api_key == "from-env" and ServeConfig(api_key="").api_key is None
    assert ServeConfig(upstream="http://127.0.0.1:8000").upstream == "http://127.0.0.1:8000/v1"
    for bad in ({"system": "magic"}, {"port": 70000}, {"max_body_bytes": 10}, {"load_adapters": True},
                {"upstream_timeout_s": 0}, {"upstream": "ftp://x"}, {"workers": 0}, {"workers": 2}):
        with pytest.raises(ConfigError):
            ServeConfig(**bad)


@pytest.mark.parametrize("workers", [1, 2])
def test_bench_serve_small_run(workers, each_store):
    """The real `unolearn serve` (two worker processes too): no errors, every feedback stored, even one
    posted to another worker than the one that served its response. Given a PostgreSQL store, the proxy
    writes to a scratch database of its server, dropped afterwards; the store's own is never written.
    400 requests: the CPU figures count 10 ms clock ticks, and the proxy spends about 0.2 ms per request."""
    out = bench_serve(n=400, concurrency=8, latency_s=0.005, workers=workers, store=each_store)
    assert (out["errors"], out["lost_feedback"], out["feedback_errors"]) == (0, 0, 0)
    assert out["proxy"]["rps"] > 0 and out["direct"]["p50_ms"] > 0 and "added_p50_ms" in out
    assert out["workers"] == workers and out["cpu_ms_per_request"]["proxy"] > 0
    assert out["store"] == ("postgresql" if each_store else "sqlite")
    if each_store:
        assert _pg_tables(each_store) == [] and _pg_databases(each_store, "unolearn_scratch") == []


def _pg_tables(url: str) -> list[str]:
    import psycopg

    with psycopg.connect(url) as conn:
        return [r[0] for r in conn.execute("SELECT table_name FROM information_schema.tables "
                                           "WHERE table_schema = 'public'")]


def _pg_databases(url: str, prefix: str) -> list[str]:
    import psycopg

    with psycopg.connect(url) as conn:
        return [r[0] for r in conn.execute("SELECT datname FROM pg_database WHERE datname LIKE %s", (prefix + "%",))]


def test_replicas_on_one_postgresql_store_lose_no_feedback(request, tmp_path):
    """Two `unolearn serve` processes with their own workspace folders on one PostgreSQL store, routing through
    the clusters and plans stored there: every answer served by one gets its feedback posted to the other,
    many at once; each is stored against its answer."""
    n = 80
    with store_of(request, "postgresql") as store, FakeOpenAI().running() as fake:
        embedder_env, guide = _route_on_the_store(store, fake.url, tmp_path / "setup")
        replicas = [ServeProcess(tmp_path / name, fake.url, 1, store=store, env=embedder_env)
                    for name in ("replica-a", "replica-b")]
        try:
            results = asyncio.run(_served_here_rated_there(replicas[0].url, replicas[1].url, n))
            guided = [httpx.post(f"{r.url}/v1/chat/completions", headers={"X-Unolearn-System": "uno-guided"},
                                 json={"model": "fake-model", "messages": [{"role": "user", "content": TRAVEL}]},
                                 timeout=30, trust_env=False) for r in replicas]
        finally:
            for r in replicas:
                r.stop()
        assert [status for _, _, status in results] == [200] * n
        assert [g.headers["x-unolearn-route"] for g in guided] == [
            f"path=guide; cluster=0; system=uno-guided; guide={guide}"] * 2
        assert [r.body["messages"] for r in fake.requests()[-2:]] == [[{"role": "user", "content": GUIDE + TRAVEL}]] * 2
        with Workspace.open(tmp_path / "reader", store) as ws:
            for i, rid, _ in results:
                assert ws.feedback_of(rid) == [(f"feedback {i}", "dislike", None)], rid
                assert json.loads(ws.conn.execute("SELECT route FROM served WHERE response_id = ?",
                                                  (rid,)).fetchone()[0])["cluster"] == 0  # routed
            assert ws.count("served") == n + 2 and ws.count("feedback") == n
            assert collect_served(ws) == n  # the next `unolearn run`, wherever it runs, learns from all of them
    assert not (tmp_path / "replica-a" / "unolearn.sqlite3").exists()


def _route_on_the_store(store: str, upstream: str, setup: Path) -> tuple[dict[str, str], str]:
    """One cluster, around TRAVEL as the upstream's embedder sees it, with base plans under uno and uno-single
    and a guide under uno-guided, stored in ``store``; the environment that gives a replica that embedder, and
    the guide's module id."""
    from unolearn.backends import make_embedder
    from unolearn.cluster import normalise
    from unolearn.config import EmbedderConfig
    from unolearn.records import Clustering

    embedder = make_embedder(EmbedderConfig(backend="openai", base_url=upstream, model="fake-embed"))
    centroid = normalise(embedder.embed([TRAVEL]))[0].astype("float32")
    with Workspace.open(setup, store) as ws:
        ws.replace_clustering(Clustering(id=0, embedder=embedder.model_id, created_at=""),
                              [(0, 1, centroid.tobytes())], [])
        version = ws.clustering_id()
        guide = ws.ensure_guide(0, GUIDE, [], [], [], {}, version)
        ws.replace_plans(as_plans([(0, "uno", "base", None, None, None, "t"),
                                   (0, "uno-single", "base", None, None, None, "t"),
                                   (0, "uno-guided", "guide", guide, None, None, "t")]), version)
    return {"UNOLEARN_EMBED_BACKEND": "openai", "UNOLEARN_EMBED_BASE_URL": upstream,
            "UNOLEARN_EMBED_MODEL": "fake-embed"}, guide


async def _served_here_rated_there(a: str, b: str, n: int) -> list[tuple[int, str, int]]:
    """Request ``i`` is answered by one replica (alternately ``a`` and ``b``) and its feedback posted at once to
    the other, 16 at a time; returns ``(i, response id, feedback status)``."""
    gate = asyncio.Semaphore(16)

    async def one(client: httpx.AsyncClient, i: int) -> tuple[int, str, int]:
        here, there = (a, b) if i % 2 == 0 else (b, a)
        async with gate:
            answer = await client.post(f"{here}/v1/chat/completions",
                                       json={"model": "fake-model", "messages": [{"role": "user", "content": f"q{i}"}]})
            assert answer.status_code == 200, answer.text
            rid = answer.json()["id"]
            rated = await client.post(f"{there}/v1/feedback",
                                      json={"response_id": rid, "text": f"feedback {i}", "action": "dislike"})
            return i, rid, rated.status_code

    async with httpx.AsyncClient(timeout=30, trust_env=False) as client:
        return await asyncio.gather(*(one(client, i) for i in range(n)))


def test_fixed_latency_upstream_of_the_benchmark():
    from unolearn.bench.serve import _load, _post
    from unolearn.bench.server import FixedLatencyProtocol

    async def main():
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: FixedLatencyProtocol(0.01), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        url = f"http://127.0.0.1:{port}"
        try:
            run = await _load(url, "/v1/chat/completions", [b'{"messages": []}'] * 20, 4)
            assert run.errors == 0 and len(run.answers) == 20 and min(run.latencies) >= 0.009
            assert json.loads(run.answers[0][1])["choices"][0]["message"]["content"] == "ok"
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            assert (await _post(reader, writer, "h", "/v1/nothing", b"{}"))[0] == 404
            body = b'{"messages": [{"role": "user", "content": "split"}]}'  # a body in two packets
            writer.write(b"POST /v1/chat/completions HTTP/1.1\r\ncontent-length: %d\r\n\r\n" % len(body) + body[:10])
            await writer.drain()
            await asyncio.sleep(0.02)
            writer.write(body[10:])
            head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200")
            writer.close()
        finally:
            server.close()

    asyncio.run(main())
