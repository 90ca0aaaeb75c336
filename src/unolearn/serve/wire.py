"""The requests the proxy parses (the OpenAI response shapes are in :mod:`unolearn.wire`)."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from ..answer import Route
from ..errors import RecordError, check_text, one_line
from ..names import SERVED_SYSTEMS, PathName
from ..plans import adapter_name
from ..tenants import DEFAULT_TENANT
from ..wire import text_of
from .config import ACTIONS
from .problems import HTTPProblem


class Composed(NamedTuple):
    """An answer the proxy wrote itself (embedded mode, the reflective path's revision), not relayed."""

    text: str
    usage: dict[str, int]
    model: str
    finish_reason: str = "stop"  # "length": max_tokens cut the text, as the client must be told


@dataclass
class Chat:
    """One parsed chat completion request."""

    raw: bytes
    body: dict[str, Any]
    query: str
    stream: bool
    system: str
    tenant: str = DEFAULT_TENANT  #: whose key sent it: the plan that routes it and the store that records it
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
    except RecursionError as e:
        raise HTTPProblem("the request body is nested too deeply", 400, "invalid_json") from e
    except (ValueError, UnicodeDecodeError) as e:
        raise HTTPProblem(f"the request body is not valid JSON: {one_line(e, 200)}", 400, "invalid_json") from e
    if not isinstance(body, dict):
        raise HTTPProblem("the request body must be a JSON object", 400, "invalid_request")
    if b"\\u0000" in raw and (where := _nul_at(body)):  # the escape is the only way JSON carries a NUL
        raise HTTPProblem(f"{where} holds a NUL character (\\u0000), which cannot be stored", 400, "invalid_request",
                          param=None if where.startswith(("the body", "a key of")) else where)
    if b"\\u" in raw:  # a lone surrogate, too, comes only as an escape
        try:
            check_text(body, "the body")
        except RecordError as e:
            raise HTTPProblem(str(e), 400, "invalid_request") from None
    return body


#: Sampling parameters that must be numbers (the upstream, or the embedded model, would fail on another type).
_NUMBERS = {"max_tokens": int, "max_completion_tokens": int, "n": int, "seed": int, "temperature": float,
            "top_p": float, "presence_penalty": float, "frequency_penalty": float}


def _check_numbers(body: dict[str, Any]) -> None:
    """400 for a sampling parameter of the wrong type (``"max_tokens": "many"``) or out of range."""
    for key, kind in _NUMBERS.items():
        value = body.get(key)
        if value is None:
            continue
        ok = isinstance(value, (int, float) if kind is float else int) and not isinstance(value, bool)
        if not ok or (kind is int and key != "seed" and value < 1) or (kind is float and not -2**31 < value < 2**31):
            raise HTTPProblem(f"'{key}' must be {'a positive integer' if kind is int else 'a number'}, "
                              f"got {json.dumps(value)[:40]}", 400, "invalid_request", param=key)


def _nul_at(value: Any, where: str = "the body") -> str | None:
    """Where in a parsed JSON ``value`` a string holds U+0000 (``messages[0].content``); None: nowhere.

    PostgreSQL's text refuses NUL, and one stored row holding it would sink its batch, so the proxy
    refuses it at the door on either store.
    """
    if isinstance(value, str):
        return where if "\x00" in value else None
    if isinstance(value, dict):
        for key, item in value.items():
            here = key if where == "the body" else f"{where}.{key}"
            if "\x00" in key:
                return f"a key of {where}"
            if found := _nul_at(item, here):
                return found
        return None
    if isinstance(value, list):
        return next((found for i, v in enumerate(value) if (found := _nul_at(v, f"{where}[{i}]"))), None)
    return None


def parse_chat(raw: bytes, system: str, max_messages: int, tenant: str = DEFAULT_TENANT) -> Chat:
    """Validate a chat completion body of ``tenant`` and find the query it is routed on."""
    body = parse_json(raw)
    _check_numbers(body)
    if body.get("stream") is not None and not isinstance(body["stream"], bool):
        raise HTTPProblem("'stream' must be true or false", 400, "invalid_request", param="stream")
    if body.get("stream_options") is not None and not isinstance(body["stream_options"], dict):
        raise HTTPProblem("'stream_options' must be an object", 400, "invalid_request", param="stream_options")
    if body.get("user") is not None and not isinstance(body["user"], str):  # else anonymous: forget could not find it
        raise HTTPProblem("'user' must be a string", 400, "invalid_request", param="user")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise HTTPProblem("'messages' must be a non-empty list", 400, "invalid_request", param="messages")
    if len(messages) > max_messages:
        raise HTTPProblem(f"too many messages: {len(messages)} > {max_messages}", 413, "too_many_messages",
                          param="messages")
    if not all(isinstance(m, dict) and isinstance(m.get("role"), str) for m in messages):
        raise HTTPProblem("every message must be an object with a 'role'", 400, "invalid_request", param="messages")
    users = [text_of(m.get("content")) for m in messages if m["role"] == "user"]
    if not users or not users[-1].strip():
        raise HTTPProblem("the request needs a last user message with text", 400, "invalid_request",
                          param="messages")
    if system not in SERVED_SYSTEMS:
        raise HTTPProblem(f"X-Unolearn-System must be one of {', '.join(SERVED_SYSTEMS)}", 400, "invalid_system")
    return Chat(raw, body, users[-1], bool(body.get("stream")), system, tenant)


@dataclass(frozen=True)
class Feedback:
    """One parsed feedback: on which answer, what the user said or did, and who says it."""

    response_id: str
    text: str | None
    action: str | None
    edited: str | None
    user: str | None


def parse_feedback(raw: bytes) -> Feedback:
    """The feedback in a body; 400 when it is malformed."""
    body = parse_json(raw)
    unknown = sorted(set(body) - {"response_id", "text", "action", "edited", "user"})
    rid, text, action, edited, user = (body.get(k) for k in ("response_id", "text", "action", "edited", "user"))
    checks = [  # (at fault, message, field): the first that is at fault is answered
        (bool(unknown), f"unknown field {unknown[0]!r}" if unknown else "", unknown[0] if unknown else None),
        (not (isinstance(rid, str) and rid), "'response_id' must be a non-empty string", "response_id"),
        (user is not None and not isinstance(user, str), "'user' must be a string", "user"),
        (text is not None and not isinstance(text, str), "'text' must be a string", "text"),
        (action is not None and action not in ACTIONS, f"'action' must be one of {', '.join(ACTIONS)}", "action"),
        (not (isinstance(text, str) and text.strip()) and action is None, "give 'text' or 'action'", "text"),
        (action == "edit" and not (isinstance(edited, str) and edited.strip()),
         "'edit' needs the edited answer in 'edited'", "edited"),
        (action != "edit" and edited is not None, "'edited' goes only with action 'edit'", "edited")]
    for at_fault, problem, param in checks:
        if at_fault:
            raise HTTPProblem(problem, 400, "invalid_feedback", param=param)
    assert isinstance(rid, str)  # checked with the rest above
    return Feedback(rid, text, action, edited, user if user and user.strip() else None)


def route_header(route: Route) -> str:
    """The ``X-Unolearn-Route`` value."""
    parts = [f"path={route.path}", f"cluster={'-' if route.cluster is None else route.cluster}",
             f"system={route.system}"]
    if route.path == PathName.GUIDE:
        parts.append(f"guide={route.module_id}")
    elif route.module_id is not None and route.epoch is not None:
        parts.append(f"adapter={adapter_name(route.module_id, route.epoch)}")
    return "; ".join(parts)
