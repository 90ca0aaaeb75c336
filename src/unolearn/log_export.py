"""A stored log as unolearn's record, for `unolearn logs export`: what an importer made of an export.

:func:`export_record` is the JSON form (one object per line), :func:`text_block` the short form a person reads.
"""

from __future__ import annotations

from typing import Any

from .records import Action, Log

#: The most characters of one shortened text in :func:`text_block`.
LINE_LIMIT = 100


def export_record(log: Log) -> dict[str, Any]:
    """The fields of ``log`` as stored, in a fixed order: id, query, first answer, feedback turns, actions, rating,
    user, tenant, source, timestamp, language, metadata (an importer's conversation and trace ids)
    and the messages."""
    return {
        "id": log.id,
        "query": log.query,
        "first_answer": log.first_answer,
        "feedback": list(log.feedback),
        "actions": [a.model_dump(mode="json") for a in log.actions],
        "rating": log.rating,
        "user": log.user,
        "tenant": log.tenant,
        "source": log.source,
        "timestamp": log.timestamp,
        "lang": log.lang,
        "metadata": log.metadata,
        "messages": [m.model_dump(mode="json") for m in log.messages],
    }


def shorten(text: str, limit: int = LINE_LIMIT) -> str:
    """``text`` on one line (runs of whitespace as one space), cut to at most ``limit`` characters with "…"."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[:limit - 1].rstrip() + "…"


def _action(a: Action) -> str:
    """One action as ``kind (turn N): edited text``."""
    turn = "" if a.turn is None else f" (turn {a.turn})"
    return a.kind + turn + (f": {shorten(a.edited)}" if a.edited else "")


def text_block(log: Log) -> str:
    """A few lines on ``log``: its id, user and source; its query and first answer, each feedback turn and action
    on one line of at most :data:`LINE_LIMIT` characters; its rating."""
    lines = [f"{log.id}  user {log.user or '-'}  source {log.source or '-'}",
             f"  query:    {shorten(log.query)}",
             f"  answer:   {'-' if log.first_answer is None else shorten(log.first_answer)}"]
    lines += [f"  feedback: {shorten(f)}" for f in log.feedback]
    lines += [f"  action:   {_action(a)}" for a in log.actions]
    lines.append(f"  rating:   {'-' if log.rating is None else f'{log.rating:g}'}")
    return "\n".join(lines)
