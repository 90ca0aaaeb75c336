"""Chat messages as the platforms record them, normalised to ``{"role", "content"}`` with text content.

Read: OpenAI messages (content a string or a list of parts), OpenTelemetry GenAI messages (``parts`` of type
``text`` with ``content``), LangChain messages (``{"type": "human", "content"}``, their ``data`` form, and the
serialised ``{"lc": 1, "id": [..., "HumanMessage"], "kwargs": {...}}``), a bare string (one user message),
and an object holding ``messages``. Tool calls and tool results are not conversation turns: left out.
"""

from __future__ import annotations

import json
from typing import Any

from ..errors import RecordError

ROLES = {"system": "system", "developer": "system", "user": "user", "human": "user", "assistant": "assistant",
         "ai": "assistant", "model": "assistant", "bot": "assistant", "systemmessage": "system",
         "humanmessage": "user", "aimessage": "assistant", "chatmessage": None, "tool": None, "function": None,
         "toolmessage": None, "functionmessage": None}


def text_of(content: Any) -> str:
    """Message content as text: a string; the text parts of a list joined; an object's text or content."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(text_of(p) for p in content if not isinstance(p, dict) or _is_text(p))
    if isinstance(content, dict):
        for key in ("text", "content", "value"):
            if key in content:
                return text_of(content[key])
        return ""
    return str(content)


def _is_text(part: dict[str, Any]) -> bool:
    return part.get("type", "text") in ("text", "input_text", "output_text")


def message_list(value: Any, field: str) -> list[dict[str, str]]:
    """``value`` as a list of messages; a RecordError naming ``field`` when it holds none."""
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    if isinstance(value, dict) and isinstance(value.get("messages"), list):
        return message_list(value["messages"], f"{field}.messages")
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list):
        raise RecordError(f"{field}: expected messages, got {type(value).__name__}")
    if len(value) == 1 and isinstance(value[0], list):  # LangChain's batch of one: [[message, ...]]
        value = value[0]
    out = []
    for i, m in enumerate(value):
        message = _message(m, f"{field}[{i}]")
        if message is not None:
            out.append(message)
    return out


def _message(m: Any, field: str) -> dict[str, str] | None:
    if not isinstance(m, dict):
        raise RecordError(f"{field}: expected an object, got {type(m).__name__}")
    if m.get("lc") and isinstance(m.get("kwargs"), dict):  # LangChain's serialised form
        ids = m.get("id") or []
        return _message({**m["kwargs"], "type": str(ids[-1]) if ids else m["kwargs"].get("type")}, field)
    if isinstance(m.get("data"), dict) and "type" in m:  # LangChain's message_to_dict form
        return _message({**m["data"], "type": m["type"]}, field)
    role = m.get("role") or m.get("type")
    if not isinstance(role, str):
        raise RecordError(f"{field}.role: missing or not a string")
    key = role.lower()
    if key not in ROLES:
        raise RecordError(f"{field}.role: unknown role {role!r}")
    if ROLES[key] is None:
        return None
    content = m.get("parts") if "parts" in m else m.get("content")
    return {"role": ROLES[key] or "user", "content": text_of(content)}


def json_value(v: Any) -> Any:
    """A value that may hold JSON as a string (as instrumentations record messages) decoded; else as it is."""
    if isinstance(v, str) and v[:1] in "[{":
        try:
            return json.loads(v)
        except ValueError:
            return v
    return v
