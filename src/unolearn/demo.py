"""The small end-to-end example behind the README's first command.

Simulated users with hidden preferences (the packaged preference file) react to the embedded
model's answers on a few train prompts of each shared MemoryBench set; the main job learns from those
logs; the quality benchmark then compares every system on held-out test prompts and prints the table.
The embedded 0.5B model answers a request in about 4–10 s on a 2-core CPU (measured), so the
default sizes are small; raise them with flags, or point the configuration at a real server.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import bench_quality, pipeline
from .backends import Models
from .bench_quality import QualityConfig
from .cluster import ClusterConfig
from .config import opt
from .distill import DistillConfig
from .errors import ConfigError
from .pipeline import RunConfigs
from .prompt_sets import packaged_dir, split_files
from .selection import SelectConfig
from .simulate import load_preferences, load_prompt_records, simulate_async
from .store import Workspace, write_jsonl_atomic
from .train import TrainConfig

@dataclass
class DemoConfig:
    """Sizes of the example."""

    train_per_set: int = opt(4, "Train prompts simulated per dataset.")
    test_per_set: int = opt(2, "Test prompts benchmarked per dataset.")
    rounds: int = opt(1, "Feedback rounds of the simulated users.")
    max_tokens: int = opt(96, "Token budget of every answer.")
    seed: int = opt(0, "Seed of the simulated users.")

    def __post_init__(self) -> None:
        if min(self.train_per_set, self.test_per_set, self.max_tokens) < 1 or self.rounds < 0:
            raise ConfigError("train_per_set, test_per_set and max_tokens must be ≥ 1, rounds ≥ 0")


def demo_stage_configs(cfg: DemoConfig) -> RunConfigs:
    """Stage settings small enough for a 2-core CPU (the paper's defaults are for GPUs)."""
    return RunConfigs(
        # One revision per log: it becomes `chosen` with no judge call (half of distil's calls on a CPU).
        distill=DistillConfig(n_revisions=1, answer_max_tokens=cfg.max_tokens, rules_max_tokens=256,
                              judge_max_tokens=160),
        cluster=ClusterConfig(threshold=0.8),  # by `unolearn cluster --sweep` on the demo logs (e5)
        train=TrainConfig(profile="cpu", min_pairs=2),  # a critic for every cluster, as in the reference
        select=SelectConfig(answer_max_tokens=cfg.max_tokens))


def run(ws: Workspace, models: Models, data_dir: Path | None = None, cfg: DemoConfig | None = None,
        echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Simulate → main job → benchmark; return the benchmark result (with timings).

    ``data_dir`` holds the prompt files; ``None`` uses the packaged MemoryBench prompts.
    """
    cfg = cfg or DemoConfig()
    data_dir = data_dir or packaged_dir()
    start = time.perf_counter()
    prefs = load_preferences(None)
    logs = ws.artifacts / "demo-train-logs.jsonl"
    if not logs.exists():
        echo(f"simulating users on {cfg.train_per_set} train prompts per dataset")
        records = load_prompt_records(split_files(data_dir, "train"), cfg.train_per_set)
        out = asyncio.run(_simulate(models, records, prefs, cfg))
        write_jsonl_atomic(logs, out)
    pipeline.run(ws, models, [logs], demo_stage_configs(cfg), echo)
    echo(f"benchmarking on {cfg.test_per_set} test prompts per dataset")
    tests = load_prompt_records(split_files(data_dir, "test"), cfg.test_per_set)
    result = bench_quality.run(ws, models, tests, prefs, QualityConfig(max_tokens=cfg.max_tokens))
    result["minutes"] = round((time.perf_counter() - start) / 60, 1)
    return result


async def _simulate(models: Models, records: list, prefs: Any, cfg: DemoConfig) -> list:
    try:
        return await simulate_async(records, prefs, models.generator, cfg.seed, cfg.rounds, max_tokens=cfg.max_tokens)
    finally:
        await models.aclose()
