"""``unolearn bench train``: how long one cluster's expert and critic take to train on this machine.

The benchmark seeds a workspace with one cluster of ``n`` logs, each with a feedback rule and a
preference pair of realistic length (a long first answer rejected, a short revision chosen), then runs
the real train stage for that cluster and reports the seconds per module. The workspace is kept when a
folder is given, so ``unolearn select`` and ``unolearn answer`` can use the trained adapters after it.
The text is synthetic; only its token count matters for the timing.
"""

from __future__ import annotations

import json
import random
import tempfile
import time
from pathlib import Path
from typing import Any

from ..backends import Embedder
from ..base_model import resolve_base_model
from ..cluster import ClusterConfig
from ..cluster import run as cluster
from ..errors import InputError, UnolearnError
from ..records import Log, Message
from ..store import Workspace, now
from ..train import TrainConfig
from ..train import run as train

TOPICS = ["sourdough bread", "tax deductions", "marathon training", "python packaging", "photosynthesis",
          "home insurance", "solar panels", "job interviews", "bird migration", "credit scores"]
WORDS = ("the a of to and in is that for it as with on this be are by can or from which when you your "
         "how most will more time also use first each step may need should example because process "
         "usually part well often make good important common different simple help").split()
RULE = "Keep the answer under 60 words and start with the direct answer."


def _answer(rng: random.Random, topic: str, words: int) -> str:
    body = [rng.choice(WORDS) for _ in range(words)]
    for i in range(0, words, 12):
        body[i] = topic.split()[0]
    return " ".join(body).capitalize() + "."


def seed_cluster(ws: Workspace, embedder: Embedder, n: int, answer_words: int, seed: int = 42) -> list[str]:
    """Store ``n`` logs with a feedback rule and one pair each, clustered (by the real stage) into one
    cluster 0 planned primary, so that ``select`` and ``answer`` can route to it afterwards."""
    rng = random.Random(seed)
    logs, rows = [], []
    for i in range(n):
        topic = TOPICS[i % len(TOPICS)]
        query = f"Question {i}: what should I know about {topic}?"
        first = _answer(rng, topic, answer_words)
        log = Log.from_messages([Message(role="user", content=query), Message(role="assistant", content=first),
                                 Message(role="user", content="Too long, get to the point.")], source="bench")
        logs.append(log)
        rows.append((log, first, _answer(rng, topic, max(8, answer_words // 3))))
    ws.add_logs(logs)
    ws.put_rules((log.id, "feedback", [RULE], "bench") for log, _, _ in rows)
    ws.put_pairs((f"bench-{log.id}", log.id, "revision", json.dumps([{"role": "user", "content": log.query}]),
                  short, first, 9.0, "[]", "bench", now()) for log, first, short in rows)
    clustered = cluster(ws, embedder, ClusterConfig(threshold=1e6))  # no cut: one cluster
    if clustered.n_clusters != 1:
        raise UnolearnError(f"the benchmark's logs formed {clustered.n_clusters} clusters, not one")
    ws.set_gap(0, "bench", 0.5, n, "primary", 0.45)
    return [log.id for log in logs]


def bench_train(n: int, cfg: TrainConfig, embedder: Embedder, answer_words: int = 120,
                workspace: Path | None = None) -> dict[str, Any]:
    """Seed one cluster of ``n`` pairs, train its expert and critic (and the critic's folds), and time each step."""
    cfg = cfg.resolved()
    with tempfile.TemporaryDirectory(prefix="unolearn-bench-train-") as tmp:
        ws = Workspace.open(workspace or Path(tmp) / "ws")
        try:
            if ws.count("logs"):
                raise InputError(f"{ws.root}: the benchmark needs an empty workspace")
            seed_cluster(ws, embedder, n, answer_words)
            start = time.perf_counter()
            base = resolve_base_model(ws, cfg.base_model)
            prepare_s = time.perf_counter() - start
            modules = train(ws, cfg, cluster=0)
        finally:
            ws.close()
    out: dict[str, Any] = {"pairs": n, "answer_words": answer_words, "base_model": str(base),
                           "prepare_base_s": round(prepare_s, 1),
                           "config": {k: getattr(cfg, k) for k in ("profile", "epochs", "critic_epochs", "lora_r",
                                                                   "max_length", "grad_accum", "critic_folds")}}
    for m in modules:
        if m.kind != "critic-fold":
            out[m.kind] = {"seconds": round(m.seconds, 1), "n_train": m.n_train, "n_val": m.n_val,
                           "train_loss": m.metrics["train_loss"], "path": m.path if workspace else None}
    if folds := [m for m in modules if m.kind == "critic-fold"]:  # the critic's cross-fitting (train.critic_folds)
        out["critic_folds"] = {"n": len(folds), "seconds": round(sum(m.seconds for m in folds), 1),
                               "n_val": [m.n_val for m in folds]}
    out["total_s"] = round(prepare_s + sum(m.seconds for m in modules), 1)
    return out
