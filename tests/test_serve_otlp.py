"""OTLP over HTTP on a real `unolearn serve` app on 127.0.0.1: the official OpenTelemetry SDK's OTLP/HTTP exporters
send GenAI spans and evaluation log records; they become served answers and feedback, then logs."""

from __future__ import annotations

import gzip
import json

import httpx
import pytest
from doubles import HashEmbedder
from fake_openai import FakeOpenAI
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as ga
from opentelemetry.semconv._incubating.attributes.user_attributes import USER_ID
from otlp_json import otlp_json

from unolearn.bench.server import serve_asgi
from unolearn.serve import ServeConfig, collect_served, create_app
from unolearn.store import Workspace

KEY = "otlp-key"


@pytest.fixture
def proxy(tmp_path):
    ws_dir = tmp_path / "ws"
    Workspace.open(ws_dir).close()
    fake = FakeOpenAI()
    with fake.running():
        cfg = ServeConfig(upstream=fake.url, api_key=KEY, max_body_bytes=65536)
        with serve_asgi(create_app(ws_dir, cfg, embedder=HashEmbedder()), lifespan="on") as url:
            yield url, ws_dir


def send(url: str) -> tuple[object, list]:
    """Two GenAI chat spans, then evaluation records, through the SDK's OTLP/HTTP exporters (protobuf)."""
    headers = {"Authorization": f"Bearer {KEY}"}
    tracing = TracerProvider()
    tracing.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=f"{url}/v1/traces", headers=headers)))
    tracer = tracing.get_tracer("app")
    for rid, user, question in (("resp-1", "alice", "Mail bob.smith@example.com the agenda?"),
                                ("resp-2", "bob", "Capital of Peru?")):
        with tracer.start_as_current_span("chat") as span:
            span.set_attribute(ga.GEN_AI_RESPONSE_ID, rid)
            span.set_attribute(USER_ID, user)
            span.set_attribute(ga.GEN_AI_INPUT_MESSAGES, json.dumps([{"role": "user", "content": question}]))
            span.set_attribute(ga.GEN_AI_OUTPUT_MESSAGES, json.dumps(
                [{"role": "assistant", "parts": [{"type": "text", "content": f"An answer to: {question}"}]}]))
    tracing.shutdown()
    results = []

    class Recording(OTLPLogExporter):
        def export(self, batch):  # the exporter's own verdict on each export
            results.append(super().export(batch))
            return results[-1]

    logging = LoggerProvider()
    logging.add_log_record_processor(SimpleLogRecordProcessor(Recording(endpoint=f"{url}/v1/logs", headers=headers)))
    logger = logging.get_logger("app")
    for rid, attrs in (("resp-1", {ga.GEN_AI_EVALUATION_SCORE_LABEL: "thumbs_down",
                                   ga.GEN_AI_EVALUATION_EXPLANATION: "too long, just the time"}),
                       ("resp-2", {ga.GEN_AI_EVALUATION_SCORE_VALUE: 1, USER_ID: "mallory"}),
                       ("resp-404", {ga.GEN_AI_EVALUATION_SCORE_VALUE: 1})):
        logger.emit(event_name="gen_ai.evaluation.result", attributes={ga.GEN_AI_RESPONSE_ID: rid, **attrs})
    return tracing, results


def test_the_official_exporters_spans_and_evaluations_become_logs(proxy):
    url, ws_dir = proxy
    _, results = send(url)
    assert [r.name for r in results] == ["SUCCESS"] * 3  # partial rejections are still a success for OTLP
    with Workspace.open(ws_dir) as ws:
        served = dict(ws.conn.execute("SELECT response_id, messages FROM served").fetchall())
        assert set(served) == {"resp-1", "resp-2"}
        assert "@example.com" not in served["resp-1"]  # redacted before it was stored
        assert collect_served(ws) == 1  # mallory's thumbs up on bob's answer and the unknown answer: refused
        (log,) = ws.iter_logs()
    assert log.query.startswith("Mail <EMAIL_1>") and log.user == "alice"
    assert log.feedback == ("too long, just the time",) and [a.kind for a in log.actions] == ["dislike"]


def test_json_exports_partial_success_and_bad_requests(proxy):
    url, ws_dir = proxy
    memory = InMemorySpanExporter()
    tracing = TracerProvider()
    tracing.add_span_processor(SimpleSpanProcessor(memory))
    with tracing.get_tracer("app").start_as_current_span("chat") as span:
        span.set_attribute(ga.GEN_AI_INPUT_MESSAGES, json.dumps([{"role": "user", "content": "Hi?"}]))
        span.set_attribute(ga.GEN_AI_OUTPUT_MESSAGES, json.dumps([{"role": "assistant", "content": "Hello."}]))
        span.add_event("gen_ai.evaluation.result", {ga.GEN_AI_EVALUATION_SCORE_LABEL: "thumbs_up"})
        span.add_event("gen_ai.evaluation.result", {ga.GEN_AI_EVALUATION_NAME: "relevance"})  # no user signal
    body = json.dumps(otlp_json(memory.get_finished_spans())).encode()
    auth = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    with httpx.Client(base_url=url, timeout=20) as client:
        ok = client.post("/v1/traces", content=gzip.compress(body), headers={**auth, "Content-Encoding": "gzip"})
        assert ok.status_code == 200, ok.text
        assert ok.json()["partialSuccess"]["rejectedSpans"] == "1"
        assert client.post("/v1/traces", content=body, headers={"Content-Type": "application/json"}
                           ).status_code == 401
        for content, ctype in ((b"\xff\x00garbage", "application/x-protobuf"), (b"nope", "application/json")):
            bad = client.post("/v1/logs", content=content, headers={**auth, "Content-Type": ctype})
            assert bad.status_code == 400 and bad.json()["error"]["message"], bad.text
        huge = client.post("/v1/traces", content=gzip.compress(b" " * 200_000),
                           headers={**auth, "Content-Encoding": "gzip"})
        assert huge.status_code == 413  # a small gzip body that inflates past the limit
    with Workspace.open(ws_dir) as ws:
        assert collect_served(ws) == 1
        (log,) = ws.iter_logs()
    assert log.query == "Hi?" and [a.kind for a in log.actions] == ["like"]


def test_json_exports_a_store_cannot_keep_give_400(proxy):
    """A deeply nested export answered a plain-text 500; a lone surrogate (which no store encodes) in an
    evaluation answered 500, and in a span 200 while its answer was silently not stored."""
    url, ws_dir = proxy
    attrs = [{"key": "gen_ai.response.id", "value": {"stringValue": "resp-s"}},
             {"key": "gen_ai.input.messages", "value": {"stringValue": '[{"role": "user", "content": "Hi?"}]'}},
             {"key": "gen_ai.output.messages", "value": {"stringValue": '[{"role": "assistant", "content": "Hey."}]'}},
             {"key": "user.id", "value": {"stringValue": "al\ud800ice"}}]
    span = {"traceId": "0" * 31 + "1", "spanId": "0" * 15 + "1", "name": "chat", "attributes": attrs,
            "startTimeUnixNano": "1700000000000000000", "endTimeUnixNano": "1700000001000000000"}
    export = json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [span]}]}]}).encode()
    deep = b'{"resourceSpans": ' + b"[" * 1500 + b"]" * 1500 + b"}"
    auth = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    for body in (deep, export):
        resp = httpx.post(url + "/v1/traces", content=body, headers=auth, timeout=20)
        assert resp.status_code == 400 and resp.json()["error"]["message"], resp.text
    with Workspace.open(ws_dir) as ws:
        assert ws.count("served") == 0
