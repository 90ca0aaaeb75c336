"""How well does a judge tell a better answer from a worse one? Measured against the code checks.

    python scripts/measure_judge.py WORKSPACE [--limit N] [--preferences FILE] [--rules complaints|nearest]

Validation (select) compares a module's answer with a fresh base answer by a judge against the
feedback rules of a held-out log. On simulated users the truth is known: the hidden constraints,
checked by code. For the first N test prompts per packaged set that have constraints, this script
takes two answers — the base model's and the `rules` baseline's (both as `bench quality` asks for
them, so a benchmarked workspace answers from its response cache) — and the rules to judge against:

- ``--rules complaints``: the simulated user's complaint for each constraint of the prompt (what a
  user who saw every violation would say);
- ``--rules nearest``: the distilled feedback rules of the nearest past log of the same dataset (by
  query embedding), as a held-out validation item has: one user's reaction to some violations.

Judges:
- ``score``: the LLM judge's 1–10 score (select's ``llm`` judge, greedy), per answer;
- ``yes_no``: per rule, "does the answer follow it?" with P(yes) from the first token's logprobs;
- ``likelihood``: select's ``likelihood`` judge, log P(answer | query + rules) − log P(answer | query);
- ``likelihood_per_token``: the same divided by the answer's tokens.

It prints JSON: per judge, the share of pairs with different compliance whose order the judge gets
right (a tie counts ½), with n and a bootstrap interval, and the seconds each judge took.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

import numpy as np

from unolearn.assess import yes_probability
from unolearn.backends import ChatRequest, Models
from unolearn.bench.quality import build_prompts, dense_top, load_memory
from unolearn.constraints import compliance
from unolearn.judge import conversation, judge_request, with_rules
from unolearn.prompt_sets import resolve
from unolearn.records import Log, Message, detect_lang
from unolearn.simulate import constraints_for, load_preferences, load_prompt_records, record_query
from unolearn.store import Workspace

FOLLOWS = {"en": "## Request\n{query}\n\n## Answer\n{answer}\n\nDoes the answer follow this rule: {rule}\n"
                 "Answer yes or no.",
           "zh": "## 请求\n{query}\n\n## 回答\n{answer}\n\n这个回答是否遵守了这条规则：{rule}\n请回答 yes 或 no。"}


def order_right(a: float, b: float, truth_a: float, truth_b: float) -> float:
    """1 when the judge orders two answers as the checks do, ½ on a judge tie, else 0."""
    if a == b:
        return 0.5
    return float((a > b) == (truth_a > truth_b))


def interval(values: list[float], n_boot: int = 2000, seed: int = 0) -> list[float] | None:
    """95% bootstrap interval of the mean of ``values``."""
    if not values:
        return None
    v = np.array(values)
    means = v[np.random.default_rng(seed).integers(0, len(v), size=(n_boot, len(v)))].mean(1)
    return [round(float(np.quantile(means, 0.025)), 3), round(float(np.quantile(means, 0.975)), 3)]


def nearest_rules(ws: Workspace, models: Models, records: list[dict], queries: list[str]) -> list[list[str]]:
    """Per test prompt, the feedback rules of the nearest past log (by query embedding) of its dataset."""
    past = [(log, rules) for log, rules in ws.logs_with_feedback_rules() if rules]
    out = []
    for rec, q in zip(records, queries):
        same = [(log, rules) for log, rules in past if log.source.endswith(str(rec.get("dataset_name")))] or past
        vecs = models.embedder.embed([log.query for log, _ in same])
        (j,) = dense_top(models.embedder.embed([q])[0], vecs, 1)
        out.append(same[j][1])
    return out


async def judge_all(models: Models, log: Log, rules: list[str], text: str) -> dict[str, float]:
    """Every judge's score of one answer."""
    lang, q = log.lang, log.query
    out: dict[str, float] = {}
    t = time.perf_counter()
    (judged,) = await models.judge.generate([judge_request(log, rules, text, max_tokens=128, seed=42)],
                                            progress=False)
    out["score"] = float(judged.parsed["score"]) if judged.ok else 0.0
    out["t_score"] = time.perf_counter() - t
    t = time.perf_counter()
    asked = [ChatRequest.of(FOLLOWS[lang].format(query=q, answer=text, rule=r), max_tokens=1, logprobs=20)
             for r in rules]
    out["yes_no"] = float(np.mean([yes_probability(o.top_logprobs)
                                   for o in await models.judge.generate(asked, progress=False)]))
    out["t_yes_no"] = time.perf_counter() - t
    t = time.perf_counter()
    stated, plain = await models.judge.generate([ChatRequest.of(with_rules(log, rules), continuation=text),
                                                 ChatRequest.of(conversation(log), continuation=text)],
                                                progress=False)
    out["likelihood"] = stated.logprob - plain.logprob
    out["likelihood_per_token"] = out["likelihood"] / max(1, plain.completion_tokens)
    out["t_likelihood"] = time.perf_counter() - t
    return out


async def measure(ws: Workspace, limit: int, prefs_path: str | None, rules_from: str) -> dict:
    prefs = load_preferences(prefs_path)
    records = [r for r in load_prompt_records(resolve("memorybench:test"), limit) if constraints_for(prefs, r)]
    models = Models(ws)
    queries = [record_query(r) for r in records]
    prompts = {"base": queries, "rules": build_prompts("rules", queries, load_memory(ws), models.embedder.embed, 5)}
    answers = {}
    for system, ps in prompts.items():
        outs = await models.generator.generate([ChatRequest.of(p, max_tokens=256, seed=42) for p in ps], desc=system)
        answers[system] = [o.text if o.ok else "" for o in outs]
    near = nearest_rules(ws, models, records, queries) if rules_from == "nearest" else None
    judges = ("score", "yes_no", "likelihood", "likelihood_per_token")
    pairs: dict[str, list[float]] = {j: [] for j in judges}
    seconds: dict[str, float] = {"score": 0.0, "yes_no": 0.0, "likelihood": 0.0}
    for i, (rec, q) in enumerate(zip(records, queries)):
        lang = detect_lang(q)
        constraints = constraints_for(prefs, rec)
        rules = near[i] if near else [c.complaints(lang)[0] for c in constraints]
        log = Log.from_messages([Message(role="user", content=q)], lang=lang)
        truth, judged = {}, {}
        for system in answers:
            checks = compliance(answers[system][i], constraints)
            truth[system] = sum(checks.values()) / len(checks)
            judged[system] = await judge_all(models, log, rules, answers[system][i])
            for k in seconds:
                seconds[k] += judged[system][f"t_{k}"]
        if truth["base"] != truth["rules"]:
            for j in judges:
                pairs[j].append(order_right(judged["rules"][j], judged["base"][j], truth["rules"], truth["base"]))
    await models.aclose()
    return {"prompts": len(records), "rules_from": rules_from,
            "pairs_with_different_compliance": len(pairs["score"]),
            "order_right": {k: round(sum(v) / len(v), 3) if v else None for k, v in pairs.items()},
            "order_right_ci": {k: interval(v) for k, v in pairs.items()},
            "seconds": {k: round(v, 1) for k, v in seconds.items()}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("workspace")
    ap.add_argument("--limit", type=int, default=5, help="Test prompts per packaged set (5).")
    ap.add_argument("--preferences", help="Preference file (default: the packaged one).")
    ap.add_argument("--rules", choices=("complaints", "nearest"), default="complaints",
                    help="What the judges judge against (see above).")
    args = ap.parse_args()
    with Workspace.open(args.workspace) as ws:
        print(json.dumps(asyncio.run(measure(ws, args.limit, args.preferences, args.rules)), indent=2))


if __name__ == "__main__":
    main()
