"""Benchmark of the cluster stage's two-stage Ward on synthetic unit vectors.

Why synthetic blobs: the targets (100k logs in < 60 s and < 4 GB on 2 cores; agreement with exact
Ward, ARI ≥ 0.8) concern the clustering, not an embedder. The data are Gaussian blobs of varying
size and spread on the unit sphere; blob centres come in families (several blobs around one
direction), so some blobs are near each other and the cut is not trivial.

The clustering runs in a spawned child process, so its peak resident memory is not inflated by what
the parent imported or allocated. Agreement is measured on a random 5,000-point subset, clustered
exactly and by the two-stage method at the same threshold, with ``SUBSET_MICRO`` micro-clusters of
10 points: keeping the full run's 50 points per micro-cluster would leave fewer micro-clusters (100)
than the subset has exact clusters (~260), while the full run has ~7 micro-clusters per cluster; at 10
points the subset has ~2 per cluster, a harder test than the full run faces.
"""

from __future__ import annotations

import multiprocessing
import resource
import sys
import time
from typing import Any

import numpy as np

from ..cluster import ClusterConfig, cluster_vectors
from ..errors import ConfigError, UnolearnError

THRESHOLD = 2.0  # above within-blob merge heights, below most between-blob ones, at 5k and at 100k points
SUBSET = 5_000
SUBSET_MICRO = 500


def synthetic_vectors(n: int, dim: int, seed: int = 0, blobs: int = 300) -> tuple[np.ndarray, np.ndarray]:
    """``n`` unit vectors (float32) in ``blobs`` Gaussian blobs of varying size, and their blob ids."""
    rng = np.random.default_rng(seed)
    families = rng.normal(size=(max(1, blobs // 5), dim))
    family = rng.integers(0, len(families), blobs)
    centres = _unit(_unit(families[family]) + 0.9 * _unit(rng.normal(size=(blobs, dim))))
    share = rng.lognormal(0.0, 0.8, blobs)
    truth = rng.choice(blobs, size=n, p=share / share.sum())
    spread = rng.uniform(0.35, 0.6, blobs).astype(np.float32)  # norm of a point's offset
    x = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, 10_000):
        t = truth[start:start + 10_000]
        noise = rng.standard_normal((len(t), dim), dtype=np.float32) * (spread[t, None] / np.sqrt(dim))
        x[start:start + len(t)] = _unit(centres[t].astype(np.float32) + noise)
    return x, truth


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def bench_cluster(n: int = 100_000, dim: int = 768, seed: int = 0) -> dict[str, Any]:
    """Two-stage clustering of ``n`` synthetic ``dim``-d unit vectors in a child process.

    Returns ``n``, wall ``seconds`` of the clustering, the child's ``peak_mb`` resident memory, the
    number of clusters, the ``threshold`` used, and ``ari``: adjusted Rand index of the two-stage
    vs exact Ward labels on a random subset of min(n, 5,000) points. Extra keys: ``ari_blobs`` (the
    full run vs the generating blobs), the micro-cluster counts and the subset's exact cluster count.
    """
    if n < 10 or dim < 2:
        raise ConfigError("bench cluster needs n >= 10 and dim >= 2")
    ctx = multiprocessing.get_context("spawn")
    receiver, sender = ctx.Pipe(duplex=False)
    child = ctx.Process(target=_child_main, args=(sender, n, dim, seed), daemon=True)
    child.start()
    sender.close()
    try:
        status, payload = receiver.recv()
    except EOFError:
        status, payload = "error", "the benchmark process died without an answer"
    finally:
        child.join()
    if status != "ok":
        raise UnolearnError(f"bench cluster failed (exit code {child.exitcode}): {payload}")
    return {"n": n, **payload}


def _child_main(sender: Any, n: int, dim: int, seed: int) -> None:
    """Entry point of the spawned process: send ``("ok", figures)`` or ``("error", message)``."""
    try:
        sender.send(("ok", _child(n, dim, seed)))
    except Exception as e:  # noqa: BLE001 — any failure is reported by the parent as a one-line error
        sender.send(("error", f"{type(e).__name__}: {e}"))
    finally:
        sender.close()


def _child(n: int, dim: int, seed: int) -> dict[str, Any]:
    """In a fresh process: the timed full run (peak memory read right after it), then agreement."""
    x, truth = synthetic_vectors(n, dim, seed)
    out = _full_run(x, truth, seed)
    return {**out, **_agreement(x, seed)}


def _full_run(x: np.ndarray, truth: np.ndarray, seed: int) -> dict[str, Any]:
    """Two-stage clustering of all of ``x``: time, peak memory so far, clusters, ARI vs the blobs."""
    from sklearn.metrics import adjusted_rand_score

    cfg = ClusterConfig(threshold=THRESHOLD, exact_max=0, micro_clusters=min(2_000, len(x) // 2), seed=seed)
    start = time.perf_counter()
    labels, *_ = cluster_vectors(x, cfg)
    seconds = time.perf_counter() - start
    peak_mb = _peak_mb()
    return {"seconds": round(seconds, 2), "peak_mb": round(peak_mb, 1),
            "n_clusters": int(labels.max()) + 1, "threshold": THRESHOLD, "blobs": int(truth.max()) + 1,
            "ari_blobs": round(float(adjusted_rand_score(truth, labels)), 4),
            "micro_clusters": cfg.micro_clusters, "dim": x.shape[1]}


def _agreement(x: np.ndarray, seed: int) -> dict[str, Any]:
    """ARI of two-stage vs exact Ward at the same threshold on a random subset of ``x``."""
    from sklearn.metrics import adjusted_rand_score

    n = len(x)
    sub = x[np.random.default_rng(seed + 1).choice(n, size=min(n, SUBSET), replace=False)]
    micro = min(SUBSET_MICRO, len(sub) // 2)
    exact, *_ = cluster_vectors(sub, ClusterConfig(threshold=THRESHOLD, exact_max=len(sub)))
    two, *_ = cluster_vectors(sub, ClusterConfig(threshold=THRESHOLD, exact_max=0, micro_clusters=micro,
                                                seed=seed))
    return {"ari": round(float(adjusted_rand_score(exact, two)), 4), "ari_subset": len(sub),
            "ari_micro_clusters": micro, "ari_exact_clusters": int(exact.max()) + 1}


def _peak_mb() -> float:
    """This process's peak resident memory in MB (ru_maxrss is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024
