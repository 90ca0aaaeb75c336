"""Where does the reflective path lose against the `rules` memory? Measured against the code checks.

    python scripts/measure_reflective.py WORKSPACE [--limit N] [--preferences FILE]

For the first N test prompts per packaged set (as `bench quality --limit N` takes them) that `uno`
routes to a critic, this script compares, by the hidden constraints' compliance:

- ``draft``: the base answer (the reflective path's first call, and `base`);
- ``revised``: the reflective path as `uno` serves it (the critic's rules on the draft, then the
  base model's revision of the draft under them);
- ``critic_rules_fresh``: the base model answering afresh with the critic's rules in the prompt,
  as the `rules` baseline places its memory (no draft to revise);
- ``rules``: the `rules` baseline itself (the 5 nearest past logs' feedback rules).

It also prints the critic's rules for the first prompts, to read. Every answer is asked as `bench
quality` asks it, so a benchmarked workspace answers the draft, the critique, the revision and the
rules baseline from its response cache.
"""

from __future__ import annotations

import argparse
import asyncio
import json

from unolearn.answer import answer, plan_route
from unolearn.backends import ChatRequest, Models
from unolearn.bench.quality import RULES_HEADER, build_prompts, load_memory, paired_bootstrap_ci, prompt_counts
from unolearn.cluster import Router
from unolearn.constraints import compliance
from unolearn.prompt_sets import resolve
from unolearn.records import detect_lang
from unolearn.simulate import constraints_for, load_preferences, load_prompt_records, record_query
from unolearn.store import Workspace

SYSTEMS = ("draft", "revised", "critic_rules_fresh", "rules")


async def measure(ws: Workspace, limit: int, prefs_path: str | None, show: int) -> dict:
    prefs = load_preferences(prefs_path)
    records = [r for r in load_prompt_records(resolve("memorybench:test"), limit) if constraints_for(prefs, r)]
    models = Models(ws)
    router = Router.load(ws, models.embedder)
    kept, texts = [], {s: [] for s in SYSTEMS}
    critiques = []
    for rec in records:
        q = record_query(rec)
        route = plan_route(ws, router, q, "uno")
        if route.path != "reflective":
            continue
        out = await answer(ws, models, router, [{"role": "user", "content": q}], "uno", max_tokens=256, route=route)
        rules = out.critique or "-"
        lang = detect_lang(q)
        (fresh,) = await models.generator.generate(
            [ChatRequest.of(RULES_HEADER[lang].format(rules=rules, query=q), max_tokens=256, seed=42)], progress=False)
        kept.append(rec)
        critiques.append(rules)
        texts["draft"].append(out.draft or "")
        texts["revised"].append(out.text)
        texts["critic_rules_fresh"].append(fresh.text if fresh.ok else "")
    queries = [record_query(r) for r in kept]
    for p in build_prompts("rules", queries, load_memory(ws), models.embedder.embed, 5):
        (res,) = await models.generator.generate([ChatRequest.of(p, max_tokens=256, seed=42)], progress=False)
        texts["rules"].append(res.text if res.ok else "")
    await models.aclose()
    counts = {}
    for s in SYSTEMS:
        rows = [{"checks": compliance(t, constraints_for(prefs, rec))} for t, rec in zip(texts[s], kept)]
        counts[s] = prompt_counts(rows)
    summary = {s: round(float(c[:, 0].sum() / c[:, 1].sum()), 4) if len(c) else None for s, c in counts.items()}
    return {"prompts": len(kept), "n_checks": int(counts["draft"][:, 1].sum()) if kept else 0,
            "compliance": summary,
            "ci_vs_revised": {s: paired_bootstrap_ci(counts[s], counts["revised"]) for s in SYSTEMS if s != "revised"},
            "critiques": [{"query": q[:120], "critic": c[:400]} for q, c in zip(queries[:show], critiques[:show])]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("workspace")
    ap.add_argument("--limit", type=int, default=5, help="Test prompts per packaged set (5).")
    ap.add_argument("--preferences", help="Preference file (default: the packaged one).")
    ap.add_argument("--show", type=int, default=6, help="How many critiques to print (6).")
    args = ap.parse_args()
    with Workspace.open(args.workspace) as ws:
        print(json.dumps(asyncio.run(measure(ws, args.limit, args.preferences, args.show)), indent=2,
                         ensure_ascii=False))


if __name__ == "__main__":
    main()
