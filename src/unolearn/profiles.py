"""Profiles: one switch for the costly settings of every stage.

The stage dataclasses default to the UNO paper's settings, which assume GPUs and a served model.
A profile overlays the settings that decide the cost of a run — token budgets, revisions per log,
judge samples, epochs and accumulation (through ``train.profile``) — between those defaults and
the config file, so a run on a laptop and a run on a cluster differ by one word:

    defaults → profile → config.yaml section → command-line flags

``auto`` picks ``cpu`` when the generator runs in this process on a CPU (the embedded model, or
``hf`` without CUDA) and ``gpu`` when it is a server (``openai``); training resolves ``auto`` on
its own, by whether CUDA is present, since it runs here whatever serves the generator.

Why these ``cpu`` values (2 cores, the embedded 0.5B model, measured): an answer is generated at
about 35–40 tokens/s, so a 256-token budget costs ~7 s and the paper's 1,024 ~30 s per call; one
revision per kind (two candidates instead of six) and two judge samples (one greedy, one sampled)
keep distil and select within minutes per dozen logs. A budget of 256 tokens cannot hold a
400-word answer: such constraints then fail for every system alike.
"""

from __future__ import annotations

import os
from typing import Any

from .errors import ConfigError

PROFILE_NAMES = ("auto", "cpu", "gpu")

#: Per profile, per config section: the values overlaid on the dataclass defaults.
PROFILES: dict[str, dict[str, dict[str, Any]]] = {
    "gpu": {
        "distill": {},
        "train": {"profile": "gpu"},
        "select": {},
        "bench_quality": {},
        "simulate": {},
    },
    "cpu": {
        "distill": {"n_revisions": 1, "answer_max_tokens": 256, "rules_max_tokens": 192, "judge_max_tokens": 128},
        "train": {"profile": "cpu"},
        "select": {"answer_max_tokens": 256, "judge_samples": 2, "judge_max_tokens": 128},
        "bench_quality": {"max_tokens": 256},
        "simulate": {"max_tokens": 256, "rounds": 1},
        # Not a cost but what the 0.5B judge cannot do: its P("one answer can follow both") does not tell
        # compatible rule pairs from contradictory ones (scripts/measure_contradictions.py).
        "rulebook": {"contradictions": False},
    },
}


def check(name: str) -> str:
    """``name`` when it is a profile, else a one-line :class:`ConfigError`."""
    if name not in PROFILE_NAMES:
        raise ConfigError(f"profile: {name!r} is not one of {', '.join(PROFILE_NAMES)}")
    return name


def resolve(name: str, generator_backend: str) -> str:
    """``cpu`` or ``gpu``: ``name`` itself, or for ``auto`` what the generator's backend implies."""
    if check(name) != "auto":
        return name
    if generator_backend == "openai":
        return "gpu"
    if generator_backend == "hf":
        import torch

        return "gpu" if torch.cuda.is_available() else "cpu"
    return "cpu"


def requested(config_file_data: dict[str, Any], flag: str | None) -> str:
    """The profile asked for: the flag, else ``$UNOLEARN_PROFILE``, else the config file's ``profile:``, else auto."""
    name = flag or os.environ.get("UNOLEARN_PROFILE") or config_file_data.get("profile") or "auto"
    if not isinstance(name, str):
        raise ConfigError(f"profile: expected one of {', '.join(PROFILE_NAMES)}, got {name!r}")
    return check(name)


def overlay(profile: str | None, section: str) -> dict[str, Any]:
    """The values ``profile`` (``cpu`` or ``gpu``; None: none) sets in config ``section``.

    ``train`` gets only its own ``profile`` field (:data:`unolearn.train.PROFILES` holds the values).
    """
    if profile is None:
        return {}
    if profile not in PROFILES:
        raise ConfigError(f"profile: {profile!r} must be resolved to cpu or gpu first")
    return dict(PROFILES[profile].get(section, {}))
