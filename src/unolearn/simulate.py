"""Simulated users with hidden, code-checkable preferences, writing MemoryBench-format logs.

The real MemoryBench dialogs are out of reach, so a simulator plays the user: a model answers each
prompt, the simulated user checks the answer against hidden constraints (:mod:`unolearn.constraints`)
and complains about what it violates, and the benchmark later measures whether a system learnt those
preferences from the logs alone. Everything random comes from one ``random.Random`` per record,
seeded by ``"{seed}:{dataset_name}:{test_idx}"``: a run is reproducible for a seed, and a record's
dialog does not depend on which other records share its batch.

Preference-file contract (YAML, or JSON of the same shape; every key but the constraints optional)::

    noise:                           # probabilities in [0, 1], default 0
      off_topic: 0.1                 # after the dialog, the user asks a new, unrelated question
      thanks: 0.1                    # the first answer violates, yet the user only says thanks
      unrelated_complaint: 0.05      # the first feedback also asks for something no check measures
      implicit_only: 0.1             # no text at all: dislike if violated, else like or copy
    datasets:
      NFCats:                        # a key without `match` is a dataset_name
        constraints:
          - id: concise              # unique within its key
            check: {max_words: 80}   # exactly one check (see unolearn.constraints.CHECKS)
            feedback: ["Way too long, keep it short.", "太长了，请简洁一些。"]
      definitions:                   # a key with `match` applies to queries its regex finds
        match: "(?i)^(define|definition of)"
        dataset: NFCats              # optional: only records of this dataset_name
        constraints: [...]

Resolution (:func:`constraints_for`): the first ``match`` key in file order whose regex finds the
query (and whose ``dataset``, if set, equals the record's dataset_name) wins; otherwise the key equal
to the dataset_name; otherwise the record has no constraints and passes through with its first answer
and no feedback. Complaints are picked from ``feedback`` in the prompt's language (by
:func:`unolearn.records.detect_lang`), or from all of them when none is in that language.

A dialog: query, first answer; while constraints are violated, one user message per round combining a
complaint for every violated constraint, then a revised answer (at most ``rounds`` rounds, one model
batch per round); then a closing reaction: dislike when still violated, else like, copy, a thanks
message or nothing (:data:`SATISFIED_REACTIONS`); an off-topic question, if drawn, closes the dialog
and is answered. Output records keep every input field and set ``dialog``, ``implicit_feedback``
(``{"type", "turn"}``, turn = index of the assistant answer acted on, 0 = first answer) and
``info.simulated`` (key, constraint ids, violated ids of the first and last answer, rounds, applied
noise kinds, closing reaction, error).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .backends.base import ChatModel, ChatRequest
from .config import opt
from .constraints import compliance, parse_check, run_check
from .errors import ConfigError, InputError
from .prefgen import is_random, parse_seed, random_preferences
from .profiles import note
from .readers import iter_raw
from .records import detect_lang

NOISE_KINDS = ("off_topic", "thanks", "unrelated_complaint", "implicit_only")
DEFAULT_PREFERENCES = "data/preferences.yaml"

#: How a satisfied user closes a dialog: (reaction, probability); the rest of the mass is "none".
SATISFIED_REACTIONS = (("like", 0.35), ("copy", 0.25), ("thanks", 0.2))

THANKS = {"en": ("Thanks!", "Great, thank you.", "OK, thanks.", "Cheers, that helps."),
          "zh": ("谢谢！", "好的，谢谢。", "明白了，多谢。", "收到，谢谢你。")}
UNRELATED_COMPLAINTS = {
    "en": ("Can you use a friendlier tone?", "Could you sound a bit less formal?",
           "Please don't sound so robotic.", "Can you make it more engaging?"),
    "zh": ("语气能不能友好一点？", "能不能别那么死板？", "说话能亲切一些吗？", "能写得更生动一点吗？")}
OFF_TOPIC = {
    "en": ("By the way, what's a good recipe for banana bread?", "Unrelated, but how do I reset my router?",
           "Also, which time zone is Tokyo in?", "Quick question: how many cups are in a litre?",
           "What's a good name for a goldfish?", "Can you recommend a science-fiction novel?"),
    "zh": ("顺便问一下，香蕉面包怎么做？", "另外，路由器怎么重置？", "东京是哪个时区？",
           "一升等于多少杯？", "给金鱼起个什么名字好？", "能推荐一本科幻小说吗？")}


# -- the preference file -------------------------------------------------------------------------


@dataclass
class SimulateConfig:
    """The cost settings of a simulation (the ``simulate`` section; the cpu profile lowers them)."""

    max_tokens: int = opt(1024, "Token budget of every answer of the simulated dialogs "
                                f"({note('simulate', 'max_tokens')}).")
    rounds: int = opt(3, f"Feedback rounds at most per dialog ({note('simulate', 'rounds')}).")
    logs_per_user: int = opt(3, "Dialogs per simulated user: each user id takes this many consecutive prompts "
                                "of one dataset, so a rule asked by several users stands out from one user's.")

    def __post_init__(self) -> None:
        if self.max_tokens < 1 or not 0 <= self.rounds <= 10 or self.logs_per_user < 1:
            raise ConfigError("simulate: max_tokens and logs_per_user must be ≥ 1 and rounds in 0..10")


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Noise(_Model):
    """Probabilities of the noise kinds (see the module docstring)."""

    off_topic: float = Field(default=0.0, ge=0.0, le=1.0)
    thanks: float = Field(default=0.0, ge=0.0, le=1.0)
    unrelated_complaint: float = Field(default=0.0, ge=0.0, le=1.0)
    implicit_only: float = Field(default=0.0, ge=0.0, le=1.0)


class Constraint(_Model):
    """One hidden preference: a check on the answer and the complaints a user makes when it fails."""

    id: str = Field(min_length=1)
    check: dict[str, Any]
    feedback: tuple[str, ...] = Field(min_length=1)

    @field_validator("check")
    @classmethod
    def _valid_check(cls, v: dict[str, Any]) -> dict[str, Any]:
        name, param = parse_check(v)
        return {name: param}

    @field_validator("feedback")
    @classmethod
    def _non_empty(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if any(not f.strip() for f in v):
            raise ValueError("feedback messages must not be empty")
        return v

    def satisfied(self, answer: str) -> bool:
        """True when ``answer`` passes this constraint's check."""
        (name, param), = self.check.items()
        return run_check(name, param, answer)

    def complaints(self, lang: str) -> tuple[str, ...]:
        """The feedback messages in ``lang``, or all of them when none is in that language."""
        return tuple(f for f in self.feedback if detect_lang(f) == lang) or self.feedback


class DatasetPrefs(_Model):
    """The constraints of one dataset_name key, or of a ``match`` (regex on the query) key."""

    match: str | None = None
    dataset: str | None = None
    constraints: tuple[Constraint, ...] = ()

    @field_validator("match")
    @classmethod
    def _valid_regex(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                re.compile(v)
            except re.error as e:
                raise ValueError(f"invalid regex {v!r}: {e}") from e
        return v

    @model_validator(mode="after")
    def _consistent(self) -> DatasetPrefs:
        if self.dataset is not None and self.match is None:
            raise ValueError("'dataset' is only allowed together with 'match'")
        ids = [c.id for c in self.constraints]
        dup = next((i for i in ids if ids.count(i) > 1), None)
        if dup:
            raise ValueError(f"duplicate constraint id {dup!r}")
        return self

    def applies(self, query: str, dataset_name: str | None) -> bool:
        """For a ``match`` key: does it apply to this query (and dataset)?"""
        if self.match is None or (self.dataset is not None and self.dataset != dataset_name):
            return False
        return re.search(self.match, query) is not None


class Preferences(_Model):
    """A whole preference file: noise probabilities and constraints per key."""

    noise: Noise = Noise()
    datasets: dict[str, DatasetPrefs] = Field(default_factory=dict)

    def resolve(self, query: str, dataset_name: str | None) -> str | None:
        """The key whose constraints apply: first matching ``match`` key, else the dataset_name key."""
        for key, prefs in self.datasets.items():
            if prefs.applies(query, dataset_name):
                return key
        plain = self.datasets.get(dataset_name or "")
        return dataset_name if plain is not None and plain.match is None else None


def parse_preferences(data: Any, source: str = "<preferences>") -> Preferences:
    """Validate a decoded preference file; any problem is one :class:`ConfigError` line naming ``source``."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: expected a mapping with 'noise' and 'datasets'")
    try:
        return Preferences.model_validate(data)
    except ValidationError as e:
        raise _config_error(e, data, source) from e


def _config_error(e: ValidationError, data: Mapping, source: str) -> ConfigError:
    """The first validation error as ``FILE: path (constraint 'id'): message``."""
    err = e.errors()[0]
    loc = err["loc"]
    path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".")
    cid = _constraint_id(data, loc)
    where = f"{source}: {path}" + (f" (constraint {cid!r})" if cid else "")
    msg = err["msg"].removeprefix("Value error, ")
    return ConfigError(" ".join(f"{where}: {msg}".split()))


def _constraint_id(data: Mapping, loc: tuple) -> str | None:
    """The ``id`` of the constraint a validation error points into, if any."""
    if len(loc) < 4 or loc[0] != "datasets" or loc[2] != "constraints":
        return None
    try:
        cid = data["datasets"][loc[1]]["constraints"][loc[3]].get("id")
    except (KeyError, IndexError, TypeError, AttributeError):
        return None
    return str(cid) if cid is not None else None


def load_preferences(path: str | Path | None = None) -> Preferences:
    """Read and validate a preference file (YAML, or JSON for ``.json``); ``None``: the packaged default;
    ``random:SEED``: one drawn at random (:mod:`unolearn.prefgen`)."""
    if is_random(path):
        return parse_preferences(random_preferences(parse_seed(str(path))), str(path))
    if path is None:
        source = f"unolearn/{DEFAULT_PREFERENCES}"
        text = resources.files("unolearn").joinpath(DEFAULT_PREFERENCES).read_text(encoding="utf-8")
    else:
        source = str(path)
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(f"{source}: cannot read preferences: {e}") from e
    try:
        data = json.loads(text) if str(source).endswith(".json") else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as e:
        raise ConfigError(f"{source}: " + " ".join(f"not valid YAML/JSON: {e}".split())) from e
    return parse_preferences(data, source)


# -- resolving a record ---------------------------------------------------------------------------


def record_query(record: Mapping[str, Any]) -> str:
    """The user query of a MemoryBench prompt record (``input_prompt``, else the last user message)."""
    if isinstance(record.get("input_prompt"), str):
        return record["input_prompt"]
    msgs = record.get("input_chat_messages")
    msgs = json.loads(msgs) if isinstance(msgs, str) else msgs
    users = [m.get("content") for m in msgs or [] if isinstance(m, dict) and m.get("role") == "user"]
    if not users or not isinstance(users[-1], str):
        raise InputError("record has no input_prompt and no user message", field="input_prompt")
    return users[-1]


def constraints_for(prefs: Preferences, record_or_query: Mapping[str, Any] | str,
                    dataset_name: str | None = None) -> tuple[Constraint, ...]:
    """The constraints that apply to a record (or a query in ``dataset_name``); ``()`` when none."""
    if isinstance(record_or_query, str):
        query = record_or_query
    else:
        query = record_query(record_or_query)
        dataset_name = dataset_name or record_or_query.get("dataset_name")
    key = prefs.resolve(query, dataset_name)
    return prefs.datasets[key].constraints if key is not None else ()


# -- the simulated user ---------------------------------------------------------------------------


@dataclass
class _Session:
    """One record's dialog in progress."""

    record: Mapping[str, Any]
    key: str | None
    constraints: tuple[Constraint, ...]
    lang: str
    rng: random.Random
    drawn: frozenset[str]
    dialog: list[dict[str, str]]
    actions: list[dict[str, Any]] = field(default_factory=list)
    noise: list[str] = field(default_factory=list)
    violated_first: list[str] | None = None
    violated_last: list[str] | None = None
    rounds: int = 0
    reaction: str | None = None
    closing: list[str] = field(default_factory=list)
    user_id: str | None = None
    error: str | None = None
    waiting: bool = False  # the last turn is a user turn that wants an answer

    @property
    def answers(self) -> int:
        return sum(m["role"] == "assistant" for m in self.dialog)

    def user(self, text: str, answer: bool = True) -> None:
        self.dialog.append({"role": "user", "content": text})
        self.waiting = answer

    def act(self, kind: str) -> None:
        self.actions.append({"type": kind, "turn": self.answers - 1})
        self.reaction = kind


def _record_rng(record: Mapping[str, Any], query: str, seed: int) -> random.Random:
    ident = record.get("test_idx", record.get("id"))
    if ident is None:
        ident = hashlib.sha256(query.encode("utf-8")).hexdigest()[:16]
    return random.Random(f"{seed}:{record.get('dataset_name', '')}:{ident}")


def _start(record: Mapping[str, Any], prefs: Preferences, seed: int) -> _Session:
    query = record_query(record)
    key = prefs.resolve(query, record.get("dataset_name"))
    rng = _record_rng(record, query, seed)
    drawn = frozenset(k for k in NOISE_KINDS if rng.random() < getattr(prefs.noise, k))
    return _Session(record=record, key=key, constraints=prefs.datasets[key].constraints if key else (),
                    lang=detect_lang(query), rng=rng, drawn=drawn,
                    dialog=[{"role": "user", "content": query}])


def _react(s: _Session, max_rounds: int) -> None:
    """The user's turn after an on-topic answer: complain, or close the dialog."""
    answer = s.dialog[-1]["content"]
    violated = [c for c in s.constraints if not c.satisfied(answer)]
    s.violated_last = [c.id for c in violated]
    first = s.violated_first is None
    if first:
        s.violated_first = s.violated_last
    if not s.constraints:
        return
    if first and "implicit_only" in s.drawn:
        s.noise.append("implicit_only")
        return s.act("dislike" if violated else s.rng.choice(("like", "copy")))
    if first and violated and "thanks" in s.drawn:
        s.noise.append("thanks")
        s.reaction = "thanks"
        s.closing.append(s.rng.choice(THANKS[s.lang]))
        return
    complaints = [s.rng.choice(c.complaints(s.lang)) for c in violated]
    if first and "unrelated_complaint" in s.drawn:
        s.noise.append("unrelated_complaint")
        complaints.insert(s.rng.randint(0, len(complaints)), s.rng.choice(UNRELATED_COMPLAINTS[s.lang]))
    if complaints and s.rounds < max_rounds:
        s.rounds += 1
        return s.user(("" if s.lang == "zh" else " ").join(complaints))
    _close_reaction(s, bool(violated))


def _close_reaction(s: _Session, violated: bool) -> None:
    """Dislike an answer that still violates; otherwise like, copy, thank or do nothing."""
    if violated:
        return s.act("dislike")
    r, acc = s.rng.random(), 0.0
    for kind, p in SATISFIED_REACTIONS:
        acc += p
        if r < acc:
            if kind == "thanks":
                s.reaction = "thanks"
                s.closing.append(s.rng.choice(THANKS[s.lang]))
                return
            return s.act(kind)


def _close(s: _Session) -> None:
    """Write the closing user turn: a thanks message and/or an off-topic question to be answered."""
    if s.error or not s.constraints:
        return
    off_topic = "off_topic" in s.drawn and "implicit_only" not in s.noise
    if off_topic:
        s.noise.append("off_topic")
        s.closing.append(s.rng.choice(OFF_TOPIC[s.lang]))
    if s.closing:
        s.user(("" if s.lang == "zh" else " ").join(s.closing), answer=off_topic)


async def _answer_waiting(model: ChatModel, sessions: Sequence[_Session], seed: int, max_tokens: int,
                          desc: str, progress: bool | None) -> list[_Session]:
    """Answer every session that waits for an answer, in one batch; return those answered."""
    waiting = [s for s in sessions if s.waiting and not s.error]
    requests = [ChatRequest.of(s.dialog, temperature=0.0, seed=seed, max_tokens=max_tokens) for s in waiting]
    results = await model.generate(requests, desc=desc, progress=progress) if requests else []
    for s, res in zip(waiting, results):
        s.waiting = False
        if res.ok:
            s.dialog.append({"role": "assistant", "content": res.text})
        else:
            s.error = str(res.error)
    return [s for s in waiting if not s.error]


def react(record: Mapping[str, Any], answer: str, prefs: Preferences, seed: int) -> tuple[str | None, str | None]:
    """A simulated user's one reaction to ``answer`` of ``record``'s query, as sent to ``POST /v1/feedback``:
    ``(text, action)``, either or both None. The same user (the same draws of noise) as :func:`simulate`
    gives the record: a complaint per violated constraint, or thanks, like, copy or dislike."""
    s = _start(record, prefs, seed)
    s.dialog.append({"role": "assistant", "content": answer})
    _react(s, max_rounds=1)
    if s.waiting:
        return s.dialog[-1]["content"], None
    text = ("" if s.lang == "zh" else " ").join(s.closing) or None
    return text, s.actions[-1]["type"] if s.actions else None


def _output(s: _Session, seed: int) -> dict[str, Any]:
    """The MemoryBench record: input fields, ``dialog``, ``implicit_feedback`` and ``info.simulated``."""
    info = s.record.get("info")
    info = json.loads(info) if isinstance(info, str) and info.strip() else (info or {})
    simulated = {"seed": seed, "key": s.key, "lang": s.lang, "constraints": [c.id for c in s.constraints],
                 "violated": s.violated_first, "violated_final": s.violated_last, "rounds": s.rounds,
                 "noise": [k for k in NOISE_KINDS if k in s.noise], "reaction": s.reaction, "error": s.error}
    return {**s.record, "dialog": s.dialog, "implicit_feedback": s.actions, "user": s.user_id,
            "info": {**info, "simulated": simulated}}


def assign_users(sessions: Sequence[_Session], per_user: int) -> None:
    """Give the sessions user ids: ``per_user`` consecutive records of one dataset share one user."""
    seen: dict[str, int] = {}
    for s in sessions:
        dataset = str(s.record.get("dataset_name") or s.key or "prompts")
        k = seen.get(dataset, 0)
        seen[dataset] = k + 1
        s.user_id = f"sim-{dataset}-{k // per_user + 1}"


async def simulate_async(prompts: Sequence[Mapping[str, Any]], prefs: Preferences, model: ChatModel,
                         seed: int, rounds: int = 3, *, max_tokens: int = 1024, logs_per_user: int = 3,
                         progress: bool | None = None) -> list[dict[str, Any]]:
    """Simulate one dialog per prompt record; returns MemoryBench records in input order, each with the
    ``user`` id of its simulated user (see :func:`assign_users`).

    One ``model.generate`` batch for the first answers, one per feedback round, one for off-topic
    follow-ups. A failed answer ends that record's dialog and is reported in ``info.simulated.error``.
    """
    if rounds < 0:
        raise ConfigError(f"rounds must be ≥ 0, got {rounds}")
    sessions = [_start(r, prefs, seed) for r in prompts]
    assign_users(sessions, logs_per_user)
    for s in sessions:
        s.waiting = True
    answered = await _answer_waiting(model, sessions, seed, max_tokens, "first answers", progress)
    for r in range(rounds + 1):
        for s in answered:
            _react(s, rounds)
        answered = await _answer_waiting(model, sessions, seed, max_tokens, f"round {r + 1}", progress)
        if not answered:
            break
    for s in sessions:
        _close(s)
    await _answer_waiting(model, sessions, seed, max_tokens, "off-topic", progress)
    return [_output(s, seed) for s in sessions]


def simulate(prompts: Sequence[Mapping[str, Any]], prefs: Preferences | str | Path | None, model: ChatModel,
             seed: int, rounds: int = 3, *, max_tokens: int = 1024, logs_per_user: int = 3,
             progress: bool | None = None) -> list[dict[str, Any]]:
    """Synchronous :func:`simulate_async` in one event loop; ``prefs`` may be a path (None: the default)."""
    if not isinstance(prefs, Preferences):
        prefs = load_preferences(prefs)
    return asyncio.run(simulate_async(prompts, prefs, model, seed, rounds, max_tokens=max_tokens,
                                      logs_per_user=logs_per_user, progress=progress))


def summarize(records: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Counts over simulated records (for the CLI's report): records, with feedback, noise kinds, errors."""
    sims = [r["info"]["simulated"] for r in records]
    noise = Counter(k for s in sims for k in s["noise"])
    return {"records": len(sims), "with_constraints": sum(bool(s["constraints"]) for s in sims),
            "violated_first": sum(bool(s["violated"]) for s in sims),
            "satisfied_final": sum(bool(s["constraints"]) and s["violated_final"] == [] for s in sims),
            "feedback_rounds": sum(s["rounds"] for s in sims), "noise": dict(sorted(noise.items())),
            "errors": sum(s["error"] is not None for s in sims)}


__all__ = ["Constraint", "DatasetPrefs", "Noise", "Preferences", "compliance", "constraints_for",
           "load_preferences", "parse_preferences", "record_query", "simulate", "simulate_async", "summarize"]


def _has_query(record: Mapping[str, Any]) -> bool:
    try:
        return bool(record_query(record))
    except InputError:
        return False


def load_prompt_records(paths: Sequence[Path], limit: int | None = None) -> list[dict[str, Any]]:
    """MemoryBench-format prompt records from JSONL files or JSON arrays (the first ``limit`` of each)."""
    out = []
    for path in paths:
        with path.open("rb") as fh:
            for kept, raw in enumerate(iter_raw(fh)):
                if limit is not None and kept >= limit:
                    break
                if raw.error:
                    raise InputError(raw.error, file=str(path), line=raw.line)
                if not isinstance(raw.value, dict) or not _has_query(raw.value):
                    raise InputError("expected a MemoryBench record with input_prompt", file=str(path),
                                     line=raw.line)
                out.append(raw.value)
    return out
