"""OpenAI wire shapes: completions, stream chunks, message content, and the requests the proxy parses."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from ..answer import Route
from ..names import SERVED_SYSTEMS
from ..selection import adapter_name
from .config import ACTIONS
from .problems import HTTPProblem


def completion(rid: str, model: str, text: str, usage: dict[str, int]) -> dict[str, Any]:
    """A ``chat.completion`` body with one choice."""
    prompt, done = usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0)
    return {"id": rid, "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": prompt, "completion_tokens": done, "total_tokens": prompt + done}}


def sse(obj: Any) -> bytes:
    """One server-sent event carrying ``obj`` as JSON."""
    return b"data: " + json.dumps(obj).encode() + b"\n\n"


def chunks(rid: str, model: str, text: str, usage: dict[str, int] | None) -> list[bytes]:
    """``text`` as ``chat.completion.chunk`` events: role, content, finish, [usage], ``[DONE]``."""
    base = {"id": rid, "object": "chat.completion.chunk", "created": int(time.time()), "model": model}
    deltas = [({"role": "assistant", "content": ""}, None), ({"content": text}, None), ({}, "stop")]
    out = [sse({**base, "choices": [{"index": 0, "delta": d, "finish_reason": f}]}) for d, f in deltas]
    if usage is not None:
        out.append(sse({**base, "choices": [], "usage": completion(rid, model, "", usage)["usage"]}))
    return [*out, b"data: [DONE]\n\n"]


def text_of(content: Any) -> str:
    """The text of a message's content (a string, or a list of parts of which the text ones count)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


@dataclass
class Chat:
    """One parsed chat completion request."""

    raw: bytes
    body: dict[str, Any]
    query: str
    stream: bool
    system: str
    rid: str = field(default_factory=lambda: f"chatcmpl-{uuid.uuid4().hex}")

    @property
    def user(self) -> str | None:
        """The OpenAI ``user`` parameter: who asked (a string id; None when absent or not a string)."""
        user = self.body.get("user")
        return user if isinstance(user, str) and user.strip() else None

    @property
    def model(self) -> str:
        """The model the client asked for."""
        return str(self.body.get("model") or "")

    @property
    def include_usage(self) -> bool:
        """True when the client asked for a final usage chunk."""
        return bool((self.body.get("stream_options") or {}).get("include_usage"))


def parse_json(raw: bytes) -> dict[str, Any]:
    """The JSON object in ``raw``; 400 otherwise."""
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise HTTPProblem(f"the request body is not valid JSON: {e}", 400, "invalid_json") from e
    if not isinstance(body, dict):
        raise HTTPProblem("the request body must be a JSON object", 400, "invalid_request")
    return body


def parse_chat(raw: bytes, system: str, max_messages: int) -> Chat:
    """Validate a chat completion body and find the query it is routed on."""
    body = parse_json(raw)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise HTTPProblem("'messages' must be a non-empty list", 400, "invalid_request")
    if len(messages) > max_messages:
        raise HTTPProblem(f"too many messages: {len(messages)} > {max_messages}", 413, "too_many_messages")
    if not all(isinstance(m, dict) and isinstance(m.get("role"), str) for m in messages):
        raise HTTPProblem("every message must be an object with a 'role'", 400, "invalid_request")
    users = [text_of(m.get("content")) for m in messages if m["role"] == "user"]
    if not users or not users[-1].strip():
        raise HTTPProblem("the request needs a last user message with text", 400, "invalid_request")
    if system not in SERVED_SYSTEMS:
        raise HTTPProblem(f"X-Unolearn-System must be one of {', '.join(SERVED_SYSTEMS)}", 400, "invalid_system")
    return Chat(raw, body, users[-1], bool(body.get("stream")), system)


def parse_feedback(raw: bytes) -> tuple[str, str | None, str | None, str | None]:
    """``(response_id, text, action, edited)`` of a feedback body; 400 when it is malformed."""
    body = parse_json(raw)
    unknown = sorted(set(body) - {"response_id", "text", "action", "edited"})
    rid, text, action, edited = (body.get(k) for k in ("response_id", "text", "action", "edited"))
    problem = (f"unknown field {unknown[0]!r}" if unknown
               else "'response_id' must be a non-empty string" if not (isinstance(rid, str) and rid)
               else "'text' must be a string" if text is not None and not isinstance(text, str)
               else f"'action' must be one of {', '.join(ACTIONS)}" if action is not None and action not in ACTIONS
               else "give 'text' or 'action'" if not (text and text.strip()) and action is None
               else "'edit' needs the edited answer in 'edited'" if action == "edit" and not (
                   isinstance(edited, str) and edited.strip())
               else "'edited' goes only with action 'edit'" if action != "edit" and edited is not None
               else None)
    if problem:
        raise HTTPProblem(problem, 400, "invalid_feedback")
    return rid, text, action, edited


def route_header(route: Route) -> str:
    """The ``X-Unolearn-Route`` value."""
    parts = [f"path={route.path}", f"cluster={'-' if route.cluster is None else route.cluster}",
             f"system={route.system}"]
    if route.path == "guide":
        parts.append(f"guide={route.module_id}")
    elif route.module_id is not None:
        parts.append(f"adapter={adapter_name(route.module_id, route.epoch)}")
    return "; ".join(parts)
