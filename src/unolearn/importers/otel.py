"""OpenTelemetry GenAI spans and evaluation events (semantic conventions ``gen_ai.*``) from OTLP/JSON.

A turn is a span with ``gen_ai.input.messages`` / ``gen_ai.output.messages`` (structured parts, or JSON text
as instrumentations record them), or with the older per-message events (``gen_ai.user.message``,
``gen_ai.choice``, …). Its conversation is ``gen_ai.conversation.id``, else its trace; its user ``user.id``;
its tenant ``unolearn.tenant`` (a span or resource attribute). Feedback is a ``gen_ai.evaluation.result``
record (a span event, or a log record) matched to the answer by ``gen_ai.response.id`` (else by the span it
names): ``gen_ai.evaluation.explanation`` is the user's words; a score label thumbs_up/thumbs_down (or a 0/1
score) a like/dislike; another numeric score a rating.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from ..errors import RecordError
from . import otlp
from .conversation import Turn, Verdict, binary_action, label_action, optional_text
from .messages import json_value, message_list, text_of

EVALUATION = "gen_ai.evaluation.result"
MESSAGE_EVENTS = {"gen_ai.system.message": "system", "gen_ai.user.message": "user",
                  "gen_ai.assistant.message": "assistant", "gen_ai.tool.message": None}
TENANT = "unolearn.tenant"


def detect(obj: Any) -> bool:
    """An OTLP/JSON export (OpenInference spans are told apart first, by their own attributes)."""
    return otlp.is_otlp(obj)


def pieces(obj: Any, line: int) -> Iterator[Turn | Verdict]:
    """The turns and verdicts of one OTLP/JSON export record."""
    if not isinstance(obj, dict):
        raise RecordError(f"expected a JSON object, got {type(obj).__name__}")
    for span in otlp.spans(obj):
        turn = _turn(span, line)
        if turn is not None:
            yield turn
        for event in span.events:
            if event.name == EVALUATION:
                yield from _verdict(event, line)
    for record in otlp.log_records(obj):
        if record.name == EVALUATION:
            yield from _verdict(record, line)


def _turn(span: otlp.Span, line: int) -> Turn | None:
    a = span.attributes
    sent = json_value(a.get("gen_ai.input.messages"))
    answered = json_value(a.get("gen_ai.output.messages"))
    if sent is None and answered is None:
        sent, answered = _from_events(span.events)
    if not sent:
        return None
    where = f"span {span.span_id or '?'}"
    messages = message_list(sent, f"{where}: gen_ai.input.messages")
    system = json_value(a.get("gen_ai.system_instructions"))
    if system and not any(m["role"] == "system" for m in messages):
        messages.insert(0, {"role": "system", "content": text_of(system)})
    output = _answer(answered, where)
    response = a.get("gen_ai.response.id")
    ids = [i for i in (str(response) if response else "", span.span_id) if i]
    return Turn(conversation=str(a.get("gen_ai.conversation.id") or span.trace_id or span.span_id), ids=ids,
                at=span.at, input=messages, output=output, line=line, user=optional_text(a.get("user.id")),
                tenant=optional_text(a.get(TENANT)), metadata=_metadata(span))


def _metadata(span: otlp.Span) -> dict[str, Any]:
    model = span.attributes.get("gen_ai.response.model") or span.attributes.get("gen_ai.request.model")
    return {k: v for k, v in (("trace_id", span.trace_id), ("model", model)) if v}


def _answer(answered: Any, where: str) -> str | None:
    if answered is None:
        return None
    if isinstance(answered, str):
        return answered
    replies = [m for m in message_list(answered, f"{where}: gen_ai.output.messages") if m["role"] == "assistant"]
    return replies[0]["content"] if replies else None


def _from_events(events: list[otlp.Event]) -> tuple[list[dict[str, str]], str | None]:
    """The input and answer of a span that records its messages as the older per-message events."""
    sent: list[dict[str, str]] = []
    answer = None
    for e in events:
        role = MESSAGE_EVENTS.get(e.name)
        if role:
            sent.append({"role": role, "content": text_of(e.attributes.get("content", e.body))})
        elif e.name == "gen_ai.choice" and answer is None:
            message = json_value(e.attributes.get("message", e.body))
            answer = text_of(message.get("content") if isinstance(message, dict) else message)
    return sent, answer


def _verdict(event: otlp.Event, line: int) -> Iterator[Verdict]:
    a = event.attributes
    target = a.get("gen_ai.response.id") or event.span_id
    if not target:
        raise RecordError(f"{EVALUATION}: names no answer (no gen_ai.response.id, no span id)")
    label, score = a.get("gen_ai.evaluation.score.label"), a.get("gen_ai.evaluation.score.value")
    action = label_action(label) or (binary_action(score) if label is None else None)
    rating = float(score) if action is None and isinstance(score, (int, float)) else None
    comment = a.get("gen_ai.evaluation.explanation")
    yield Verdict(target=str(target), line=line, comment=optional_text(comment), action=action, rating=rating,
                  name=optional_text(a.get("gen_ai.evaluation.name")), user=optional_text(a.get("user.id")))
