"""The small end-to-end example behind the README's first command.

Simulated users with hidden preferences (the packaged preference file, or another one: ``--preferences
random:SEED`` measures on preferences nobody tuned for) react to the embedded
model's answers on a few train prompts of each shared MemoryBench set; the main job learns from those
logs; the quality benchmark then compares every system on held-out test prompts and prints the table.
The embedded 0.5B model answers a request in about 4–10 s on a 2-core CPU (measured), so the
default sizes are small; raise them with flags, or point the configuration at a real server. Nothing
here is demo-only: the settings are the profile's (see :mod:`unolearn.profiles`), as for `unolearn
simulate`, `unolearn run` and `unolearn bench quality`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import pipeline
from .backends import Models
from .bench import quality as bench_quality
from .bench.quality import QualityConfig
from .config import opt, stage_config
from .errors import ConfigError
from .pipeline import RunConfigs, run_configs
from .prompt_sets import packaged_dir, split_files
from .simulate import SimulateConfig, load_preferences, load_prompt_records, simulate_async
from .store import Workspace, write_jsonl_atomic


@dataclass
class DemoConfig:
    """Sizes of the example (its costly settings come from the profile, like every command's)."""

    train_per_set: int = opt(4, "Train prompts simulated per dataset.")
    test_per_set: int = opt(2, "Test prompts benchmarked per dataset.")
    seed: int = opt(0, "Seed of the simulated users.")
    preferences: str | None = opt(None, "The users' hidden preferences: a preference file, or random:SEED for one "
                                        "drawn at random (unolearn.prefgen); None: the packaged file.")

    def __post_init__(self) -> None:
        if min(self.train_per_set, self.test_per_set) < 1:
            raise ConfigError("train_per_set and test_per_set must be ≥ 1")
        if self.preferences is not None:
            load_preferences(self.preferences)  # a wrong path or seed fails before anything runs


@dataclass
class DemoStages:
    """The settings of every step of the example, as `simulate`, `run` and `bench quality` would take them."""

    simulate: SimulateConfig
    run: RunConfigs
    quality: QualityConfig


def stages_for(build: Callable[[type, str], Any]) -> DemoStages:
    """The example's settings, each built by ``build(dataclass, config section)`` (defaults → profile → file)."""
    return DemoStages(build(SimulateConfig, "simulate"), run_configs(build), build(QualityConfig, "bench_quality"))


def run(ws: Workspace, models: Models, data_dir: Path | None = None, cfg: DemoConfig | None = None,
        echo: Callable[[str], None] = print, stages: DemoStages | None = None) -> dict[str, Any]:
    """Simulate → main job → benchmark; return the benchmark result (with timings).

    ``data_dir`` holds the prompt files; ``None`` uses the packaged MemoryBench prompts. ``stages``
    default to the ``cpu`` profile's settings.
    """
    cfg = cfg or DemoConfig()
    stages = stages or stages_for(lambda cls, section: stage_config(cls, None, section, {}, "cpu"))
    data_dir = data_dir or packaged_dir()
    start = time.perf_counter()
    prefs = load_preferences(cfg.preferences)
    logs = ws.artifacts / "demo-train-logs.jsonl"
    if not logs.exists():
        echo(f"simulating users on {cfg.train_per_set} train prompts per dataset")
        records = load_prompt_records(split_files(data_dir, "train"), cfg.train_per_set)
        out = asyncio.run(_simulate(models, records, prefs, cfg.seed, stages.simulate))
        write_jsonl_atomic(logs, out)
    pipeline.run(ws, models, [logs], stages.run, echo)
    echo(f"benchmarking on {cfg.test_per_set} test prompts per dataset")
    tests = load_prompt_records(split_files(data_dir, "test"), cfg.test_per_set)
    result = bench_quality.run(ws, models, tests, prefs, stages.quality)
    result["minutes"] = round((time.perf_counter() - start) / 60, 1)
    return result


async def _simulate(models: Models, records: list, prefs: Any, seed: int, cfg: SimulateConfig) -> list:
    try:
        return await simulate_async(records, prefs, models.generator, seed, cfg.rounds, max_tokens=cfg.max_tokens,
                                    logs_per_user=cfg.logs_per_user)
    finally:
        await models.aclose()
