"""How well does the judge tell a better answer from a worse one? Measured against the code checks.

    python scripts/measure_judge.py WORKSPACE [--limit N] [--preferences FILE]

Validation (select) compares a module's answer with a fresh base answer by the judge's score against
the cluster's feedback rules. On simulated users the truth is known: the hidden constraints, checked
by code. For the first N test prompts per packaged set that have constraints, this script takes two
answers — the base model's and the `rules` baseline's (both as `bench quality` asks for them, so a
benchmarked workspace answers from its response cache) — and the complaints of the prompt's
constraints as the rules, then asks:

- ``score``: the judge's 1–10 score (the select stage's judge, greedy), per answer;
- ``yes_no``: per rule, "does the answer follow it?" with P(yes) from the first token's
  log-probabilities; an answer's score is the mean P(yes) over its rules.

It prints JSON: per judge, the share of pairs with different compliance whose order the judge gets
right (a tie counts ½), and for ``yes_no`` the share of single checks it gets right.
"""

from __future__ import annotations

import argparse
import asyncio
import json

from unolearn.assess import yes_probability
from unolearn.backends import ChatRequest, Models
from unolearn.bench.quality import build_prompts, load_memory
from unolearn.constraints import compliance
from unolearn.distill import DistillConfig, judge_request
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


async def measure(ws: Workspace, limit: int, prefs_path: str | None) -> dict:
    prefs = load_preferences(prefs_path)
    records = [r for r in load_prompt_records(resolve("memorybench:test"), limit) if constraints_for(prefs, r)]
    models = Models(ws)
    queries = [record_query(r) for r in records]
    prompts = {"base": queries, "rules": build_prompts("rules", queries, load_memory(ws), models.embedder.embed, 5)}
    answers = {}
    for system, ps in prompts.items():
        outs = await models.generator.generate([ChatRequest.of(p, max_tokens=256, seed=42) for p in ps], desc=system)
        answers[system] = [o.text if o.ok else "" for o in outs]
    dcfg = DistillConfig(judge_max_tokens=128)
    pairs = {"score": [], "yes_no": []}
    checks_right = []
    for i, (rec, q) in enumerate(zip(records, queries)):
        lang = detect_lang(q)
        constraints = constraints_for(prefs, rec)
        rules = [c.complaints(lang)[0] for c in constraints]
        log = Log.from_messages([Message(role="user", content=q)], lang=lang)
        truth, score, yes = {}, {}, {}
        for system in answers:
            text = answers[system][i]
            checks = compliance(text, constraints)
            truth[system] = sum(checks.values()) / len(checks)
            (judged,) = await models.judge.generate([judge_request(log, rules, text, dcfg)], progress=False)
            score[system] = float(judged.parsed["score"]) if judged.ok else 0.0
            asked = [ChatRequest.of(FOLLOWS[lang].format(query=q, answer=text, rule=r), max_tokens=1, logprobs=20)
                     for r in rules]
            p = [yes_probability(o.top_logprobs) for o in await models.judge.generate(asked, progress=False)]
            yes[system] = sum(p) / len(p)
            checks_right += [float((pi >= 0.5) == ok) for pi, ok in zip(p, checks.values())]
        if truth["base"] != truth["rules"]:
            pairs["score"].append(order_right(score["rules"], score["base"], truth["rules"], truth["base"]))
            pairs["yes_no"].append(order_right(yes["rules"], yes["base"], truth["rules"], truth["base"]))
    await models.aclose()
    return {"prompts": len(records), "pairs_with_different_compliance": len(pairs["score"]),
            "order_right": {k: round(sum(v) / len(v), 3) if v else None for k, v in pairs.items()},
            "yes_no_single_checks_right": round(sum(checks_right) / len(checks_right), 3),
            "single_checks": len(checks_right)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("workspace")
    ap.add_argument("--limit", type=int, default=5, help="Test prompts per packaged set (5).")
    ap.add_argument("--preferences", help="Preference file (default: the packaged one).")
    args = ap.parse_args()
    with Workspace.open(args.workspace) as ws:
        print(json.dumps(asyncio.run(measure(ws, args.limit, args.preferences)), indent=2))


if __name__ == "__main__":
    main()
