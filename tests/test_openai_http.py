"""OpenAI-compatible HTTP backends against a real fake server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import email.utils
import gc
import json
import socket
import time
import warnings

import httpx
import numpy as np
import pytest
from fake_openai import FakeOpenAI, fake_openai, fake_vector  # noqa: F401  (fixture)

from unolearn.backends.base import ChatRequest
from unolearn.backends.openai_http import OpenAIChatModel, OpenAIEmbedder, normalize_base_url, retry_after_s
from unolearn.bench.throughput import bench_throughput
from unolearn.errors import BackendError, BackendHTTPError, ConfigError
from unolearn.lora_endpoints import unload_adapter

SCHEMA = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}


def model_for(fake: FakeOpenAI, **kw) -> OpenAIChatModel:
    """A chat model on the fake server with fast retries."""
    kw = {"api_key": "", "backoff_s": 0.01, "timeout_s": 10.0, **kw}
    return OpenAIChatModel(fake.url, fake.model, **kw)


def one(model: OpenAIChatModel, request: ChatRequest | str):
    req = ChatRequest.of(request) if isinstance(request, str) else request
    return model.generate_sync([req])[0]


# --- plumbing ------------------------------------------------------------------------------------
def test_base_url_normalisation_and_model_id():
    assert normalize_base_url("http://h:8000") == "http://h:8000/v1"
    assert normalize_base_url("http://h:8000/v1/") == "http://h:8000/v1"
    assert normalize_base_url("https://x.ai/v1beta/openai/") == "https://x.ai/v1beta/openai"
    assert OpenAIChatModel("http://h:8000/", "qwen").model_id == "openai:http://h:8000/v1:qwen"
    with pytest.raises(ConfigError):
        normalize_base_url("h:8000")


def test_retry_after_parsing():
    assert retry_after_s(httpx.Headers({"Retry-After": "2.5"})) == 2.5
    assert retry_after_s(httpx.Headers({"retry-after-ms": "250"})) == 0.25
    date = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 25 < retry_after_s(httpx.Headers({"Retry-After": date})) <= 31
    assert retry_after_s(httpx.Headers({})) is None
    assert retry_after_s(httpx.Headers({"Retry-After": "soon"})) is None


# --- chat ----------------------------------------------------------------------------------------
def test_results_in_request_order_with_usage(fake_openai):
    model = model_for(fake_openai, concurrency=8)
    prompts = [f"question number {i}" for i in range(20)]
    results = model.generate_sync([ChatRequest.of(p) for p in prompts])
    assert [r.text for r in results] == [f"echo: {p}" for p in prompts]
    assert all(r.ok and r.prompt_tokens == 3 and r.completion_tokens == 4 for r in results)
    assert all(r.finish_reason == "stop" for r in results)
    assert model.usage.calls == 20 and model.usage.prompt_tokens == 60
    body = fake_openai.requests()[0].body
    assert body["model"] == "fake-model" and body["max_tokens"] == 512 and "response_format" not in body


def test_real_concurrency(fake_openai):
    fake_openai.latency_s = 0.2
    model = model_for(fake_openai, concurrency=16)
    start = time.perf_counter()
    results = model.generate_sync([ChatRequest.of(f"q{i}") for i in range(16)])
    wall = time.perf_counter() - start
    assert all(r.ok for r in results)
    assert wall < 1.2, f"16 requests of 200 ms took {wall:.2f}s: not concurrent"
    assert fake_openai.max_in_flight >= 12


def test_concurrency_is_bounded(fake_openai):
    fake_openai.latency_s = 0.05
    model = model_for(fake_openai, concurrency=3)
    assert all(r.ok for r in model.generate_sync([ChatRequest.of(f"q{i}") for i in range(12)]))
    assert fake_openai.max_in_flight == 3


def test_retries_429_with_retry_after_then_500_then_success(fake_openai):
    fake_openai.fail(429, "slow down", retry_after=0.3)
    fake_openai.fail(500, "boom")
    model = model_for(fake_openai)
    start = time.perf_counter()
    res = one(model, "hello")
    assert res.ok and res.text == "echo: hello"
    assert len(fake_openai.requests()) == 3
    assert time.perf_counter() - start >= 0.3  # Retry-After honoured (backoff alone is <= 10 ms)


def test_retries_after_timeout(fake_openai):
    fake_openai.hang(3.0)
    model = model_for(fake_openai, timeout_s=0.4)
    start = time.perf_counter()
    res = one(model, "hello")
    assert res.ok and res.text == "echo: hello"
    assert len(fake_openai.requests()) == 2
    assert time.perf_counter() - start < 2.5


def test_gives_up_after_max_retries(fake_openai):
    fake_openai.fail(503, "overloaded", times=3)
    res = one(model_for(fake_openai, max_retries=2), "hello")
    assert isinstance(res.error, BackendHTTPError)
    assert res.error.status == 503 and res.error.retryable
    assert "overloaded" in str(res.error) and "after 3 attempts" in str(res.error)
    assert len(fake_openai.requests()) == 3


def test_4xx_fails_at_once_with_server_message(fake_openai):
    fake_openai.fail(400, "This model's maximum context length is 4096 tokens.\nPlease reduce.")
    res = one(model_for(fake_openai), "hello")
    assert isinstance(res.error, BackendHTTPError) and res.error.status == 400 and not res.error.retryable
    assert "maximum context length is 4096 tokens. Please reduce." in str(res.error)
    assert "\n" not in str(res.error)
    assert len(fake_openai.requests()) == 1


def test_a_body_nested_too_deeply_is_a_backend_error(fake_openai):
    deep = "[" * 5000  # Python's parser raises RecursionError on it, which is no ValueError
    fake_openai.answer_raw(200, deep)
    res = one(model_for(fake_openai), "hello")
    assert isinstance(res.error, BackendError) and "non-JSON answer" in str(res.error)
    fake_openai.answer_raw(400, deep)
    res = one(model_for(fake_openai), "hello")
    assert isinstance(res.error, BackendHTTPError) and res.error.status == 400 and "[[[" in str(res.error)


def test_connection_refused_is_retried_then_reported():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    model = OpenAIChatModel(f"http://127.0.0.1:{port}", "m", api_key="", max_retries=2, backoff_s=0.01)
    res = one(model, "hello")
    assert isinstance(res.error, BackendError) and "ConnectError" in str(res.error)
    assert "after 3 attempts" in str(res.error)


def test_json_schema_response_format(fake_openai):
    fake_openai.enqueue({"a": 1})
    res = one(model_for(fake_openai), ChatRequest.of("give json", schema=SCHEMA))
    assert res.ok and res.parsed == {"a": 1}
    assert fake_openai.requests()[0].body["response_format"] == {
        "type": "json_schema", "json_schema": {"name": "output", "schema": SCHEMA, "strict": True}}


def test_first_token_logprobs_are_asked_for_and_read(fake_openai):
    fake_openai.enqueue("Yes")
    res = one(model_for(fake_openai), ChatRequest.of("covered?", max_tokens=1, logprobs=50))
    assert res.top_logprobs == {"Yes": -0.1, "No": -2.5}
    body = fake_openai.requests()[0].body
    assert body["logprobs"] is True and body["top_logprobs"] == 20  # the API's maximum
    fake_openai.enqueue("plain")
    assert one(model_for(fake_openai), ChatRequest.of("no logprobs")).top_logprobs is None


def test_json_schema_rejected_falls_back_to_json_object(fake_openai):
    fake_openai.reject_json_schema = True
    fake_openai.enqueue({"a": 1}, {"a": 2})
    model = model_for(fake_openai)
    assert one(model, ChatRequest.of("first", schema=SCHEMA)).parsed == {"a": 1}
    assert not model.json_schema_supported
    assert one(model, ChatRequest.of("second", schema=SCHEMA)).parsed == {"a": 2}
    formats = [r.body["response_format"]["type"] for r in fake_openai.requests()]
    assert formats == ["json_schema", "json_object", "json_object"]  # remembered: no second rejection
    assert fake_openai.requests()[1].body["response_format"]["schema"] == SCHEMA


def test_invalid_json_is_reasked(fake_openai):
    fake_openai.enqueue("Sure! {not json", {"b": 1}, {"a": 7})
    res = one(model_for(fake_openai), ChatRequest.of("give json", schema=SCHEMA, seed=1))
    assert res.ok and res.parsed == {"a": 7}
    assert [r.body["seed"] for r in fake_openai.requests()] == [1, 1001, 1002]


def test_api_key_resolution(fake_openai, monkeypatch):
    fake_openai.api_key = "k-unolearn"
    monkeypatch.setenv("UNOLEARN_API_KEY", "k-unolearn")
    monkeypatch.setenv("OPENAI_API_KEY", "k-openai")
    assert one(OpenAIChatModel(fake_openai.url, fake_openai.model), "hi").ok
    assert fake_openai.history[-1].headers["authorization"] == "Bearer k-unolearn"
    monkeypatch.delenv("UNOLEARN_API_KEY")
    res = one(OpenAIChatModel(fake_openai.url, fake_openai.model), "hi")
    assert isinstance(res.error, BackendHTTPError) and res.error.status == 401
    assert "Incorrect API key" in str(res.error)
    assert fake_openai.history[-1].headers["authorization"] == "Bearer k-openai"
    assert one(OpenAIChatModel(fake_openai.url, fake_openai.model, api_key="k-unolearn"), "hi").ok
    monkeypatch.delenv("OPENAI_API_KEY")
    fake_openai.api_key = None
    assert one(OpenAIChatModel(fake_openai.url, fake_openai.model), "hi").ok
    assert "authorization" not in fake_openai.history[-1].headers


def test_adapters(fake_openai):
    model = model_for(fake_openai)
    req = ChatRequest.of("hello", adapter="expert-3")
    missing = one(model, req)
    assert isinstance(missing.error, BackendHTTPError) and missing.error.status == 404

    async def load_twice():
        try:
            await model.add_adapter("expert-3", "/adapters/c3")
            await model.add_adapter("expert-3", "/adapters/c3")  # "already loaded" is success
        finally:
            await model.aclose()

    asyncio.run(load_twice())
    assert fake_openai.adapters == {"expert-3": "/adapters/c3"}
    assert fake_openai.requests("/load_lora_adapter")[0].body == {"lora_name": "expert-3", "lora_path": "/adapters/c3"}
    res = one(model, req)
    assert res.ok and fake_openai.requests()[-1].body["model"] == "expert-3"

    async def unload_twice():  # the endpoints' client that the proxy uses, over the backend's transport
        try:
            await unload_adapter(model._adapter_post, "expert-3")
            await unload_adapter(model._adapter_post, "expert-3")  # an unknown adapter is not an error
        finally:
            await model.aclose()

    asyncio.run(unload_twice())
    assert fake_openai.adapters == {}


def test_client_survives_new_event_loops(fake_openai):
    model = model_for(fake_openai)
    # each asyncio.run is a new loop; the model must not reuse the first loop's (dead) client
    assert asyncio.run(model.generate([ChatRequest.of("q0")]))[0].ok

    async def second_loop():
        try:
            return await model.generate([ChatRequest.of("q1")])
        finally:
            await model.aclose()

    assert asyncio.run(second_loop())[0].text == "echo: q1"
    with warnings.catch_warnings():  # the first loop's client was dropped unclosed: collect it here
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()


# --- embeddings ----------------------------------------------------------------------------------
def test_embeddings_batched_ordered_normalised(fake_openai):
    fake_openai.reverse_embeddings = True
    fake_openai.fail(429, retry_after=0)
    emb = OpenAIEmbedder(fake_openai.url, "emb-model", api_key="", batch_size=3, backoff_s=0.01)
    texts = [f"text {i}" for i in range(7)]
    vecs = emb.embed(texts)
    assert vecs.shape == (7, fake_openai.dim) and vecs.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, rtol=1e-5)
    expected = np.array([fake_vector(t, fake_openai.dim) for t in texts])
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(vecs, expected, rtol=1e-4, atol=1e-6)
    sent = [r.body["input"] for r in fake_openai.requests("/embeddings")]
    assert sent == [texts[0:3], texts[0:3], texts[3:6], texts[6:7]]  # first batch retried after 429
    assert emb.model_id == f"openai:{fake_openai.url}:emb-model"


def test_embeddings_4xx(fake_openai):
    fake_openai.fail(400, "input too long")
    with pytest.raises(BackendHTTPError, match="input too long"):
        OpenAIEmbedder(fake_openai.url, "emb", api_key="").embed(["x"])


# --- the fake itself -----------------------------------------------------------------------------
def test_fake_streams_sse_and_lists_models(fake_openai):
    fake_openai.enqueue("three little words")
    body = {"model": "fake-model", "messages": [{"role": "user", "content": "hi"}], "stream": True,
            "stream_options": {"include_usage": True}}
    with httpx.stream("POST", fake_openai.url + "/chat/completions", json=body, timeout=5) as resp:
        events = [line[6:] for line in resp.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == "three little words" and chunks[-1]["usage"]["completion_tokens"] == 3
    models = httpx.get(fake_openai.url + "/models", timeout=5).json()
    assert [m["id"] for m in models["data"]] == ["fake-model"]


# --- benchmark -----------------------------------------------------------------------------------
def test_bench_throughput_small():
    out = bench_throughput(n=40, latency_s=0.05, concurrency=16)
    assert set(out) >= {"n", "sequential_rps", "concurrent_rps", "ratio"}
    assert out["n"] == 40 and out["sequential_rps"] > 0
    assert out["ratio"] > 1


def test_a_server_without_runtime_lora_loading_says_how_to_start_it(fake_openai):
    assert fake_openai.url.endswith("/v1")
    model = model_for(fake_openai)
    model.base_url = fake_openai.url[:-3] + "/v0"  # no adapter endpoints there: 404, as vLLM without --enable-lora

    async def load():
        try:
            await model.add_adapter("expert-3", "/adapters/c3")
        finally:
            await model.aclose()

    with pytest.raises(BackendHTTPError, match="started with --enable-lora and VLLM_ALLOW_RUNTIME_LORA_UPDATING"):
        asyncio.run(load())


def test_an_adapter_folder_the_server_cannot_read_is_named_as_such(fake_openai):
    """vLLM 0.32 answers 404 for a folder it cannot read, the same status as for a missing endpoint: the error
    must say the folder, not that the server lacks --enable-lora (what it said before a real vLLM showed it)."""
    fake_openai.unreadable = {"/elsewhere/c9"}
    model = model_for(fake_openai)

    async def load():
        try:
            await model.add_adapter("expert-9", "/elsewhere/c9")
        finally:
            await model.aclose()

    with pytest.raises(BackendHTTPError, match="cannot at /elsewhere/c9: it must see the workspace's artifacts") as e:
        asyncio.run(load())
    assert "enable-lora" not in str(e.value) and e.value.status == 404
    assert fake_openai.adapters == {}
