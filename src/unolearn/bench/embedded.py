"""Decoding speed of the embedded model: one request at a time against several per decode step.

The same greedy requests (packaged test prompts, the same ``max_tokens``) go through the model's
one-at-a-time path and then through its batch decoder (:mod:`..backends.llamacpp_batch`), one after the
other in one process with the same threads; then again with a JSON schema (grammar-constrained
sampling). Reported per run: completion tokens per second of both, their ratio, and the share of
answers that are identical (batching changes the kernels' summation order, so a near-tie greedy token
may flip).
"""

from __future__ import annotations

import asyncio
import resource
import sys
import time
from typing import Any

from ..backends.base import ChatRequest, ChatResult
from ..backends.llamacpp import LlamaCppChatModel, default_threads
from ..errors import ConfigError
from ..prompt_sets import PROMPT_SETS, packaged_dir
from ..simulate import load_prompt_records

#: The schema of the constrained run: an object with one string field.
ANSWER_SCHEMA = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}


def packaged_prompts(n: int) -> list[str]:
    """``n`` packaged test prompts, taken from the datasets in turn (cut to 600 characters)."""
    per_set = [[str(r["input_prompt"])[:600] for r in load_prompt_records([packaged_dir() / f"{name}_test.jsonl"])]
               for name in PROMPT_SETS]
    mixed = [p for group in zip(*per_set) for p in group]
    if n > len(mixed):
        raise ConfigError(f"requests: at most {len(mixed)} packaged prompts")
    return mixed[:n]


def bench_embedded(parallel: int = 8, requests: int = 48, max_tokens: int = 128, threads: int | None = None,
                   schema: bool = True) -> dict[str, Any]:
    """Run ``requests`` greedy requests one at a time and ``parallel`` at a time on the embedded model
    (then the same with a JSON schema, unless ``schema`` is False) and return the figures."""
    if parallel < 2 or requests < 1 or max_tokens < 1:
        raise ConfigError("parallel must be at least 2, requests and max_tokens at least 1")
    prompts = packaged_prompts(requests)
    plain = [ChatRequest.of(p, max_tokens=max_tokens) for p in prompts]
    out: dict[str, Any] = {"parallel": parallel, "threads": threads or default_threads(), "max_tokens": max_tokens,
                           **_compare(plain, parallel, threads)}
    if schema:
        constrained = [ChatRequest.of(p + "\n\nAnswer in JSON: {\"answer\": \"...\"}", max_tokens=max_tokens,
                                      schema=ANSWER_SCHEMA) for p in prompts]
        out["schema"] = _compare(constrained, parallel, threads)
    out["peak_rss_mb"] = round(_peak_rss_mb(), 1)
    return out


def _compare(requests: list[ChatRequest], parallel: int, threads: int | None) -> dict[str, Any]:
    """The same requests one at a time, then ``parallel`` at a time; tokens, speeds, ratio, identical share."""
    seq, seq_s, _ = _timed(requests, 1, threads)
    bat, bat_s, stats = _timed(requests, parallel, threads)
    seq_tokens = sum(r.completion_tokens for r in seq)
    bat_tokens = sum(r.completion_tokens for r in bat)
    identical = sum(a.text == b.text for a, b in zip(seq, bat)) / len(requests)
    valid = sum(r.parsed is not None for r in bat) / len(requests)
    return {"requests": len(requests), "sequential_tokens": seq_tokens, "batched_tokens": bat_tokens,
            "sequential_tokens_per_s": round(seq_tokens / seq_s, 2),
            "batched_tokens_per_s": round(bat_tokens / bat_s, 2),
            "ratio": round((bat_tokens / bat_s) / (seq_tokens / seq_s), 2), "identical_greedy": round(identical, 3),
            **({"valid_json_share": round(valid, 3)} if requests[0].schema else {}),
            "batched_prompt_share": round(stats["prompt_s"] / bat_s, 3),
            "batched_prompt_tokens_per_s": round(stats["prompt_tokens"] / max(stats["prompt_s"], 1e-9), 1),
            "batched_step_tokens_per_s": round(stats["step_tokens"] / max(stats["step_s"], 1e-9), 1),
            "mean_sequences_per_step": round(stats["step_tokens"] / max(stats["steps"], 1), 2)}


def _timed(requests: list[ChatRequest], parallel: int,
           threads: int | None) -> tuple[list[ChatResult], float, dict[str, float]]:
    """Answer ``requests`` with ``parallel`` sequences per step on a freshly loaded model (a model that has
    answered before decodes measurably slower one at a time, so neither run inherits the other's state);
    the raw results (a JSON answer cut short by ``max_tokens`` counts with its tokens: the figure is
    decoding speed), the seconds taken and the batch decoder's totals."""
    model = LlamaCppChatModel(n_threads=threads, parallel=parallel)

    async def run() -> list[ChatResult]:
        sem = asyncio.Semaphore(model.concurrency)

        async def one(request: ChatRequest) -> ChatResult:
            async with sem:
                return await model.complete(request)

        try:
            return list(await asyncio.gather(*(one(r) for r in requests)))
        finally:
            stats.update(model.batch_stats())
            await model.aclose()

    stats: dict[str, float] = {}
    start = time.perf_counter()
    results = asyncio.run(run())
    return results, time.perf_counter() - start, stats


def _peak_rss_mb() -> float:
    """This process's peak resident memory in MB (ru_maxrss is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1 << 20) if sys.platform == "darwin" else peak / 1024
