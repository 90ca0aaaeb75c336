"""What every platform importer makes of an export: turns (one model call: what it was sent, what it answered)
and verdicts (feedback naming an answer by id), gathered by conversation and assembled into one :class:`Log`
per conversation.

How turns become one conversation: in time order, a turn whose input repeats the conversation so far adds
only what is new; a turn that sends only its own request (a session's next trace) adds its messages after the
last assistant message of its input. So a session of three traces, or three calls that each resend the
history, both make one log whose query is the first request and whose feedback is every later user turn.

How verdicts become feedback: a comment (a score's, an annotation's explanation) is the user's words and
joins the log's feedback after its later user turns; a thumbs up/down is a ``like``/``dislike`` action on
the answer it names; a correction an ``edit``; a numeric score of the first answer the log's rating (the mean
of several; a later answer's rating is not the log's).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from ..records import Action, ActionKind, Log, Message, is_timestamp

#: Score labels read as a thumbs up or down (lower case; spaces and dashes read as underscores).
LIKE_LABELS = frozenset({"thumbs_up", "thumbsup", "up", "like", "liked", "positive", "good", "helpful", "yes",
                         "true", "correct", "pass", "accept", "accepted", "👍"})
DISLIKE_LABELS = frozenset({"thumbs_down", "thumbsdown", "down", "dislike", "disliked", "negative", "bad",
                            "unhelpful", "no", "false", "incorrect", "wrong", "fail", "reject", "rejected", "👎"})


@dataclass
class Turn:
    """One model call of a conversation."""

    conversation: str
    ids: list[str]
    at: str
    input: list[dict[str, str]]
    output: str | None
    line: int
    user: str | None = None
    tenant: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class Verdict:
    """Feedback naming the answer ``target`` (a trace, span, run, observation or response id)."""

    target: str
    line: int
    comment: str | None = None
    action: ActionKind | None = None
    rating: float | None = None
    edited: str | None = None
    name: str | None = None
    user: str | None = None


def optional_text(v: Any) -> str | None:
    """An attribute or field as text; None when absent or empty (ids, users, tenants, comments)."""
    return str(v) if v not in (None, "") else None


def label_action(label: Any) -> ActionKind | None:
    """``like``/``dislike`` for a thumbs label (``thumbs_up``, ``👎``, ``positive``, …), else None."""
    if not isinstance(label, str):
        return None
    key = label.strip().lower().replace(" ", "_").replace("-", "_")
    return "like" if key in LIKE_LABELS else "dislike" if key in DISLIKE_LABELS else None


def binary_action(value: Any) -> ActionKind | None:
    """``like`` for true or 1, ``dislike`` for false or 0, else None."""
    if isinstance(value, bool):
        return "like" if value else "dislike"
    if isinstance(value, (int, float)) and value in (0, 1):
        return "like" if value == 1 else "dislike"
    return None


def turn_body(turn: Turn) -> dict[str, Any]:
    """A turn as the spool keeps it."""
    return asdict(turn)


def verdict_body(verdict: Verdict) -> dict[str, Any]:
    """A verdict as the spool keeps it."""
    return asdict(verdict)


def assemble(conversation: str, turns: list[dict[str, Any]], verdicts: list[dict[str, Any]], source: str) -> Log:
    """One conversation's log from its spooled turns (in time order) and the verdicts naming its answers."""
    messages: list[dict[str, str]] = []
    answer_of: dict[str, int] = {}  # an id → the index of its answer among the assistant turns
    seen: set[str] = set()
    for t in turns:
        key = repr((t["ids"], t["at"], t["input"], t["output"]))
        if key in seen:  # the same call twice (overlapping exports concatenated): not a user's new turn
            continue
        seen.add(key)
        messages.extend(_new_messages(messages, t["input"]))
        if t["output"] is not None:
            messages.append({"role": "assistant", "content": t["output"]})
        answered = sum(m["role"] == "assistant" for m in messages) - 1
        for i in t["ids"]:  # an id several turns share (a trace's, a session's) names the first of them
            answer_of.setdefault(i, max(answered, 0))
    first = turns[0]
    log = Log.from_messages([Message.model_validate(m) for m in messages],
                            actions=tuple(_actions(verdicts, answer_of)), rating=_rating(verdicts, answer_of),
                            user=next((t["user"] for t in turns if t["user"]), None),
                            tenant=next((t["tenant"] for t in turns if t["tenant"]), None),
                            source=source, timestamp=first["at"] if is_timestamp(first["at"]) else None, lang=None,
                            metadata={**first["metadata"], "conversation": conversation})
    comments = tuple(v["comment"] for v in verdicts if v["comment"] and v["comment"].strip())
    return log.model_copy(update={"feedback": log.feedback + comments}) if comments else log


def _new_messages(history: list[dict[str, str]], sent: list[dict[str, str]]) -> list[dict[str, str]]:
    """What a turn that was sent ``sent`` adds to ``history``."""
    if not history:
        return list(sent)
    if sent[:len(history)] == history:
        return sent[len(history):]
    last = max((i for i, m in enumerate(sent) if m["role"] == "assistant"), default=-1)
    return [m for m in sent[last + 1:] if m["role"] != "system"]


def _actions(verdicts: list[dict[str, Any]], answer_of: dict[str, int]) -> list[Action]:
    out = []
    for v in verdicts:
        if v["action"] == "edit" and not (v["edited"] or "").strip():
            continue
        if v["action"]:
            out.append(Action(kind=v["action"], turn=answer_of.get(v["target"]), edited=v["edited"]))
    return out


def _rating(verdicts: list[dict[str, Any]], answer_of: dict[str, int]) -> float | None:
    """The mean rating of the first answer (a log's rating is its first answer's; a session's counts too)."""
    ratings = [v["rating"] for v in verdicts if v["rating"] is not None and answer_of.get(v["target"], 0) == 0]
    return sum(ratings) / len(ratings) if ratings else None
