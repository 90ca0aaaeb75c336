"""The tiny model of :mod:`unolearn.bench.tiny_model` as a session fixture, for training and generation tests.

Why: tests must never download a model, and a real one is far too slow on CPU; the tiny one builds in about a
second and runs the real loading code paths unchanged. Its outputs are random text: tests check mechanics.

Test modules use the session-scoped fixture: ``from tiny_model import tiny_model_dir  # noqa: F401``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from unolearn.bench.tiny_model import IM_END, build_tiny_model  # noqa: E402

__all__ = ["IM_END", "build_tiny_model", "tiny_model_dir"]


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding the tiny model and its tokenizer, built once per test session."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny-model"))
