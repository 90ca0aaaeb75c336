"""OpenInference (Arize Phoenix) LLM spans, produced by the official OpenTelemetry SDK with the attribute names of
the OpenInference semantic-conventions package, written as the Collector's file exporter writes OTLP/JSON and as
Phoenix's REST API gives spans, with Phoenix span annotations; read by content and ingested as conversations
with their feedback and users."""

import json
from datetime import UTC, datetime
from pathlib import Path

from conftest import write_jsonl
from openinference.semconv.trace import MessageAttributes as M
from openinference.semconv.trace import MessageContentAttributes as MC
from openinference.semconv.trace import OpenInferenceAnnotatorKindValues as Annotator
from openinference.semconv.trace import OpenInferenceMimeTypeValues as Mime
from openinference.semconv.trace import OpenInferenceSpanKindValues as Kind
from openinference.semconv.trace import SpanAttributes as S
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from otlp_json import otlp_json

from unolearn import importers
from unolearn.readers import read_logs
from unolearn.records import Log, Rejected

SYSTEM = ("system", "Be a helpdesk.")
Q1 = ("user", "How do I reset my router?")
A1 = "Unplug it."
Q2 = ("user", "Numbered steps please")


def messages(span, key: str, sent: list[tuple[str, str]], parts: bool = False) -> None:
    """Messages flattened into span attributes as OpenInference records them (``parts``: as content parts)."""
    for i, (role, text) in enumerate(sent):
        prefix = f"{key}.{i}."
        span.set_attribute(prefix + M.MESSAGE_ROLE, role)
        if parts:
            span.set_attribute(f"{prefix}{M.MESSAGE_CONTENTS}.0.{MC.MESSAGE_CONTENT_TYPE}", "text")
            span.set_attribute(f"{prefix}{M.MESSAGE_CONTENTS}.0.{MC.MESSAGE_CONTENT_TEXT}", text)
        else:
            span.set_attribute(prefix + M.MESSAGE_CONTENT, text)


def llm_span(tracer, session: str | None, user: str, sent: list, answer: str, parts: bool = False) -> str:
    """One LLM call's span (its input and output also as JSON, as instrumentations record them); its span id."""
    with tracer.start_as_current_span("ChatOpenAI") as span:
        span.set_attribute(S.OPENINFERENCE_SPAN_KIND, Kind.LLM.value)
        span.set_attribute(S.LLM_MODEL_NAME, "gpt-x")
        if session:
            span.set_attribute(S.SESSION_ID, session)
        span.set_attribute(S.USER_ID, user)
        span.set_attribute(S.INPUT_VALUE, json.dumps({"messages": [{"role": r, "content": t} for r, t in sent]}))
        span.set_attribute(S.INPUT_MIME_TYPE, Mime.JSON.value)
        messages(span, S.LLM_INPUT_MESSAGES, sent, parts)
        messages(span, S.LLM_OUTPUT_MESSAGES, [("assistant", answer)])
        span.set_attribute(S.OUTPUT_VALUE, answer)
        span.set_attribute(S.OUTPUT_MIME_TYPE, Mime.TEXT.value)
        return format(span.get_span_context().span_id, "016x")


def annotation(span_id: str, name: str, kind: Annotator, **result) -> dict:
    """A span annotation as Phoenix's REST API gives it (``GET /v1/projects/{project}/span_annotations``)."""
    return {"id": f"U3BhbkFubm90YXRpb246{len(result)}", "span_id": span_id, "name": name,
            "annotator_kind": kind.value, "result": {"label": None, "score": None, "explanation": None, **result},
            "metadata": {}, "identifier": "", "source": "API", "user_id": None,
            "created_at": "2026-12-01T11:00:00+00:00", "updated_at": "2026-12-01T11:00:00+00:00"}


class Spans:
    """The spans of an application traced with the SDK, taken batch by batch (as a Collector writes them)."""

    def __init__(self) -> None:
        self.out = InMemorySpanExporter()
        self.provider = TracerProvider(resource=Resource.create({"service.name": "helpdesk"}))
        self.provider.add_span_processor(SimpleSpanProcessor(self.out))
        self.tracer = self.provider.get_tracer("app")

    def batch(self) -> tuple[ReadableSpan, ...]:
        spans = self.out.get_finished_spans()
        self.out.clear()
        return spans


def traced() -> tuple[list[tuple[ReadableSpan, ...]], dict[str, str]]:
    """Three batches of spans (the second one bad) and the span ids of the first answers."""
    app = Spans()
    with app.tracer.start_as_current_span("helpdesk") as chain:  # a chain around the call: not a turn
        chain.set_attribute(S.OPENINFERENCE_SPAN_KIND, Kind.CHAIN.value)
        chain.set_attribute(S.SESSION_ID, "s1")
        chain.set_attribute(S.INPUT_VALUE, Q1[1])
        router = llm_span(app.tracer, "s1", "alice", [SYSTEM, Q1], A1)
    # the session's next trace resends the history (its messages as content parts)
    llm_span(app.tracer, "s1", "alice", [SYSTEM, Q1, ("assistant", A1), Q2], "1. Unplug. 2. Wait.", parts=True)
    first = app.batch()
    llm_span(app.tracer, "s2", "carol", [("alien", "?")], "...")
    bad = app.batch()
    with app.tracer.start_as_current_span("openai.chat") as span:  # no messages attributes: input and output values
        span.set_attribute(S.OPENINFERENCE_SPAN_KIND, Kind.LLM.value)
        span.set_attribute(S.USER_ID, "bob")
        span.set_attribute(S.INPUT_VALUE, json.dumps({"model": "gpt-x",
                                                      "messages": [{"role": "user", "content": "Capital of France?"}]}))
        span.set_attribute(S.INPUT_MIME_TYPE, Mime.JSON.value)
        span.set_attribute(S.OUTPUT_VALUE, json.dumps({"id": "chatcmpl-1", "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "Paris."}}]}))
        span.set_attribute(S.OUTPUT_MIME_TYPE, Mime.JSON.value)
        france = format(span.get_span_context().span_id, "016x")
    return [first, bad, app.batch()], {"router": router, "france": france}


def annotations(ids: dict[str, str]) -> list:
    page = {"data": [
        annotation(ids["router"], "user_feedback", Annotator.HUMAN, label="thumbs-down", score=0,
                   explanation="too short, give steps"),
        annotation(ids["france"], "correctness", Annotator.LLM, label="incorrect", score=0,
                   explanation="the judge says wrong"),
    ], "next_cursor": None}
    return [page, annotation(ids["france"], "thumbs", Annotator.HUMAN, score=1),
            annotation("00000000deadbeef", "thumbs", Annotator.HUMAN, score=1)]


def export(tmp_path: Path) -> Path:
    batches, ids = traced()
    return write_jsonl(tmp_path / "phoenix-spans.jsonl", [*(otlp_json(b) for b in batches), *annotations(ids)])


def phoenix_span(span: ReadableSpan) -> dict:
    """A span as Phoenix's REST API gives it (``GET /v1/projects/{project}/spans``): attributes flattened, the
    span kind taken out of them."""
    attributes = dict(span.attributes or {})
    kind = attributes.pop(S.OPENINFERENCE_SPAN_KIND, "UNKNOWN")
    at = datetime.fromtimestamp((span.start_time or 0) / 1e9, UTC).isoformat()
    parent = span.parent
    return {"id": "U3BhbjoxMjM=", "name": span.name,
            "context": {"trace_id": format(span.context.trace_id, "032x"),
                        "span_id": format(span.context.span_id, "016x")},
            "span_kind": kind, "parent_id": format(parent.span_id, "016x") if parent else None,
            "start_time": at, "end_time": at, "status_code": "OK", "status_message": "",
            "attributes": attributes, "events": []}


def by_query(items) -> dict[str, Log]:
    return {log.query: log for log in items if isinstance(log, Log)}


def test_openinference_spans_and_annotations_become_conversations(tmp_path):
    path = export(tmp_path)
    assert importers.detect(json.loads(path.read_text().splitlines()[0])) == "openinference"
    items = [item for _, item, _ in read_logs(path) if item is not None]
    logs = by_query(items)
    assert set(logs) == {"How do I reset my router?", "Capital of France?"}
    router = logs["How do I reset my router?"]
    assert [m.role for m in router.messages] == ["system", "user", "assistant", "user", "assistant"]
    assert router.first_answer == "Unplug it." and router.user == "alice"
    assert router.feedback == ("Numbered steps please", "too short, give steps")
    assert [(a.kind, a.turn) for a in router.actions] == [("dislike", 0)]
    assert router.metadata["conversation"] == "s1"
    france = logs["Capital of France?"]
    # the LLM's annotation is no user's; the human's score of 1 is a like
    assert france.first_answer == "Paris." and france.user == "bob" and france.feedback == ()
    assert [a.kind for a in france.actions] == ["like"]
    rejected = sorted((r.line, r.reason) for r in items if isinstance(r, Rejected))
    assert [line for line, _ in rejected] == [2, 6]
    assert "alien" in rejected[0][1] and "00000000deadbeef" in rejected[1][1]


def test_phoenix_span_json_reads_as_the_otlp_export_does(tmp_path):
    batches, ids = traced()
    good = [b for b in batches if not any("alien" in str(s.attributes) for s in b)]
    spans_page = {"data": [phoenix_span(s) for b in good for s in b], "next_cursor": None}
    phoenix = write_jsonl(tmp_path / "spans.json", [spans_page, *annotations(ids)[:2]])
    otlp = write_jsonl(tmp_path / "otlp.json", [*(otlp_json(b) for b in good), *annotations(ids)[:2]])

    def seen(path: Path) -> list:
        return sorted((log.query, log.first_answer, log.feedback, log.user, tuple(a.kind for a in log.actions))
                      for _, log, _ in read_logs(path) if isinstance(log, Log))

    assert importers.detect(spans_page) == "openinference"
    assert seen(phoenix) == seen(otlp) and len(seen(otlp)) == 2


def test_nested_attributes_and_a_named_format(tmp_path):
    span = {"name": "llm", "context": {"trace_id": "0af7651916cd43dd8448eb211c80319c", "span_id": "b7ad6b7169203331"},
            "span_kind": "LLM", "start_time": "2026-12-01T10:00:00+00:00",
            "attributes": {"llm": {"input_messages": [{"message": {"role": "user", "content": "What is OTLP?"}}],
                                   "output_messages": [{"message": {"role": "assistant", "content": "A protocol."}}]},
                           "session": {"id": "s9"}, "user": {"id": "dave"}, "unolearn": {"tenant": "acme"}}}
    note = annotation("b7ad6b7169203331", "note", Annotator.HUMAN, explanation="cite the spec")
    rating = annotation("b7ad6b7169203331", "stars", Annotator.CODE, score=0.75)
    path = write_jsonl(tmp_path / "nested.jsonl", [span, note, rating])
    (log,) = [i for _, i, _ in read_logs(path, "openinference") if i is not None]
    assert (log.query, log.first_answer, log.user, log.tenant) == ("What is OTLP?", "A protocol.", "dave", "acme")
    assert log.feedback == ("cite the spec",) and log.rating == 0.75 and log.metadata["conversation"] == "s9"
