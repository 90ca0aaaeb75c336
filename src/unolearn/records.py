"""Typed, frozen records and their content-addressed keys.

Every record is identified by a *versioned* hash of its canonical JSON (sorted keys, no
insignificant whitespace, UTF-8). Re-ingesting or re-computing the same content therefore yields
the same key, which is what makes every stage idempotent. Bump ``RECORD_VERSION`` when a record's
meaning changes so that old and new keys can never collide.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

RECORD_VERSION = 1

Role = Literal["system", "user", "assistant"]
ActionKind = Literal["like", "dislike", "copy", "regenerate", "edit"]
Lang = Literal["en", "zh"]

#: The user key of every log without a user: together they count as one user.
ANONYMOUS = "anonymous"

CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")  # CJK ideographs (also words in constraints)


def canonical_json(obj: Any) -> str:
    """Serialise ``obj`` to canonical JSON: sorted keys, compact separators, unescaped UTF-8."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def content_hash(kind: str, obj: Any) -> str:
    """Return the versioned key ``{kind}-v{RECORD_VERSION}-{sha256[:24]}`` of ``obj``'s canonical JSON."""
    digest = hashlib.sha256(canonical_json(obj).encode("utf-8")).hexdigest()
    return f"{kind}-v{RECORD_VERSION}-{digest[:24]}"


def detect_lang(text: str) -> Lang:
    """Guess ``zh`` when at least 20% of the non-space characters are CJK ideographs, else ``en``."""
    chars = [c for c in text[:4000] if not c.isspace()]
    if not chars:
        return "en"
    cjk = sum(1 for c in chars if CJK.match(c))
    return "zh" if cjk / len(chars) >= 0.2 else "en"


def is_timestamp(value: Any) -> bool:
    """Whether ``value`` is an ISO-8601 date or time as text (what a log's ``timestamp`` holds)."""
    try:
        datetime.fromisoformat(value)
    except (TypeError, ValueError):
        return False
    return True


class Record(BaseModel):
    """Base of all records: frozen, no unknown fields."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class Message(Record):
    """One chat message in OpenAI form."""

    role: Role
    content: str


class Action(Record):
    """An implicit user action on an answer; ``edit`` carries the user's edited answer."""

    kind: ActionKind
    turn: int | None = Field(default=None, description="Index of the assistant turn acted on (0 = first answer).")
    edited: str | None = None

    @model_validator(mode="after")
    def _edit_has_text(self) -> Action:
        if self.kind == "edit" and not (self.edited and self.edited.strip()):
            raise ValueError("an 'edit' action needs the edited answer in 'edited'")
        return self


class Log(Record):
    """One logged interaction: a conversation, its first answer and the user's reactions to it."""

    messages: tuple[Message, ...]
    query: str = Field(description="The first user turn: the request the first answer answered.")
    first_answer: str | None = Field(default=None, description="The first assistant turn after the query.")
    feedback: tuple[str, ...] = Field(default=(), description="User turns after the first answer.")
    actions: tuple[Action, ...] = ()
    rating: float | None = None
    lang: Lang
    source: str = ""
    timestamp: str | None = None
    user: str | None = Field(default=None, description="Who asked: several logs of one user count once as support.")
    tenant: str | None = Field(default=None, description="The team whose logs these are (None: the default "
                                                         "tenant); the log is stored in that tenant's store.")
    metadata: dict[str, Any] = Field(default_factory=dict)

    @field_validator("query")
    @classmethod
    def _query_not_empty(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("the query (first user turn) is empty")
        return v

    @property
    def id(self) -> str:
        """The log's content key (a log without a user or a tenant keeps the key it had before logs had them)."""
        unset = {k for k in ("user", "tenant") if getattr(self, k) is None}
        return content_hash("log", self.model_dump(mode="json", exclude=unset or None))

    @property
    def user_key(self) -> str:
        """The user to count this log under: its ``user``; every log without one counts as one user together,
        ``anonymous`` (anyone can send many of them: they must not add up to support)."""
        return f"user:{self.user}" if self.user is not None else ANONYMOUS

    @property
    def has_feedback(self) -> bool:
        """True when the user reacted to the answer, in words or by an action."""
        return bool(self.feedback or self.actions or self.rating is not None)

    @classmethod
    def from_messages(cls, messages: list[Message], **fields: Any) -> Log:
        """Build a log from a conversation, deriving query, first answer and feedback turns.

        The query is the first user turn; the first answer is the first assistant turn after it;
        feedback is every user turn after the first answer. ``lang`` is detected when not given.
        """
        users = [i for i, m in enumerate(messages) if m.role == "user"]
        if not users:
            raise ValueError("the conversation has no user turn")
        q = users[0]
        answer_at = next((i for i in range(q + 1, len(messages)) if messages[i].role == "assistant"), None)
        first_answer = messages[answer_at].content if answer_at is not None else None
        feedback = () if answer_at is None else tuple(
            m.content for m in messages[answer_at + 1:] if m.role == "user")
        query = messages[q].content
        if fields.get("lang") is None:
            fields["lang"] = detect_lang(query + "\n" + (first_answer or ""))
        return cls(messages=tuple(messages), query=query, first_answer=first_answer,
                   feedback=feedback, **fields)


class Rejected(Record):
    """An input record that could not be stored, kept with its raw text for inspection."""

    file: str
    line: int
    reason: str
    raw: str
    users: tuple[str, ...] | None = Field(default=None, description="The user ids the raw record names, found "
                                                                     "before redaction (what forget matches); None: "
                                                                     "not looked for.")

    @property
    def id(self) -> str:
        """The rejection's content key (same file, line and text → same key; without a text, the reason counts
        too, so two records rejected without their text at one place are two rejections)."""
        key = {"file": self.file, "line": self.line, "raw": self.raw}
        return content_hash("rej", key if self.raw else {**key, "reason": self.reason})


RuleStatus = Literal["kept", "approved", "unsupported", "known", "contradicted", "over_budget", "rejected",
                     "quarantined", "unreviewed"]


class RuleMember(Record):
    """One feedback rule of one log that a rulebook entry stands for."""

    log_id: str
    user: str = Field(description="The log's user key (its user, or the log itself).")
    rule: str
    servable: bool = Field(default=False, description="Whether this wording may stand for the entry in a prompt: it "
                                                      "passed screening itself and is within merge_similarity of the "
                                                      "entry's text (an approved entry reaches prompts in its text).")


class RuleEntry(Record):
    """One consolidated rule of a cluster's rulebook, with the logs and users that asked for it."""

    id: str
    cluster: int
    text: str = Field(description="The member rule closest to all the others (the group's medoid).")
    lang: Lang
    members: tuple[RuleMember, ...]
    novelty: float | None = Field(default=None, description="How new the rule is to the model (the gap scorer).")
    status: RuleStatus
    contradicted_by: str | None = None
    screened: str | None = Field(default=None, description="Why screening quarantined it: link, contact, promotion, "
                                                           "code or instruction (None: it passed).")

    @property
    def n_logs(self) -> int:
        """Distinct logs that asked for this rule."""
        return len({m.log_id for m in self.members})

    @property
    def n_users(self) -> int:
        """Distinct users that asked for this rule."""
        return len({m.user for m in self.members})

    @property
    def in_prompt(self) -> bool:
        """Whether the entry goes into its cluster's guide."""
        return self.status in ("kept", "approved")

    def lends(self, member: RuleMember) -> bool:
        """Whether ``member``'s own rule may stand for this entry in a guide: it is servable and the entry was kept
        (not approved: a person approved the entry's text)."""
        return member.servable and self.status == "kept"

    def wording(self, member: RuleMember) -> str:
        """How ``member``'s log words this entry in a guide: its own rule where it :meth:`lends` it, else the
        entry's text."""
        return member.rule if self.lends(member) else self.text


class Clustering(Record):
    """One version of the clustering: the modules, validations and plans made for it carry its id."""

    id: int
    embedder: str
    threshold: float | None = None
    unseen_distance: float | None = Field(default=None, description="Cosine distance beyond which a query is unseen.")
    fingerprint: str | None = Field(default=None, description="Key of the inputs and settings it was made from.")
    created_at: str
    mode: str = Field(default="full", description="'full': built from all logs; 'incremental': new logs added to "
                                                  "the previous version, its cluster ids kept.")
    added: int = Field(default=0, description="Logs added incrementally since the last full clustering.")
    unfit: int = Field(default=0, description="Of those, the logs that fitted no existing cluster (they formed new "
                                              "ones).")
    settings: str | None = Field(default=None, description="The cluster settings that decide the cut (JSON); other "
                                                           "ones make the next run rebuild instead of adding to it.")

    @property
    def drift(self) -> float:
        """Share of the logs added since the last full clustering that fitted no existing cluster: the
        clusters formed among them never met the older logs, so a rebuild (``--recluster``) would cut
        differently. 0.0 right after a full clustering."""
        return self.unfit / self.added if self.added else 0.0


class Plan(Record):
    """The path one system takes for one cluster (what ``select`` stores and every serving path reads)."""

    cluster: int
    system: str
    path: str = Field(description="primary, reflective, guide or base.")
    module_id: str | None = None
    epoch: int | None = None
    win_rate: float | None = None
    reason: str = ""


class ValidationItem(Record):
    """One judged validation item of one module epoch: its answer against the fresh base answer."""

    module_id: str
    epoch: int
    log_id: str
    score_initial: float = Field(description="The judge's mean score of the base answer.")
    score_module: float = Field(description="The judge's mean score of the module's answer.")
    bleu: float = Field(description="The answer's BLEU to the base answer and the query (drift guard).")
    length_ratio: float = Field(description="The answer's length over the base answer's (collapse guard).")
    outcome: float = Field(description="1 win, 0.5 tie, 0 loss.")
    same_as_base: bool
