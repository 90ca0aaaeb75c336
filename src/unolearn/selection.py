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
win rate is reported in the plan (the paths below stay the paper's; a later system may choose by it). A
cross-fitted critic (``train.critic_folds``) is judged instead by its folds, each fold critic on the logs it
did not train on: every log of the cluster is an item once, where a held-out split leaves a small cluster
one item or none.

Final plans, per cluster and system (a high-gap cluster's expert is validated and reported, not used):
- ``uno``: ``primary(epoch)`` when the gap is low and the expert passed, else ``reflective`` (critic, then revise)
  when a critic exists, else ``base``.
- ``uno-single``: ``primary(epoch)`` when the gap is low and the expert passed, else ``base``.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from .backends import ChatRequest, Models, run_with_models
from .config import opt
from .decisions import WIN_THRESHOLD, Candidate, choose_epoch, decide, decide_guided
from .distill import feedback_examples, pair_prompt
from .errors import ConfigError, InputError, one_line
from .executor import ExecutorConfig, run_jobs
from .guide import Guide
from .judge import JUDGES, resolve_judge, score_items
from .names import PLANNED_SYSTEMS, PathName
from .plans import ensure_adapter
from .profiles import note
from .records import Log, Plan, RuleEntry, ValidationItem
from .store import Workspace
from .text import guard_failure, replacement_measures


@dataclass
class SelectConfig:
    """Thresholds and sampling of checkpoint validation."""

    win_threshold: float = opt(WIN_THRESHOLD, "An expert epoch, a critic or a guide is used when its validation "
                                              "win rate reaches this (under uno-guided a guide unless its items "
                                              "show it worse than base: a sign test at 0.05).")
    judge: str = opt("auto", "How an answer and the base answer are compared on a validation item: `llm` (the "
                             "judge's 1-10 score against the item's feedback rules, as the reference), `likelihood` "
                             "(how much likelier the answer becomes when those rules are stated: log P(answer | "
                             "query + rules) - log P(answer | query), by the judge model), or `auto` (likelihood "
                             "where the judge model can score replies, i.e. the embedded model; llm with a server).")
    bleu_min: float = opt(0.05, "An answer whose BLEU to the base answer and the query (no brevity penalty: "
                                "see `drift`) is ≤ this drifted off the query and counts as a loss.")
    min_length_ratio: float = opt(0.1, "An answer shorter than this share of the base answer counts as a loss.")
    judge_samples: int = opt(3, "Judgements per comparison: the first greedy, the others sampled "
                                f"({note('select', 'judge_samples')}).")
    judge_temperature: float = opt(1.0, "Temperature of the sampled judgements.")
    answer_max_tokens: int = opt(1024, "Token budget of a validation answer (checkpoint and base alike; "
                                       f"{note('select', 'answer_max_tokens')}).")
    judge_max_tokens: int = opt(256, f"Token budget of a judgement ({note('select', 'judge_max_tokens')}).")
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


def best_critic_epoch(metrics: dict[str, Any] | list[dict[str, Any]], epochs: int) -> int:
    """The critic epoch with the lowest validation loss among its ``epochs``, the losses averaged when ``metrics``
    lists several modules' (a cross-fitted critic's folds); the last epoch without validation."""
    losses: dict[int, list[float]] = defaultdict(list)
    for m in metrics if isinstance(metrics, list) else [metrics]:
        for k, v in (m.get("eval_loss") or {}).items():
            losses[int(k)].append(v)
    means = {e: sum(v) / len(v) for e, v in losses.items() if e <= epochs}
    return min(sorted(means), key=lambda e: means[e]) if means else epochs


# -- the stage -------------------------------------------------------------------------------


def _latest_module(ws: Workspace, cluster: int, kind: str) -> dict[str, Any] | None:
    """The newest ``kind`` module of ``cluster`` in the current clustering (never one made for another)."""
    found = ws.modules(cluster, kind)
    return found[0] if found else None


def _folds_of(ws: Workspace, critic: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The fold critics that cross-fit ``critic`` (trained on its logs, each without its fold), newest first; none
    when it was trained on a held-out split."""
    if critic is None or critic["val_logs"] or not (part := critic["metrics"].get("partition")):
        return []
    folds: list[dict[str, Any]] = []
    seen: set[str] = set()
    for row in ws.modules(critic["cluster"], "critic-fold"):
        if row["metrics"].get("partition") == part and not seen & set(row["val_logs"]):
            folds.append(row)
            seen |= set(row["val_logs"])
    return folds


async def _guide(ws: Workspace, models: Models, cluster: tuple[int | None, int], row: dict[str, Any] | None,
                 base: Baseline, cfg: SelectConfig) -> Candidate | None:
    """The guide of ``cluster`` (clustering id, cluster id: its current rulebook), validated on the cluster's
    validation items and its training logs held out in turn; None: no rulebook."""
    clustering, cluster_id = cluster
    entries = [e for e in ws.rulebook(cluster_id) if e.in_prompt]
    if not entries or row is None:
        return None
    guide = build_guide(ws, models, entries, row["train_logs"])
    module_id = ws.ensure_guide(cluster_id, guide.text() or "", [e.id for e in entries], row["train_logs"],
                                row["val_logs"], {}, clustering, guide.as_json())
    items = _joined(base, await baseline(ws, models, row["train_logs"], cfg, "base answers (training logs)"), cfg)
    val = await validate(ws, models, module_id, [1], guide_answers(models, module_id, guide, items, cfg), items, cfg)
    return Candidate(PathName.GUIDE, module_id, None, val.rate(1), tuple(val.outcomes.get(1, ())))


def _joined(a: Baseline, b: Baseline, cfg: SelectConfig) -> Baseline:
    """The judged items of two baselines together (none below ``min_val_items``)."""
    logs = [*(a.logs if _judged(a) else []), *(b.logs if _judged(b) else [])]
    if len(logs) < cfg.min_val_items:
        return Baseline(logs, [], [])
    return Baseline(logs, [*a.answers, *b.answers], [*a.scores, *b.scores])


def build_guide(ws: Workspace, models: Models, entries: list[RuleEntry], train_logs: Sequence[str] = ()) -> Guide:
    """The guide of a cluster's entries that reach prompts: per log behind them, and per training log of the
    cluster (``train_logs``; supporting none: a neighbour that asked for nothing), its query vector (under the
    routing embedder), the entries it supports and the wordings it lends them (:meth:`RuleEntry.wording`).

    Why the logs that support nothing: a question's neighbours must be the logs nearest to it, as the rules
    memory's are; with the supporters alone, a question far from all of them still got the nearest one's
    entries (the README's demo: one cluster of three topics whose only entry, LexEval's "结论：" opening, was given
    to every HelloBench question, which then met none of its checks)."""
    says: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for i, entry in enumerate(entries):
        for m in entry.members:
            wording = entry.wording(m)
            if (i, wording) not in says[m.log_id]:
                says[m.log_id].append((i, wording))
    for log_id in train_logs:
        says.setdefault(log_id, [])
    queries = [ws.get_log(log_id).query for log_id in says]
    vecs = models.embedder.embed(queries) if queries else np.zeros((0, 1), dtype=np.float32)
    supports = [[e for e, _ in said] for said in says.values()]
    return Guide.build(entries[0].lang, [e.text for e in entries], vecs, supports, list(says), list(says.values()))


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

    def rate(self, epoch: int) -> float | None:
        """The win rate of one epoch (None: not judged)."""
        found = self.outcomes.get(epoch)
        return sum(found) / len(found) if found else None


@dataclass
class Baseline:
    """A cluster's validation items and the fresh base answers (with their mean judge scores) to them."""

    logs: list[tuple[Log, list[str]]]
    answers: list[str]
    scores: list[float | None]


async def baseline(ws: Workspace, models: Models, val_ids: list[str], cfg: SelectConfig,
                   desc: str = "base answers", min_items: int | None = None) -> Baseline:
    """The validation items of ``val_ids`` and the base model's judged answers (none below ``min_items``, by
    default ``min_val_items``)."""
    logs = feedback_examples(ws, val_ids)
    if len(logs) < (cfg.min_val_items if min_items is None else min_items):
        return Baseline(logs, [], [])
    answers = [a.text if a.ok else "" for a in
               await models.generator.generate(_answer_requests(logs, cfg, None), desc=desc)]
    scores = await _judge_means(models, [(log, rules, t) for (log, rules), t in zip(logs, answers)], cfg)
    return Baseline(logs, answers, scores)


def _judged(base: Baseline) -> bool:
    return bool(base.answers)


def _texts(results: list[Any]) -> list[str]:
    """The answers' texts ("" for a failed call)."""
    return [r.text if r.ok else "" for r in results]


async def _compare(models: Models, base: Baseline, module_id: str, epoch: int, texts: list[str],
                   cfg: SelectConfig) -> list[ValidationItem]:
    """Judge ``texts`` (one module epoch's answers) against the base answers: the judged items."""
    scores = await _judge_means(models, [(log, rules, t) for (log, rules), t in zip(base.logs, texts)], cfg)
    items = []
    for (log, _), text, base_text, sm, sb in zip(base.logs, texts, base.answers, scores, base.scores):
        if sm is None or sb is None:
            continue
        b, ratio = replacement_measures(text, base_text, log.query, log.lang)
        items.append(ValidationItem(module_id=module_id, epoch=epoch, log_id=log.id, score_initial=sb,
                                    score_module=sm, bleu=b, length_ratio=ratio,
                                    outcome=outcome(sm, sb, b, ratio, cfg), same_as_base=text == base_text))
    return items


#: One module epoch's answers to a baseline's items, in order: ``await answer(epoch)``.
Answerer = Callable[[int], Awaitable[list[str]]]


async def validate(ws: Workspace, models: Models, module_id: str, epochs: Sequence[int], answer: Answerer,
                   base: Baseline, cfg: SelectConfig) -> Validation:
    """Judge each of ``epochs`` of one module, whose answers ``answer`` gives, against the fresh base answer to
    each item of ``base``; store the items in place of earlier ones (none when ``base`` has fewer than
    ``min_val_items``).

    As in the reference: the module's and the base model's answers share the token budget and seed; each
    answer's judge samples are averaged before the win / tie / loss.
    """
    items: list[ValidationItem] = []
    for epoch in epochs if _judged(base) else ():
        items += await _compare(models, base, module_id, epoch, await answer(epoch), cfg)
    ws.replace_validation(module_id, items)  # no judgements of an earlier selection stay behind
    outcomes: dict[int, list[float]] = defaultdict(list)
    for item in items:
        outcomes[item.epoch].append(item.outcome)
    return Validation(dict(outcomes), len(base.logs))


def expert_answers(ws: Workspace, models: Models, module_id: str, base: Baseline, cfg: SelectConfig) -> Answerer:
    """The primary path's answers: the expert epoch's adapter answers each query."""
    async def answer(epoch: int) -> list[str]:
        name = await ensure_adapter(models.generator, ws, module_id, epoch)
        return _texts(await models.generator.generate(_answer_requests(base.logs, cfg, name, module_id),
                                                      desc=f"epoch {epoch}"))
    return answer


def critic_answers(ws: Workspace, models: Models, module_id: str, base: Baseline, cfg: SelectConfig) -> Answerer:
    """The reflective path's answers: the draft is the base answer itself (the path's first call); the critic
    epoch writes rules for it and the base model revises under them."""
    from .answer import CRITIC_MAX_TOKENS, critic_messages, revise_messages, rules_of, strip_echo

    async def answer(epoch: int) -> list[str]:
        name = await ensure_adapter(models.generator, ws, module_id, epoch)
        critiques = await models.generator.generate(
            [ChatRequest.of(critic_messages(log.query, draft), adapter=name, max_tokens=CRITIC_MAX_TOKENS,
                            seed=cfg.seed, owners=(log.id, module_id))
             for (log, _), draft in zip(base.logs, base.answers)], desc="critiques")
        revisions = await models.generator.generate(
            [ChatRequest.of(revise_messages(pair_prompt(log), log.query, draft, rules_of(c)),
                            max_tokens=cfg.answer_max_tokens, seed=cfg.seed, owners=(log.id, module_id))
             for (log, _), draft, c in zip(base.logs, base.answers, _texts(critiques))], desc="revisions")
        return [strip_echo(r) if r else "" for r in _texts(revisions)]
    return answer


def guide_answers(models: Models, module_id: str, guide: Guide, base: Baseline, cfg: SelectConfig) -> Answerer:
    """The guide path's answers: each question gets the rules of its nearest training logs before it (as when
    served), then the base model answers. A training log's own anchor, and the entries that would lose their
    support without it, are left out for its question (:meth:`Guide.without`): every item is judged as if held
    out."""
    from .prompts import guide_messages

    async def answer(epoch: int) -> list[str]:
        vecs = models.embedder.embed([log.query for log, _ in base.logs])
        texts = [guide.without(log.id).for_query(v) for (log, _), v in zip(base.logs, vecs)]
        return _texts(await models.generator.generate(
            [ChatRequest.of(guide_messages(pair_prompt(log), text) if text else pair_prompt(log),
                            max_tokens=cfg.answer_max_tokens, seed=cfg.seed, owners=(log.id, module_id))
             for (log, _), text in zip(base.logs, texts)], desc="guided answers"))
    return answer


def run(ws: Workspace, models: Models, cfg: SelectConfig | None = None,
        executor: ExecutorConfig | None = None) -> list[Plan]:
    """Validate every cluster's expert and critic, then store and return the final plans of all clusters.
    ``executor`` (default: local) validates each cluster as a job (:mod:`unolearn.executor`); on Ray, a cluster
    whose job failed past its retries falls back to base, its plans saying why."""
    cfg = cfg or SelectConfig()
    clustering = ws.clustering_id()  # first: the clusters read below are this version's or newer (then refused)
    clusters = ws.cluster_ids()
    if not clusters:
        raise InputError("no clusters: run `unolearn cluster` first")
    with ws.recorded_run("select", asdict(cfg)) as result:
        result["judge"] = kind = resolve_judge(cfg.judge, models.judge)
        if executor is None or executor.kind == "local":
            found = asyncio.run(_run(ws, models, cfg, (clustering, clusters)))
        else:
            found = _run_jobs(ws, models, cfg, (clustering, clusters), executor)
        plans = [p if p.win_rate is None else p.model_copy(update={"reason": f"{p.reason} [{kind} judge]"})
                 for p in found]
        result["plan_id"] = ws.replace_plans(plans, clustering)
        result["plans"] = [p.model_dump() for p in plans]
    return plans


def _gap_notes(ws: Workspace) -> dict[int, tuple[str, str]]:
    """Per cluster: its gap plan, and the scores behind it as text ("gap 0.52 ≥ 0.45 (embedding, 6 logs scored)")."""
    out = {}
    for cluster, g in ws.gaps().items():
        sign = "≥" if g["plan"] == PathName.REFLECTIVE else "<"
        out[cluster] = (g["plan"], f"gap {g['gap']:.2f} {sign} {g['threshold']:.2f} ({g['scorer']}, "
                                   f"{g['n_logs']} logs scored)")
    return out


async def _run(ws: Workspace, models: Models, cfg: SelectConfig, version: tuple[int | None, list[int]]) -> list[Plan]:
    """The plans of every cluster of ``version`` (clustering id, cluster ids)."""
    clustering, clusters = version
    gaps = _gap_notes(ws)
    try:  # the clusters at once: a batching backend fills its batches
        found = await together(*(_cluster_plans(ws, models, cfg, clustering, c, gaps.get(c, (None, "")))
                                 for c in clusters))
        return [p for plans in found for p in plans]
    finally:
        await models.aclose()


def _run_jobs(ws: Workspace, models: Models, cfg: SelectConfig, version: tuple[int | None, list[int]],
              executor: ExecutorConfig) -> list[Plan]:
    """The plans of every cluster of ``version``, each cluster a job of ``executor`` that opens the workspace
    and its models itself; a cluster whose job failed falls back to base under every system."""
    clustering, clusters = version
    gaps = _gap_notes(ws)
    where = (str(ws.root), ws.store, models.cfg, cfg, clustering)
    jobs = [(f"cluster {c}", (*where, c, gaps.get(c, (None, "")))) for c in clusters]
    plans: list[Plan] = []
    for cluster, o in zip(clusters, run_jobs(executor, _cluster_job, jobs)):
        if o.error is None:
            plans += o.value
            continue
        why = f"validation failed: {one_line(o.error, 200)}"
        plans += [Plan(cluster=cluster, system=s, path=PathName.BASE, reason=why) for s in PLANNED_SYSTEMS]
    return plans


def _cluster_job(root: str, store: str | None, backends: Any, cfg: SelectConfig, clustering: int | None,
                 cluster: int, gap: tuple[str | None, str]) -> list[Plan]:
    """One cluster's plans, as a job of its own (a Ray task)."""
    return run_with_models(root, store, backends,
                           lambda ws, models: _cluster_plans(ws, models, cfg, clustering, cluster, gap))


async def _cluster_plans(ws: Workspace, models: Models, cfg: SelectConfig, clustering: int | None, cluster: int,
                         gap: tuple[str | None, str]) -> list[Plan]:
    """One cluster's plans under every system: its expert, critic and guide validated on the cluster's items."""
    gap_plan, gap_note = gap
    exp_row, crit_row = _latest_module(ws, cluster, "expert"), _latest_module(ws, cluster, "critic")
    val_ids = row["val_logs"] if (row := exp_row or crit_row) else []
    base = await baseline(ws, models, val_ids, cfg)
    expert, critic, guide = await together(  # their requests go out together (the base answers are shared)
        _expert(ws, models, exp_row, base, cfg) if exp_row else _none(),
        _critic(ws, models, crit_row, base, cfg) if crit_row else _none(),
        _guide(ws, models, (clustering, cluster), exp_row or crit_row, base, cfg))
    not_judged = (f"{len(base.logs)} validation item(s), fewer than min_val_items {cfg.min_val_items}"
                  if exp_row and not _judged(base) else None)
    return [*decide(cluster, gap_plan, expert, critic, not_judged, gap_note, cfg.win_threshold),
            decide_guided(cluster, expert, critic, guide, cfg.win_threshold)]


async def together(*coros: Coroutine[Any, Any, Any]) -> list[Any]:
    """Await ``coros`` concurrently; their results in order. The first error cancels the others and is raised
    as itself (not in an exception group), so that a stage's clear errors stay clear."""
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(c) for c in coros]
    except BaseExceptionGroup as eg:
        first: BaseException = eg
        while isinstance(first, BaseExceptionGroup):
            first = first.exceptions[0]
        raise first from None
    return [t.result() for t in tasks]


async def _none() -> None:
    return None


async def _expert(ws: Workspace, models: Models, row: dict[str, Any], base: Baseline, cfg: SelectConfig) -> Candidate:
    """The expert of ``row`` with every epoch validated: the best epoch when it passed."""
    answer = expert_answers(ws, models, row["id"], base, cfg)
    val = await validate(ws, models, row["id"], range(1, row["epochs"] + 1), answer, base, cfg)
    if not _judged(base):
        return Candidate(PathName.PRIMARY, row["id"], None, None)
    epoch, rate = choose_epoch(val.outcomes, cfg.win_threshold)
    return Candidate(PathName.PRIMARY, row["id"], epoch, rate, tuple(val.outcomes.get(epoch or 0, ())))


async def _critic(ws: Workspace, models: Models, row: dict[str, Any], base: Baseline, cfg: SelectConfig) -> Candidate:
    """The critic of ``row`` at its epoch of lowest validation loss, its reflective path validated; a cross-fitted
    critic (:func:`_folds_of`) by its folds instead."""
    if folds := _folds_of(ws, row):
        return await _crossfit_critic(ws, models, row, folds, cfg)
    epoch, val = await _reflective(ws, models, row, base, cfg)
    return Candidate(PathName.REFLECTIVE, row["id"], epoch, val.rate(epoch), tuple(val.outcomes.get(epoch, ())))


async def _reflective(ws: Workspace, models: Models, row: dict[str, Any], base: Baseline,
                      cfg: SelectConfig) -> tuple[int, Validation]:
    """The reflective path of the critic (or fold critic) of ``row``, at its epoch of lowest validation loss,
    judged on ``base``'s items: that epoch and its validation."""
    epoch = best_critic_epoch(row["metrics"], row["epochs"])
    val = await validate(ws, models, row["id"], [epoch], critic_answers(ws, models, row["id"], base, cfg), base, cfg)
    return epoch, val


async def _crossfit_critic(ws: Workspace, models: Models, row: dict[str, Any], folds: list[dict[str, Any]],
                           cfg: SelectConfig) -> Candidate:
    """A cross-fitted critic: each fold critic's reflective path (at its epoch of lowest validation loss) is judged
    on the fold it did not train on, and the outcomes of all folds are the critic's (judged once there are
    ``min_val_items``); it serves at the epoch of lowest validation loss over its folds."""
    outcomes = [o for found in await together(*(_fold_outcomes(ws, models, f, cfg) for f in folds)) for o in found]
    rate = sum(outcomes) / len(outcomes) if len(outcomes) >= cfg.min_val_items else None
    epoch = best_critic_epoch([f["metrics"] for f in folds], row["epochs"])
    return Candidate(PathName.REFLECTIVE, row["id"], epoch, rate, tuple(outcomes), crossfit=True)


async def _fold_outcomes(ws: Workspace, models: Models, fold: dict[str, Any], cfg: SelectConfig) -> list[float]:
    """The outcomes of one fold critic's reflective path on its fold (every item it has)."""
    base = await baseline(ws, models, fold["val_logs"], cfg, "base answers (critic folds)", min_items=1)
    epoch, val = await _reflective(ws, models, fold, base, cfg)
    return val.outcomes.get(epoch, [])
