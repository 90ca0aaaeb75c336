"""How well does a judge tell a better answer from a worse one? Measured against the code checks.

    python scripts/measure_judge.py WORKSPACE [--limit N] [--preferences FILE] [--rules complaints|nearest]
        [--answers rules|oracle] [--judges likelihood,score,...] [--judge-models default,quality]

Validation (select) compares a module's answer with a fresh base answer by a judge against the
feedback rules of a held-out log. On simulated users the truth is known: the hidden constraints,
checked by code. For the first N test prompts per packaged set that have constraints, this script
takes two answers of the generator — the base model's, and a better-informed one — and the rules to
judge against; the pairs whose two answers the checks score differently are judged.

- ``--answers rules``: the `rules` baseline's answer (as `bench quality` asks for it, so a benchmarked
  workspace answers from its response cache; the workspace needs distilled logs);
- ``--answers oracle``: the answer to the prompt with the user's hidden constraints stated (their
  complaints), which needs no distilled logs: any workspace folder, even an empty one, will do;
- ``--rules complaints``: the simulated user's complaint for each constraint of the prompt (what a
  user who saw every violation would say);
- ``--rules nearest``: the distilled feedback rules of the nearest past log of the same dataset (by
  query embedding), as a held-out validation item has: one user's reaction to some violations.

Judges (``--judges``, all by default):
- ``score``: the LLM judge's 1–10 score (select's ``llm`` judge, greedy), per answer;
- ``yes_no``: per rule, "does the answer follow it?" with P(yes) from the first token's logprobs;
- ``likelihood``: select's ``likelihood`` judge, log P(answer | query + rules) − log P(answer | query);
- ``likelihood_per_token``: the same divided by the answer's tokens.

``--judge-models``: the judge models to compare on the same pairs (``configured``: the workspace's judge;
``default``: the packaged 0.5B; ``quality``: the packaged 1.5B of ``unolearn[quality]``; or a GGUF path).
It prints JSON: per model and judge, the share of pairs whose order the judge gets right (a tie counts ½),
with n, a bootstrap interval and the seconds it took; with two models, the paired difference of the
second over the first per judge, with its interval.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from dataclasses import replace

import numpy as np

from unolearn.assess import yes_probability
from unolearn.backends import ChatModel, ChatRequest, Models, make_chat
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


JUDGES = ("score", "yes_no", "likelihood", "likelihood_per_token")


async def judge_scores(judge: ChatModel, judges: list[str], items: list[tuple[Log, list[str], str]]
                       ) -> tuple[dict[str, list[float]], dict[str, float]]:
    """Every asked judge's score of every ``(log, rules, answer)`` item, each judge's requests sent at once;
    and the seconds each judge took."""
    scores: dict[str, list[float]] = {}
    seconds: dict[str, float] = {}
    if "score" in judges:
        t = time.perf_counter()
        outs = await judge.generate([judge_request(log, rules, text, max_tokens=128, seed=42)
                                     for log, rules, text in items], desc="score")
        scores["score"] = [float(o.parsed["score"]) if o.ok else 0.0 for o in outs]
        seconds["score"] = time.perf_counter() - t
    if "yes_no" in judges:
        t = time.perf_counter()
        asked = [(i, ChatRequest.of(FOLLOWS[log.lang].format(query=log.query, answer=text, rule=r), max_tokens=1,
                                    logprobs=20)) for i, (log, rules, text) in enumerate(items) for r in rules]
        outs = await judge.generate([r for _, r in asked], desc="yes/no")
        per: dict[int, list[float]] = {}
        for (i, _), o in zip(asked, outs):
            per.setdefault(i, []).append(yes_probability(o.top_logprobs))
        scores["yes_no"] = [float(np.mean(per.get(i, [0.0]))) for i in range(len(items))]
        seconds["yes_no"] = time.perf_counter() - t
    if "likelihood" in judges or "likelihood_per_token" in judges:
        t = time.perf_counter()
        reqs = [r for log, rules, text in items for r in (ChatRequest.of(with_rules(log, rules), continuation=text),
                                                           ChatRequest.of(conversation(log), continuation=text))]
        outs = await judge.generate(reqs, desc="likelihood")
        diff = [(s.logprob or 0.0) - (p.logprob or 0.0) for s, p in zip(outs[::2], outs[1::2])]
        scores["likelihood"] = diff
        scores["likelihood_per_token"] = [d / max(1, p.completion_tokens) for d, p in zip(diff, outs[1::2])]
        seconds["likelihood"] = time.perf_counter() - t
    return {j: scores[j] for j in judges}, seconds


def judge_model(models: Models, name: str) -> ChatModel:
    """The judge ``name`` names: the workspace's own, or the generator's configuration on another model."""
    if name == "configured":
        return models.judge
    return make_chat(replace(models.cfg.generator, model=None if name == "default" else name))


async def measure(ws: Workspace, limit: int, prefs_path: str | None, rules_from: str, answers_from: str,
                  judges: list[str], judge_models: list[str]) -> dict:
    prefs = load_preferences(prefs_path)
    records = [r for r in load_prompt_records(resolve("memorybench:test"), limit) if constraints_for(prefs, r)]
    models = Models(ws)
    queries = [record_query(r) for r in records]
    constraints = [constraints_for(prefs, r) for r in records]
    langs = [detect_lang(q) for q in queries]
    if answers_from == "rules":
        better = build_prompts("rules", queries, load_memory(ws), models.embedder.embed, 5)
    else:
        better = [with_rules(Log.from_messages([Message(role="user", content=q)], lang=lang),
                             [c.complaints(lang)[0] for c in cs])[-1]["content"]
                  for q, lang, cs in zip(queries, langs, constraints)]
    answers = {}
    for system, ps in {"base": queries, answers_from: better}.items():
        outs = await models.generator.generate([ChatRequest.of(p, max_tokens=256, seed=42) for p in ps], desc=system)
        answers[system] = [o.text if o.ok else "" for o in outs]
    near = nearest_rules(ws, models, records, queries) if rules_from == "nearest" else None
    truth = {system: [sum(c.values()) / len(c) for c in (compliance(a, cs) for a, cs in zip(texts, constraints))]
             for system, texts in answers.items()}
    kept = [i for i in range(len(records)) if truth["base"][i] != truth[answers_from][i]]
    items = []
    for i in kept:
        log = Log.from_messages([Message(role="user", content=queries[i])], lang=langs[i])
        rules = near[i] if near else [c.complaints(langs[i])[0] for c in constraints[i]]
        items += [(log, rules, answers[answers_from][i]), (log, rules, answers["base"][i])]
    by_model: dict[str, dict] = {}
    rights: dict[str, dict[str, list[float]]] = {}
    for name in judge_models:
        judge = judge_model(models, name)
        scores, seconds = await judge_scores(judge, judges, items)
        if name != "configured":
            await judge.aclose()
        rights[name] = {j: [order_right(v[2 * k], v[2 * k + 1], truth[answers_from][i], truth["base"][i])
                            for k, i in enumerate(kept)] for j, v in scores.items()}
        by_model[name] = {"order_right": {j: round(float(np.mean(v)), 3) if v else None
                                          for j, v in rights[name].items()},
                          "order_right_ci": {j: interval(v) for j, v in rights[name].items()},
                          "seconds": {k: round(v, 1) for k, v in seconds.items()}}
    await models.aclose()
    out = {"prompts": len(records), "answers": answers_from, "rules_from": rules_from,
           "pairs_with_different_compliance": len(kept), "judges": by_model}
    if len(judge_models) == 2:
        first, second = (rights[m] for m in judge_models)
        out["paired_difference"] = {j: {"mean": round(float(np.mean(np.subtract(second[j], first[j]))), 3)
                                        if kept else None,
                                        "ci": interval(list(np.subtract(second[j], first[j])))} for j in judges}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("workspace")
    ap.add_argument("--limit", type=int, default=5, help="Test prompts per packaged set (5).")
    ap.add_argument("--preferences", help="Preference file (default: the packaged one).")
    ap.add_argument("--rules", choices=("complaints", "nearest"), default="complaints",
                    help="What the judges judge against (see above).")
    ap.add_argument("--answers", choices=("rules", "oracle"), default="rules",
                    help="Where the better-informed answer comes from (see above).")
    ap.add_argument("--judges", default=",".join(JUDGES), help="Judges to run, comma-separated (all).")
    ap.add_argument("--judge-models", default="configured",
                    help="Judge models to compare on the same pairs, comma-separated (the workspace's judge).")
    args = ap.parse_args()
    judges = [j for j in args.judges.split(",") if j]
    if unknown := set(judges) - set(JUDGES):
        ap.error(f"unknown judges: {sorted(unknown)} (known: {', '.join(JUDGES)})")
    with Workspace.open(args.workspace) as ws:
        print(json.dumps(asyncio.run(measure(ws, args.limit, args.preferences, args.rules, args.answers, judges,
                                             args.judge_models.split(","))), indent=2))


if __name__ == "__main__":
    main()
