"""Langfuse: the public API's objects, one per line, in a JSON array, or in the API's ``{"data": [...]}`` pages.

Read: traces (``GET /api/public/traces`` and ``/traces/{id}``: with their ``observations`` and ``scores`` as
objects where the API gives them), observations (``GET /api/public/observations``, v1 and v2), and scores
(v1/v2 with ``traceId``/``observationId``; v3 with ``subject``). A GENERATION observation is a turn; a trace
with none is one turn of its own input and output. The conversation is the ``sessionId``, else the trace.
The user is ``userId``; the tenant ``metadata.tenant`` of the trace or observation.

Scores: a comment is the user's words; a BOOLEAN score (or a CATEGORICAL thumbs up/down) a like/dislike; a
NUMERIC one a rating; a CORRECTION an edit. Scores from evaluators (``source: EVAL``, an LLM judging) are
not a user's feedback: left out.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from ..errors import RecordError
from .conversation import Turn, Verdict, binary_action, label_action, optional_text
from .messages import json_value, message_list, text_of

TRACE_KEYS = frozenset({"observations", "sessionId", "htmlPath", "latency", "totalCost", "bookmarked"})


def detect(obj: Any) -> bool:
    """A Langfuse trace, observation, score, or a page of them."""
    if not isinstance(obj, dict):
        return False
    if isinstance(obj.get("data"), list) and isinstance(obj.get("meta"), dict):
        return any(detect(x) for x in obj["data"][:1])
    return _kind(obj) is not None


def _kind(obj: dict[str, Any]) -> str | None:
    if "dataType" in obj or ("name" in obj and "value" in obj and ({"traceId", "subject", "observationId"}
                                                                  & obj.keys())):
        return "score"
    if "traceId" in obj and "type" in obj and "startTime" in obj:
        return "observation"
    if "id" in obj and "timestamp" in obj and (TRACE_KEYS & obj.keys() or {"input", "output"} <= obj.keys()):
        return "trace"
    return None


def pieces(obj: Any, line: int) -> Iterator[Turn | Verdict]:
    """The turns and verdicts of one record (a page yields those of every item)."""
    if isinstance(obj, dict) and isinstance(obj.get("data"), list) and "meta" in obj:
        for i, item in enumerate(obj["data"]):
            yield from _item(item, line, f"data[{i}]")
    else:
        yield from _item(obj, line, "")


def _item(obj: Any, line: int, where: str) -> Iterator[Turn | Verdict]:
    if not isinstance(obj, dict):
        raise RecordError(f"{where or 'record'}: expected a Langfuse object, got {type(obj).__name__}")
    kind = _kind(obj)
    prefix = f"{where}." if where else ""
    if kind == "score":
        yield from _score(obj, line, prefix)
    elif kind == "observation":
        if obj.get("type") == "GENERATION":
            yield _turn(obj, obj, line, prefix)
    elif kind == "trace":
        yield from _trace(obj, line, prefix)
    else:
        raise RecordError(f"{where or 'record'}: not a Langfuse trace, observation or score")


def _trace(trace: dict[str, Any], line: int, prefix: str) -> Iterator[Turn | Verdict]:
    generations = [o for o in trace.get("observations") or []
                   if isinstance(o, dict) and o.get("type") == "GENERATION"]
    for i, o in enumerate(generations):
        metadata = {**(trace.get("metadata") or {}), **(o.get("metadata") or {})}
        yield _turn({**o, "sessionId": trace.get("sessionId"), "userId": o.get("userId") or trace.get("userId"),
                     "traceId": trace["id"], "metadata": metadata}, trace, line, f"{prefix}observations[{i}].")
    if not generations and trace.get("input") is not None:
        yield _turn({**trace, "traceId": trace["id"]}, trace, line, prefix)
    for i, s in enumerate(trace.get("scores") or []):
        if isinstance(s, dict):
            yield from _score({"traceId": trace["id"], **s}, line, f"{prefix}scores[{i}].")


def _turn(obj: dict[str, Any], trace: dict[str, Any], line: int, prefix: str) -> Turn:
    if obj.get("input") is None:
        raise RecordError(f"{prefix}input: missing")
    messages = message_list(json_value(obj["input"]), f"{prefix}input")
    output = json_value(obj.get("output"))
    if isinstance(output, dict) and isinstance(output.get("choices"), list) and output["choices"]:
        output = output["choices"][0].get("message", output["choices"][0])
    metadata = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
    trace_id = str(obj.get("traceId") or trace.get("id") or "")
    session = str(obj.get("sessionId") or trace.get("sessionId") or "")
    ids = [i for i in (str(obj.get("id") or ""), trace_id, session) if i]
    user = obj.get("userId") or trace.get("userId")
    tenant = metadata.get("tenant") if metadata else None
    return Turn(conversation=session or trace_id, ids=ids,
                at=str(obj.get("startTime") or obj.get("timestamp") or ""), input=messages,
                output=None if output is None else text_of(output), line=line,
                user=optional_text(user), tenant=str(tenant) if tenant else None,
                metadata={"trace_id": trace_id} if trace_id else {})


def _score(s: dict[str, Any], line: int, prefix: str) -> Iterator[Verdict]:
    if s.get("source") == "EVAL":
        return
    subject = s["subject"] if isinstance(s.get("subject"), dict) else {}
    target = s.get("observationId") or s.get("traceId") or subject.get("id") or s.get("sessionId")
    if not target:
        raise RecordError(f"{prefix}traceId: the score names no trace, observation or session")
    kind, value = s.get("dataType"), s.get("value")
    label = s.get("stringValue")
    action = label_action(label)
    if action is None and kind in ("BOOLEAN", None) and (kind == "BOOLEAN" or isinstance(value, bool)):
        action = binary_action(value)
    rating = float(value) if kind == "NUMERIC" and isinstance(value, (int, float)) else None
    edited = text_of(label if label is not None else value) if kind == "CORRECTION" else None
    comment = s.get("comment") or (label if kind == "TEXT" else None)
    comment = comment if isinstance(comment, str) else None  # a number or an object is no one's words
    yield Verdict(target=str(target), line=line, comment=comment, action="edit" if edited else action,
                  rating=rating, edited=edited, name=s.get("name"))
