"""The select stage: validate each expert's checkpoints and fix the final path of every cluster.

For every expert, each epoch's adapter and the base model answer the cluster's validation queries
with the same token budget and seed (as the reference does: the comparison is with a fresh base
answer, not the log's stored one). A judge (:mod:`unolearn.judge`) scores both answers against the
log's feedback rules — the reference's LLM judge three times (one greedy judgement, two sampled,
averaged), or, by default on the embedded model, how much likelier each answer becomes when those
rules are stated — and the scores are compared: a win (1), a tie (½) or a loss (0); an answer that
drifted off the query (BLEU ≤ 0.05 against the base answer and the query, without the brevity
penalty, which would punish short answers) or collapsed (< 10% of the base answer's length) counts
as a loss. An expert with fewer than ``min_val_items`` validation items is not judged. The best
epoch is used when its win rate reaches 0.53; otherwise the cluster falls back.

The reflective path (the critic's epoch of lowest validation loss, as in the reference, then the
base model's revision) is judged the same way on the same items, against the same base answers; its
win rate is reported in the plan (the paths below stay the paper's; a later system may choose by it).

Final plans, per cluster and system (a high-gap cluster's expert is validated and reported, not used):
- ``uno``: ``primary(epoch)`` when the gap is low and the expert passed, else ``reflective`` (critic, then revise)
  when a critic exists, else ``base``.
- ``uno-single``: ``primary(epoch)`` when the gap is low and the expert passed, else ``base``.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from .backends import ChatRequest, Models
from .config import opt
from .distill import feedback_examples, pair_prompt
from .errors import ConfigError, InputError
from .guide import Guide
from .judge import JUDGES, resolve_judge, score_items
from .plans import Plan, ensure_adapter
from .records import Log, RuleEntry
from .store import Workspace
from .text import guard_failure, replacement_measures


@dataclass
class SelectConfig:
    """Thresholds and sampling of checkpoint validation."""

    win_threshold: float = opt(0.53, "An expert epoch is used when its win rate reaches this.")
    judge: str = opt("auto", "How an answer and the base answer are compared on a validation item: `llm` (the "
                             "judge's 1-10 score against the item's feedback rules, as the reference), `likelihood` "
                             "(how much likelier the answer becomes when those rules are stated: log P(answer | "
                             "query + rules) - log P(answer | query), by the judge model), or `auto` (likelihood "
                             "where the judge model can score replies, i.e. the embedded model; llm with a server).")
    bleu_min: float = opt(0.05, "An answer whose BLEU to the base answer and the query (no brevity penalty: "
                                "see `drift`) is ≤ this drifted off the query and counts as a loss.")
    min_length_ratio: float = opt(0.1, "An answer shorter than this share of the base answer counts as a loss.")
    judge_samples: int = opt(3, "Judgements per comparison: the first greedy, the others sampled (profile cpu: 2).")
    judge_temperature: float = opt(1.0, "Temperature of the sampled judgements.")
    answer_max_tokens: int = opt(1024, "Token budget of a validation answer (checkpoint and base alike; "
                                       "profile cpu: 256).")
    judge_max_tokens: int = opt(256, "Token budget of a judgement (profile cpu: 128).")
    min_val_items: int = opt(2, "An expert with fewer validation items is not judged (its cluster falls back).")
    seed: int = opt(42, "Seed of the answers and of the sampled judgements.")

    def __post_init__(self) -> None:
        if not (0 <= self.win_threshold <= 1 and 0 <= self.bleu_min < 1 and 0 <= self.min_length_ratio < 1):
            raise ConfigError("win_threshold must be in [0, 1], bleu_min and min_length_ratio in [0, 1)")
        if self.judge not in JUDGES:
            raise ConfigError(f"judge must be one of {', '.join(JUDGES)}, got {self.judge!r}")
        if min(self.judge_samples, self.answer_max_tokens, self.judge_max_tokens, self.min_val_items) < 1:
            raise ConfigError("judge_samples, answer_max_tokens, judge_max_tokens and min_val_items must be ≥ 1")


# -- scoring ---------------------------------------------------------------------------------


def outcome(score_module: float, score_initial: float, bleu_score: float, length_ratio: float,
            cfg: SelectConfig) -> float:
    """1 for a win, ½ for a tie, 0 for a loss; a drifted or collapsed answer always loses."""
    if guard_failure(bleu_score, length_ratio, bleu_min=cfg.bleu_min, min_length_ratio=cfg.min_length_ratio):
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


# -- the stage -------------------------------------------------------------------------------


def _latest_module(ws: Workspace, cluster: int, kind: str) -> dict[str, Any] | None:
    """The newest ``kind`` module of ``cluster`` in the current clustering (never one made for another)."""
    found = ws.modules(cluster, kind)
    return found[0] if found else None


async def _guide(ws: Workspace, models: Models, cluster: tuple[int | None, int], row: dict[str, Any] | None,
                 base: Baseline, cfg: SelectConfig) -> tuple[str, float | None] | None:
    """The guide module of ``cluster`` (clustering id, cluster id: its current rulebook) and its validation
    win rate (None: fewer than ``min_val_items`` items); None: no rulebook."""
    clustering, cluster_id = cluster
    entries = [e for e in ws.rulebook(cluster_id) if e.in_prompt]
    if not entries or row is None:
        return None
    guide = build_guide(ws, models, entries)
    module_id = ws.ensure_guide(cluster_id, guide.text() or "", [e.id for e in entries], row["train_logs"],
                                row["val_logs"], {}, clustering, guide.as_json())
    items = _joined(base, await baseline(ws, models, row["train_logs"], cfg, "base answers (training logs)"), cfg)
    val = await validate_guide(ws, models, module_id, guide, items, cfg)
    return module_id, (sum(val.outcomes[1]) / len(val.outcomes[1])) if val.outcomes.get(1) else None


def _joined(a: Baseline, b: Baseline, cfg: SelectConfig) -> Baseline:
    """The judged items of two baselines together (none below ``min_val_items``)."""
    logs = [*(a.logs if _judged(a) else []), *(b.logs if _judged(b) else [])]
    if len(logs) < cfg.min_val_items:
        return Baseline(logs, [], [])
    return Baseline(logs, [*a.answers, *b.answers], [*a.scores, *b.scores])


def build_guide(ws: Workspace, models: Models, entries: list[RuleEntry]) -> Guide:
    """The guide of a cluster's entries that reach prompts: per training log behind them, its query vector
    (under the routing embedder) and the entries it supports."""
    logs: dict[str, list[int]] = defaultdict(list)
    for i, entry in enumerate(entries):
        for log_id in dict.fromkeys(m.log_id for m in entry.members):
            logs[log_id].append(i)
    queries = [ws.get_log(log_id).query for log_id in logs]
    vecs = models.embedder.embed(queries) if queries else np.zeros((0, 1), dtype=np.float32)
    return Guide.build(entries[0].lang, [e.text for e in entries], vecs, list(logs.values()), list(logs))


async def _judge_means(models: Models, items: list[tuple[Log, list[str], str]],
                       cfg: SelectConfig) -> list[float | None]:
    """Each (log, rules, answer) item's score by the configured judge (None if it could not be scored)."""
    kind = resolve_judge(cfg.judge, models.judge)
    return await score_items(models.judge, kind, items, samples=cfg.judge_samples, max_tokens=cfg.judge_max_tokens,
                             seed=cfg.seed, temperature=cfg.judge_temperature)


def _answer_requests(logs: list[tuple[Log, list[str]]], cfg: SelectConfig, adapter: str | None,
                     module_id: str | None = None) -> list[ChatRequest]:
    """The validation requests: each log's query, with ``adapter`` (of ``module_id``) or without (the base
    answer), one budget."""
    return [ChatRequest.of(pair_prompt(log), adapter=adapter, max_tokens=cfg.answer_max_tokens, seed=cfg.seed,
                           owners=(log.id,) if module_id is None else (log.id, module_id)) for log, _ in logs]


@dataclass
class Validation:
    """A module's validation: outcomes (1 win, ½ tie, 0 loss) per epoch over ``n_items`` items."""

    outcomes: dict[int, list[float]]
    n_items: int


@dataclass
class Baseline:
    """A cluster's validation items and the fresh base answers (with their mean judge scores) to them."""

    logs: list[tuple[Log, list[str]]]
    answers: list[str]
    scores: list[float | None]


async def baseline(ws: Workspace, models: Models, val_ids: list[str], cfg: SelectConfig,
                   desc: str = "base answers") -> Baseline:
    """The validation items of ``val_ids`` and the base model's judged answers (none below ``min_val_items``)."""
    logs = feedback_examples(ws, val_ids)
    if len(logs) < cfg.min_val_items:
        return Baseline(logs, [], [])
    answers = [a.text if a.ok else "" for a in
               await models.generator.generate(_answer_requests(logs, cfg, None), desc=desc)]
    scores = await _judge_means(models, [(log, rules, t) for (log, rules), t in zip(logs, answers)], cfg)
    return Baseline(logs, answers, scores)


def _judged(base: Baseline) -> bool:
    return bool(base.answers)


async def _compare(models: Models, base: Baseline, module_id: str, epoch: int, texts: list[str],
                   cfg: SelectConfig, outcomes: dict[int, list[float]], rows: list[tuple]) -> None:
    """Judge ``texts`` (one module epoch's answers) against the base answers; add outcomes and rows."""
    scores = await _judge_means(models, [(log, rules, t) for (log, rules), t in zip(base.logs, texts)], cfg)
    for (log, _), text, base_text, sm, sb in zip(base.logs, texts, base.answers, scores, base.scores):
        if sm is None or sb is None:
            continue
        b, ratio = replacement_measures(text, base_text, log.query, log.lang)
        o = outcome(sm, sb, b, ratio, cfg)
        outcomes[epoch].append(o)
        rows.append((module_id, epoch, log.id, 0, sb, sm, b, ratio, o, int(text == base_text)))


async def validate_expert(ws: Workspace, models: Models, module_id: str, epochs: int, base: Baseline,
                          cfg: SelectConfig) -> Validation:
    """Judge every epoch of one expert against a fresh base answer to each validation query; store the items.

    As in the reference: the checkpoint's and the base model's answers share the token budget and seed;
    each answer's judge samples are averaged before the win / tie / loss. Fewer than ``min_val_items``
    items: nothing is judged.
    """
    outcomes: dict[int, list[float]] = defaultdict(list)
    rows: list[tuple] = []
    for epoch in range(1, epochs + 1) if _judged(base) else ():
        name = await ensure_adapter(models.generator, ws, module_id, epoch)
        answers = await models.generator.generate(_answer_requests(base.logs, cfg, name, module_id),
                                                  desc=f"epoch {epoch}")
        await _compare(models, base, module_id, epoch, [a.text if a.ok else "" for a in answers], cfg,
                       outcomes, rows)
    ws.replace_validation(module_id, rows)  # no judgements of an earlier selection stay behind
    return Validation(dict(outcomes), len(base.logs))


async def validate_critic(ws: Workspace, models: Models, module_id: str, epoch: int, base: Baseline,
                          cfg: SelectConfig) -> Validation:
    """Judge the reflective path with one critic epoch on the expert's validation items, like an expert.

    The draft is the base answer itself (the reflective path's first call); the critic writes rules for
    it and the base model revises under them. The revision is judged against the same base answer, so
    the plan can compare the paths on the same items.
    """
    from .answer import CRITIC_MAX_TOKENS, critic_messages, revise_messages, rules_of, strip_echo

    outcomes: dict[int, list[float]] = defaultdict(list)
    rows: list[tuple] = []
    if _judged(base):
        name = await ensure_adapter(models.generator, ws, module_id, epoch)
        critiques = await models.generator.generate(
            [ChatRequest.of(critic_messages(log.query, draft), adapter=name, max_tokens=CRITIC_MAX_TOKENS,
                            seed=cfg.seed, owners=(log.id, module_id))
             for (log, _), draft in zip(base.logs, base.answers)],
            desc="critiques")
        revisions = await models.generator.generate(
            [ChatRequest.of(revise_messages(pair_prompt(log), log.query, draft, rules_of(c.text if c.ok else "")),
                            max_tokens=cfg.answer_max_tokens, seed=cfg.seed, owners=(log.id, module_id))
             for (log, _), draft, c in zip(base.logs, base.answers, critiques)], desc="revisions")
        await _compare(models, base, module_id, epoch, [strip_echo(r.text) if r.ok else "" for r in revisions],
                       cfg, outcomes, rows)
    ws.replace_validation(module_id, rows)  # no judgements of an earlier selection stay behind
    return Validation(dict(outcomes), len(base.logs))


async def validate_guide(ws: Workspace, models: Models, module_id: str, guide: Guide, base: Baseline,
                         cfg: SelectConfig) -> Validation:
    """Judge the guide path like an expert, on the validation items and the training logs alike: each question
    gets the rules of its nearest training logs before it (as when served), then the base model answers. A
    training log's own anchor and the entries it supports are left out for its question (:meth:`Guide.without`),
    so every item is judged as if held out."""
    from .prompts import guide_messages

    outcomes: dict[int, list[float]] = defaultdict(list)
    rows: list[tuple] = []
    if _judged(base):
        vecs = models.embedder.embed([log.query for log, _ in base.logs])
        texts = [guide.without(log.id).for_query(v) for (log, _), v in zip(base.logs, vecs)]
        answers = await models.generator.generate(
            [ChatRequest.of(guide_messages(pair_prompt(log), text) if text else pair_prompt(log),
                            max_tokens=cfg.answer_max_tokens, seed=cfg.seed, owners=(log.id, module_id))
             for (log, _), text in zip(base.logs, texts)], desc="guided answers")
        await _compare(models, base, module_id, 1, [a.text if a.ok else "" for a in answers], cfg, outcomes, rows)
    ws.replace_validation(module_id, rows)  # no judgements of an earlier selection stay behind
    return Validation(dict(outcomes), len(base.logs))


def decide_guided(cluster: int, expert: tuple[str, int | None, float | None] | None,
                  critic: tuple[str, int, float | None] | None, guide: tuple[str, float | None] | None,
                  threshold: float) -> Plan:
    """The ``uno-guided`` plan: the guide when its validation win rate reaches ``threshold``; else the expert or
    the critic whose win rate is highest and reaches it (the expert on ties); else base.

    Why the guide first: it is the rules memory's way of answering (the rules of the nearest logs before the
    question), the bar an expert or critic must beat to replace it, and a few validation items against base cannot
    show that they do — on a preference file nobody tuned for, an expert that won its 2 items answered worse than
    the rules memory (issue 37)."""
    tried: list[tuple[str, str, int | None, float | None]] = []
    if guide:
        tried.append(("guide", guide[0], None, guide[1]))
    if expert:
        tried.append(("primary", expert[0], expert[1], expert[2]))
    if critic:
        tried.append(("reflective", critic[0], critic[1], critic[2]))
    rates = "; ".join(f"{p} {'not judged' if r is None else f'{r:.2f}'}" for p, _, _, r in tried) or "nothing validated"
    ok = [(p, mid, epoch, r) for p, mid, epoch, r in tried
          if r is not None and r >= threshold and (p != "primary" or epoch is not None)]
    if not ok:
        return Plan(cluster, "uno-guided", "base", None, None, None, f"no path reached {threshold:.2f} ({rates})")
    if ok[0][0] == "guide":
        path, mid, epoch, rate = ok[0]
        return Plan(cluster, "uno-guided", path, mid, epoch, rate, f"the guide validated ({rates})")
    path, mid, epoch, rate = max(ok, key=lambda t: t[3])
    return Plan(cluster, "uno-guided", path, mid, epoch, rate, f"best validated path ({rates})")


def decide(cluster: int, gap_plan: str | None, expert: tuple[str, int | None, float | None] | None,
           critic: tuple[str, int] | tuple[str, int, float | None] | None, not_judged: str | None = None,
           gap_note: str = "") -> list[Plan]:
    """The UNO and UNO-Single plans of one cluster from its gap plan and validation results.

    ``expert`` is (module id, chosen epoch or None, best win rate, None when not judged); ``critic`` is
    (module id, epoch[, win rate of the reflective path, None when not judged]); ``not_judged`` says
    why an expert was not judged; ``gap_note`` gives the gap behind the plan. The paths are the paper's:
    the critic's validation is reported, not used to choose.
    """
    gap = f"; {gap_note}" if gap_note else ""
    if expert and expert[1] is not None and gap_plan != "reflective":
        mid, epoch, rate = expert
        why = f"expert epoch {epoch} won {rate:.2f} of validation comparisons{gap}"
        return [Plan(cluster, s, "primary", mid, epoch, rate, why) for s in ("uno", "uno-single")]
    if gap_plan == "reflective":
        why = f"high cognitive gap{gap}" + (f"; {_expert_note(expert, not_judged)}, not used" if expert else "")
    elif expert:
        why = _expert_note(expert, not_judged) + gap
    else:
        why = f"no expert (too few pairs, or not trained){gap}"
    rate = expert[2] if expert else None
    single = Plan(cluster, "uno-single", "base", None, None, rate, why)
    if critic:
        c_rate = critic[2] if len(critic) > 2 else None
        judged = f"won {c_rate:.2f} of validation comparisons" if c_rate is not None else "not judged"
        return [Plan(cluster, "uno", "reflective", critic[0], critic[1], c_rate,
                     f"{why}; critic epoch {critic[1]} ({judged})"), single]
    return [Plan(cluster, "uno", "base", None, None, rate, why + "; no critic"), single]


def _expert_note(expert: tuple[str, int | None, float | None], not_judged: str | None) -> str:
    """What an expert's validation came to, for a plan's reason."""
    if not_judged:
        return f"expert not judged: {not_judged}"
    if expert[1] is not None:
        return f"expert epoch {expert[1]} won {expert[2]:.2f} of validation comparisons"
    return f"expert failed validation (best win rate {expert[2]:.2f})"


def run(ws: Workspace, models: Models, cfg: SelectConfig | None = None) -> list[Plan]:
    """Validate every cluster's expert and critic, then store and return the final plans of all clusters."""
    cfg = cfg or SelectConfig()
    clustering = ws.clustering_id()  # first: the clusters read below are this version's or newer (then refused)
    clusters = ws.cluster_ids()
    if not clusters:
        raise InputError("no clusters: run `unolearn cluster` first")
    with ws.recorded_run("select", asdict(cfg)) as result:
        result["judge"] = kind = resolve_judge(cfg.judge, models.judge)
        plans = asyncio.run(_run(ws, models, cfg, (clustering, clusters)))
        for p in plans:
            if p.win_rate is not None:
                p.reason += f" [{kind} judge]"
        result["plan_id"] = ws.replace_plans(
            [(p.cluster, p.system, p.path, p.module_id, p.epoch, p.win_rate, p.reason) for p in plans], clustering)
        result["plans"] = [asdict(p) for p in plans]
    return plans


def _gap_notes(ws: Workspace) -> dict[int, tuple[str, str]]:
    """Per cluster: its gap plan, and the scores behind it as text ("gap 0.52 ≥ 0.45 (embedding, 6 logs scored)")."""
    out = {}
    for cluster, g in ws.gaps().items():
        sign = "≥" if g["plan"] == "reflective" else "<"
        out[cluster] = (g["plan"], f"gap {g['gap']:.2f} {sign} {g['threshold']:.2f} ({g['scorer']}, "
                                   f"{g['n_logs']} logs scored)")
    return out


async def _run(ws: Workspace, models: Models, cfg: SelectConfig, version: tuple[int | None, list[int]]) -> list[Plan]:
    """The plans of every cluster of ``version`` (clustering id, cluster ids)."""
    clustering, clusters = version
    gaps = _gap_notes(ws)
    plans: list[Plan] = []
    try:
        for cluster in clusters:
            gap_plan, gap_note = gaps.get(cluster, (None, ""))
            expert: tuple[str, int | None, float | None] | None = None
            critic: tuple[str, int, float | None] | None = None
            not_judged: str | None = None
            exp_row, crit_row = _latest_module(ws, cluster, "expert"), _latest_module(ws, cluster, "critic")
            val_ids = row["val_logs"] if (row := exp_row or crit_row) else []
            base = await baseline(ws, models, val_ids, cfg)
            if exp_row:
                val = await validate_expert(ws, models, exp_row["id"], exp_row["epochs"], base, cfg)
                if not _judged(base):
                    not_judged = f"{val.n_items} validation item(s), fewer than min_val_items {cfg.min_val_items}"
                    expert = (exp_row["id"], None, None)
                else:
                    expert = (exp_row["id"], *choose_epoch(val.outcomes, cfg.win_threshold))
            if crit_row:
                epoch = best_critic_epoch(crit_row["metrics"], crit_row["epochs"])
                val = await validate_critic(ws, models, crit_row["id"], epoch, base, cfg)
                rate = (sum(val.outcomes[epoch]) / len(val.outcomes[epoch])) if val.outcomes.get(epoch) else None
                critic = (crit_row["id"], epoch, rate)
            guide = await _guide(ws, models, (clustering, cluster), exp_row or crit_row, base, cfg)
            plans += decide(cluster, gap_plan, expert, critic, not_judged, gap_note)
            plans.append(decide_guided(cluster, expert, critic, guide, cfg.win_threshold))
    finally:
        await models.aclose()
    return plans
