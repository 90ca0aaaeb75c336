"""The cluster stage: group logs by what was asked *and* what the user objected to.

Why a dual embedding: two logs belong together when their queries are alike and their feedback
teaches the same thing. Each log is embedded twice (its query; its feedback rules joined by
newlines), each vector is L2-normalised, the two are concatenated and normalised again, so query and
feedback weigh equally. Clusters are cut from a Ward hierarchy at a distance threshold (paper: 4).

Why two methods: exact Ward needs all pairwise distances (``n²/2`` doubles), fine up to
``exact_max`` points (10,000 points of 768 + 768 dimensions: about 1 GB and half a minute on 2 cores).
Above it, MiniBatchKMeans first compresses the points into
``micro_clusters`` centroids, and Ward runs on those centroids weighted by their sizes — a weighted
Ward that starts from the micro-clusters as already-formed clusters, so its merge heights are those
exact Ward would give once it had formed them.

Storage contract (tables of migration 3):
- ``clusters``: ids ``0..k-1`` by size, largest first; ``centroid`` is the L2-normalised mean of the
  members' *query* embeddings (float32 bytes), because a new request has a query but no feedback
  yet; ``embedder`` is the model id the centroids belong to.
- ``cluster_members``: one row per clustered log.
- A run replaces the previous clustering in one transaction (``gaps``, computed per cluster, are
  deleted with it), so readers see the old clustering or the new one, never a mix.
- ``cluster_spread``: per cluster its radius and the clustering versions that made or changed it.

Incremental by default: when a clustering exists (same embedder and threshold setting), a run adds
the new logs to it instead of rebuilding — until the logs added since the last rebuild reach
``rebuild_growth`` times the logs it was built from (by default: once they have doubled). A new log
joins the cluster with the nearest centroid when its query's cosine distance to that centroid is
within the cluster's *spread* (the ``spread_quantile`` of its members' distances); the logs that fit
nowhere are clustered among themselves (at the previous version's threshold) into new clusters with
new ids. Existing ids stay, so the modules of a cluster whose logs did not change are reused as they
are (same data, same module id), and only changed clusters cost training. ``drift``
(:attr:`Clustering.drift`) says when to rebuild with ``recluster`` before that.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from .backends.base import Embedder
from .config import opt
from .errors import ConfigError, InputError, NotFoundError
from .records import Clustering
from .store import Workspace
from .ward import MAX_MICRO_CLUSTERS, Hierarchy, build_hierarchy, order_by_size


@dataclass
class ClusterConfig:
    """Settings of the cluster stage."""

    threshold: float | None = opt(None, "Ward merge distance at which the hierarchy is cut (paper: 4 on "
                                        "Qwen3-Embedding-0.6B). It is a distance between unit vectors grown by "
                                        "cluster size (two points: their Euclidean distance, at most 2; clusters "
                                        "of sizes a and b: sqrt(2ab/(a+b)) times the distance of their centroids), "
                                        "so a good value depends on the embedder and the data. None (default): "
                                        "chosen from the data (see `auto_threshold`) and recorded with the run.")
    auto_min_size: int = opt(5, "Automatic threshold: only cuts whose median cluster has at least this many "
                                "logs are considered. 5: the fewest held-out logs on which a guide that wins "
                                "every one is a significant win (sign test, 1/32 < 0.05), and enough for an "
                                "expert's 2 validation items (train.min_val_logs) with 3 to train. "
                                "(8, and then 6, merged datasets whose users wanted different things.)")
    exact_max: int = opt(10_000, "Largest number of logs clustered by exact Ward; above it, the "
                                 "two-stage method (MiniBatchKMeans, then weighted Ward) is used.")
    micro_clusters: int = opt(2_000, "Micro-clusters of the two-stage method's first stage.")
    seed: int = opt(42, "Random seed of the two-stage method.")
    unseen_distance: float | None = opt(None, "Routing: a query whose cosine distance to the nearest "
                                              "centroid exceeds this is 'unseen' (no cluster); None "
                                              "routes every query to its nearest cluster.")
    recluster: bool = opt(False, "Rebuild the clustering from all logs. False (default): add new logs to the "
                                 "existing clusters whose spread they fall within, cluster the rest among "
                                 "themselves, and keep cluster ids (a new embedder or threshold rebuilds).")
    rebuild_growth: float | None = opt(1.0, "Rebuild (as with recluster) once the logs added since the last "
                                            "rebuild reach this share of the logs that rebuild clustered: a "
                                            "clustering of few logs is provisional (8 logs and auto_min_size 5 "
                                            "allow one cluster only, whose wide spread then takes in every later "
                                            "log). 1.0: whenever the logs have doubled. None: only on recluster "
                                            "or new settings.")
    spread_quantile: float = opt(0.9, "A cluster's spread: this quantile of its members' cosine distances to "
                                      "its centroid (query embeddings); a new log within it joins the cluster. "
                                      "Clusters of fewer than 3 logs take the median spread of the others.")

    def __post_init__(self) -> None:
        if self.threshold is not None and not self.threshold > 0:
            raise ConfigError("cluster.threshold must be > 0")
        if self.auto_min_size < 1:
            raise ConfigError("cluster.auto_min_size must be ≥ 1")
        if self.exact_max < 0:
            raise ConfigError("cluster.exact_max must be >= 0")
        if not 2 <= self.micro_clusters <= MAX_MICRO_CLUSTERS:
            raise ConfigError(f"cluster.micro_clusters must be between 2 and {MAX_MICRO_CLUSTERS}")
        if self.unseen_distance is not None and not 0 <= self.unseen_distance <= 2:
            raise ConfigError("cluster.unseen_distance must be between 0 and 2 (a cosine distance)")
        if self.rebuild_growth is not None and not self.rebuild_growth > 0:
            raise ConfigError("cluster.rebuild_growth must be > 0 (or null)")
        if not 0 < self.spread_quantile <= 1:
            raise ConfigError("cluster.spread_quantile must be in (0, 1]")


@dataclass
class ClusterResult:
    """What one clustering run produced."""

    n_logs: int
    n_clusters: int
    sizes: list[int]
    method: str  # "exact" or "two-stage"
    seconds: float
    threshold: float = 0.0  # where the hierarchy was cut
    threshold_from: str = "config"  # "config", or how the automatic choice was made
    mode: str = "full"  # "full", "incremental", or "unchanged" (no new logs: nothing stored)
    added: int = 0  # logs added by this run (incremental)
    unfit: int = 0  # of those, the ones that fitted no existing cluster
    changed: list[int] = dataclasses.field(default_factory=list)  # clusters made or changed by this run
    drift: float = 0.0  # see Clustering.drift


# -- inputs and the dual embedding ---------------------------------------------------------------


@dataclass
class Inputs:
    """The logs with usable feedback: ids, queries and feedback rules as one text each."""

    log_ids: list[str]
    queries: list[str]
    rules: list[str]


def _rule_text(rule: Any) -> str:
    """A rule as text: strings as they are, structured rules as compact JSON."""
    return rule.strip() if isinstance(rule, str) else json.dumps(rule, ensure_ascii=False, sort_keys=True)


def load_inputs(ws: Workspace) -> Inputs:
    """The logs with distilled feedback rules (``rules`` rows of kind 'feedback'), empty lists included.

    As in the reference, a log whose user reacted but whose feedback gave no rules is clustered too:
    it joins the cluster of its topic (:func:`_attach_silent`, by its query alone) and gives that
    cluster's expert a no-change pair (see :func:`unolearn.training_data.expert_rows`).
    """
    out = Inputs([], [], [])
    for log_id, record, rules_json in ws.feedback_rule_rows():
        rules = json.loads(rules_json)
        texts = [t for t in map(_rule_text, rules if isinstance(rules, list) else []) if t]
        out.log_ids.append(log_id)
        out.queries.append(json.loads(record)["query"])
        out.rules.append("\n".join(texts))
    return out


def normalise(x: np.ndarray) -> np.ndarray:
    """Rows of ``x`` scaled to unit L2 norm (zero rows stay zero), as float32."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms == 0, 1.0, norms)


def dual_embedding(query_vecs: np.ndarray, rule_vecs: np.ndarray) -> np.ndarray:
    """Normalise query and rule vectors, concatenate them, normalise again: ``(n, dq + dr)``."""
    return normalise(np.hstack([normalise(query_vecs), normalise(rule_vecs)]))


def _embed(embedder: Embedder, inputs: Inputs) -> tuple[np.ndarray, np.ndarray]:
    """The query embeddings and the dual embeddings of ``inputs``."""
    q = normalise(embedder.embed(inputs.queries))
    return q, dual_embedding(q, embedder.embed(inputs.rules))


AUTO_MAX_CANDIDATES = 40  # cluster counts tried by the automatic threshold
SILHOUETTE_SAMPLE = 2_000  # points the silhouette is computed on


def auto_threshold(x: np.ndarray, h: Hierarchy, min_size: int, seed: int = 42) -> tuple[float, str]:
    """A cut of ``h`` chosen from the data: the best silhouette over cuts into k ≥ 2 clusters whose median
    cluster holds at least ``min_size`` points; one cluster when no such cut exists.

    Why: Ward's merge distances scale with the embedder (the paper's 4.0 fits Qwen3-Embedding-0.6B and
    merges nearly everything under e5-small), while the silhouette — how much closer each point is to its
    own cluster than to the next one — is comparable across embedders. The size floor keeps the cut from
    splitting the logs into clusters too small to train an expert on. Returns (threshold, how it was chosen).
    """
    from sklearn.metrics import silhouette_score

    heights = np.sort(h.z[:, 2]) if len(h.z) else np.zeros(0)
    top = float(heights[-1]) if len(heights) else 0.0
    leaves = len(heights) + 1
    if len(x) < 2 * min_size:  # two clusters' median is their mean size
        return top + 1.0, f"auto: one cluster ({len(x)} logs < 2 × auto_min_size {min_size})"
    # A median of ≥ min_size needs the larger half of the k clusters to hold ≥ min_size each.
    ks = [k for k in range(2, leaves + 1) if math.ceil(k / 2) * min_size <= len(x)]
    if len(ks) > AUTO_MAX_CANDIDATES:
        ks = sorted({int(round(k)) for k in np.geomspace(ks[0], ks[-1], AUTO_MAX_CANDIDATES)})
    sample = min(len(x), SILHOUETTE_SAMPLE)
    best: tuple[float, int, float] | None = None
    for k in ks:
        t = float((heights[leaves - k - 1] + heights[leaves - k]) / 2)  # between the merges that leave k leaves
        labels = h.cut(t)
        n = np.bincount(labels)
        if len(n) < 2 or np.median(n) < min_size:
            continue
        score = float(silhouette_score(x, labels, sample_size=sample, random_state=seed))
        if best is None or score > best[0]:
            best = (score, len(n), t)
    if best is None:
        return top + 1.0, f"auto: one cluster (no cut with a median cluster of ≥ {min_size} logs)"
    return best[2], f"auto: best silhouette {best[0]:.3f} at {best[1]} clusters"


def cluster_vectors(x: np.ndarray, cfg: ClusterConfig) -> tuple[np.ndarray, str, float, str]:
    """Labels (0..k-1, largest first) of the rows of ``x``, the method, the threshold and where it came from."""
    h = build_hierarchy(x, cfg)
    if cfg.threshold is None:
        threshold, source = auto_threshold(x, h, cfg.auto_min_size, cfg.seed)
    else:
        threshold, source = cfg.threshold, "config"
    return h.cut(threshold), h.method, threshold, source


# -- the stage -----------------------------------------------------------------------------------


def _require_inputs(ws: Workspace) -> Inputs:
    inputs = load_inputs(ws)
    if not any(inputs.rules):
        raise InputError("no logs with usable feedback to cluster: distill rules from logs with "
                         "feedback first (rules of kind 'feedback' must be non-empty)")
    return inputs


def run(ws: Workspace, embedder: Embedder, cfg: ClusterConfig | None = None,
        fingerprint: str | None = None) -> ClusterResult:
    """Cluster the logs with usable feedback and store the clusters as a new clustering version,
    replacing the previous clusters, gaps and plans; ``fingerprint`` keys the inputs (see
    :func:`unolearn.pipeline.cluster_fingerprint`). Incremental when a compatible clustering exists
    and ``cfg.recluster`` is off (see the module docstring)."""
    cfg = cfg or ClusterConfig()
    run_id = ws.start_run("cluster", {**dataclasses.asdict(cfg), "embedder": embedder.model_id})
    try:
        start = time.perf_counter()
        inputs = _require_inputs(ws)
        previous = ws.clustering()
        members = ws.member_map() if _can_extend(ws, previous, embedder, cfg) else None
        if members is not None and previous is not None and not _outgrown(members, previous, inputs, cfg):
            result = _extend(ws, embedder, cfg, inputs, previous, members, fingerprint)
        else:
            result = _rebuild(ws, embedder, cfg, inputs, fingerprint)
        result.seconds = round(time.perf_counter() - start, 3)
    except BaseException as e:
        ws.finish_run(run_id, "failed", {"error": f"{type(e).__name__}: {e}"})
        raise
    ws.finish_run(run_id, "ok", dataclasses.asdict(result))
    return result


def cut_settings(cfg: ClusterConfig) -> str:
    """The settings that decide how the logs are cut, as stored with a clustering version (JSON)."""
    keep = ("threshold", "auto_min_size", "exact_max", "micro_clusters", "seed")
    return json.dumps({k: getattr(cfg, k) for k in keep}, sort_keys=True)


def _can_extend(ws: Workspace, previous: Clustering | None, embedder: Embedder, cfg: ClusterConfig) -> bool:
    """Whether new logs can join the stored clustering: same embedder and cut settings (else a rebuild)."""
    return (not cfg.recluster and previous is not None and previous.embedder == embedder.model_id
            and previous.settings == cut_settings(cfg) and bool(ws.cluster_ids()))


def _outgrown(members: dict[str, int], previous: Clustering, inputs: Inputs, cfg: ClusterConfig) -> bool:
    """Whether the logs added since the last rebuild, this run's new ones included, reach
    ``cfg.rebuild_growth`` times the logs that rebuild clustered (``members``: log id → cluster now)."""
    if cfg.rebuild_growth is None:
        return False
    new = sum(log_id not in members for log_id in inputs.log_ids)
    return previous.added + new >= cfg.rebuild_growth * max(len(members) - previous.added, 1)


def _rebuild(ws: Workspace, embedder: Embedder, cfg: ClusterConfig, inputs: Inputs,
             fingerprint: str | None) -> ClusterResult:
    """Cluster all logs from scratch (ids 0..k-1, largest first)."""
    queries, dual = _embed(embedder, inputs)
    ruled = np.array([bool(r) for r in inputs.rules])
    labels = np.full(len(ruled), -1, dtype=np.int64)
    labels[ruled], method, threshold, source = cluster_vectors(dual[ruled], cfg)
    _attach_silent(labels, np.flatnonzero(~ruled).tolist(), queries)
    labels = order_by_size(labels)
    version = Clustering(id=0, embedder=embedder.model_id, threshold=threshold, unseen_distance=cfg.unseen_distance,
                         fingerprint=fingerprint, created_at="", settings=cut_settings(cfg))
    sizes = np.bincount(labels).tolist()
    centroids = {cid: _centroid(queries[labels == cid]) for cid in range(len(sizes))}
    radii = _radii(queries, labels, centroids, cfg.spread_quantile)
    ws.replace_clustering(version, [(cid, sizes[cid], centroids[cid].tobytes()) for cid in centroids],
                          _member_rows(inputs.log_ids, labels), [(cid, radii[cid], [], True) for cid in centroids])
    return ClusterResult(len(labels), len(sizes), sizes, method, 0.0, round(threshold, 4), source,
                         changed=list(range(len(sizes))))


def _extend(ws: Workspace, embedder: Embedder, cfg: ClusterConfig, inputs: Inputs, previous: Clustering,
            members: dict[str, int], fingerprint: str | None) -> ClusterResult:
    """Add the logs not clustered yet (not in ``members``) to the stored clustering, keeping its cluster ids."""
    history = {c: changes for c, (_, changes) in ws.cluster_spread().items()}
    rows = ws.cluster_rows()
    new = [i for i, log_id in enumerate(inputs.log_ids) if log_id not in members]
    gone = {members[log_id] for log_id in set(members) - set(inputs.log_ids)}
    if not new and not gone and cfg.unseen_distance == previous.unseen_distance:
        return ClusterResult(len(inputs.log_ids), len(rows), [r[1] for r in rows], "incremental", 0.0,
                             previous.threshold or 0.0, "the previous version's", mode="unchanged",
                             drift=round(previous.drift, 4))
    queries, dual = _embed(embedder, inputs)
    labels = np.array([members.get(log_id, -1) for log_id in inputs.log_ids], dtype=np.int64)
    ids = np.array([r[0] for r in rows], dtype=np.int64)
    centroids = {int(r[0]): np.frombuffer(r[2], dtype=np.float32) for r in rows}
    spread = _radii(queries, labels, centroids, cfg.spread_quantile)  # of the members as they are now
    ruled = [i for i in new if inputs.rules[i]]
    _assign(labels, ruled, queries, ids, np.stack([centroids[int(i)] for i in ids]), [spread[int(i)] for i in ids])
    unfit = [i for i in ruled if labels[i] < 0]
    if unfit:
        sub_cfg = dataclasses.replace(cfg, threshold=previous.threshold)
        sub = cluster_vectors(dual[unfit], sub_cfg)[0] if len(unfit) > 1 else np.zeros(1, dtype=np.int64)
        labels[unfit] = sub + int(ids.max()) + 1
    _attach_silent(labels, [i for i in new if not inputs.rules[i]], queries)
    changed = sorted({int(labels[i]) for i in new} | gone)
    alive = sorted(set(labels.tolist()))
    for cid in changed:
        if cid in alive:
            centroids[cid] = _centroid(queries[labels == cid])
    radii = _radii(queries, labels, {c: centroids[c] for c in alive}, cfg.spread_quantile)
    version = Clustering(id=0, embedder=embedder.model_id, threshold=previous.threshold,
                         unseen_distance=cfg.unseen_distance, fingerprint=fingerprint, created_at="",
                         mode="incremental", added=previous.added + len(new), unfit=previous.unfit + len(unfit),
                         settings=previous.settings)
    sizes = {c: int((labels == c).sum()) for c in alive}
    ws.replace_clustering(version, [(c, sizes[c], centroids[c].tobytes()) for c in alive],
                          _member_rows(inputs.log_ids, labels),
                          [(c, radii[c], history.get(c, []), c in changed) for c in alive])
    return ClusterResult(len(labels), len(alive), [sizes[c] for c in alive], "incremental", 0.0,
                         previous.threshold or 0.0, "the previous version's", mode="incremental", added=len(new),
                         unfit=len(unfit), changed=[c for c in changed if c in alive], drift=round(version.drift, 4))


def _assign(labels: np.ndarray, new: list[int], queries: np.ndarray, ids: np.ndarray, centroids: np.ndarray,
            radii: list[float]) -> None:
    """Give each new log (index in ``new``) the id of its nearest cluster when within that cluster's spread."""
    if not new:
        return
    sims = queries[new] @ centroids.T
    best = np.argmax(sims, axis=1)
    for i, b, sim in zip(new, best, sims[np.arange(len(new)), best]):
        if 1.0 - float(sim) <= radii[b]:
            labels[i] = int(ids[b])


def _attach_silent(labels: np.ndarray, silent: list[int], queries: np.ndarray) -> None:
    """Give each log whose feedback gave no rules (index in ``silent``) the cluster with the nearest query centroid.

    Such logs are not clustered on their own: their empty rule texts embed alike, so the dual
    embedding would gather them, across topics, into clusters with no pair to train on (measured at
    the medium size: one cluster of 7 such logs from 2 datasets, answered by the base model). In their
    topic's cluster they add a no-change row, as in the reference (:func:`unolearn.training_data.expert_rows`).
    """
    if not silent:
        return
    ids = np.array(sorted({int(c) for c in labels if c >= 0}), dtype=np.int64)
    centroids = np.stack([_centroid(queries[labels == c]) for c in ids])
    labels[silent] = ids[np.argmax(queries[silent] @ centroids.T, axis=1)]


def _radii(queries: np.ndarray, labels: np.ndarray, centroids: dict[int, np.ndarray], q: float) -> dict[int, float]:
    """Each cluster's spread: the ``q`` quantile of its members' cosine distances to the centroid of the *other*
    members (a member pulls the centroid towards itself, so its distance to the whole cluster's centroid
    understates how far a new log of the topic lies); clusters of fewer than 3 members take the median
    spread of the others (0 when there are none)."""
    out, small = {}, []
    for cid in centroids:
        vecs = queries[labels == cid]
        if len(vecs) < 3:
            small.append(cid)
            continue
        others = normalise(vecs.sum(axis=0, keepdims=True) - vecs)
        out[cid] = float(np.quantile(1.0 - np.einsum("ij,ij->i", vecs, others), q))
    fallback = float(np.median(list(out.values()))) if out else 0.0
    out.update({cid: fallback for cid in small})
    return out


def _centroid(vecs: np.ndarray) -> np.ndarray:
    """The L2-normalised mean of ``vecs`` as float32."""
    return normalise(vecs.mean(axis=0, keepdims=True))[0]


def _member_rows(log_ids: list[str], labels: np.ndarray) -> Iterator[tuple[str, int]]:
    return ((log_id, int(label)) for log_id, label in zip(log_ids, labels))


def sweep(ws: Workspace, embedder: Embedder, thresholds: Sequence[float],
          cfg: ClusterConfig | None = None) -> list[dict[str, Any]]:
    """Cluster counts and sizes at each threshold, all cut from one hierarchy of the logs whose feedback gave
    rules (the others join the clusters afterwards, see :func:`_attach_silent`; nothing is stored)."""
    cfg = cfg or ClusterConfig()
    if not thresholds or any(not t > 0 for t in thresholds):
        raise ConfigError("sweep needs one or more thresholds > 0")
    from sklearn.metrics import silhouette_score

    inputs = _require_inputs(ws)
    dual = _embed(embedder, inputs)[1][[bool(r) for r in inputs.rules]]
    h = build_hierarchy(dual, cfg)
    out = []
    for t in thresholds:
        labels = h.cut(t)
        sizes = np.bincount(labels).tolist()
        sil = (float(silhouette_score(dual, labels, sample_size=min(len(dual), SILHOUETTE_SAMPLE),
                                      random_state=cfg.seed)) if 2 <= len(sizes) < len(dual) else None)
        out.append({"threshold": t, "n_clusters": len(sizes), "sizes": sizes, "silhouette": sil,
                    "method": h.method})
    auto, source = auto_threshold(dual, h, cfg.auto_min_size, cfg.seed)
    sizes = np.bincount(h.cut(auto)).tolist()
    out.append({"threshold": round(auto, 4), "n_clusters": len(sizes), "sizes": sizes, "silhouette": None,
                "method": h.method, "auto": source})
    return out


# -- routing -------------------------------------------------------------------------------------


def stored_unseen_distance(ws: Workspace) -> float | None:
    """``unseen_distance`` of the current clustering (None when there is none or it was unset)."""
    version = ws.clustering()
    return version.unseen_distance if version else None


class Router:
    """Routes a new query to the cluster with the nearest centroid (cosine on query embeddings)."""

    def __init__(self, ws: Workspace, embedder: Embedder, ids: np.ndarray, centroids: np.ndarray,
                 sizes: np.ndarray, unseen_distance: float | None = None) -> None:
        self.ws, self.embedder = ws, embedder
        self.ids, self.centroids, self.sizes = ids, centroids, sizes
        self.unseen_distance = unseen_distance

    @classmethod
    def load(cls, ws: Workspace, embedder: Embedder, unseen_distance: float | None | Literal["stored"] = "stored"
             ) -> Router:
        """Read the stored clusters; raise NotFoundError when there are none.

        ``unseen_distance`` defaults to the one the clusters were made with (the last successful
        ``cluster`` run's configuration), so ``answer``, the proxy and the benchmark route alike.
        """
        if unseen_distance == "stored":
            unseen_distance = stored_unseen_distance(ws)
        rows = ws.cluster_rows()
        if not rows:
            raise NotFoundError("no clusters in this workspace: run `unolearn cluster` first")
        return cls.from_rows(ws, embedder, rows, unseen_distance, "the clusters were built")

    @classmethod
    def from_rows(cls, ws: Workspace, embedder: Embedder, rows: Sequence[tuple[int, int, bytes, str]],
                  unseen_distance: float | None, built: str) -> Router:
        """A router on ``(id, size, centroid, embedder)`` rows; a ConfigError ("``built`` with embedder X, not
        Y") when they belong to another embedder than ``embedder``."""
        models = {r[3] for r in rows}
        if models != {embedder.model_id}:
            raise ConfigError(f"{built} with embedder {', '.join(sorted(models))}, "
                              f"not {embedder.model_id}: re-run `unolearn cluster` or use that embedder")
        ids = np.array([r[0] for r in rows], dtype=np.int64)
        sizes = np.array([r[1] for r in rows], dtype=np.int64)
        centroids = np.stack([np.frombuffer(r[2], dtype=np.float32) for r in rows]).copy()
        return cls(ws, embedder, ids, centroids, sizes, unseen_distance)

    def route(self, query: str) -> tuple[int | None, float]:
        """The nearest cluster's id (None when unseen) and the query's cosine distance to it."""
        return self.route_many([query])[0]

    def locate(self, query: str) -> tuple[int | None, float, np.ndarray]:
        """:meth:`route`, with the query's unit vector (the guide path chooses its rules by it)."""
        vec = normalise(self.embedder.embed([query]))
        return (*self._routes(vec)[0], vec[0])

    def route_many(self, queries: Sequence[str]) -> list[tuple[int | None, float]]:
        """:meth:`route` for many queries, embedded in one call."""
        if not queries:
            return []
        return self._routes(normalise(self.embedder.embed(list(queries))))

    def _routes(self, vecs: np.ndarray) -> list[tuple[int | None, float]]:
        best, dist = self._nearest(vecs)
        limit = self.unseen_distance
        return [(None if limit is not None and d > limit else int(self.ids[b]), float(d))
                for b, d in zip(best, dist)]

    def _nearest(self, vecs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        sims = vecs @ self.centroids.T
        best = np.argmax(sims, axis=1)
        return best, 1.0 - sims[np.arange(len(vecs)), best]

    def add(self, log_id: str, query: str) -> tuple[int, float]:
        """Assign a stored log to its nearest cluster and move that centroid (running mean, re-normalised).

        Returns the cluster id and the query's cosine distance to the centroid before the update. A log
        already in a cluster keeps it and changes nothing. Size and centroid are read and written in
        one transaction, so concurrent adds are not lost.
        """
        vec = normalise(self.embedder.embed([query]))
        best, dist = self._nearest(vec)
        i, cid = int(best[0]), int(self.ids[best[0]])
        moved: dict[str, Any] = {}

        def move(size: int, centroid: bytes) -> tuple[int, bytes]:
            moved["size"] = size + 1
            moved["centroid"] = running_mean(np.frombuffer(centroid, dtype=np.float32), size, vec[0])
            return moved["size"], moved["centroid"].tobytes()

        member = self.ws.add_member(log_id, cid, move)
        if member is not None:
            return member, self._distance_to(member, vec[0])
        self.centroids[i], self.sizes[i] = moved["centroid"], moved["size"]
        return cid, float(dist[0])

    def _distance_to(self, cid: int, vec: np.ndarray) -> float:
        found = np.flatnonzero(self.ids == cid)
        return float(1.0 - vec @ self.centroids[found[0]]) if len(found) else float("nan")


def running_mean(centroid: np.ndarray, size: int, vec: np.ndarray) -> np.ndarray:
    """The unit centroid of ``size`` members after adding ``vec`` (the stored centroid stands in for
    the members' mean, whose norm is not kept), as float32."""
    return normalise(((centroid * size + vec) / (size + 1))[None, :])[0]
