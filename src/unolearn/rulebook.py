"""The rulebook stage: each cluster's feedback rules consolidated into a short, supported rulebook.

Why it exists: a hosted model or a server without LoRA cannot run experts or critics, yet its logs hold
the same lessons, and a small model follows rules in its prompt best. A cluster's rulebook becomes
the ``guide`` path (the rules placed before the question), validated like an expert by ``select``.

Per cluster, from the logs of its training split (the validation logs judge the guide, so their rules
stay out of it), each rule taken sentence by sentence (:func:`unolearn.rulefilter.sentences`: a small model
writes one user's several complaints as one rule, which no other user's rule is like):

1. **Merge** rules that say the same thing: cosine ≥ ``merge_similarity`` under the embedder, or, for
   pairs less than ``unsure_band`` below it, the judge's yes/no ("do they ask for the same thing?")
   read from the first token's log-probabilities — and in both cases only rules whose literal markers agree
   (the phrases they quote and the numbers they name, :func:`~unolearn.rulefilter.markers`). An entry's text is
   its group's medoid; a member's own wording may stand for it in a prompt (``servable``) only when it passes
   screening itself and its cosine to that text is at least ``merge_similarity`` (a chain of merges, or the judge,
   cannot lend it).
2. **Screening** (:mod:`unolearn.screen`): an entry whose text carries a link, contact data (a redaction
   placeholder too), a promotion, a command or code to run, or an instruction about the assistant's own
   instructions, tools or other users is ``quarantined``: it reaches no prompt until a person approves it.
3. **Support**: the distinct users behind an entry. Every log without a user counts as one user together
   (anyone can send many); where no log names its user, support counts logs, and the build warns that only
   screening and review then stand between one person and every prompt. Below ``min_users``: ``unsupported``.
4. **Novelty** as the embedding gap scorer measures it (1 − the highest cosine between the entry and
   the prior rules of each supporting log, averaged over them): below its gap threshold the model
   already does it, and the entry is ``known`` (it would add tokens and nothing else).
5. **Contradictions**: two entries that one answer cannot both follow (the judge's yes/no); the one
   with more users (then logs) wins, the other is ``contradicted``.
6. **Size**: entries in order of support while the rulebook stays within ``max_tokens`` (counted as
   words and punctuation, jieba words for Chinese); the rest are ``over_budget``.

People decide with ``unolearn rulebook approve|reject ID``: an approved entry skips steps 2–4; a
rejected one never reaches a prompt again — nor does its text or a paraphrase of it (cosine ≥
``merge_similarity``) from any log, in any later build (see :meth:`~unolearn.store.Workspace.decide_entry`).
With ``review: required`` no entry reaches a prompt before a person approves it (``unreviewed``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .assess import DEFAULT_THRESHOLDS, yes_probability
from .backends import ChatModel, ChatRequest, Models
from .config import opt
from .distill import feedback_examples
from .errors import ConfigError, InputError
from .profiles import note
from .records import Lang, Log, RuleEntry, RuleMember, RuleStatus, content_hash
from .rulefilter import markers, sentences
from .screen import screen_reason
from .store import Workspace
from .store.rulebook import Rejections
from .text import tokens

if TYPE_CHECKING:
    from .train import TrainConfig

SAME_PROMPT = {
    "en": "Rule A: {a}\nRule B: {b}\n\nDo rule A and rule B ask for the same thing? Answer yes or no.",
    "zh": "规则A：{a}\n规则B：{b}\n\n规则A和规则B要求的是同一件事吗？请回答 yes 或 no。",
}
BOTH_PROMPT = {
    "en": "Rule A: {a}\nRule B: {b}\n\nCan one answer follow both rule A and rule B? Answer yes or no.",
    "zh": "规则A：{a}\n规则B：{b}\n\n一个回答能同时遵守规则A和规则B吗？请回答 yes 或 no。",
}
@dataclass
class RulebookConfig:
    """Parameters of the rulebook stage."""

    merge_similarity: float = opt(0.93, "Rules whose embeddings have at least this cosine are one entry.")
    unsure_band: float = opt(0.03, "Pairs less than this below merge_similarity are asked to the judge (0: never).")
    min_users: int = opt(2, "Distinct users an entry needs (a log without a user counts as one user).")
    novelty: float | None = opt(None, "Entries less novel than this are dropped as known to the model "
                                      "(default: the embedding gap scorer's threshold).")
    max_tokens: int = opt(150, "Size bound of one cluster's rulebook, in words and punctuation.")
    contradictions: bool = opt(True, "Ask the judge whether each two entries can both hold "
                                     f"({note('rulebook', 'contradictions')}; "
                                     "the embedded 0.5B judge cannot tell, see scripts/measure_contradictions.py).")
    review: str = opt("auto", "'auto': entries that pass support, screening and validation reach prompts; "
                              "'required': none does before a person approves it (rulebook approve).")

    def __post_init__(self) -> None:
        if not (0 < self.merge_similarity <= 1 and 0 <= self.unsure_band < self.merge_similarity):
            raise ConfigError("rulebook: merge_similarity must be in (0, 1], unsure_band in [0, merge_similarity)")
        if self.min_users < 1 or self.max_tokens < 1:
            raise ConfigError("rulebook: min_users and max_tokens must be ≥ 1")
        if self.review not in ("auto", "required"):
            raise ConfigError(f"rulebook.review: {self.review!r} is not one of auto, required")
        if self.novelty is None:
            self.novelty = DEFAULT_THRESHOLDS["embedding"]


def size(text: str, lang: str) -> int:
    """A rule's size against ``max_tokens``: its words and punctuation (jieba words in Chinese)."""
    return len(tokens(text, lang))


class _Groups:
    """Union-find over rule indices."""

    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, i: int, j: int) -> None:
        self.parent[self.find(i)] = self.find(j)

    def groups(self) -> list[list[int]]:
        out: dict[int, list[int]] = {}
        for i in range(len(self.parent)):
            out.setdefault(self.find(i), []).append(i)
        return list(out.values())


async def _yes(judge: ChatModel, prompts: list[str], desc: str) -> list[float]:
    """P(yes) of each yes/no question, from the judge's first-token log-probabilities."""
    if not prompts:
        return []
    outs = await judge.generate([ChatRequest.of(p, max_tokens=1, logprobs=20) for p in prompts], desc=desc)
    for out in outs:
        if out.error:
            raise out.error
    return [yes_probability(o.top_logprobs) for o in outs]


async def merge(judge: ChatModel | None, rules: list[str], vecs: np.ndarray, lang: str,
                cfg: RulebookConfig) -> list[list[int]]:
    """Groups of rule indices that say the same thing (their markers agreeing, :func:`~unolearn.rulefilter.markers`)."""
    groups = _Groups(len(rules))
    sims = vecs @ vecs.T
    marks = [markers(r) for r in rules]
    unsure = []
    for i in range(len(rules)):
        for j in range(i + 1, len(rules)):
            if marks[i] != marks[j]:  # equal texts have equal markers
                continue
            if rules[i] == rules[j] or sims[i, j] >= cfg.merge_similarity:
                groups.union(i, j)
            elif judge is not None and sims[i, j] >= cfg.merge_similarity - cfg.unsure_band:
                unsure.append((i, j))
    asked = [SAME_PROMPT[lang].format(a=rules[i], b=rules[j]) for i, j in unsure]
    for (i, j), p in zip(unsure, await _yes(judge, asked, "rulebook: same rule?") if judge else []):
        if p >= 0.5:
            groups.union(i, j)
    return groups.groups()


def medoid(members: list[int], sims: np.ndarray, rules: list[str]) -> int:
    """The member closest on average to the others (the shorter text on ties)."""
    return max(members, key=lambda i: (float(np.mean(sims[i, members])), -len(rules[i])))


@dataclass
class _Candidate:
    text: str
    members: list[RuleMember]
    novelty: float | None
    approved: bool
    screened: str | None = None

    @property
    def support(self) -> tuple[int, int]:
        return len({m.user for m in self.members}), len({m.log_id for m in self.members})


@dataclass(frozen=True)
class Trust:
    """What a build knows about who may shape prompts: the rejections, and whether users are identified."""

    rejected: Rejections
    identified: bool = True


async def build_cluster(models: Models, cluster: int, examples: list[tuple[Log, list[str]]],
                        priors: dict[str, list[str]], decisions: dict[tuple[str, str], str],
                        cfg: RulebookConfig, trust: Trust | None = None) -> list[RuleEntry]:
    """The rulebook entries of one cluster from its (log, feedback rules) examples; rules a person rejected,
    their paraphrases among them (``trust.rejected``), are left out."""
    trust = trust or Trust(Rejections("", frozenset(), {}))
    items = _items(examples, decisions, trust.rejected)
    vecs = models.embedder.embed([rule for _, rule, _ in items]) if items else np.zeros((0, 1))
    keep = [i for i, (_, rule, _) in enumerate(items) if not trust.rejected.rejects(
        rule, vecs[i], models.embedder.model_id, cfg.merge_similarity)]
    items, vecs = [items[i] for i in keep], vecs[keep]
    if not items:
        return []
    lang: Lang = max(("en", "zh"), key=lambda lg: sum(log.lang == lg for log, _, _ in items))
    rules = [rule for _, rule, _ in items]
    sims = vecs @ vecs.T
    jd = models.judge
    candidates = []
    for group in await merge(jd, rules, vecs, lang, cfg):
        centre = medoid(group, sims, rules)
        text, screened = rules[centre], {i: screen_reason(rules[i]) for i in group}
        members = [RuleMember(log_id=items[i][0].id, user=items[i][0].user_key, rule=rules[i],
                              servable=bool(sims[i, centre] >= cfg.merge_similarity) and screened[i] is None)
                   for i in group]
        approved = any(decisions.get((items[i][0].id, r)) == "approved" for i in group for r in items[i][1:])
        candidates.append(_Candidate(text, members, _novelty(models, text, members, priors), approved,
                                     screened[centre]))
    candidates.sort(key=lambda c: (not c.approved, [-s for s in c.support], c.text))
    statuses = [_status(c, cfg, trust.identified) for c in candidates]
    beaten = await _contradicted(jd, candidates, statuses, lang) if cfg.contradictions else {}
    return _entries(cluster, lang, candidates, statuses, beaten, cfg)


def _items(examples: list[tuple[Log, list[str]]], decisions: dict[tuple[str, str], str],
           rejected: Rejections) -> list[tuple[Log, str, str]]:
    """(log, rule, the stored rule it comes from) of every sentence of every rule (:func:`sentences`), each once
    per log; none of a rule a person rejected (or that is a rejected text) and none a person rejected itself."""
    out: dict[tuple[str, str], tuple[Log, str, str]] = {}
    for log, rules in examples:
        for rule in rules:
            if decisions.get((log.id, rule)) == "rejected" or rejected.rejects(rule, None, None, 1.0):
                continue
            for part in sentences(rule, log.lang):
                if decisions.get((log.id, part)) != "rejected":
                    out.setdefault((log.id, part), (log, part, rule))
    return list(out.values())


def _novelty(models: Models, text: str, members: list[RuleMember], priors: dict[str, list[str]]) -> float | None:
    """Mean over the supporting logs with prior rules of 1 − the entry's highest cosine to them."""
    logs = sorted({m.log_id for m in members if priors.get(m.log_id)})
    if not logs:
        return None
    vecs = models.embedder.embed([text])
    scores = [1.0 - float((vecs @ models.embedder.embed(priors[lid]).T).max()) for lid in logs]
    return float(np.clip(np.mean(scores), 0.0, 1.0))


def _status(c: _Candidate, cfg: RulebookConfig, identified: bool = True) -> RuleStatus:
    assert cfg.novelty is not None  # __post_init__ sets the default
    if c.approved:
        return "approved"
    if c.screened:
        return "quarantined"
    if c.support[0 if identified else 1] < cfg.min_users:
        return "unsupported"
    if c.novelty is not None and c.novelty < cfg.novelty:
        return "known"
    return "unreviewed" if cfg.review == "required" else "kept"


async def _contradicted(judge: ChatModel | None, candidates: list[_Candidate], statuses: Sequence[str],
                        lang: str) -> dict[int, int]:
    """Loser index → winner index for the kept entries that cannot both hold (candidates are sorted
    by support, so the earlier one wins)."""
    live = [i for i, s in enumerate(statuses) if s in ("kept", "approved")]
    pairs = [(i, j) for a, i in enumerate(live) for j in live[a + 1:]]
    if judge is None or not pairs:
        return {}
    asked = [BOTH_PROMPT[lang].format(a=candidates[i].text, b=candidates[j].text) for i, j in pairs]
    beaten: dict[int, int] = {}
    for (i, j), p in zip(pairs, await _yes(judge, asked, "rulebook: contradictions")):
        if p < 0.5 and i not in beaten and j not in beaten and statuses[j] != "approved":
            beaten[j] = i
    return beaten


def _entries(cluster: int, lang: Lang, candidates: list[_Candidate], statuses: list[RuleStatus],
             beaten: dict[int, int], cfg: RulebookConfig) -> list[RuleEntry]:
    ids = [content_hash("rule", {"cluster": cluster, "text": c.text}) for c in candidates]
    used = 0
    out = []
    for i, c in enumerate(candidates):
        status, by = statuses[i], None
        if i in beaten:
            status, by = "contradicted", ids[beaten[i]]
        elif status in ("kept", "approved"):
            if used + size(c.text, lang) > cfg.max_tokens:
                status = "over_budget"
            else:
                used += size(c.text, lang)
        out.append(RuleEntry(id=ids[i], cluster=cluster, text=c.text, lang=lang, members=tuple(c.members),
                             novelty=c.novelty, status=status, contradicted_by=by, screened=c.screened))
    return out


def run(ws: Workspace, models: Models, cfg: RulebookConfig | None = None, *,
        split: TrainConfig | None = None) -> list[RuleEntry]:
    """Rebuild every cluster's rulebook from its training logs (the split of the ``train`` config ``split``,
    so that the guide is judged on the logs that experts are); store and return the entries."""
    from .train import TrainConfig
    from .training_data import split_members

    cfg, split = cfg or RulebookConfig(), split or TrainConfig()
    clusters = ws.cluster_ids()
    if not clusters:
        raise InputError("no clusters: run `unolearn cluster` first")
    decisions = ws.rule_decisions()
    priors = {log_id: rules for log_id, rules in ws.rule_sets("prior")}
    trust = Trust(ws.rejections(), ws.has_identified_users())
    entries: list[RuleEntry] = []
    vectors: dict[str, np.ndarray] = {}

    async def build() -> None:
        try:
            for c in clusters:
                train_ids, _ = split_members(ws, c, split)
                entries.extend(await build_cluster(models, c, feedback_examples(ws, train_ids), priors,
                                                   decisions, cfg, trust))
            live = [e for e in entries if e.in_prompt]
            vectors.update(zip((e.id for e in live), models.embedder.embed([e.text for e in live]) if live else []))
        finally:
            await models.aclose()

    with ws.recorded_run("rulebook", asdict(cfg)) as result:
        asyncio.run(build())
        ws.replace_rulebook(entries, vectors, models.embedder.model_id, cfg.merge_similarity)
        entries = ws.rulebook()
        result.update(summary(entries, trust.identified))
    return entries


#: What `rulebook build` and `doctor` say when no log names its user.
ANONYMOUS_WARNING = ("no log names its user: support counts logs, so only screening and review stand between one "
                     "person and every prompt (send `user` with each log, or set rulebook: {review: required})")


def summary(entries: Sequence[RuleEntry], identified: bool = True) -> dict[str, Any]:
    """Counts of entries per status, per cluster the entries that go into prompts, and what support counted
    (``users``, or ``logs`` where no log names its user, with a warning)."""
    by_status: dict[str, int] = {}
    for e in entries:
        by_status[e.status] = by_status.get(e.status, 0) + 1
    in_prompt: dict[int, int] = {}
    for e in entries:
        in_prompt[e.cluster] = in_prompt.get(e.cluster, 0) + int(e.in_prompt)
    out = {"entries": len(entries), "by_status": by_status, "in_prompt": in_prompt,
           "support": "users" if identified else "logs"}
    return out if identified else {**out, "warning": ANONYMOUS_WARNING}
