"""LangSmith: runs and feedback as ``Client.list_runs`` and ``Client.list_feedback`` give them (the
``langsmith.schemas`` Run and Feedback objects serialised), one per line, in a JSON array, or in the API's
``{"runs": [...]}`` pages.

A turn is an LLM run (``run_type`` ``llm``, or ``chat`` with messages): what it was sent is ``inputs.messages``
(LangChain's batch of message lists, or OpenAI messages), else ``inputs.prompts`` or ``inputs.input``; its
answer the first generation of ``outputs.generations`` (its message, else its text), else ``outputs.output``,
``outputs.messages``, ``outputs.content`` or an OpenAI response's first choice. Chains, tools and retrievers are
not turns: left out. The conversation is the thread LangSmith groups runs by (``extra.metadata`` ``thread_id``,
``session_id`` or ``conversation_id``), else the trace. The user is ``extra.metadata.user_id``; the tenant
``extra.metadata.tenant``. (A run's own ``session_id`` is its tracing project, not a conversation.)

Feedback names a run (``run_id``; a trace's root run names the trace's first answer): its comment is the user's
words; a correction an edit; a true/false or 1/0 score (or a thumbs-up/down ``value``) a like/dislike; another
numeric score a rating. Feedback from a model (``feedback_source.type`` ``model``: an evaluator) is not a
user's: left out.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from ..errors import RecordError
from .conversation import Turn, Verdict, binary_action, label_action, optional_text
from .messages import ROLES, json_value, message_list, text_of

#: Run types that are model calls (``chat`` only where its inputs hold messages).
LLM_RUNS = frozenset({"llm", "chat"})
#: The ``extra.metadata`` keys LangSmith threads are grouped by, in the order they are read.
THREAD_KEYS = ("thread_id", "session_id", "conversation_id")
#: ``feedback_source.type`` of feedback that is no user's (an evaluator's).
MODEL_SOURCE = "model"


def detect(obj: Any) -> bool:
    """A LangSmith run, a feedback, or a page of runs."""
    if not isinstance(obj, dict):
        return False
    if isinstance(obj.get("runs"), list):
        return any(detect(x) for x in obj["runs"][:1])
    return _kind(obj) is not None


def _kind(obj: dict[str, Any]) -> str | None:
    if "run_type" in obj and "inputs" in obj:
        return "run"
    if "run_id" in obj and "key" in obj:
        return "feedback"
    return None


def pieces(obj: Any, line: int) -> Iterator[Turn | Verdict]:
    """The turn of an LLM run, the verdict of a feedback (nothing for other runs); a page yields its runs'."""
    if isinstance(obj, dict) and isinstance(obj.get("runs"), list):
        for i, run in enumerate(obj["runs"]):
            yield from _item(run, line, f"runs[{i}]")
    else:
        yield from _item(obj, line, "")


def _item(obj: Any, line: int, where: str) -> Iterator[Turn | Verdict]:
    if not isinstance(obj, dict):
        raise RecordError(f"{where or 'record'}: expected a LangSmith run or feedback, got {type(obj).__name__}")
    prefix = f"{where}." if where else ""
    kind = _kind(obj)
    if kind == "run":
        turn = _turn(obj, line, prefix)
        if turn is not None:
            yield turn
    elif kind == "feedback":
        yield from _feedback(obj, line, prefix)
    else:
        raise RecordError(f"{where or 'record'}: not a LangSmith run (run_type, inputs) or feedback (run_id, key)")


def _turn(run: dict[str, Any], line: int, prefix: str) -> Turn | None:
    run_type = str(run.get("run_type") or "").lower()
    inputs = json_value(run.get("inputs"))
    if run_type not in LLM_RUNS:
        return None
    if not isinstance(inputs, dict):
        raise RecordError(f"{prefix}inputs: expected an object, got {type(inputs).__name__}")
    if run_type == "chat" and "messages" not in inputs:
        return None
    run_id = str(run.get("id") or "")
    if not run_id:
        raise RecordError(f"{prefix}id: missing")
    messages = _sent(inputs, f"{prefix}inputs")
    extra = _object(run.get("extra"))
    metadata = _object(extra.get("metadata"))
    trace_id = str(run.get("trace_id") or "")
    thread = next((str(metadata[k]) for k in THREAD_KEYS if metadata.get(k) not in (None, "")), "")
    return Turn(conversation=thread or trace_id or run_id, ids=[i for i in (run_id, trace_id) if i],
                at=str(run.get("start_time") or ""), input=messages,
                output=_answer(json_value(run.get("outputs")), f"{prefix}outputs"), line=line,
                user=optional_text(metadata.get("user_id")), tenant=optional_text(metadata.get("tenant")),
                metadata={"trace_id": trace_id} if trace_id else {})


def _sent(inputs: dict[str, Any], field: str) -> list[dict[str, str]]:
    """What an LLM run was sent: its messages, else its first prompt, else its input."""
    if inputs.get("messages") is not None:
        return message_list(_unchunked(inputs["messages"]), f"{field}.messages")
    prompts = inputs.get("prompts")
    if isinstance(prompts, list) and prompts:
        return message_list(prompts[0] if isinstance(prompts[0], str) else prompts, f"{field}.prompts")
    if inputs.get("prompt") is not None:
        return message_list(_unchunked(json_value(inputs["prompt"])), f"{field}.prompt")
    if inputs.get("input") is not None:
        return message_list(_unchunked(json_value(inputs["input"])), f"{field}.input")
    raise RecordError(f"{field}: no messages, prompts or input")


def _answer(outputs: Any, field: str) -> str | None:
    """The answer an LLM run gave (None when it gave none: an error)."""
    if outputs is None or isinstance(outputs, str):
        return outputs
    if not isinstance(outputs, dict):
        raise RecordError(f"{field}: expected an object, got {type(outputs).__name__}")
    generations = outputs.get("generations")
    if isinstance(generations, list) and generations:
        first = generations[0]
        if isinstance(first, list):  # one list of generations per prompt
            if not first:
                return None
            first, field = first[0], f"{field}.generations[0][0]"
        else:
            field = f"{field}.generations[0]"
        if not isinstance(first, dict):
            raise RecordError(f"{field}: expected a generation, got {type(first).__name__}")
        if isinstance(first.get("message"), dict):
            return _reply(first["message"], f"{field}.message")
        return text_of(first.get("text"))
    choices = outputs.get("choices")
    if isinstance(choices, list) and choices and isinstance(choices[0], dict):  # an OpenAI response
        choice = choices[0]
        message = choice.get("message")
        return text_of(message.get("content") if isinstance(message, dict) else choice.get("text"))
    for key in ("output", "messages", "content"):
        if key in outputs:
            return _reply(json_value(outputs[key]), f"{field}.{key}")
    return None


def _reply(value: Any, field: str) -> str | None:
    """The text of an answer: a string, a message (LangChain's or OpenAI's), or the last assistant message."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, dict) and not _is_message(value):
        return text_of(value)
    replies = [m for m in message_list(_unchunked(value), field) if m["role"] == "assistant"]
    return replies[-1]["content"] if replies else None


def _is_message(value: dict[str, Any]) -> bool:
    """Whether an object is a message (OpenAI's or LangChain's), not an answer's text or content part."""
    kind = value.get("type")
    return "role" in value or bool(value.get("lc")) or (
        isinstance(kind, str) and kind.lower().removesuffix("chunk") in ROLES)


def _unchunked(value: Any) -> Any:
    """LangChain messages with a streamed message's class (``AIMessageChunk``) named as the message's."""
    if isinstance(value, list):
        return [_unchunked(v) for v in value]
    if isinstance(value, dict):
        ids = value.get("id")
        if value.get("lc") and isinstance(ids, list) and ids and str(ids[-1]).endswith("Chunk"):
            return {**value, "id": [*ids[:-1], str(ids[-1])[:-len("Chunk")]]}
        kind = value.get("type")
        if isinstance(kind, str) and kind.endswith("Chunk"):
            return {**value, "type": kind[:-len("Chunk")]}
    return value


def _feedback(f: dict[str, Any], line: int, prefix: str) -> Iterator[Verdict]:
    source = f.get("feedback_source")
    if isinstance(source, dict) and str(source.get("type") or "").lower() == MODEL_SOURCE:
        return
    target = f.get("run_id") or f.get("trace_id")
    if not target:
        raise RecordError(f"{prefix}run_id: the feedback names no run")
    score, value = f.get("score"), f.get("value")
    action = label_action(value) or binary_action(score)
    rating = (float(score) if action is None and isinstance(score, (int, float)) and not isinstance(score, bool)
              else None)
    edited = _correction(json_value(f.get("correction")), f"{prefix}correction")
    comment = f.get("comment")
    yield Verdict(target=str(target), line=line, comment=comment if isinstance(comment, str) else None,
                  action="edit" if edited else action, rating=rating, edited=edited, name=optional_text(f.get("key")))


def _correction(correction: Any, field: str) -> str | None:
    """The text a correction gives (a string, or an object holding the corrected output), or None."""
    if correction is None:
        return None
    text: str | None
    if isinstance(correction, dict) and not _is_message(correction):
        text = _answer(correction, field) or text_of(correction)
    else:
        text = _reply(correction, field)
    return text if text and text.strip() else None


def _object(v: Any) -> dict[str, Any]:
    return v if isinstance(v, dict) else {}
