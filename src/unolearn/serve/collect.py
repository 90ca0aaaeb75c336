"""Closing the loop: served answers that got feedback become logs."""

from __future__ import annotations

import json

from ..records import Action, Log, Message, detect_lang
from ..store import Workspace
from ..wire import text_of


def collect_served(ws: Workspace) -> int:
    """Turn served interactions that received feedback (and no log yet) into logs; return how many.

    Each becomes a :class:`~unolearn.records.Log` (source ``serve``): the request's conversation, the
    served answer as first answer, the feedback texts as feedback turns and the actions as actions;
    ``served.log_id`` is set. Feedback given after its interaction was collected makes a log of its own at
    the next collection (the same conversation and answer, with the reactions not collected before).
    """
    logs = []
    for row in ws.uncollected_served():
        feedback = ws.pending_feedback(row[0])
        logs.append((row[0], served_log(*row, feedback=feedback), [f[0] for f in feedback]))
    ws.add_served_logs(logs)
    return len(logs)


def served_log(rid: str, messages: str, answer_text: str, route: str, created_at: str, user: str | None,
               feedback: list[tuple]) -> Log:
    """The log of one served interaction with the feedback ``(id, text, action, edited)`` it collects."""
    feedback = [f[1:] for f in feedback]
    turns = [Message(role=m["role"], content=text_of(m.get("content"))) for m in json.loads(messages)
             if m.get("role") in ("system", "user", "assistant")]
    query = next(m.content for m in reversed(turns) if m.role == "user")
    texts = tuple(t for t, _, _ in feedback if t and t.strip())
    actions = tuple(Action(kind=a, turn=0, edited=e) for _, a, e in feedback if a)
    convo = (*turns, Message(role="assistant", content=answer_text), *(Message(role="user", content=t) for t in texts))
    return Log(messages=convo, query=query, first_answer=answer_text, feedback=texts, actions=actions,
               lang=detect_lang(query + "\n" + answer_text), source="serve", timestamp=created_at, user=user,
               metadata={"response_id": rid, "route": json.loads(route)})
