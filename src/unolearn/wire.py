"""OpenAI wire shapes, in one place: completion bodies, stream chunks, message content.

The proxy answers with them, and the benchmark's fixed-latency server and the tests' fake upstream
build their responses with them.
"""

from __future__ import annotations

import json
import time
from typing import Any


def completion(rid: str, model: str, text: str, usage: dict[str, int], finish_reason: str = "stop") -> dict[str, Any]:
    """A ``chat.completion`` body with one choice."""
    prompt, done = usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0)
    return {"id": rid, "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "finish_reason": finish_reason}],
            "usage": {"prompt_tokens": prompt, "completion_tokens": done, "total_tokens": prompt + done}}


def sse(obj: Any) -> bytes:
    """One server-sent event carrying ``obj`` as JSON."""
    return b"data: " + json.dumps(obj).encode() + b"\n\n"


def chunks(rid: str, model: str, text: str, usage: dict[str, int] | None, finish_reason: str = "stop") -> list[bytes]:
    """``text`` as ``chat.completion.chunk`` events: role, content, finish, [usage], ``[DONE]``."""
    base = {"id": rid, "object": "chat.completion.chunk", "created": int(time.time()), "model": model}
    deltas = [({"role": "assistant", "content": ""}, None), ({"content": text}, None), ({}, finish_reason)]
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
