"""The whole config.yaml checked at once: every section against the dataclass of the stage that reads it.

Why apart from :mod:`unolearn.config`: knowing every section means importing every stage's configuration,
training's and simulation's among them, which the proxy (a reader of :mod:`unolearn.config`) must not import.
"""

from __future__ import annotations

from pathlib import Path

from .config import build_config, load_backends, read_config_file
from .errors import ConfigError


def section_classes() -> dict[str, type]:
    """Every section of config.yaml but ``backends`` and ``profile``, with the dataclass that reads it."""
    from .assess import AssessConfig
    from .bench.quality import QualityConfig
    from .cluster import ClusterConfig
    from .demo import DemoConfig
    from .distill import DistillConfig
    from .executor import ExecutorConfig
    from .forget import RetentionConfig
    from .redact import RedactConfig
    from .rulebook import RulebookConfig
    from .selection import SelectConfig
    from .serve.config import ServeConfig
    from .simulate import SimulateConfig
    from .train import TrainConfig

    return {"distill": DistillConfig, "cluster": ClusterConfig, "assess": AssessConfig, "rulebook": RulebookConfig,
            "train": TrainConfig, "select": SelectConfig, "serve": ServeConfig, "redact": RedactConfig,
            "retention": RetentionConfig, "simulate": SimulateConfig, "demo": DemoConfig,
            "bench_quality": QualityConfig, "executor": ExecutorConfig}


def check_config_file(path: Path) -> None:
    """Validate every section and key of a config file at once: an unknown section or key, a value of the wrong
    type or out of range is a ConfigError naming the file, the section and the key."""
    data = read_config_file(path)
    classes = section_classes()
    known = ["backends", "profile", *classes]
    for section, values in data.items():
        if section not in known:
            raise ConfigError(f"{path}: unknown section {section!r} (known: {', '.join(known)})")
        if section == "profile":
            if values not in ("auto", "cpu", "gpu"):
                raise ConfigError(f"{path}: profile must be auto, cpu or gpu, got {values!r}")
        elif section != "backends":
            if values is not None and not isinstance(values, dict):
                raise ConfigError(f"{path}: '{section}' must be a mapping")
            build_config(classes[section], values or {}, f"{path}: {section}")
    load_backends(path, env={})
