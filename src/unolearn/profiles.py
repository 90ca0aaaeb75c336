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

#: Per profile, per config section: the values overlaid on the dataclass defaults — the one table of them.
#: Training's values are filled in by :meth:`unolearn.train.TrainConfig.resolved` (its ``auto`` is decided by CUDA,
#: whatever serves the generator); every other section's are overlaid by :func:`overlay`.
PROFILES: dict[str, dict[str, dict[str, Any]]] = {
    "gpu": {
        "distill": {},
        # The UNO paper's settings.
        "train": {"epochs": 8, "critic_epochs": 8, "lora_r": 64, "lora_alpha": 128, "grad_accum": 8,
                  "max_length": 1024, "gradient_checkpointing": False, "min_pairs": 4, "min_steps_per_epoch": None},
        "select": {},
        "bench_quality": {},
        "simulate": {},
    },
    "cpu": {
        "distill": {"n_revisions": 1, "answer_max_tokens": 256, "rules_max_tokens": 192, "judge_max_tokens": 128},
        # For a 2-core CPU: one cluster of 20 pairs took 8 min (expert) + 4 min (critic) in `unolearn bench train`.
        # Gradient checkpointing: a 2 x 512-token step of the 0.5B model peaks at 3.8 instead of 7.3 GB resident
        # (with limit_heap_growth), for 10-20% more time per step. Small CPU runs have clusters of a few logs: an
        # expert from 2 pairs is still validated before use. max_length: a LexEval case is 475 tokens (median; 95%
        # under 811) before its 256-token answer; at 512 the trainer left out half of that cluster's pairs and cut
        # the rest, and the expert learned to stop after one sentence (the only complete answer it saw). 1280
        # holds 95% of them whole; training on such rows peaked at 5.8 GB resident.
        "train": {"epochs": 2, "critic_epochs": 2, "lora_r": 8, "lora_alpha": 16, "grad_accum": 4, "max_length": 1280,
                  "gradient_checkpointing": True, "min_pairs": 2, "min_steps_per_epoch": 4},
        "select": {"answer_max_tokens": 256, "judge_samples": 2, "judge_max_tokens": 128},
        "bench_quality": {"max_tokens": 256},
        "simulate": {"max_tokens": 256, "rounds": 1},
        # Not a cost but what the 0.5B judge cannot do: its P("one answer can follow both") does not tell
        # compatible rule pairs from contradictory ones (scripts/measure_contradictions.py).
        "rulebook": {"contradictions": False},
    },
}


def note(section: str, key: str) -> str:
    """What the profiles set for one setting, for help texts: "profile gpu: 8, cpu: 2" (only those that set it)."""
    said = [f"{name}: {_shown(values[section][key])}" for name, values in PROFILES.items()
            if key in values.get(section, {})]
    return "profile " + ", ".join(said) if said else ""


def _shown(value: Any) -> str:
    """A profile value as help text shows it (flags as on / off)."""
    if isinstance(value, bool) or value is None:
        return "on" if value else "off"
    return str(value)


def train_values(profile: str) -> dict[str, Any]:
    """The training settings of ``profile`` (``cpu`` or ``gpu``)."""
    return dict(PROFILES[profile]["train"])


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

    ``train`` gets only its own ``profile`` field: :meth:`unolearn.train.TrainConfig.resolved` fills in its values.
    """
    if profile is None:
        return {}
    if profile not in PROFILES:
        raise ConfigError(f"profile: {profile!r} must be resolved to cpu or gpu first")
    return {"profile": profile} if section == "train" else dict(PROFILES[profile].get(section, {}))
