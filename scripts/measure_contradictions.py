"""Measure the rulebook's contradiction check: P(both can hold) of labelled rule pairs, by the judge.

    python scripts/measure_contradictions.py [scripts/data/rule_conflicts.jsonl]

The rulebook asks the judge "can one answer follow both rule A and rule B?" for every two kept entries
of a cluster and drops the less supported one when P(yes) is below a threshold. A false
contradiction drops a good rule from the guide, so the compatible pairs matter as much as the
contradictory ones. The pairs: the hand-labelled file (`both`: true or false), plus, as compatible,
every two constraints of one dataset in the packaged and the second preference file, in each language
(a simulated user holds them all at once). Prints, per threshold, how many compatible pairs it
would split and how many contradictory pairs it would catch, by language.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import sys
from pathlib import Path

import yaml

from unolearn.assess import yes_probability
from unolearn.backends import ChatRequest
from unolearn.backends.llamacpp import LlamaCppChatModel
from unolearn.rulebook import BOTH_PROMPT

ROOT = Path(__file__).resolve().parent.parent
PREFERENCES = [ROOT / "src/unolearn/data/preferences.yaml", ROOT / "benchmarks/preferences-alt.yaml"]
THRESHOLDS = (0.5, 0.4, 0.3, 0.2, 0.1, 0.05)


def preference_pairs() -> list[dict]:
    """Every two constraints of one dataset, per language (the feedback texts: English first, Chinese second)."""
    out = []
    for path in PREFERENCES:
        for spec in yaml.safe_load(path.read_text(encoding="utf-8"))["datasets"].values():
            for a, b in itertools.combinations(spec["constraints"], 2):
                for i, lang in enumerate(("en", "zh")):
                    out.append({"lang": lang, "a": a["feedback"][i], "b": b["feedback"][i], "both": True})
    return out


async def probabilities(pairs: list[dict]) -> list[float]:
    model = LlamaCppChatModel(n_threads=2)
    reqs = [ChatRequest.of(BOTH_PROMPT[p["lang"]].format(a=p["a"], b=p["b"]), max_tokens=1, logprobs=20)
            for p in pairs]
    outs = await model.generate(reqs, progress=False)
    return [yes_probability(o.top_logprobs) for o in outs]


def main(path: str) -> None:
    labelled = [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
    pairs = labelled + preference_pairs()
    probs = asyncio.run(probabilities(pairs))
    for p, pr in sorted(zip(pairs, probs), key=lambda x: x[1]):
        print(f"{pr:.3f} {'both' if p['both'] else 'conflict'} {p['lang']}  {p['a'][:40]} | {p['b'][:40]}")
    summary = {}
    for t in THRESHOLDS:
        row = {}
        for lang in ("en", "zh"):
            ok = [pr for p, pr in zip(pairs, probs) if p["lang"] == lang and p["both"]]
            bad = [pr for p, pr in zip(pairs, probs) if p["lang"] == lang and not p["both"]]
            row[lang] = {"compatible_split": f"{sum(x < t for x in ok)}/{len(ok)}",
                         "conflicts_caught": f"{sum(x < t for x in bad)}/{len(bad)}"}
        summary[t] = row
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else str(Path(__file__).parent / "data" / "rule_conflicts.jsonl"))
