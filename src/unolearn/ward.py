"""Ward hierarchies for the cluster stage: exact Ward up to ``exact_max`` points, and above it MiniBatchKMeans
micro-clusters joined by a weighted Ward that starts from them as already-formed clusters (so its merge heights are
those exact Ward would give once it had formed them). Why two methods: :mod:`unolearn.cluster`."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Protocol

import numpy as np

MAX_MICRO_CLUSTERS = 20_000  # the weighted Ward keeps an m × m float64 matrix (3.2 GB at 20,000)
KMEANS_BATCH = 4_096
KMEANS_SAMPLES = 100_000  # points MiniBatchKMeans sees in all (whole passes, at least one) ...
KMEANS_MAX_PASSES = 20  # ... but no more passes than this over small inputs


class WardSettings(Protocol):
    """What building a hierarchy reads of the cluster stage's settings."""

    exact_max: int
    micro_clusters: int
    seed: int


def ward_distances(x: np.ndarray) -> np.ndarray:
    """Condensed Euclidean distances (float64) of the rows of ``x``, computed block by block."""
    x = np.asarray(x, dtype=np.float64)
    n = len(x)
    sq = np.einsum("ij,ij->i", x, x)
    out = np.empty(n * (n - 1) // 2)
    pos = 0
    for start in range(0, n - 1, 512):
        stop = min(start + 512, n - 1)
        block = sq[start:stop, None] + sq[None, :] - 2.0 * (x[start:stop] @ x.T)
        np.sqrt(np.maximum(block, 0.0, out=block), out=block)
        for i in range(start, stop):
            out[pos:pos + n - i - 1] = block[i - start, i + 1:]
            pos += n - i - 1
    return out


def weighted_ward(centroids: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Ward linkage of ``centroids`` treated as clusters of ``weights`` points each.

    Returns a scipy-format linkage matrix (rows ``[a, b, height, leaves]``, sorted by height, new
    clusters numbered from ``m``). Heights follow scipy's ward convention: clusters of sizes a and b
    with centroids ca and cb are ``sqrt(2ab/(a+b)) * |ca - cb|`` apart, so with unit weights this is
    ``scipy.cluster.hierarchy.linkage(centroids, "ward")``. The fourth column counts leaves (as
    scipy's validity checks require), not weights. Nearest-neighbour chain with Lance–Williams
    updates on squared distances: O(m²) memory, about O(m²) time.
    """
    c = np.asarray(centroids, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64).copy()
    m = len(c)
    if m < 2 or len(w) != m or not np.all(w > 0) or not np.isfinite(c).all():
        raise ValueError("weighted_ward needs at least two finite centroids, each with a weight > 0")
    d2 = _initial_ward_sq(c, w)
    merges = _nn_chain(d2, w)
    order = np.argsort(merges[:, 2], kind="mergesort")
    return _relabel(merges[order], m)


def _initial_ward_sq(c: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Squared Ward distances ``2ab/(a+b) |ca - cb|²`` of every pair; ``inf`` on the diagonal."""
    sq = np.einsum("ij,ij->i", c, c)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2.0 * (c @ c.T), 0.0)
    d2 *= 2.0 * np.outer(w, w) / (w[:, None] + w[None, :])
    np.fill_diagonal(d2, np.inf)
    return d2


def _nn_chain(d2: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Merge mutual nearest neighbours until one cluster is left (``d2`` and ``w`` are consumed).

    Rows ``[x, y, height, leaves]`` in merge order, where x < y are the slots merged; the merged
    cluster lives on in slot y. Ties prefer the previous chain element, as scipy does.
    """
    m = len(w)
    leaves = np.ones(m)
    active = np.ones(m, dtype=bool)
    merges = np.empty((m - 1, 4))
    chain: list[int] = []
    for k in range(m - 1):
        if not chain:
            chain.append(int(np.argmax(active)))
        while True:
            x = chain[-1]
            y = int(np.argmin(d2[x]))
            if len(chain) > 1 and d2[x, chain[-2]] <= d2[x, y]:
                y = chain[-2]
                break
            chain.append(y)
        del chain[-2:]
        x, y = min(x, y), max(x, y)
        merges[k] = (x, y, np.sqrt(d2[x, y]), leaves[x] + leaves[y])
        _merge_into(d2, w, active, x, y)
        leaves[y] += leaves[x]
    return merges


def _merge_into(d2: np.ndarray, w: np.ndarray, active: np.ndarray, x: int, y: int) -> None:
    """Lance–Williams Ward update: slot y becomes x ∪ y; slot x is retired."""
    wx, wy, dxy = w[x], w[y], d2[x, y]
    active[x] = False
    new = ((wx + w) * d2[x] + (wy + w) * d2[y] - w * dxy) / (wx + wy + w)
    new[~active] = np.inf
    new[y] = np.inf
    d2[y, :] = new
    d2[:, y] = new
    d2[x, :] = np.inf
    d2[:, x] = np.inf
    w[y] = wx + wy


def _relabel(merges: np.ndarray, m: int) -> np.ndarray:
    """Replace merged slots by scipy cluster ids (leaves 0..m-1, the i-th merge m+i)."""
    parent = np.arange(2 * m - 1)

    def find(i: int) -> int:
        root = i
        while parent[root] != root:
            root = parent[root]
        while parent[i] != root:
            parent[i], i = root, parent[i]
        return root

    z = merges.copy()
    for i, (x, y) in enumerate(merges[:, :2].astype(int)):
        a, b = sorted((find(x), find(y)))
        z[i, 0], z[i, 1] = a, b
        parent[a] = parent[b] = m + i
    return z


@dataclass
class Hierarchy:
    """A Ward linkage over leaves, and the leaf of each point (points = leaves for exact Ward)."""

    z: np.ndarray
    leaf_of_point: np.ndarray
    method: str

    def cut(self, threshold: float) -> np.ndarray:
        """Cluster labels of the points at ``threshold``: 0..k-1, largest cluster first."""
        if len(self.z) == 0:
            leaf_labels = np.zeros(1, dtype=np.int64)
        else:
            from scipy.cluster.hierarchy import fcluster  # scipy on use: serving routes without it

            leaf_labels = fcluster(self.z, threshold, criterion="distance")
        return order_by_size(leaf_labels[self.leaf_of_point])


def order_by_size(labels: np.ndarray) -> np.ndarray:
    """Relabel clusters 0..k-1 by size, largest first (ties: the cluster seen first)."""
    uniq, first, counts = np.unique(labels, return_index=True, return_counts=True)
    rank = np.lexsort((first, -counts))
    new_id = np.empty(len(uniq), dtype=np.int64)
    new_id[rank] = np.arange(len(uniq))
    return new_id[np.searchsorted(uniq, labels)]


def build_hierarchy(x: np.ndarray, cfg: WardSettings) -> Hierarchy:
    """Exact Ward up to ``cfg.exact_max`` points, the two-stage method above it."""
    n = len(x)
    if n < 2:
        return Hierarchy(np.zeros((0, 4)), np.zeros(n, dtype=np.int64), "exact")
    if n <= cfg.exact_max:
        from scipy.cluster.hierarchy import linkage

        return Hierarchy(linkage(ward_distances(x), "ward"), np.arange(n), "exact")
    return _two_stage(x, cfg)


def _two_stage(x: np.ndarray, cfg: WardSettings) -> Hierarchy:
    """MiniBatchKMeans into micro-clusters, then Ward on their centroids weighted by size."""
    micro = micro_cluster_labels(x, cfg.micro_clusters, cfg.seed)
    centroids, counts, leaf_of_point = micro_centroids(x, micro)
    if len(counts) < 2:
        return Hierarchy(np.zeros((0, 4)), leaf_of_point, "two-stage")
    return Hierarchy(weighted_ward(centroids, counts), leaf_of_point, "two-stage")


def micro_cluster_labels(x: np.ndarray, k: int, seed: int) -> np.ndarray:
    """MiniBatchKMeans labels of the rows of ``x`` into at most ``k`` groups.

    Random initial centres and about ``KMEANS_SAMPLES`` points seen in all (one pass at 100k
    points, up to ``KMEANS_MAX_PASSES`` over fewer): micro-clusters only need to be small and tight,
    not optimal, and k-means++ or many passes over large inputs would cost more than the rest of the
    stage (at 100k × 1,536 the pass and the final assignment are most of its time).
    """
    from sklearn.cluster import MiniBatchKMeans
    from sklearn.exceptions import ConvergenceWarning

    n = len(x)
    passes = min(KMEANS_MAX_PASSES, max(1, round(KMEANS_SAMPLES / n)))
    km = MiniBatchKMeans(n_clusters=min(k, n), init="random", n_init=1, random_state=seed,
                         batch_size=min(KMEANS_BATCH, n), max_iter=passes, compute_labels=False)
    with warnings.catch_warnings():  # duplicate points: fewer distinct centres; empty ones are dropped
        warnings.simplefilter("ignore", ConvergenceWarning)
        return km.fit(x).predict(x)


def micro_centroids(x: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Means (float64) and sizes of the non-empty groups of ``labels``, and each point's group renumbered."""
    k = int(labels.max()) + 1
    from scipy import sparse

    onehot = sparse.csr_matrix((np.ones(len(x), dtype=x.dtype), (labels, np.arange(len(x)))),
                               shape=(k, len(x)))
    counts = np.bincount(labels, minlength=k)
    sums = np.asarray(onehot @ x, dtype=np.float64)
    keep = counts > 0
    new_id = np.cumsum(keep) - 1
    return sums[keep] / counts[keep, None], counts[keep].astype(np.float64), new_id[labels]
