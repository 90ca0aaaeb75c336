"""Calibrate the assess stage's threshold per scorer on hand-labelled (prior rules, feedback rule) items.

Each item of scripts/data/gap_calibration.jsonl says whether a feedback rule is already covered by the
prior rules (written by us, 24 English and 16 Chinese, half covered). The reference's 0.45 is a
threshold on a reranker's P(not covered): about its decision boundary. The matching boundary of another
scorer is the novelty that best separates covered from new rules on these items. Prints JSON: per scorer,
the novelty of covered and of new rules, the best threshold and its accuracy, and the accuracy at 0.45.

Usage: python scripts/measure_gap_threshold.py [embedding|logprob ...]   (docs/embedded-model.md)
"""
import asyncio
import json
import sys
from pathlib import Path

import numpy as np

from unolearn.assess import embedding_novelty, logprob_novelty
from unolearn.backends.embedders import default_embedder
from unolearn.backends.llamacpp import LlamaCppChatModel

ITEMS = [json.loads(line) for line in (Path(__file__).parent / "data" / "gap_calibration.jsonl").open()]


def best_threshold(novelty: np.ndarray, new: np.ndarray) -> tuple[float, float]:
    """The midpoint threshold with the best accuracy of `novelty >= t` as `new`, and that accuracy."""
    cands = np.unique(novelty)
    mids = (cands[:-1] + cands[1:]) / 2 if len(cands) > 1 else cands
    acc = [float(np.mean((novelty >= t) == new)) for t in mids]
    i = int(np.argmax(acc))
    return float(mids[i]), acc[i]


def main(scorers: list[str]) -> None:
    new = np.array([not it["covered"] for it in ITEMS])
    out = {"n": len(ITEMS), "new": int(new.sum())}
    for scorer in scorers:
        if scorer == "embedding":
            emb = default_embedder()
            nov = np.array([embedding_novelty(emb, [it["rule"]], it["prior"])[0] for it in ITEMS])
        else:
            judge = LlamaCppChatModel()
            nov = np.array([n[0] for n in asyncio.run(logprob_novelty(
                judge, [(it["lang"], [it["rule"]], it["prior"]) for it in ITEMS]))])
        t, acc = best_threshold(nov, new)
        out[scorer] = {"covered_mean": round(float(nov[~new].mean()), 3), "new_mean": round(float(nov[new].mean()), 3),
                       "covered_range": [round(float(nov[~new].min()), 3), round(float(nov[~new].max()), 3)],
                       "new_range": [round(float(nov[new].min()), 3), round(float(nov[new].max()), 3)],
                       "best_threshold": round(t, 3), "accuracy_at_best": round(acc, 3),
                       "accuracy_at_0.45": round(float(np.mean((nov >= 0.45) == new)), 3)}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main(sys.argv[1:] or ["embedding", "logprob"])
