"""The assess stage: how new is each cluster's feedback to the model (the cognitive gap)?

For every feedback rule of a clustered log, the probability that the log's *prior* rules (what the
model inferred from the query alone) already cover it; novelty = 1 − that probability. Per log we
keep the minimum, mean and maximum novelty of its rules; a cluster's gap is the mean over its logs
of the per-log minimum, over the logs that have both feedback and prior rules (a cluster with none
has gap 0). Clusters whose gap reaches the threshold are planned ``reflective`` (the
feedback teaches what the model does not know: a critic), the others ``primary`` candidates (an
expert adapter). Every number records the scorer that made it.

Scorers: ``embedding`` (1 − max cosine between the rule and the prior rules; the default) and
``logprob`` (a reranker-style yes/no question to the judge, reading the probability of "yes" from
the first token's log-probabilities; any server that returns logprobs, and the embedded model).
Each has its own default threshold (:data:`DEFAULT_THRESHOLDS`), measured with
``scripts/measure_gap_threshold.py`` on hand-labelled items: e5's cosines are compressed (covered
rules 0.02–0.12 novelty, new ones 0.06–0.18; best cut 0.084, 90% of 40 items right), so the
reference's 0.45 would plan every cluster primary; the embedded 0.5B model as a yes/no judge barely
separates the two (65% at its best cut), which is why the embedding scorer is the default.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections import defaultdict
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from .backends import ChatModel, ChatRequest, Embedder, Models
from .config import opt
from .errors import BackendError, ConfigError, InputError
from .store import Workspace

SCORERS = ("embedding", "logprob")
#: The default threshold of each scorer. 0.45 is the reference's, on a reranker's P(not covered); the
#: embedding scorer's `1 − max cosine` lives on another scale (e5 cosines of unrelated texts are ~0.75),
#: so its default was calibrated against the logprob scorer on the same rules (docs/embedded-model.md,
#: "The cognitive gap's threshold").
DEFAULT_THRESHOLDS = {"logprob": 0.45, "embedding": 0.084}

COVER_PROMPT = {
    "en": ("Here are rules for answering a request:\n{prior}\n\nIs the following rule already covered by "
           "them (implied by one of them, or saying the same thing)?\nRule: {rule}\n\nAnswer yes or no."),
    "zh": ("以下是回答某个请求的规则：\n{prior}\n\n下面这条规则是否已经被它们涵盖（被其中某条蕴含，或意思相同）？\n"
           "规则：{rule}\n\n请回答 yes 或 no。"),
}


@dataclass
class AssessConfig:
    """Parameters of the assess stage."""

    scorer: str = opt("embedding", "How coverage is scored: 'embedding' (1 − max cosine to the prior "
                                   "rules) or 'logprob' (yes/no probability from the judge's logprobs).")
    threshold: float | None = opt(None, "Clusters with a gap at or above this are planned 'reflective' "
                                        "(default: the scorer's, see DEFAULT_THRESHOLDS).")

    def __post_init__(self) -> None:
        if self.scorer not in SCORERS:
            raise ConfigError(f"scorer: {self.scorer!r} is not one of {', '.join(SCORERS)}")
        if self.threshold is None:
            self.threshold = DEFAULT_THRESHOLDS[self.scorer]
        if not 0.0 <= self.threshold <= 1.0:
            raise ConfigError("threshold must be in [0, 1]")


@dataclass
class ClusterGap:
    """The cognitive gap of one cluster and the path it plans."""

    cluster: int
    gap: float
    gap_mean: float
    gap_max: float
    n_logs: int
    plan: str


def embedding_novelty(embedder: Embedder, rules: list[str], prior: list[str]) -> list[float]:
    """1 − the highest cosine similarity between each rule and any prior rule (1 when no prior)."""
    if not prior:
        return [1.0] * len(rules)
    vecs = embedder.embed(rules + prior)
    sims = vecs[: len(rules)] @ vecs[len(rules):].T
    return [float(np.clip(1.0 - s, 0.0, 1.0)) for s in sims.max(axis=1)]


def yes_no_mass(top_logprobs: dict[str, float]) -> tuple[float, float]:
    """The probability of "yes" and of "no" (any case, also 是 / 否) among the first token's top log-probabilities."""
    yes = no = 0.0
    for token, lp in top_logprobs.items():
        word = token.strip().lower()
        if word in ("yes", "是"):
            yes += math.exp(lp)
        elif word in ("no", "否"):
            no += math.exp(lp)
    return yes, no


def yes_probability(top_logprobs: dict[str, float] | None) -> float:
    """P(yes) from the first answer token's top log-probabilities, renormalised over yes/no."""
    if not top_logprobs:
        raise BackendError("the judge returned no logprobs; use --scorer embedding with this backend")
    yes, no = yes_no_mass(top_logprobs)
    return yes / (yes + no) if yes + no > 0 else 0.5


async def logprob_novelty(judge: ChatModel, items: list[tuple[str, list[str], list[str]]]) -> list[list[float]]:
    """Novelty of each rule of each (lang, rules, prior) item from the judge's yes/no logprobs."""
    reqs, index = [], []
    for i, (lang, rules, prior) in enumerate(items):
        for rule in rules:
            if prior:
                text = COVER_PROMPT[lang].format(prior="\n".join(f"- {p}" for p in prior), rule=rule)
                reqs.append(ChatRequest.of(text, max_tokens=1, logprobs=20))
                index.append(i)
    outs = await judge.generate(reqs, desc="assess")
    novelty: list[list[float]] = [[] if prior else [1.0] * len(rules) for _, rules, prior in items]
    for i, out in zip(index, outs):
        if out.error:
            raise out.error
        novelty[i].append(1.0 - yes_probability(out.top_logprobs))
    return novelty


def _clustered_rules(ws: Workspace) -> list[tuple[int, str, str, list[str], list[str]]]:
    """(cluster, log id, lang, feedback rules, prior rules) of every clustered log."""
    out = []
    for cluster, log_id, lang, fb, prior in ws.clustered_rule_rows():
        rules = json.loads(fb)
        if rules:
            out.append((cluster, log_id, lang, rules, json.loads(prior) if prior else []))
    return out


def run(ws: Workspace, models: Models, cfg: AssessConfig | None = None) -> list[ClusterGap]:
    """Score every clustered log's feedback rules, aggregate per cluster, store gaps and plans."""
    cfg = cfg or AssessConfig()
    assert cfg.threshold is not None  # __post_init__ sets the scorer's default
    clustered = _clustered_rules(ws)
    if not clustered:
        raise InputError("no clustered logs with feedback rules: run `unolearn distill` and `unolearn cluster` first")
    # As in the reference, a log is scored only when it has both rule sets: without prior rules there is
    # nothing its feedback could be covered by, and counting it as fully novel would inflate the gap.
    items = [it for it in clustered if it[4]]
    with ws.recorded_run("assess", asdict(cfg)) as result:
        if cfg.scorer == "embedding":
            novelty = [embedding_novelty(models.embedder, rules, prior) for _, _, _, rules, prior in items]
        else:
            novelty = asyncio.run(_with_close(models, logprob_novelty(
                models.judge, [(lang, rules, prior) for _, _, lang, rules, prior in items])))
        gaps = aggregate([(c, nov) for (c, *_), nov in zip(items, novelty)], cfg.threshold)
        scored = {g.cluster for g in gaps}
        gaps += [ClusterGap(c, 0.0, 0.0, 0.0, 0, "primary") for c in sorted({it[0] for it in clustered} - scored)]
        gaps.sort(key=lambda g: g.cluster)
        _store(ws, items, novelty, gaps, cfg)
        result.update(clusters=len(gaps), logs=len(items))
    return gaps


async def _with_close(models: Models, coro: Any) -> Any:
    try:
        return await coro
    finally:
        await models.aclose()


def aggregate(per_log: list[tuple[int, list[float]]], threshold: float) -> list[ClusterGap]:
    """Per cluster: mean over logs of the per-log min, mean and max novelty, and the plan."""
    by_cluster: dict[int, list[list[float]]] = defaultdict(list)
    for cluster, nov in per_log:
        by_cluster[cluster].append(nov)
    out = []
    for cluster, logs in sorted(by_cluster.items()):
        gap = float(np.mean([min(n) for n in logs]))
        out.append(ClusterGap(cluster, gap, float(np.mean([np.mean(n) for n in logs])),
                              float(np.mean([max(n) for n in logs])), len(logs),
                              "reflective" if gap >= threshold else "primary"))
    return out


def _store(ws: Workspace, items: list, novelty: list[list[float]], gaps: list[ClusterGap],
           cfg: AssessConfig) -> None:
    assert cfg.threshold is not None  # __post_init__ sets the scorer's default
    novelty_rows = [(log_id, i, cfg.scorer, v) for (_, log_id, *_), nov in zip(items, novelty)
                    for i, v in enumerate(nov)]
    gap_rows = [(g.cluster, cfg.scorer, g.gap, g.gap_mean, g.gap_max, g.n_logs, g.plan, cfg.threshold)
                for g in gaps]
    ws.replace_gaps(cfg.scorer, novelty_rows, gap_rows)
