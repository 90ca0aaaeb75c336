"""The select stage: validate each expert's checkpoints and fix the final path of every cluster.

For every expert, each epoch's adapter answers the cluster's validation queries (greedy). The judge
scores that answer and the log's initial answer against the log's feedback rules, three times (one
greedy judgement, two sampled). Each comparison is a win (1), a tie (½) or a loss (0); an answer
that drifted from the initial one (BLEU ≤ 0.05) or collapsed (< 10% of its length) counts as a loss.
The best epoch is used when its win rate reaches 0.53; otherwise the cluster falls back.

Final plans, per cluster and system:
- ``uno``: ``primary(epoch)`` when the expert passed, else ``reflective`` (critic, then revise) when a
  critic exists, else ``base``.
- ``uno-single``: ``primary(epoch)`` when the expert passed, else ``base``.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass
from typing import Any

from .backends import ChatModel, ChatRequest, Models
from .config import opt
from .distill import DistillConfig, feedback_examples, judge_request
from .errors import ConfigError, InputError
from .records import Log
from .store import Workspace
from .train import epoch_dir

SYSTEMS = ("uno", "uno-single")


@dataclass
class SelectConfig:
    """Thresholds and sampling of checkpoint validation."""

    win_threshold: float = opt(0.53, "An expert epoch is used when its win rate reaches this.")
    bleu_min: float = opt(0.05, "An answer with BLEU ≤ this to the initial answer counts as a loss.")
    min_length_ratio: float = opt(0.1, "An answer shorter than this share of the initial one counts as a loss.")
    judge_samples: int = opt(3, "Judgements per comparison: the first greedy, the others sampled.")
    judge_temperature: float = opt(1.0, "Temperature of the sampled judgements.")
    answer_max_tokens: int = opt(512, "Token budget of a validation answer.")
    seed: int = opt(42, "Seed of the sampled judgements.")

    def __post_init__(self) -> None:
        if not (0 <= self.win_threshold <= 1 and 0 <= self.bleu_min < 1 and 0 <= self.min_length_ratio < 1):
            raise ConfigError("win_threshold must be in [0, 1], bleu_min and min_length_ratio in [0, 1)")
        if self.judge_samples < 1 or self.answer_max_tokens < 1:
            raise ConfigError("judge_samples and answer_max_tokens must be ≥ 1")


# -- scoring ---------------------------------------------------------------------------------


def tokens(text: str, lang: str) -> list[str]:
    """Words for BLEU: jieba segments Chinese; otherwise lower-cased words and punctuation."""
    if lang == "zh":
        import jieba

        jieba.setLogLevel(60)
        return [t for t in jieba.lcut(text) if t.strip()]
    return re.findall(r"\w+|[^\w\s]", text.lower())


def bleu(candidate: str, reference: str, lang: str = "en", max_n: int = 4) -> float:
    """Sentence BLEU: geometric mean of 1..4-gram precisions (add-one smoothed above unigrams) × brevity."""
    cand, ref = tokens(candidate, lang), tokens(reference, lang)
    if not cand or not ref:
        return 0.0
    max_n = min(max_n, len(cand), len(ref))  # short texts: only the n-grams they can have
    log_p = 0.0
    for n in range(1, max_n + 1):
        c = Counter(tuple(cand[i:i + n]) for i in range(len(cand) - n + 1))
        r = Counter(tuple(ref[i:i + n]) for i in range(len(ref) - n + 1))
        match, total = sum(min(k, r[g]) for g, k in c.items()), max(1, sum(c.values()))
        if n > 1:
            match, total = match + 1, total + 1
        if match == 0:
            return 0.0
        log_p += math.log(match / total) / max_n
    brevity = min(0.0, 1.0 - len(ref) / len(cand))
    return math.exp(log_p + brevity)


def outcome(score_module: float, score_initial: float, bleu_score: float, length_ratio: float,
            cfg: SelectConfig) -> float:
    """1 for a win, ½ for a tie, 0 for a loss; a drifted or collapsed answer always loses."""
    if bleu_score <= cfg.bleu_min or length_ratio < cfg.min_length_ratio:
        return 0.0
    return 1.0 if score_module > score_initial else 0.5 if score_module == score_initial else 0.0


def choose_epoch(outcomes: dict[int, list[float]], threshold: float) -> tuple[int | None, float]:
    """The epoch with the best win rate (earliest on ties), and that rate; None when below ``threshold``."""
    if not outcomes:
        return None, 0.0
    rates = {e: sum(v) / len(v) for e, v in outcomes.items() if v}
    if not rates:
        return None, 0.0
    best = max(sorted(rates), key=lambda e: rates[e])
    return (best if rates[best] >= threshold else None), rates[best]


def best_critic_epoch(metrics: dict[str, Any], epochs: int) -> int:
    """The critic epoch with the lowest validation loss (the last epoch without validation)."""
    evals = {int(k): v for k, v in (metrics.get("eval_loss") or {}).items()}
    return min(sorted(evals), key=lambda e: evals[e]) if evals else epochs


def adapter_name(module_id: str, epoch: int) -> str:
    """The backend name of one module epoch's adapter."""
    return f"{module_id}@{epoch}"


async def ensure_adapter(model: ChatModel, ws: Workspace, module_id: str, epoch: int) -> str:
    """Load one module epoch's adapter into ``model``; return its name."""
    row = ws.conn.execute("SELECT path FROM modules WHERE id = ?", (module_id,)).fetchone()
    if not row:
        raise InputError(f"no module {module_id}")
    name = adapter_name(module_id, epoch)
    await model.add_adapter(name, str(epoch_dir(row[0], epoch)))
    return name


# -- the stage -------------------------------------------------------------------------------


@dataclass
class Plan:
    """The path one system takes for one cluster."""

    cluster: int
    system: str
    path: str
    module_id: str | None
    epoch: int | None
    win_rate: float | None
    reason: str


def _latest_module(ws: Workspace, cluster: int, kind: str) -> tuple | None:
    return ws.conn.execute("SELECT id, epochs, metrics, val_logs FROM modules WHERE cluster = ? AND kind = ? "
                           "ORDER BY created_at DESC, id LIMIT 1", (cluster, kind)).fetchone()


def _val_logs(ws: Workspace, val_ids: list[str]) -> list[tuple[Log, list[str]]]:
    return [(log, rules) for log, rules in feedback_examples(ws, val_ids) if log.first_answer]


async def _judge_all(judge: ChatModel, items: list[tuple[Log, list[str], str]], cfg: SelectConfig) -> list[list[float | None]]:
    """Scores of each (log, rules, answer) item, ``judge_samples`` times (None where the judge failed)."""
    dcfg = DistillConfig()
    reqs = [judge_request(log, rules, answer, dcfg, seed=cfg.seed + s,
                          temperature=0.0 if s == 0 else cfg.judge_temperature)
            for log, rules, answer in items for s in range(cfg.judge_samples)]
    outs = await judge.generate(reqs, desc="judge")
    scores = [float(o.parsed["score"]) if o.ok else None for o in outs]
    k = cfg.judge_samples
    return [scores[i * k:(i + 1) * k] for i in range(len(items))]


async def validate_expert(ws: Workspace, models: Models, module_id: str, epochs: int, val_ids: list[str],
                          cfg: SelectConfig) -> dict[int, list[float]]:
    """Win/tie/loss outcomes of every epoch of one expert on its validation logs; stored as they are."""
    from .distill import pair_prompt

    logs = _val_logs(ws, val_ids)
    if not logs:
        return {}
    initial = await _judge_all(models.judge, [(log, rules, log.first_answer) for log, rules in logs], cfg)
    outcomes: dict[int, list[float]] = defaultdict(list)
    rows = []
    for epoch in range(1, epochs + 1):
        name = await ensure_adapter(models.generator, ws, module_id, epoch)
        answers = await models.generator.generate(
            [ChatRequest.of(pair_prompt(log), adapter=name, max_tokens=cfg.answer_max_tokens, seed=cfg.seed)
             for log, _ in logs], desc=f"epoch {epoch}")
        texts = [a.text if a.ok else "" for a in answers]
        scored = await _judge_all(models.judge, [(log, rules, t) for (log, rules), t in zip(logs, texts)], cfg)
        for (log, _), text, mine, theirs in zip(logs, texts, scored, initial):
            b = bleu(text, log.first_answer, log.lang)
            ratio = len(text) / max(1, len(log.first_answer))
            for s, (sm, si) in enumerate(zip(mine, theirs)):
                if sm is None or si is None:
                    continue
                o = outcome(sm, si, b, ratio, cfg)
                outcomes[epoch].append(o)
                rows.append((module_id, epoch, log.id, s, si, sm, b, ratio, o))
    with ws.transaction() as c:
        c.execute("DELETE FROM validation WHERE module_id = ?", (module_id,))
        c.executemany("INSERT INTO validation VALUES (?,?,?,?,?,?,?,?,?)", rows)
    return dict(outcomes)


def decide(cluster: int, gap_plan: str | None, expert: tuple[str, int | None, float] | None,
           critic: tuple[str, int] | None) -> list[Plan]:
    """The UNO and UNO-Single plans of one cluster from its gap plan and validation results.

    ``expert`` is (module id, chosen epoch or None, best win rate); ``critic`` is (module id, epoch).
    """
    if expert and expert[1] is not None and gap_plan != "reflective":
        mid, epoch, rate = expert
        why = f"expert epoch {epoch} won {rate:.2f} of validation comparisons"
        return [Plan(cluster, s, "primary", mid, epoch, rate, why) for s in SYSTEMS]
    if gap_plan == "reflective":
        why = "high cognitive gap"
    elif expert:
        why = f"expert failed validation (best win rate {expert[2]:.2f})"
    else:
        why = "no expert (too few pairs, or not trained)"
    rate = expert[2] if expert else None
    single = Plan(cluster, "uno-single", "base", None, None, rate, why)
    if critic:
        return [Plan(cluster, "uno", "reflective", critic[0], critic[1], rate, why + "; critic available"), single]
    return [Plan(cluster, "uno", "base", None, None, rate, why + "; no critic"), single]


def run(ws: Workspace, models: Models, cfg: SelectConfig | None = None) -> list[Plan]:
    """Validate every cluster's expert, then store and return the final plans of all clusters."""
    cfg = cfg or SelectConfig()
    clusters = [r[0] for r in ws.conn.execute("SELECT id FROM clusters ORDER BY id")]
    if not clusters:
        raise InputError("no clusters: run `unolearn cluster` first")
    run_id = ws.start_run("select", asdict(cfg))
    plans = asyncio.run(_run(ws, models, cfg, clusters))
    with ws.transaction() as c:
        c.execute("DELETE FROM plans")
        c.executemany("INSERT INTO plans VALUES (?,?,?,?,?,?,?)",
                      [(p.cluster, p.system, p.path, p.module_id, p.epoch, p.win_rate, p.reason) for p in plans])
    ws.finish_run(run_id, "ok", {"plans": [asdict(p) for p in plans]})
    return plans


async def _run(ws: Workspace, models: Models, cfg: SelectConfig, clusters: list[int]) -> list[Plan]:
    gap_plans = dict(ws.conn.execute("SELECT cluster, plan FROM gaps").fetchall())
    plans: list[Plan] = []
    try:
        for cluster in clusters:
            expert = critic = None
            if (row := _latest_module(ws, cluster, "expert")) and gap_plans.get(cluster) != "reflective":
                outcomes = await validate_expert(ws, models, row[0], row[1], json.loads(row[3]), cfg)
                expert = (row[0], *choose_epoch(outcomes, cfg.win_threshold))
            if row := _latest_module(ws, cluster, "critic"):
                critic = (row[0], best_critic_epoch(json.loads(row[2]), row[1]))
            plans += decide(cluster, gap_plans.get(cluster), expert, critic)
    finally:
        await models.aclose()
    return plans


def load_plan(ws: Workspace, cluster: int, system: str) -> Plan | None:
    """The stored plan of ``cluster`` for ``system`` (None before `unolearn select`)."""
    row = ws.conn.execute("SELECT path, module_id, epoch, win_rate, reason FROM plans WHERE cluster = ? "
                          "AND system = ?", (cluster, system)).fetchone()
    return Plan(cluster, system, *row) if row else None
