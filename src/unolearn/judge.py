"""How an answer is scored against a log's feedback rules: the two judges of validation and distillation.

- ``llm``: the judge model's 1–10 score of the answer against the rules (the reference's judge), the
  mean of ``samples`` judgements (the first greedy, the others sampled).
- ``likelihood``: how much more likely the answer becomes when the rules are stated,
  ``log P(answer | request + rules) − log P(answer | request)`` under the judge model (no adapter).
  An answer that follows the rules gains likelihood once they are asked for; one that ignores them
  does not. It needs no judging ability, only the model's own probabilities: on the embedded 0.5B
  model the 1–10 score orders answers at chance, while this ratio follows the rules
  (docs/validation-judge.md has the measurement). It is deterministic, so one sample suffices.
- ``auto``: ``likelihood`` where the judge model can score a given reply (the embedded model and
  the Transformers backend), ``llm`` otherwise (servers, whose larger models judge well).

Scores of different judges are on different scales; only scores of one judge for the same rules
are compared.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from .backends import ChatModel, ChatRequest
from .errors import ConfigError
from .records import Log
from .text import numbered

JUDGES = ("auto", "llm", "likelihood")

JUDGE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"reason": {"type": "string", "maxLength": 300},
                   "score": {"type": "integer", "minimum": 1, "maximum": 10}},
    "required": ["reason", "score"],
}

#: The LLM judge's prompt.
JUDGE_PROMPT = {
    "en": ("You grade an answer strictly. Score from 1 (ignores the rules or is wrong) to 10 (follows "
           "every rule and answers the request correctly and completely).\n\n## Request\n{query}\n\n"
           "## Rules\n{rules}\n\n## Answer\n{answer}\n\n"
           'Reply with JSON only: {{"reason": "<one or two sentences>", "score": <integer 1-10>}}'),
    "zh": ("请严格评价一个回答。评分从 1（无视规则或回答错误）到 10（遵循每一条规则，且正确、完整地回答了请求）。"
           "\n\n## 请求\n{query}\n\n## 规则\n{rules}\n\n## 回答\n{answer}\n\n"
           '只输出 JSON：{{"reason": "<一两句话>", "score": <1-10 的整数>}}'),
}

#: The request with the rules stated: appended to the last user turn of the log's conversation.
WITH_RULES = {"en": "{query}\n\nIn your answer, follow these requirements:\n{rules}",
              "zh": "{query}\n\n回答时请遵守以下要求：\n{rules}"}

#: One judged item: the log (its conversation up to the query), its feedback rules, and an answer.
Item = tuple[Log, Sequence[str], str]


def resolve_judge(name: str, judge: ChatModel) -> str:
    """The judge that ``name`` means for the ``judge`` model (``auto`` resolved)."""
    if name not in JUDGES:
        raise ConfigError(f"judge: unknown {name!r}; choose one of {', '.join(JUDGES)}")
    if name == "auto":
        return "likelihood" if judge.scores_continuations else "llm"
    if name == "likelihood" and not judge.scores_continuations:
        raise ConfigError(f"judge: likelihood needs a judge model that scores replies; {judge.model_id} does not "
                          "(use judge: llm)")
    return name


def conversation(log: Log) -> list[dict[str, str]]:
    """The log's conversation up to and including its query (the first user turn)."""
    msgs = []
    for m in log.messages:
        msgs.append({"role": m.role, "content": m.content})
        if m.role == "user":
            break
    return msgs


def with_rules(log: Log, rules: Sequence[str]) -> list[dict[str, str]]:
    """The log's conversation with ``rules`` stated in its query."""
    msgs = conversation(log)
    stated = WITH_RULES.get(log.lang, WITH_RULES["en"]).format(
        query=msgs[-1]["content"], rules="\n".join(f"- {r}" for r in rules))
    return [*msgs[:-1], {"role": "user", "content": stated}]


async def likelihood_scores(judge: ChatModel, items: Sequence[Item], *, desc: str = "judge") -> list[float | None]:
    """Per item: ``log P(answer | query + rules) − log P(answer | query)`` (None when a call failed
    or the answer is empty)."""
    reqs = []
    for log, rules, answer in items:
        reqs += [ChatRequest.of(with_rules(log, rules), continuation=answer, owners=(log.id,)),
                 ChatRequest.of(conversation(log), continuation=answer, owners=(log.id,))]
    outs = await judge.generate(reqs, desc=desc)
    scores: list[float | None] = []
    for i, (_, _, answer) in enumerate(items):
        stated, plain = outs[2 * i], outs[2 * i + 1]
        ok = answer.strip() and stated.ok and plain.ok
        scores.append(stated.logprob - plain.logprob
                      if ok and stated.logprob is not None and plain.logprob is not None else None)
    return scores


def judge_request(log: Log, rules: Sequence[str], answer: str, *, max_tokens: int, seed: int,
                  temperature: float = 0.0) -> ChatRequest:
    """The LLM judge's 1–10 score of ``answer`` against ``rules``."""
    prompt = JUDGE_PROMPT[log.lang].format(query=log.query, rules=numbered(rules), answer=answer)
    return ChatRequest.of(prompt, schema=JUDGE_SCHEMA, max_tokens=max_tokens, temperature=temperature, seed=seed,
                          owners=(log.id,))


async def llm_scores(judge: ChatModel, items: Sequence[Item], *, samples: int, max_tokens: int, seed: int,
                     temperature: float = 1.0, desc: str = "judge") -> list[float | None]:
    """Per item: the mean of ``samples`` 1–10 judgements (the first greedy, the others sampled at
    ``temperature`` with seeds ``seed + s``); None when every judgement failed."""
    reqs = [judge_request(log, rules, answer, max_tokens=max_tokens, seed=seed + s,
                          temperature=0.0 if s == 0 else temperature)
            for log, rules, answer in items for s in range(samples)]
    outs = await judge.generate(reqs, desc=desc)
    means: list[float | None] = []
    for i in range(len(items)):
        valid = [float(o.parsed["score"]) for o in outs[i * samples:(i + 1) * samples] if o.ok]
        means.append(sum(valid) / len(valid) if valid else None)
    return means


async def score_items(judge: ChatModel, kind: str, items: Sequence[Item], *, samples: int, max_tokens: int,
                 seed: int, temperature: float = 1.0, desc: str = "judge") -> list[float | None]:
    """Per item, its score by the judge ``kind`` (``llm`` or ``likelihood``, resolved by :func:`resolve_judge`)."""
    if kind == "likelihood":
        return await likelihood_scores(judge, items, desc=desc)
    return await llm_scores(judge, items, samples=samples, max_tokens=max_tokens, seed=seed,
                            temperature=temperature, desc=desc)


def coin_flips_at_most(k: int, n: int) -> float:
    """The chance of at most ``k`` heads in ``n`` fair coin flips: a one-sided sign test of ``k`` wins (or losses)
    among ``n`` judged comparisons that were not tied."""
    return sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n
