"""OpenTelemetry GenAI spans and evaluation events, produced by the official SDK (its tracer and logger, the
attribute names from the semantic-conventions package), written as the Collector's file exporter writes
OTLP/JSON, read by content and ingested as conversations with their feedback and users."""

import json
from pathlib import Path

from conftest import write_jsonl
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as ga
from opentelemetry.semconv._incubating.attributes.user_attributes import USER_ID
from otlp_json import logs_json, otlp_json

from unolearn.readers import read_logs
from unolearn.records import Log, Rejected


def parts(role: str, text: str) -> dict:
    return {"role": role, "parts": [{"type": "text", "content": text}]}


def chat_span(tracer, conversation: str, user: str, sent: list, answer: str, response_id: str) -> None:
    with tracer.start_as_current_span("chat gpt-x") as span:
        span.set_attribute(ga.GEN_AI_OPERATION_NAME, "chat")
        span.set_attribute(ga.GEN_AI_CONVERSATION_ID, conversation)
        span.set_attribute(USER_ID, user)
        span.set_attribute(ga.GEN_AI_RESPONSE_ID, response_id)
        span.set_attribute(ga.GEN_AI_INPUT_MESSAGES, json.dumps(sent))
        span.set_attribute(ga.GEN_AI_OUTPUT_MESSAGES, json.dumps([parts("assistant", answer)]))


def evaluation(logger, response_id: str, **attrs) -> None:
    logger.emit(event_name="gen_ai.evaluation.result",
                attributes={ga.GEN_AI_RESPONSE_ID: response_id, ga.GEN_AI_EVALUATION_NAME: "user_feedback", **attrs})


def export(tmp_path: Path) -> Path:
    resource = Resource.create({"service.name": "helpdesk"})
    spans_out, logs_out = InMemorySpanExporter(), InMemoryLogRecordExporter()
    tracing = TracerProvider(resource=resource)
    tracing.add_span_processor(SimpleSpanProcessor(spans_out))
    logging = LoggerProvider(resource=resource)
    logging.add_log_record_processor(SimpleLogRecordProcessor(logs_out))
    tracer, logger = tracing.get_tracer("app"), logging.get_logger("app")
    q1 = [parts("user", "How do I reset my router?")]
    chat_span(tracer, "conv-1", "alice", q1, "Unplug it.", "resp-1")
    q2 = [*q1, parts("assistant", "Unplug it."), parts("user", "Numbered steps please")]
    chat_span(tracer, "conv-1", "alice", q2, "1. Unplug. 2. Wait.", "resp-2")
    chat_span(tracer, "conv-2", "bob", [parts("user", "Capital of France?")], "Paris.", "resp-3")
    evaluation(logger, "resp-1", **{ga.GEN_AI_EVALUATION_SCORE_LABEL: "thumbs_down",
                                    ga.GEN_AI_EVALUATION_EXPLANATION: "too short, give steps"})
    evaluation(logger, "resp-3", **{ga.GEN_AI_EVALUATION_SCORE_VALUE: 1})
    evaluation(logger, "resp-404", **{ga.GEN_AI_EVALUATION_SCORE_VALUE: 0})
    return write_jsonl(tmp_path / "otel-export.json", [
        otlp_json(spans_out.get_finished_spans()),
        '{"resourceSpans": [{"scopeSpans": [{"spans": [{"spanId": "ab", "attributes": '
        '[{"key": "gen_ai.input.messages", "value": {"stringValue": "[{\\"role\\": \\"alien\\"}]"}}]}]}]}]}',
        logs_json(logs_out.get_finished_logs()),
    ])


def test_genai_spans_and_evaluation_events_become_conversations(tmp_path):
    items = [item for _, item, _ in read_logs(export(tmp_path)) if item is not None]
    logs = {log.query: log for log in items if isinstance(log, Log)}
    assert set(logs) == {"How do I reset my router?", "Capital of France?"}
    router = logs["How do I reset my router?"]
    assert router.first_answer == "Unplug it." and router.user == "alice"
    assert router.feedback == ("Numbered steps please", "too short, give steps")
    assert [(a.kind, a.turn) for a in router.actions] == [("dislike", 0)]
    assert [a.kind for a in logs["Capital of France?"].actions] == ["like"]
    rejected = sorted((r.line, r.reason) for r in items if isinstance(r, Rejected))
    assert [line for line, _ in rejected] == [2, 3]
    assert "alien" in rejected[0][1] and "resp-404" in rejected[1][1]


def test_older_per_message_events(tmp_path):
    tracing = TracerProvider()
    out = InMemorySpanExporter()
    tracing.add_span_processor(SimpleSpanProcessor(out))
    with tracing.get_tracer("app").start_as_current_span("chat") as span:
        span.add_event("gen_ai.system.message", {"content": "Be brief."})
        span.add_event("gen_ai.user.message", {"content": "What is OTLP?"})
        span.add_event("gen_ai.choice", {"index": 0, "message": json.dumps({"content": "A protocol."})})
        span.add_event("gen_ai.evaluation.result", {ga.GEN_AI_EVALUATION_SCORE_LABEL: "thumbs_up"})
    path = write_jsonl(tmp_path / "events.json", [otlp_json(out.get_finished_spans())])
    (log,) = [i for _, i, _ in read_logs(path, "otel") if i is not None]
    assert (log.query, log.first_answer) == ("What is OTLP?", "A protocol.")
    assert log.messages[0].role == "system" and [a.kind for a in log.actions] == ["like"]
