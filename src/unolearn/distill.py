"""The distil stage: logs → rules (with and without feedback) and preference pairs.

For every log the generator writes the rules it would infer from the query alone (the model's
*prior*); for every log whose user reacted in words, the rules that the feedback implies for the
original query. Feedback that is not about the original query (small talk, a new question, bare
thanks) yields an empty list: the first noise filter. For every log with usable feedback (or a
wordless thumbs-down / regenerate), N candidates of each of two kinds are sampled (a revision of the
first answer under the rules, and a fresh answer written from the feedback alone), the judge scores
each against the rules, and the best becomes ``chosen`` with the first answer as ``rejected``; an
``edit`` action gives a pair directly. Rules and pairs are stored per chunk of logs in one transaction, and
every model call is cached, so an interrupted run resumes without repeating finished calls.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from tqdm import tqdm

from .backends import ChatModel, ChatRequest, Models, run_with_models
from .config import opt
from .distill_examples import feedback_turns, gate_turns, prior_turns
from .errors import BackendError, ConfigError, SchemaError
from .executor import ExecutorConfig, run_jobs
from .judge import JUDGES, resolve_judge, score_items
from .profiles import note
from .records import Log, content_hash
from .rulefilter import feedback_rules, filter_rules
from .store import Workspace, now
from .text import guard_failure, numbered, replacement_measures

RULES_SCHEMA: dict[str, Any] = {
    "type": "object",
    # A length cap per rule keeps small models from writing a whole answer into one rule (measured:
    # it turned the embedded model's invalid JSON into valid JSON, docs/embedded-model.md).
    "properties": {"rules": {"type": "array", "items": {"type": "string", "maxLength": 200}}},
    "required": ["rules"],
}


def rules_schema(most: int) -> dict[str, Any]:
    """:data:`RULES_SCHEMA` with at most ``most`` rules. A model that decodes under the schema closes the list
    there instead of repeating a rule until the token budget cuts its JSON (the embedded model did, greedily);
    an answer within the cap decodes token for token as before."""
    rules = {**RULES_SCHEMA["properties"]["rules"], "maxItems": most}
    return {**RULES_SCHEMA, "properties": {"rules": rules}}


PROMPTS = {
    "en": {
        "prior": (
            "You study requests that users send to an AI assistant. You see only the request. "
            "Write at most {n} rules that an answer should follow to serve this user well: first what "
            "the user asks for explicitly, then needs you can reasonably infer from the request. "
            "Each rule is one specific, actionable instruction phrased positively (what to do, not what "
            "to avoid). Avoid generic advice that would fit any request. "
            'Reply with JSON only: {{"rules": ["...", "..."]}}'),
        "feedback": (
            "You study conversations between a user and an AI assistant. You see the user's original "
            "request, the assistant's first answer, and what the user said afterwards. Write the rules "
            "that the user's later messages imply for answering the ORIGINAL request better. Only "
            "reactions to that answer count: ignore small talk, new or unrelated questions, and thanks "
            "or approval that asks for no change. If nothing remains, return an empty list. Each rule "
            "is one specific, actionable instruction phrased positively (what to do). "
            'Reply with JSON only: {"rules": ["...", "..."]}'),
        "feedback_input": ("## Original request\n{query}\n\n## First answer\n{answer}\n\n"
                           "## What the user said afterwards\n{feedback}"),
        "prior_input": "## Request\n{query}",
        "revise": (
            "## Request\n{query}\n\n## Earlier answer\n{answer}\n\n## What the user said about it\n"
            "{feedback}\n\n## Rules to follow\n{rules}\n\n"
            "Rewrite the earlier answer so that it follows every rule while still answering the request "
            "correctly. Output only the complete new answer, without repeating the request."),
        "fresh": (
            "## Request\n{query}\n\n## What the user said about an earlier answer to it\n{feedback}\n\n"
            "Write a new answer to the request that gives this user what they asked for. "
            "Output only the answer."),
        "no_words": "(no words: the user {action} the answer)",
        "gate": ("You read what a user wrote after an assistant's answer. Say whether the user asks for the "
                 "answer to be different: a complaint, a correction, or a wish about its content or form. "
                 "Thanks, praise, small talk and new questions do not count. Answer yes or no."),
    },
    "zh": {
        "prior": (
            "你负责分析用户发给 AI 助手的请求。你只能看到请求本身。请写出最多 {n} 条规则，说明一个好的回答"
            "应当怎样满足这位用户：先写用户明确提出的要求，再写可以从请求中合理推断出的需求。每条规则都是"
            "一条具体、可执行的正面指令（说明要做什么，而不是不要做什么），不要写适用于任何请求的泛泛建议。"
            '只输出 JSON：{{"rules": ["...", "..."]}}'),
        "feedback": (
            "你负责分析用户与 AI 助手之间的对话。你能看到用户最初的请求、助手的第一次回答，以及用户之后说的话。"
            "请写出：根据用户之后的话，要更好地回答【最初的请求】应当遵循哪些规则。只有针对该回答的反应才算数："
            "忽略闲聊、新的或无关的问题，以及不要求任何修改的感谢或认可。如果没有剩下的内容，返回空列表。"
            "每条规则都是一条具体、可执行的正面指令（说明要做什么）。"
            '只输出 JSON：{"rules": ["...", "..."]}'),
        "feedback_input": "## 最初的请求\n{query}\n\n## 第一次回答\n{answer}\n\n## 用户之后说的话\n{feedback}",
        "prior_input": "## 请求\n{query}",
        "revise": (
            "## 请求\n{query}\n\n## 之前的回答\n{answer}\n\n## 用户对它的反馈\n{feedback}\n\n"
            "## 需要遵循的规则\n{rules}\n\n"
            "请改写之前的回答，使其遵循每一条规则，同时仍然正确地回答请求。只输出完整的新回答，不要重复请求。"),
        "fresh": (
            "## 请求\n{query}\n\n## 用户对之前某个回答的反馈\n{feedback}\n\n"
            "请重新回答这个请求，给出这位用户想要的回答。只输出回答。"),
        "no_words": "（没有文字：用户{action}了这个回答）",
        "gate": ("你要判断用户在助手回答之后说的话，是否要求这个回答有所不同：抱怨、纠正，或对回答内容、形式的要求。"
                 "感谢、称赞、闲聊和新的问题都不算。请回答 yes 或 no。"),
    },
}
_ACTION_WORDS = {"en": {"dislike": "gave a thumbs-down to", "regenerate": "asked to regenerate"},
                 "zh": {"dislike": "点踩", "regenerate": "要求重新生成"}}


@dataclass
class DistillConfig:
    """Parameters of the distil stage."""

    n_revisions: int = opt(3, "Candidates of each kind per log (a revision of the first answer, a fresh "
                              "answer from the feedback); the judge's best becomes `chosen` "
                              f"({note('distill', 'n_revisions')}).")
    temperature: float = opt(1.0, "Sampling temperature of the revisions.")
    top_p: float = opt(0.9, "Nucleus sampling of the revisions.")
    seed: int = opt(42, "Seed of the first revision; revision i uses seed + i.")
    max_prior_rules: int = opt(5, "At most this many rules from the query alone (the answer's schema caps its list).")
    rules_max_tokens: int = opt(384, f"Token budget of a rules answer ({note('distill', 'rules_max_tokens')}).")
    answer_max_tokens: int = opt(1024, "Token budget of a revised answer "
                                       f"({note('distill', 'answer_max_tokens')}); a candidate that it cuts "
                                       "is never chosen (an unfinished answer, often a loop).")
    judge_max_tokens: int = opt(256, f"Token budget of a judge answer ({note('distill', 'judge_max_tokens')}).")
    judge: str = opt("auto", "How the candidates are compared to pick `chosen`: `llm` (the judge's 1-10 score "
                             "against the log's feedback rules), `likelihood` (how much likelier a candidate becomes "
                             "when the rules are stated), `auto` (likelihood where the judge model can score replies, "
                             "i.e. the embedded model; llm with a server). See unolearn/judge.py.")
    examples: bool = opt(True, "Put worked examples (distill_examples.py) before the rule and gate prompts.")
    gate: bool = opt(False, "Before writing feedback rules, ask the generator whether the user's reaction asks "
                            "for a change (yes/no from log-probabilities; skipped for backends without them). "
                            "Off by default: the embedded 0.5B model's answer does not tell the two apart "
                            "(docs/embedded-model.md); try it with a large judge behind a server.")
    gate_threshold: float = opt(0.5, "Feedback whose P(asks for a change) is below this gives no rules.")
    min_length_ratio: float = opt(0.1, "A candidate shorter than this share of the first answer collapsed and is "
                                       "never chosen (select's guard of the same name, applied to the pairs).")
    bleu_min: float = opt(0.05, "A candidate whose drift (BLEU of its content words against the first answer and "
                                "the query; see select's `bleu_min`) is ≤ this left the subject and is never chosen.")
    chunk_size: int = opt(64, "Logs processed (and committed) together.")

    def __post_init__(self) -> None:
        if self.n_revisions < 1 or self.max_prior_rules < 1 or self.chunk_size < 1:
            raise ConfigError("n_revisions, max_prior_rules and chunk_size must be ≥ 1")
        if not (0.0 <= self.temperature <= 2.0 and 0.0 < self.top_p <= 1.0):
            raise ConfigError("temperature must be in [0, 2] and top_p in (0, 1]")
        if not 0.0 <= self.gate_threshold <= 1.0:
            raise ConfigError("gate_threshold must be in [0, 1]")
        if not (0 <= self.bleu_min < 1 and 0 <= self.min_length_ratio < 1):
            raise ConfigError("bleu_min and min_length_ratio must be in [0, 1)")
        if self.judge not in JUDGES:
            raise ConfigError(f"judge must be one of {', '.join(JUDGES)}, got {self.judge!r}")


@dataclass
class DistillResult:
    """What a distil run did."""

    logs: int = 0
    prior_rules: int = 0
    feedback_rules: int = 0
    usable_feedback: int = 0
    filtered_as_noise: int = 0
    gated_as_noise: int = 0  # of filtered_as_noise: feedback the gate found asks for no change
    rules_rejected: Counter = field(default_factory=Counter)  # by rulefilter.reject_reason
    echoed: int = 0  # feedback whose rules are the user's own sentences (the model's were rejected or unreadable)
    recalled: int = 0  # feedback whose rules gained the user's sentences naming a phrase or number they dropped
    pairs: Counter = field(default_factory=Counter)
    guarded: Counter = field(default_factory=Counter)  # never-chosen candidates by reason (guard_failure, unfinished)
    unpaired: int = 0  # logs with revisions, none of which passed the guards: no pair
    failed: int = 0
    first_error: str | None = None
    usage: dict[str, Any] = field(default_factory=dict)

    def fail(self, error: Exception | None) -> None:
        """Count one failed model request, keeping the first error's message."""
        self.failed += 1
        self.first_error = self.first_error or str(error)

    def merge(self, other: DistillResult) -> None:
        """Add the counts of a run over other logs (a job of its own)."""
        for f in fields(self):
            mine, theirs = getattr(self, f.name), getattr(other, f.name)
            if isinstance(mine, int | Counter):
                setattr(self, f.name, mine + theirs)
        self.first_error = self.first_error or other.first_error
        for role, counts in other.usage.items():
            self.usage[role] = {k: self.usage.get(role, {}).get(k, 0) + v for k, v in counts.items()}

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready summary."""
        d = asdict(self)
        d["pairs"], d["rules_rejected"], d["guarded"] = dict(self.pairs), dict(self.rules_rejected), dict(self.guarded)
        return d


def wordless_rejection(log: Log) -> str | None:
    """The action (dislike/regenerate) that rejected the first answer without words, if any."""
    if log.feedback or log.first_answer is None:
        return None
    kinds = [a.kind for a in log.actions if a.turn in (None, 0)]
    return next((k for k in ("dislike", "regenerate") if k in kinds), None)


def feedback_text(log: Log) -> str:
    """The user's reaction to the first answer as text: their words, else their wordless action."""
    if log.feedback:
        return numbered(log.feedback)
    action = wordless_rejection(log)
    if action is None:
        return ""
    return PROMPTS[log.lang]["no_words"].format(action=_ACTION_WORDS[log.lang][action])


def prior_request(log: Log, cfg: DistillConfig) -> ChatRequest:
    """The request for the rules the model infers from the query alone (after a worked example)."""
    p = PROMPTS[log.lang]
    return ChatRequest.of([{"role": "system", "content": p["prior"].format(n=cfg.max_prior_rules)},
                           *(prior_turns(log.lang, p["prior_input"]) if cfg.examples else []),
                           {"role": "user", "content": p["prior_input"].format(query=log.query)}],
                          schema=rules_schema(cfg.max_prior_rules), max_tokens=cfg.rules_max_tokens, seed=cfg.seed,
                          owners=(log.id,))


def _feedback_input(log: Log) -> str:
    return PROMPTS[log.lang]["feedback_input"].format(query=log.query, answer=log.first_answer,
                                                      feedback=feedback_text(log))


def feedback_request(log: Log, cfg: DistillConfig) -> ChatRequest:
    """The request for the rules that the user's feedback implies (after worked examples)."""
    p = PROMPTS[log.lang]
    return ChatRequest.of([{"role": "system", "content": p["feedback"]},
                           *(feedback_turns(log.lang, p["feedback_input"]) if cfg.examples else []),
                           {"role": "user", "content": _feedback_input(log)}],
                          schema=RULES_SCHEMA, max_tokens=cfg.rules_max_tokens, seed=cfg.seed, owners=(log.id,))


def gate_request(log: Log, cfg: DistillConfig) -> ChatRequest:
    """Does the user's reaction ask for a change? One token, with its log-probabilities (after examples)."""
    p = PROMPTS[log.lang]
    return ChatRequest.of([{"role": "system", "content": p["gate"]},
                           *(gate_turns(log.lang, p["feedback_input"]) if cfg.examples else []),
                           {"role": "user", "content": _feedback_input(log)}], max_tokens=1, logprobs=20,
                          owners=(log.id,))


REVISION_KINDS = ("revise", "fresh")


def revision_requests(log: Log, rules: Sequence[str], cfg: DistillConfig) -> list[ChatRequest]:
    """The candidates for ``chosen``, ``n_revisions`` sampled of each kind (as in the reference):
    ``revise`` rewrites the first answer under ``rules`` and the feedback; ``fresh`` answers the query
    anew from the user's feedback alone, without the first answer to anchor on."""
    p = PROMPTS[log.lang]
    prompts = {"revise": p["revise"].format(query=log.query, answer=log.first_answer,
                                            feedback=feedback_text(log), rules=numbered(rules)),
               "fresh": p["fresh"].format(query=log.query, feedback=feedback_text(log))}
    return [ChatRequest.of(prompts[kind], temperature=cfg.temperature, top_p=cfg.top_p, seed=cfg.seed + i,
                           max_tokens=cfg.answer_max_tokens, owners=(log.id,))
            for kind in REVISION_KINDS for i in range(cfg.n_revisions)]


def clean_rules(parsed: Any, limit: int | None = None) -> list[str]:
    """The non-empty, de-duplicated rule strings of a parsed rules answer."""
    out: list[str] = []
    for r in (parsed or {}).get("rules", []):
        r = " ".join(str(r).split())
        if r and r not in out:
            out.append(r)
    return out[:limit] if limit else out


def feedback_examples(ws: Workspace, log_ids: list[str]) -> list[tuple[Log, list[str]]]:
    """(log, feedback rules) of each of ``log_ids`` that has a first answer and non-empty feedback rules."""
    out = []
    for log_id in log_ids:
        found = ws.log_with_rules(log_id)
        if found and found[1] and found[0].first_answer is not None:
            out.append(found)
    return out


def no_rule_logs(ws: Workspace, log_ids: list[str]) -> list[Log]:
    """The logs among ``log_ids`` whose user reacted in words but whose feedback gave no rules, and that
    have a first answer and no preference pair: what users did not object to."""
    out = []
    for log_id in log_ids:
        log = ws.unpaired_no_rule_log(log_id)
        if log is not None and log.first_answer is not None:
            out.append(log)
    return out


def pair_prompt(log: Log) -> list[dict[str, str]]:
    """The conversation up to the query: the pair's prompt."""
    msgs = []
    for m in log.messages:
        msgs.append({"role": m.role, "content": m.content})
        if m.role == "user":
            return msgs
    return msgs


# -- the stage ------------------------------------------------------------------------------


@dataclass
class _Done:
    """What the workspace already holds, so a re-run only does what is missing."""

    prior: set[str]
    feedback: set[str]
    usable: set[str]
    prior_usable: set[str]
    paired: set[str]

    @classmethod
    def load(cls, ws: Workspace) -> _Done:
        return cls(ws.rule_ids("prior"), ws.rule_ids("feedback"), ws.rule_ids("feedback", nonempty=True),
                   ws.rule_ids("prior", nonempty=True), ws.paired_ids())

    def record_rules(self, log_id: str, kind: str, rules: list[str]) -> None:
        """Note rules just stored."""
        (self.prior if kind == "prior" else self.feedback).add(log_id)
        if rules:
            (self.prior_usable if kind == "prior" else self.usable).add(log_id)

    def pair_possible(self, log: Log) -> bool:
        """True when ``log`` can give a pair with what is known now (or may after its rules)."""
        if log.first_answer is None:
            return False
        if any(a.kind == "edit" for a in log.actions):
            return True
        if log.feedback:
            return log.id not in self.feedback or log.id in self.usable
        return bool(wordless_rejection(log)) and (log.id not in self.prior or log.id in self.prior_usable)

    def pending(self, log: Log) -> bool:
        """True when ``log`` still needs prior rules, feedback rules or a pair."""
        needs_feedback = bool(log.feedback) and log.first_answer is not None and log.id not in self.feedback
        return (log.id not in self.prior or needs_feedback
                or (self.pair_possible(log) and log.id not in self.paired))


def run(ws: Workspace, models: Models, cfg: DistillConfig | None = None, *,
        progress: bool | None = None, executor: ExecutorConfig | None = None) -> DistillResult:
    """Distil every log that still lacks rules or a pair; return counts of what was done. ``executor`` (default:
    local) runs each chunk of logs as a job (:mod:`unolearn.executor`); on Ray, a chunk lost past its retries
    counts its logs as failed, and a later run distils them."""
    cfg = cfg or DistillConfig()
    run_id = ws.start_run("distill", asdict(cfg))
    result = DistillResult()
    resumed = ws.count("rules") > 0
    try:
        if executor is not None and executor.kind != "local":
            _run_jobs(ws, models, cfg, result, executor)
        else:
            asyncio.run(_run(ws, models, cfg, result, progress))
    except BaseException:
        ws.finish_run(run_id, "failed", result.as_dict())
        raise
    if executor is None or executor.kind == "local":
        result.usage = models.usage()  # on Ray, the jobs' usage was added up
    answered = result.prior_rules + result.feedback_rules + result.pairs["revision"] + result.pairs["implicit"]
    # A first run in which every request fails means a dead backend. On a resumed run the requests
    # left over may be ones the model always answers badly (greedy decoding repeats the same invalid
    # JSON): they are counted as failed, and the later stages go on with what was distilled.
    if result.failed and not answered and not resumed:
        ws.finish_run(run_id, "failed", result.as_dict())
        raise BackendError(f"every model request of distill failed ({result.failed}); first error: "
                           f"{result.first_error}")
    ws.finish_run(run_id, "ok", result.as_dict())
    return result


async def _run(ws: Workspace, models: Models, cfg: DistillConfig, result: DistillResult,
               progress: bool | None) -> None:
    done = _Done.load(ws)
    todo = [log for log in ws.iter_logs() if done.pending(log)]
    result.logs = len(todo)
    if todo:
        resolve_judge(cfg.judge, models.judge)  # a judge that cannot work fails before any model call
    try:
        with tqdm(total=len(todo), desc="distill", unit="log",
                  disable=None if progress is None else not progress) as bar:
            for i in range(0, len(todo), cfg.chunk_size):
                chunk = todo[i:i + cfg.chunk_size]
                await _rules(ws, models.generator, chunk, done, cfg, result)
                await _pairs(ws, models, chunk, done, cfg, result)
                bar.update(len(chunk))
    finally:
        await models.aclose()


def _run_jobs(ws: Workspace, models: Models, cfg: DistillConfig, result: DistillResult,
              executor: ExecutorConfig) -> None:
    """The pending logs' chunks as jobs of ``executor``, each opening the workspace and its models itself."""
    done = _Done.load(ws)
    todo = [log.id for log in ws.iter_logs() if done.pending(log)]
    result.logs = len(todo)
    if todo:
        resolve_judge(cfg.judge, models.judge)  # a judge that cannot work fails before any job starts
    where = (str(ws.root), ws.store, models.cfg, cfg)
    chunks = [todo[i:i + cfg.chunk_size] for i in range(0, len(todo), cfg.chunk_size)]
    for o, chunk in zip(run_jobs(executor, _chunk_job, [(f"logs {c[0]}…", (*where, c)) for c in chunks]), chunks):
        if o.error is not None:
            result.failed += len(chunk)
            result.first_error = result.first_error or f"{o.key}: {o.error}"
        else:
            result.merge(o.value)


def _chunk_job(root: str, store: str | None, backends: Any, cfg: DistillConfig, log_ids: list[str]) -> DistillResult:
    """One chunk's rules and pairs, as a job of its own (a Ray task): what it did."""
    result = DistillResult()

    async def chunk(ws: Workspace, models: Models) -> None:
        logs, done = [ws.get_log(i) for i in log_ids], _Done.load(ws)
        await _rules(ws, models.generator, logs, done, cfg, result)
        await _pairs(ws, models, logs, done, cfg, result)
        result.usage = models.usage()
    run_with_models(root, store, backends, chunk)
    return result


async def _gate(gen: ChatModel, logs: list[Log], cfg: DistillConfig, result: DistillResult) -> set[str]:
    """The ids of ``logs`` whose reaction the gate finds asks for no change.

    The gate only decides when the model answered yes or no (at least half of the first token's
    probability on them); without logprobs, or with another first token, the log goes on to its rules.
    """
    if not cfg.gate or not logs:
        return set()
    from .assess import yes_no_mass

    outs = await gen.generate([gate_request(log, cfg) for log in logs], progress=False)
    out_ids = set()
    for log, out in zip(logs, outs):
        if not out.ok:
            result.fail(out.error)
            continue
        yes, no = yes_no_mass(out.top_logprobs or {})
        if yes + no >= 0.5 and yes / (yes + no) < cfg.gate_threshold:
            out_ids.add(log.id)
    return out_ids


async def _rules(ws: Workspace, gen: ChatModel, logs: list[Log], done: _Done, cfg: DistillConfig,
                 result: DistillResult) -> None:
    """Ask for the missing prior and feedback rules of ``logs``; store them in one transaction.

    Feedback the gate finds asks for no change is stored as no rules without asking for them; every
    rule written goes through :func:`unolearn.rulefilter.filter_rules` (feedback rules through
    :func:`~unolearn.rulefilter.feedback_rules`, which may take the user's own sentences instead).
    """
    todo = [log for log in logs if log.feedback and log.first_answer is not None and log.id not in done.feedback]
    gated = await _gate(gen, todo, cfg, result)
    jobs = [(log, "prior", prior_request(log, cfg)) for log in logs if log.id not in done.prior]
    jobs += [(log, "feedback", feedback_request(log, cfg)) for log in todo if log.id not in gated]
    outs = await gen.generate([req for _, _, req in jobs], progress=False)
    rows = []
    answered: list[tuple[Log, str, list[str]]] = [(log, "feedback", []) for log in todo if log.id in gated]
    for (log, kind, _), out in zip(jobs, outs):
        unreadable = kind == "feedback" and isinstance(out.error, SchemaError)
        if not out.ok and not unreadable:
            result.fail(out.error)
            continue
        if kind == "feedback":
            rules, rejected, source = feedback_rules(clean_rules(out.parsed), log, unreadable)
            result.echoed += source == "echo"
            result.recalled += source == "recall"
        else:
            rules, rejected = filter_rules(clean_rules(out.parsed), log.lang, log.query)
        result.rules_rejected.update(rejected)
        answered.append((log, kind, rules))
    for log, kind, rules in answered:
        rows.append((log.id, kind, rules, gen.model_id))
        done.record_rules(log.id, kind, rules)
        if kind == "prior":
            result.prior_rules += 1
        else:
            result.feedback_rules += 1
            result.usable_feedback += bool(rules)
            result.filtered_as_noise += not rules
            result.gated_as_noise += log.id in gated
    ws.put_rules(rows)


def stored_rules(ws: Workspace, log_id: str, kind: str) -> list[str] | None:
    """The stored rules of one log (``None`` when not distilled yet)."""
    return ws.rules_of(log_id, kind)


def _pair_basis(ws: Workspace, log: Log) -> tuple[str, list[str]] | None:
    """How a pair is made for ``log``: (origin, rules to revise under), or None for no pair."""
    if log.first_answer is None:
        return None
    if log.feedback:
        rules = stored_rules(ws, log.id, "feedback")
        return ("revision", rules) if rules else None
    if wordless_rejection(log):
        rules = stored_rules(ws, log.id, "prior")
        return ("implicit", rules) if rules else None
    return None


async def _pairs(ws: Workspace, models: Models, logs: list[Log], done: _Done, cfg: DistillConfig,
                 result: DistillResult) -> None:
    """Make the missing preference pairs of ``logs`` and store them in one transaction."""
    rows = []
    jobs: list[tuple[Log, str, list[str]]] = []
    for log in logs:
        if log.id in done.paired or log.first_answer is None:
            continue
        edits = [a.edited for a in log.actions if a.kind == "edit" and a.edited]
        if edits:
            rows.append(_pair_row(log, "edit", edits[-1], None, [], "user"))
            continue
        basis = _pair_basis(ws, log)
        if basis:
            jobs.append((log, *basis))
    revisions = await models.generator.generate(
        [r for log, _, rules in jobs for r in revision_requests(log, rules, cfg)], progress=False)
    k = len(REVISION_KINDS) * cfg.n_revisions
    per_log = [revisions[i * k:(i + 1) * k] for i in range(len(jobs))]
    judged = [(j, out.text, REVISION_KINDS[i // cfg.n_revisions], out.finish_reason == "length")
              for j, outs in enumerate(per_log) for i, out in enumerate(outs) if out.ok and out.text.strip()]
    for o in revisions:
        if not o.ok:
            result.fail(o.error)
    best = await _best_revisions(models, jobs, judged, cfg, result)
    for j, (score, text, cands) in best.items():
        log, origin, _ = jobs[j]
        rows.append(_pair_row(log, origin, text, score, cands, models.generator.model_id))
    for r in rows:
        result.pairs[r[2]] += 1
        done.paired.add(r[1])
    ws.put_pairs(rows)


async def _best_revisions(models: Models, jobs: list[tuple[Log, str, list[str]]],
                          judged: list[tuple[int, str, str, bool]], cfg: DistillConfig,
                          result: DistillResult) -> dict[int, tuple[float | None, str, list]]:
    """Job index → (judge score, best candidate, all candidates); ties keep the earliest (a revision).
    ``judged``: (job index, candidate, its kind, whether ``answer_max_tokens`` cut it).

    A candidate that collapsed or left the subject (:func:`text.guard_failure` against the first answer),
    or that the token budget cut (``"unfinished"``: often a loop that runs to the limit), is kept among
    the candidates with its reason but never chosen: as `chosen` it would teach an expert the answers
    that select's guards count as losses, or to stop mid-sentence. A job without a passing candidate
    gets no pair.
    """
    kind = resolve_judge(cfg.judge, models.judge)
    scores = await score_items(models.judge, kind, [(jobs[j][0], jobs[j][2], text) for j, text, *_ in judged],
                               samples=1, max_tokens=cfg.judge_max_tokens, seed=cfg.seed, desc="judge revisions")
    cands: dict[int, list[dict[str, Any]]] = {}
    for (j, text, cand_kind, cut), score in zip(judged, scores):
        if score is None:
            result.fail(BackendError(f"the {kind} judge could not score a revision"))
            continue
        log = jobs[j][0]
        guard = guard_failure(*replacement_measures(text, log.first_answer or "", log.query, log.lang),
                              bleu_min=cfg.bleu_min, min_length_ratio=cfg.min_length_ratio) or (
            "unfinished" if cut else None)
        cand = {"answer": text, "kind": cand_kind, "score": score, "judge": kind}
        if guard:
            cand["guard"] = guard
            result.guarded[guard] += 1
        cands.setdefault(j, []).append(cand)
    best: dict[int, tuple[float | None, str, list]] = {}
    for j, cs in cands.items():
        passing = [c for c in cs if "guard" not in c]
        if not passing:
            result.unpaired += 1
            continue
        top = max(passing, key=lambda c: c["score"])  # max keeps the first of equal scores
        best[j] = (top["score"], top["answer"], cs)
    return best


def _pair_row(log: Log, origin: str, chosen: str, score: float | None, candidates: list, model: str) -> tuple:
    prompt = pair_prompt(log)
    pid = content_hash("pair", {"log": log.id, "origin": origin, "chosen": chosen})
    return (pid, log.id, origin, json.dumps(prompt, ensure_ascii=False), chosen, log.first_answer, score,
            json.dumps(candidates, ensure_ascii=False), model, now())
