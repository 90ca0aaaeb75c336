"""OpenInference (Arize Phoenix) LLM spans and span annotations.

Spans come as OTLP/JSON (``resourceSpans``, as the Collector's file exporter or OTLP over HTTP writes them), or
as Phoenix's own span JSON (its REST API's ``GET /v1/projects/{project}/spans`` and its client: ``context``
with ``trace_id`` and ``span_id``, ``span_kind``, ``start_time``, ``attributes``), one per line, in a JSON
array, or in the API's ``{"data": [...]}`` pages. Attributes follow OpenInference, flattened into dotted keys
(``llm.input_messages.0.message.role``) or nested (``{"llm": {"input_messages": [{"message": {...}}]}}``).

A turn is an LLM span (``openinference.span.kind`` ``LLM``; a span of no kind, or ``UNKNOWN``, with input
messages too): what it was sent is ``llm.input_messages`` (each message's ``message.content``, or the text
parts of its ``message.contents``), else ``input.value``; its answer the first assistant message of
``llm.output_messages``, else ``output.value``. Chains, tools, retrievers and the like are not turns: left out.
The conversation is ``session.id``, else the trace; the user ``user.id``; the tenant ``unolearn.tenant``.

Feedback is a span annotation (``span_id``, ``name``, ``annotator_kind``, ``result`` with ``label``, ``score``,
``explanation``; a trace annotation names a ``trace_id`` and its first answer): the explanation is the user's
words; a thumbs-up/down label, else a 0/1 score, a like/dislike; another numeric score a rating. An annotation
by an LLM (an evaluator) is not a user's: left out.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from ..errors import RecordError
from . import otlp
from .conversation import Turn, Verdict, binary_action, label_action, optional_text
from .messages import json_value, message_list, text_of

# OpenInference's attribute names (openinference.semconv.trace: SpanAttributes, MessageAttributes,
# MessageContentAttributes), as paths of their dotted parts.
SPAN_KIND = "openinference.span.kind"
INPUT_MESSAGES = "llm.input_messages"
OUTPUT_MESSAGES = "llm.output_messages"
MESSAGE = "message"  # the prefix of a message's attributes: message.role, message.content, message.contents
MESSAGE_ROLE = "role"
MESSAGE_CONTENT = "content"
MESSAGE_CONTENTS = "contents"
MESSAGE_CONTENT_PART = "message_content"  # a content part's prefix: message_content.type, message_content.text
CONTENT_TYPE = "type"
CONTENT_TEXT = "text"
INPUT_VALUE = "input.value"
INPUT_MIME_TYPE = "input.mime_type"
OUTPUT_VALUE = "output.value"
OUTPUT_MIME_TYPE = "output.mime_type"
SESSION_ID = "session.id"
USER_ID = "user.id"
TENANT = "unolearn.tenant"
LLM = "LLM"
UNKNOWN_KINDS = frozenset({"", "UNKNOWN"})
TEXT_MIME = "text/plain"
#: ``annotator_kind`` of annotations that are no user's (an LLM judging).
LLM_ANNOTATOR = "LLM"


def detect(obj: Any) -> bool:
    """OTLP/JSON whose spans carry OpenInference attributes, a Phoenix span or annotation, or a page of them."""
    if not isinstance(obj, dict):
        return False
    if otlp.is_otlp(obj):
        return any(_is_openinference(key) for key in _otlp_keys(obj))
    if isinstance(obj.get("data"), list) and "meta" not in obj:
        return any(_kind(x) is not None for x in obj["data"][:1])
    return _kind(obj) is not None


def _is_openinference(key: Any) -> bool:
    return isinstance(key, str) and (key == SPAN_KIND or key.startswith(INPUT_MESSAGES))


def _otlp_keys(obj: dict[str, Any]) -> Iterator[Any]:
    """The attribute keys of the spans of an OTLP/JSON export (a peek: nothing is decoded or checked)."""
    for rs in _dicts(obj.get("resourceSpans")):
        for ss in _dicts(rs.get("scopeSpans") or rs.get("instrumentationLibrarySpans")):
            for span in _dicts(ss.get("spans")):
                for kv in _dicts(span.get("attributes")):
                    yield kv.get("key")


def _dicts(value: Any) -> list[dict[str, Any]]:
    return [x for x in value if isinstance(x, dict)] if isinstance(value, list) else []


def _kind(obj: Any) -> str | None:
    if not isinstance(obj, dict):
        return None
    if isinstance(obj.get("context"), dict) and "span_id" in obj["context"] and (
            {"span_kind", "attributes"} & obj.keys()):
        return "span"
    if "annotator_kind" in obj and ({"span_id", "trace_id"} & obj.keys()):
        return "annotation"
    return None


def pieces(obj: Any, line: int) -> Iterator[Turn | Verdict]:
    """The turns and verdicts of one record: an OTLP/JSON export, a Phoenix span or annotation, or a page."""
    if not isinstance(obj, dict):
        raise RecordError(f"expected a JSON object, got {type(obj).__name__}")
    if otlp.is_otlp(obj):
        for span in otlp.spans(obj):
            turn = _turn(span.attributes, span.trace_id, span.span_id, span.at, line, f"span {span.span_id or '?'}")
            if turn is not None:
                yield turn
    elif isinstance(obj.get("data"), list) and "meta" not in obj:
        for i, item in enumerate(obj["data"]):
            yield from _item(item, line, f"data[{i}]")
    else:
        yield from _item(obj, line, "")


def _item(obj: Any, line: int, where: str) -> Iterator[Turn | Verdict]:
    kind = _kind(obj)
    prefix = f"{where}." if where else ""
    if kind == "span":
        yield from _phoenix_span(obj, line, prefix)
    elif kind == "annotation":
        yield from _annotation(obj, line, prefix)
    else:
        raise RecordError(f"{where or 'record'}: not an OTLP export, a Phoenix span (context, span_kind, "
                          "attributes) or annotation (span_id, annotator_kind)")


def _phoenix_span(span: dict[str, Any], line: int, prefix: str) -> Iterator[Turn]:
    context = span["context"]
    attributes = span.get("attributes")
    if attributes is None:
        attributes = {}
    if not isinstance(attributes, dict):
        raise RecordError(f"{prefix}attributes: expected an object, got {type(attributes).__name__}")
    if span.get("span_kind") is not None:  # Phoenix gives the kind here, and leaves it out of the attributes
        attributes = {**attributes, SPAN_KIND: span["span_kind"]}
    turn = _turn(attributes, str(context.get("trace_id") or ""), str(context.get("span_id") or ""),
                 str(span.get("start_time") or ""), line, f"{prefix}attributes")
    if turn is not None:
        yield turn


def _turn(flat: dict[str, Any], trace_id: str, span_id: str, at: str, line: int, where: str) -> Turn | None:
    a = tree(flat)
    kind = get(a, SPAN_KIND)
    if str(kind).upper() in UNKNOWN_KINDS:  # Phoenix's kind of a span that names none
        kind = None
    sent = get(a, INPUT_MESSAGES)
    if (kind is None and sent is None) or (kind is not None and str(kind).upper() != LLM):
        return None
    if sent is not None:
        messages = message_list([_message(m, f"{where}: {INPUT_MESSAGES}[{i}]") for i, m in enumerate(_list(sent))],
                                f"{where}: {INPUT_MESSAGES}")
    elif get(a, INPUT_VALUE) is not None:
        messages = _sent(_value(a, INPUT_VALUE, INPUT_MIME_TYPE), f"{where}: {INPUT_VALUE}")
    else:
        raise RecordError(f"{where}: an LLM span with neither {INPUT_MESSAGES} nor {INPUT_VALUE}")
    if not messages:
        raise RecordError(f"{where}: {INPUT_MESSAGES}: no user, system or assistant message")
    return Turn(conversation=optional_text(get(a, SESSION_ID)) or trace_id or span_id,
                ids=[i for i in (span_id, trace_id) if i], at=at, input=messages, output=_output(a, where),
                line=line, user=optional_text(get(a, USER_ID)), tenant=optional_text(get(a, TENANT)),
                metadata={"trace_id": trace_id} if trace_id else {})


def _message(item: Any, field: str) -> dict[str, Any]:
    """An OpenInference message (``{"message": {"role", "content" | "contents"}}``) as an OpenAI-style one."""
    m = item.get(MESSAGE, item) if isinstance(item, dict) else item
    if not isinstance(m, dict):
        raise RecordError(f"{field}: expected a message, got {type(m).__name__}")
    content = m.get(MESSAGE_CONTENT)
    if content is None and m.get(MESSAGE_CONTENTS) is not None:
        content = [_part(p, f"{field}.{MESSAGE}.{MESSAGE_CONTENTS}[{j}]")
                   for j, p in enumerate(_list(m[MESSAGE_CONTENTS]))]
    return {"role": m.get(MESSAGE_ROLE), "content": content}


def _part(item: Any, field: str) -> dict[str, Any]:
    p = item.get(MESSAGE_CONTENT_PART, item) if isinstance(item, dict) else item
    if not isinstance(p, dict):
        raise RecordError(f"{field}: expected a content part, got {type(p).__name__}")
    return {"type": p.get(CONTENT_TYPE) or "text", "text": p.get(CONTENT_TEXT)}


def _output(a: dict[str, Any], where: str) -> str | None:
    answered = get(a, OUTPUT_MESSAGES)
    if answered is not None:
        field = f"{where}: {OUTPUT_MESSAGES}"
        replies = [m for m in message_list([_message(m, f"{field}[{i}]") for i, m in enumerate(_list(answered))],
                                           field) if m["role"] == "assistant"]
        return replies[0]["content"] if replies else None
    value = _value(a, OUTPUT_VALUE, OUTPUT_MIME_TYPE)
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, dict):
        choices = value.get("choices")
        if isinstance(choices, list) and choices and isinstance(choices[0], dict):  # an OpenAI response
            message = choices[0].get("message")
            return text_of(message.get("content") if isinstance(message, dict) else choices[0].get("text"))
        generations = value.get("generations")
        if isinstance(generations, list) and generations:  # LangChain's LLMResult
            first = generations[0][0] if isinstance(generations[0], list) and generations[0] else generations[0]
            return _reply(first.get("message", first) if isinstance(first, dict) else first, where)
        if isinstance(value.get("messages"), list):
            return _reply(value["messages"], where)
    return _reply(value, where)


def _reply(value: Any, where: str) -> str:
    """An answer's text: of a message, of the last assistant message of a list, else the value's text."""
    if isinstance(value, dict) and ("role" in value or value.get("lc")):
        value = [value]
    if isinstance(value, list) and value and all(isinstance(m, dict) for m in value):
        replies = [m for m in message_list(value, f"{where}: {OUTPUT_VALUE}") if m["role"] == "assistant"]
        return replies[-1]["content"] if replies else ""
    return text_of(value)


def _sent(value: Any, field: str) -> list[dict[str, str]]:
    """What an LLM span was sent, from its ``input.value``: text, messages, or a request holding them."""
    if isinstance(value, dict) and "messages" not in value:
        for key in ("prompt", "prompts", "input", "query", "question"):
            if value.get(key) is not None:
                inner = value[key]
                if isinstance(inner, list) and inner and isinstance(inner[0], str):
                    inner = inner[0]
                return _sent(json_value(inner), f"{field}.{key}")
    return message_list(value, field)


def _value(a: dict[str, Any], key: str, mime_key: str) -> Any:
    """``input.value`` / ``output.value``: JSON decoded unless its mime type says it is text."""
    value = get(a, key)
    if isinstance(value, dict) and "value" in value:  # nested: {"input": {"value": ..., "mime_type": ...}}
        value = value["value"]
    return value if get(a, mime_key) == TEXT_MIME else json_value(value)


def _annotation(an: dict[str, Any], line: int, prefix: str) -> Iterator[Verdict]:
    if str(an.get("annotator_kind") or "").upper() == LLM_ANNOTATOR:
        return
    target = an.get("span_id") or an.get("trace_id")
    if not target:
        raise RecordError(f"{prefix}span_id: the annotation names no span")
    result = an.get("result")
    if result is None:  # as the GraphQL API and the dataframes give it: label, score, explanation at the top
        result = {k: an.get(k) for k in ("label", "score", "explanation")}
    if not isinstance(result, dict):
        raise RecordError(f"{prefix}result: expected an object, got {type(result).__name__}")
    label, score, explanation = result.get("label"), result.get("score"), result.get("explanation")
    action = label_action(label) or (binary_action(score) if label in (None, "") else None)
    rating = (float(score) if action is None and isinstance(score, (int, float)) and not isinstance(score, bool)
              else None)
    yield Verdict(target=str(target), line=line, comment=explanation if isinstance(explanation, str) else None,
                  action=action, rating=rating,
                  name=optional_text(an.get("name")))


# -- attributes, flat or nested ---------------------------------------------------------------


def tree(flat: dict[str, Any]) -> dict[str, Any]:
    """Attributes as one nested tree, whether flattened into dotted keys (``llm.input_messages.0.message.role``),
    nested, or both; runs of numbered keys become lists. A key that is both a value and a prefix keeps the value."""
    root: dict[str, Any] = {}
    for key, v in flat.items():
        _put(root, str(key).split("."), _nested(v))
    return _listed(root)


def _nested(v: Any) -> Any:
    if isinstance(v, dict):
        return tree(v)
    if isinstance(v, list):
        return [_nested(x) for x in v]
    return v


def _put(node: dict[str, Any], parts: list[str], v: Any) -> None:
    for p in parts[:-1]:
        child = node.setdefault(p, {})
        if not isinstance(child, dict):
            return
        node = child
    last = parts[-1]
    if isinstance(node.get(last), dict) and isinstance(v, dict):
        for k, x in v.items():
            _put(node[last], [k], x)
    else:
        node.setdefault(last, v)


def _listed(node: Any) -> Any:
    """A tree with each object whose keys are all numbers as the list of its values, in their order."""
    if isinstance(node, list):
        return [_listed(x) for x in node]
    if not isinstance(node, dict):
        return node
    out = {k: _listed(v) for k, v in node.items()}
    if out and all(k.isdigit() for k in out):
        return [out[k] for k in sorted(out, key=int)]
    return out


def get(a: dict[str, Any], dotted: str) -> Any:
    """The value at a dotted path of a tree (:func:`tree`), or None."""
    node: Any = a
    for p in dotted.split("."):
        if not isinstance(node, dict):
            return None
        node = node.get(p)
    return node


def _list(v: Any) -> list[Any]:
    """Messages or content parts as a list (JSON text decoded, dotted keys nested)."""
    v = _nested(json_value(v))
    return v if isinstance(v, list) else [v]
