"""The quality benchmark: do the learned modules make answers follow users' unspoken preferences?

On held-out test prompts, every system answers in one run:
- ``base``: the model alone;
- ``bm25`` / ``dense``: the 5 most similar past logs (BM25 over words / cosine over embeddings),
  with what their users said, placed in the prompt;
- ``rules``: the distilled feedback rules of the 5 nearest past logs in the prompt (a Mem0-like memory);
- ``rules-vetted`` (only when asked for): the same, from the nearest logs behind rulebook entries that earned
  their place (support, screening, no rejection), each log's rules replaced by those entries' texts: the
  candidate for a guide built per question rather than per cluster;
- ``uno-single`` and ``uno``: the answer path of the workspace's plans (the paper's);
- ``uno-guided``: per cluster the path that validated best, the rulebook guide among them; its
  compliance also comes with ``compliance_ci_vs_rules``, the paired interval against ``rules``;
- ``self-refine``: the reflective path without learning (the base model critiques its own draft with
  the critic's prompt, no adapter, then revises): ``uno``'s reflective gain counts where it beats this.
Each answer is checked against the hidden constraints of its prompt (code, not a judge):
compliance = share of (prompt, constraint) pairs satisfied. Quality guards keep a system from
winning by dropping the content: ROUGE-L against LexEval's ``golden_answer`` and, for HelloBench,
the share of checklist items the judge finds covered. Prompt tokens and latency are per query.
Nothing depends on the constraint ids of any preference file.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..answer import answer, plan_route, self_refine
from ..backends import ChatRequest, ChatResult, Models
from ..cluster import Router
from ..config import opt
from ..constraints import compliance
from ..errors import ConfigError, InputError
from ..funnel import count_test_paths, funnel
from ..profiles import note
from ..records import detect_lang
from ..simulate import Preferences, constraints_for, record_query
from ..store import Workspace, write_lines_atomic
from ..text import tokens

SYSTEMS = ("base", "bm25", "dense", "rules", "self-refine", "uno-single", "uno", "uno-guided")
#: Systems compared only when named (``--systems``).
OPTIONAL_SYSTEMS = ("rules-vetted",)
UNO_SYSTEMS = ("uno", "uno-single", "uno-guided", "self-refine")

MEMORY_HEADER = {
    "en": ("Earlier users asked similar questions and reacted to the answers they got. Use what they "
           "asked for when you answer the new question.\n\n{items}\n\n## New question\n{query}"),
    "zh": ("之前的用户问过类似的问题，并对得到的回答做出了反应。回答新问题时，请参考他们提出的要求。"
           "\n\n{items}\n\n## 新问题\n{query}"),
}
LOG_ITEM = {"en": "## Earlier question {i}\n{query}\n### What the user said about the answer\n{feedback}",
            "zh": "## 之前的问题 {i}\n{query}\n### 用户对回答的反馈\n{feedback}"}
RULES_HEADER = {
    "en": "Rules learned from earlier users with similar questions:\n{rules}\n\n## Question\n{query}",
    "zh": "从提出类似问题的用户那里总结出的规则：\n{rules}\n\n## 问题\n{query}",
}


def checklist_schema(n: int) -> dict[str, Any]:
    """The judge's answer: exactly one boolean per checklist item (an unbounded array lets a small model
    repeat ``true`` until its token budget ends, and the cut-off JSON is lost)."""
    covered = {"type": "array", "items": {"type": "boolean"}, "minItems": n, "maxItems": n}
    return {"type": "object", "properties": {"covered": covered}, "required": ["covered"]}


CHECKLIST_PROMPT = ("For each checklist item, say whether the answer satisfies it.\n\n## Question\n{query}\n\n"
                    "## Answer\n{answer}\n\n## Checklist\n{items}\n\n"
                    'Reply with JSON only: {{"covered": [true or false for each item, in order]}}')


@dataclass
class QualityConfig:
    """Parameters of the quality benchmark."""

    systems: tuple[str, ...] = opt(SYSTEMS, "Systems to compare.")
    top_k: int = opt(5, "Past logs (or rule sets) placed in the prompt by the memory baselines.")
    max_tokens: int = opt(1024, f"Token budget of an answer ({note('bench_quality', 'max_tokens')}).")
    checklist: bool = opt(True, "Judge HelloBench checklist coverage (one judge call per answer).")

    def __post_init__(self) -> None:
        unknown = sorted(set(self.systems) - set(SYSTEMS) - set(OPTIONAL_SYSTEMS))
        if unknown or not self.systems:
            raise ConfigError(f"systems: unknown {unknown[0]!r}" if unknown else "systems: none given")
        if self.top_k < 1 or self.max_tokens < 1:
            raise ConfigError("top_k and max_tokens must be ≥ 1")


# -- the memory baselines --------------------------------------------------------------------


@dataclass
class MemoryItem:
    """One past log as the memory baselines see it."""

    query: str
    feedback: str
    rules: list[str]


def load_memory(ws: Workspace) -> list[MemoryItem]:
    """Past logs whose users said something about the answer, with their distilled feedback rules."""
    return [MemoryItem(log.query, "\n".join(log.feedback), rules)
            for log, rules in ws.logs_with_feedback_rules() if log.feedback]


def load_vetted_memory(ws: Workspace) -> list[MemoryItem]:
    """Past logs behind rulebook entries that reach a prompt (kept or approved), each with those entries' texts
    in place of its own rules."""
    vetted: dict[str, list[str]] = defaultdict(list)
    for entry in ws.rulebook():
        if entry.in_prompt:
            for log_id in dict.fromkeys(m.log_id for m in entry.members):
                vetted[log_id].append(entry.text)
    return [MemoryItem(log.query, "\n".join(log.feedback), vetted[log.id])
            for log, _ in ws.logs_with_feedback_rules() if vetted.get(log.id)]


class Bm25Index:
    """BM25 over the past queries (jieba words for Chinese, lower-cased words otherwise)."""

    def __init__(self, queries: Sequence[str]) -> None:
        import bm25s

        self.n = len(queries)
        self.index = bm25s.BM25()
        self.index.index([tokens(q, detect_lang(q)) or ["_"] for q in queries], show_progress=False)

    def top(self, query: str, k: int) -> list[int]:
        """Indices of the ``k`` best-matching past queries (fewer when the memory is small)."""
        k = min(k, self.n)
        docs, scores = self.index.retrieve([tokens(query, detect_lang(query)) or ["_"]], k=k, show_progress=False)
        return [int(d) for d, s in zip(docs[0], scores[0]) if s > 0]


def dense_top(query_vec: np.ndarray, memory_vecs: np.ndarray, k: int) -> list[int]:
    """Indices of the ``k`` past queries with the highest cosine similarity."""
    if len(memory_vecs) == 0:
        return []
    sims = memory_vecs @ query_vec
    return [int(i) for i in np.argsort(-sims, kind="stable")[:k]]


def memory_prompt(query: str, hits: list[MemoryItem], lang: str) -> str:
    """The bm25/dense prompt: similar past questions with their users' reactions, then the question."""
    if not hits:
        return query
    items = "\n\n".join(LOG_ITEM[lang].format(i=i, query=h.query, feedback=h.feedback)
                        for i, h in enumerate(hits, 1))
    return MEMORY_HEADER[lang].format(items=items, query=query)


def rules_prompt(query: str, hits: list[MemoryItem], lang: str) -> str:
    """The rules prompt: the de-duplicated feedback rules of the nearest past logs, then the question."""
    rules: list[str] = []
    for h in hits:
        rules += [r for r in h.rules if r not in rules]
    if not rules:
        return query
    return RULES_HEADER[lang].format(rules="\n".join(f"- {r}" for r in rules), query=query)


# -- quality guards ----------------------------------------------------------------------------


def rouge_l(candidate: str, reference: str, lang: str) -> float:
    """ROUGE-L F1 on words (characters for Chinese)."""
    cand = [c for c in candidate if not c.isspace()] if lang == "zh" else tokens(candidate, lang)
    ref = [c for c in reference if not c.isspace()] if lang == "zh" else tokens(reference, lang)
    if not cand or not ref:
        return 0.0
    prev = [0] * (len(ref) + 1)
    for c in cand:
        cur = [0]
        for j, r in enumerate(ref, 1):
            cur.append(prev[j - 1] + 1 if c == r else max(prev[j], cur[j - 1]))
        prev = cur
    lcs = prev[-1]
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(cand), lcs / len(ref)
    return 2 * precision * recall / (precision + recall)


def checklist_items(record: dict[str, Any]) -> list[str]:
    """A HelloBench record's checklist texts."""
    info = record.get("info") or {}
    return [str(c.get("checklist_content", c)) if isinstance(c, dict) else str(c) for c in info.get("checklist", [])]


# -- the run ---------------------------------------------------------------------------------


@dataclass
class Attempt:
    """One system's answer to one test prompt."""

    system: str
    index: int
    text: str
    prompt_tokens: int
    latency_s: float
    error: str | None = None
    path: str | None = None  # uno systems: primary, reflective, base, or unseen (no cluster near enough)
    cluster: int | None = None  # uno systems: the cluster the prompt was routed to
    cut: bool = False  # max_tokens cut the answer (finish reason "length"), e.g. one sentence repeated to the end


def _attempt(system: str, i: int, res: ChatResult) -> Attempt:
    return Attempt(system, i, res.text if res.ok else "", res.prompt_tokens, res.latency_s,
                   None if res.ok else str(res.error), cut=res.finish_reason == "length")


async def _plain_system(models: Models, system: str, prompts: list[str], cfg: QualityConfig) -> list[Attempt]:
    reqs = [ChatRequest.of(p, max_tokens=cfg.max_tokens, seed=42) for p in prompts]
    outs = await models.generator.generate(reqs, desc=system)
    return [_attempt(system, i, r) for i, r in enumerate(outs)]


async def _uno_system(ws: Workspace, models: Models, router: Router | None, system: str, queries: list[str],
                      cfg: QualityConfig) -> list[Attempt]:
    sem = asyncio.Semaphore(max(1, models.generator.concurrency))

    async def one(i: int, q: str) -> Attempt:
        async with sem:
            start = time.perf_counter()
            try:
                messages = [{"role": "user", "content": q}]
                if system == "self-refine":
                    out = await self_refine(models, messages, max_tokens=cfg.max_tokens)
                    return Attempt(system, i, out.text, out.usage.get("prompt_tokens", 0), out.latency_s,
                                   cut=out.finish_reason == "length")
                route = plan_route(ws, router, q, system)
                routing_s = time.perf_counter() - start
                out = await answer(ws, models, router, messages, system, max_tokens=cfg.max_tokens, route=route)
            except Exception as e:  # noqa: BLE001 — one failed answer must not end the benchmark
                return Attempt(system, i, "", 0, time.perf_counter() - start, str(e))
            # Routing plus model time; answers from the response cache count the time of their first call,
            # as the plain systems' do.
            path = route.path if route.cluster is not None or router is None else "unseen"
            return Attempt(system, i, out.text, out.usage.get("prompt_tokens", 0), routing_s + out.latency_s,
                           path=path, cluster=route.cluster, cut=out.finish_reason == "length")

    return list(await asyncio.gather(*(one(i, q) for i, q in enumerate(queries))))


def build_prompts(system: str, queries: list[str], memory: list[MemoryItem], embed: Any, k: int) -> list[str]:
    """The prompt each memory baseline sends for each query (``base``: the query itself)."""
    if system == "base" or not memory:
        return list(queries)
    langs = [detect_lang(q) for q in queries]
    if system == "bm25":
        index = Bm25Index([m.query for m in memory])
        return [memory_prompt(q, [memory[j] for j in index.top(q, k)], lang) for q, lang in zip(queries, langs)]
    mem_vecs, q_vecs = embed([m.query for m in memory]), embed(queries)
    hits = [[memory[j] for j in dense_top(v, mem_vecs, k)] for v in q_vecs]
    make = memory_prompt if system == "dense" else rules_prompt
    return [make(q, h, lang) for q, h, lang in zip(queries, hits, langs)]


def _checklist_request(record: dict[str, Any], text: str) -> ChatRequest | None:
    """The judge request for one answer's HelloBench checklist (None without a checklist or an answer)."""
    items = checklist_items(record)
    if not items or not text:
        return None
    prompt = CHECKLIST_PROMPT.format(query=record_query(record), answer=text,
                                     items="\n".join(f"{i}. {c}" for i, c in enumerate(items, 1)))
    return ChatRequest.of(prompt, schema=checklist_schema(len(items)), max_tokens=256)


async def _checklists(models: Models, attempts: list[Attempt], records: list[dict[str, Any]]) -> list[float | None]:
    """Checklist coverage of each answer: the judge's requests are sent together, in one batch."""
    requests = [_checklist_request(rec, a.text) for a, rec in zip(attempts, records)]
    asked = [r for r in requests if r is not None]
    results = iter(await models.judge.generate(asked, progress=False) if asked else [])
    out: list[float | None] = []
    for rec, req in zip(records, requests):
        res = next(results) if req is not None else None
        n = len(checklist_items(rec))
        out.append(sum(bool(c) for c in res.parsed["covered"][:n]) / n if res is not None and res.ok else None)
    return out


def _score(attempt: Attempt, record: dict[str, Any], prefs: Preferences) -> dict[str, Any]:
    constraints = constraints_for(prefs, record)
    checks = compliance(attempt.text, constraints) if constraints else {}
    out: dict[str, Any] = {"checks": checks}
    golden = (record.get("info") or {}).get("golden_answer")
    if isinstance(golden, str) and golden:
        out["rouge_l"] = rouge_l(attempt.text, golden, detect_lang(golden))
    return out


def _summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    checks = [v for r in rows for v in r["checks"].values()]
    out: dict[str, Any] = {
        "n": len(rows), "n_checks": len(checks),
        "compliance": round(float(np.mean(checks)), 4) if checks else None,
        "prompt_tokens": round(float(np.mean([r["prompt_tokens"] for r in rows])), 1),
        "latency_s": round(float(np.mean([r["latency_s"] for r in rows])), 3),
        "errors": sum(r["error"] is not None for r in rows), "cut": sum(r["cut"] for r in rows)}
    for key in ("rouge_l", "checklist"):
        vals = [r[key] for r in rows if r.get(key) is not None]
        if vals:
            out[key] = round(float(np.mean(vals)), 4)
    return out


def prompt_counts(rows: list[dict[str, Any]]) -> np.ndarray:
    """Per test prompt: ``[constraints satisfied, constraints checked]`` (an ``n × 2`` array)."""
    counts = [[sum(map(bool, r["checks"].values())), len(r["checks"])] for r in rows]
    return np.array(counts, dtype=float).reshape(-1, 2)


def paired_bootstrap_ci(system: np.ndarray, base: np.ndarray, n_boot: int = 2000, seed: int = 0,
                        level: float = 0.95) -> list[float] | None:
    """The bootstrap interval of compliance(system) − compliance(base), resampling test prompts.

    Both arrays come from :func:`prompt_counts` over the same prompts in the same order; each resample
    draws prompts with replacement and pools their checks (compliance is a share of all checks), so
    the two systems are always compared on the same prompts. ``None`` with no checks at all.
    """
    if len(system) != len(base):
        raise ValueError("the two systems must be scored on the same prompts")
    if len(system) == 0 or base[:, 1].sum() == 0:
        return None
    idx = np.random.default_rng(seed).integers(0, len(system), size=(n_boot, len(system)))
    with np.errstate(invalid="ignore", divide="ignore"):
        diffs = (system[idx, 0].sum(1) / system[idx, 1].sum(1)) - (base[idx, 0].sum(1) / base[idx, 1].sum(1))
    diffs = diffs[np.isfinite(diffs)]
    tail = (1 - level) / 2
    return [round(float(np.quantile(diffs, tail)), 4), round(float(np.quantile(diffs, 1 - tail)), 4)]


def add_intervals(systems: dict[str, Any], counts: dict[str, np.ndarray]) -> None:
    """Set ``compliance_ci_vs_base`` on every system (``None`` for base itself or without base), and
    ``compliance_ci_vs_rules`` on ``uno-guided`` and ``rules-vetted`` (when they and ``rules`` ran)."""
    for name, s in systems.items():
        s["compliance_ci_vs_base"] = (paired_bootstrap_ci(counts[name], counts["base"])
                                      if name != "base" and "base" in counts else None)
    for name in ("uno-guided", "rules-vetted"):
        if name in systems and "rules" in counts:
            systems[name]["compliance_ci_vs_rules"] = paired_bootstrap_ci(counts[name], counts["rules"])


def run(ws: Workspace, models: Models, records: list[dict[str, Any]], prefs: Preferences,
        cfg: QualityConfig | None = None) -> dict[str, Any]:
    """Answer ``records`` with every system and score them; also saved as artifacts/bench_quality.json.

    The saved file also lists, per test prompt (its position in ``records``), its dataset and each system's
    checks passed, checks made, the constraints failed, answer path and cluster (``prompts``): where a system wins
    or loses, and on what.
    """
    cfg = cfg or QualityConfig()
    if not records:
        raise InputError("no test prompts")
    result = asyncio.run(_run(ws, models, records, prefs, cfg))
    write_lines_atomic(ws.artifacts / "bench_quality.json", [json.dumps(result, ensure_ascii=False, indent=2)])
    return {k: v for k, v in result.items() if k != "prompts"}


async def _run(ws: Workspace, models: Models, records: list[dict[str, Any]], prefs: Preferences,
               cfg: QualityConfig) -> dict[str, Any]:
    queries = [record_query(r) for r in records]
    memory = load_memory(ws)
    vetted = load_vetted_memory(ws) if "rules-vetted" in cfg.systems else []
    router = Router.load(ws, models.embedder) if ws.count("clusters") else None
    systems: dict[str, Any] = {}
    counts: dict[str, np.ndarray] = {}
    routes: dict[str, list[str]] = {}
    per_prompt: list[dict[str, Any]] = [{"index": i, "dataset": str(r.get("dataset_name", "unknown")), "systems": {}}
                                        for i, r in enumerate(records)]  # no text: the prompts may be anyone's
    try:
        for system in cfg.systems:
            if system in UNO_SYSTEMS:
                attempts = await _uno_system(ws, models, router, system, queries, cfg)
                if system != "self-refine":
                    routes[system] = [a.path or "error" for a in attempts]
            else:
                prompts = build_prompts(system, queries, vetted if system == "rules-vetted" else memory,
                                        models.embedder.embed, cfg.top_k)
                attempts = await _plain_system(models, system, prompts, cfg)
            systems[system], counts[system], failed = await _system_metrics(models, attempts, records, prefs, cfg)
            for row, a, (passed, checked), missed in zip(per_prompt, attempts, counts[system], failed):
                row["systems"][system] = {"passed": int(passed), "checked": int(checked), "failed": missed,
                                          "path": a.path, "cluster": a.cluster, "cut": a.cut}
    finally:
        await models.aclose()
    add_intervals(systems, counts)
    n_checks = int(next(iter(counts.values()))[:, 1].sum()) if counts else 0
    return {"n_prompts": len(records), "n_checks": n_checks, "memory_logs": len(memory), "systems": systems,
            "funnel": {**funnel(ws), "test_paths": count_test_paths(routes)}, "prompts": per_prompt}


async def _system_metrics(models: Models, attempts: list[Attempt], records: list[dict[str, Any]],
                          prefs: Preferences, cfg: QualityConfig) -> tuple[dict[str, Any], np.ndarray, list[list[str]]]:
    """A system's summary (overall and per dataset), its per-prompt check counts and per prompt the constraints
    its answer failed (their ids)."""
    by_dataset: dict[str, list[dict[str, Any]]] = defaultdict(list)
    rows = []
    checklists = await _checklists(models, attempts, records) if cfg.checklist else [None] * len(records)
    for a, rec, checklist in zip(attempts, records, checklists):
        row = {**_score(a, rec, prefs), "prompt_tokens": a.prompt_tokens, "latency_s": a.latency_s, "error": a.error,
               "cut": a.cut}
        if cfg.checklist:
            row["checklist"] = checklist
        rows.append(row)
        by_dataset[str(rec.get("dataset_name", "unknown"))].append(row)
    summary = {**_summarise(rows), "per_dataset": {d: _summarise(r) for d, r in sorted(by_dataset.items())}}
    return summary, prompt_counts(rows), [sorted(k for k, ok in r["checks"].items() if not ok) for r in rows]
