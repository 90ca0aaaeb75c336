"""The users a raw input record names, wherever a supported format puts its user id.

Why: a rejected record is kept (redacted) for inspection, and ``forget --user`` must reach it too. Its user is
wherever its format names one: ``user`` (openai, sharegpt, memorybench), Langfuse's ``userId``, LangSmith's
``extra.metadata.user_id``, OpenTelemetry's and OpenInference's ``user.id`` attribute (a dotted key, nested
``{"user": {"id": …}}``, or an OTLP ``{"key": "user.id", "value": {"stringValue": …}}``), also inside a field
that holds JSON as text. Ingest records them before redaction (an e-mail address as a user id would be redacted
in the raw text); forget matches them exactly, so forgetting ``al`` never reaches ``alice``.
"""

from __future__ import annotations

import json
import re
from typing import Any

#: Key names (lower case, letters only) whose value is a user id.
USER_KEYS = frozenset({"user", "userid", "enduserid"})
#: A user key and its value in text that is not JSON (a line cut short): ``"user_id": "alice"``, or an OTLP
#: attribute ``{"key": "user.id", "value": {"stringValue": "alice"}}``.
_IN_TEXT = re.compile(r'"(?:user|user_?id|(?:end)?user\.id)"\s*:\s*("(?:[^"\\]|\\.)*"|-?\d+)'
                      r'|"key"\s*:\s*"(?:end)?user\.id"\s*,\s*"value"\s*:\s*\{\s*"(?:stringValue|intValue)"\s*:\s*'
                      r'("(?:[^"\\]|\\.)*"|-?\d+)', re.IGNORECASE)


def users_in_text(raw: str) -> tuple[str, ...]:
    """The user ids a raw record names (JSON, or the key-value pairs of a record that is not), sorted."""
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError):
        found = set()
        for m in _IN_TEXT.finditer(raw):
            try:
                found |= _ids(json.loads(m.group(1) or m.group(2)))
            except ValueError:
                continue
        return tuple(sorted(found))
    return users_in(value)


def users_in(value: Any) -> tuple[str, ...]:
    """The user ids a decoded record names anywhere in it, sorted (walked without recursion: a record nested
    deeper than Python recurses is walked too)."""
    found: set[str] = set()
    stack = [value]
    while stack:
        node = stack.pop()
        if isinstance(node, str) and node[:1] in "[{":
            stack.append(_decoded(node))
        elif isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, dict):
            if _is_user_key(node.get("key")) and isinstance(node.get("value"), dict):  # an OTLP attribute
                found |= _ids(next(iter(node["value"].values()), None))
            for k, v in node.items():
                if _is_user_key(k):
                    found |= _ids(v.get("id") if isinstance(v, dict) else v)
                stack.append(v)
    return tuple(sorted(found))


def _is_user_key(key: Any) -> bool:
    return isinstance(key, str) and re.sub(r"[^a-z]", "", key.lower()) in USER_KEYS


def _ids(v: Any) -> set[str]:
    """A user id value as text (a string or an integer, as readers take it); none for anything else."""
    if isinstance(v, bool) or not isinstance(v, (str, int)) or not str(v).strip():
        return set()
    return {str(v)}


def _decoded(text: str) -> Any:
    """A field holding JSON as text, decoded; None when it is not JSON."""
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return None
