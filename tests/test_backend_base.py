import time

import numpy as np
import pytest
from doubles import HashEmbedder, MockChatModel

from unolearn.backends import ChatRequest
from unolearn.backends.base import parse_json_output
from unolearn.backends.cache import CachedChatModel, CachedEmbedder
from unolearn.errors import BackendError, SchemaError

RULES = {"type": "object", "properties": {"rules": {"type": "array", "items": {"type": "string"}}},
         "required": ["rules"]}


def test_results_keep_request_order_and_run_concurrently():
    m = MockChatModel(responder=lambda r: r.messages[0]["content"].upper(), concurrency=8, delay_s=0.1)
    start = time.perf_counter()
    out = m.generate_sync([ChatRequest.of(f"q{i}") for i in range(16)])
    assert [r.text for r in out] == [f"Q{i}" for i in range(16)]
    assert time.perf_counter() - start < 0.8  # 16 × 0.1 s would be 1.6 s one at a time
    assert m.usage.calls == 16 and m.usage.completion_tokens == 16


def test_one_failure_does_not_fail_the_batch():
    m = MockChatModel().enqueue("a", error=BackendError("server down"))
    m.concurrency = 1
    a, b, c = m.generate_sync([ChatRequest.of("1"), ChatRequest.of("2"), ChatRequest.of("3")])
    assert a.ok and a.text == "a" and not b.ok and "server down" in str(b.error) and c.text == "ok"
    assert m.usage.errors == 1


def test_schema_output_is_validated_and_reasked():
    m = MockChatModel().enqueue("not json", '{"rules": "oops"}', '```json\n{"rules": ["Be brief."]}\n```')
    (r,) = m.generate_sync([ChatRequest.of("q", schema=RULES, seed=42)])
    assert r.ok and r.parsed == {"rules": ["Be brief."]}
    assert [h.seed for h in m.history] == [42, 1042, 1043]  # a re-ask changes the seed


def test_schema_failure_after_retries_is_an_error():
    m = MockChatModel(default="nope")
    (r,) = m.generate_sync([ChatRequest.of("q", schema=RULES)])
    assert isinstance(r.error, SchemaError) and len(m.history) == 3


def test_parse_json_output_errors():
    with pytest.raises(SchemaError, match="not valid JSON"):
        parse_json_output("{", RULES)
    with pytest.raises(SchemaError, match="schema"):
        parse_json_output('{"x": 1}', RULES)
    with pytest.raises(SchemaError, match="not valid JSON"):  # Python's parser raises RecursionError on it
        parse_json_output("[" * 5000, RULES)


def test_an_answer_nested_too_deeply_is_reasked_not_raised():
    m = MockChatModel().enqueue("[" * 5000, '{"rules": ["Be brief."]}')
    (r,) = m.generate_sync([ChatRequest.of("q", schema=RULES)])
    assert r.ok and r.parsed == {"rules": ["Be brief."]} and len(m.history) == 2


def test_request_key_covers_everything_that_changes_the_answer():
    base = ChatRequest.of("q", temperature=1.0, seed=1)
    keys = {base.key("m"), base.key("m2"), ChatRequest.of("q2", temperature=1.0, seed=1).key("m"),
            ChatRequest.of("q", temperature=1.0, seed=2).key("m"), ChatRequest.of("q", seed=1).key("m"),
            ChatRequest.of("q", temperature=1.0, seed=1, adapter="a").key("m"),
            ChatRequest.of("q", temperature=1.0, seed=1, schema=RULES).key("m"),
            ChatRequest.of("q", temperature=1.0, seed=1, max_tokens=9).key("m")}
    assert len(keys) == 8 and base.key("m") == ChatRequest.of("q", temperature=1.0, seed=1).key("m")


def test_second_identical_batch_makes_zero_backend_calls(ws):
    inner = MockChatModel(responder=lambda r: '{"rules": ["r"]}')
    batch = [ChatRequest.of(f"q{i}", schema=RULES) for i in range(5)] + [ChatRequest.of("plain")]
    first = CachedChatModel(inner, ws).generate_sync(batch)
    assert len(inner.history) == 6 and all(r.ok and not r.cached for r in first)
    again = CachedChatModel(inner, ws)
    second = again.generate_sync(batch)
    assert len(inner.history) == 6, "the second run called the backend"
    assert [r.parsed for r in second] == [r.parsed for r in first] and all(r.cached for r in second)
    assert again.usage.calls == 0 and again.usage.cached == 6


def test_failed_requests_are_not_cached(ws):
    inner = MockChatModel().enqueue(error=BackendError("boom"))
    m = CachedChatModel(inner, ws)
    assert not m.generate_sync([ChatRequest.of("q")])[0].ok
    assert m.generate_sync([ChatRequest.of("q")])[0].text == "ok" and len(inner.history) == 2


def test_cached_embedder_embeds_each_text_once(ws):
    inner = HashEmbedder()
    e = CachedEmbedder(inner, ws)
    a = e.embed(["too long please", "cite the statute", "too long please"])
    assert a.shape == (3, 64) and np.allclose(np.linalg.norm(a, axis=1), 1.0)
    assert np.allclose(a[0], a[2]) and inner.texts_seen == 2
    b = CachedEmbedder(inner, ws).embed(["cite the statute", "new text"])
    assert inner.texts_seen == 3 and np.allclose(b[0], a[1])
