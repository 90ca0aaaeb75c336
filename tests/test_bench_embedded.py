"""`unolearn bench embedded`: the JSON keys, on a few short requests of the packaged model."""

from __future__ import annotations

import pytest

pytest.importorskip("llama_cpp")

from unolearn.bench.embedded import bench_embedded  # noqa: E402
from unolearn.errors import ConfigError  # noqa: E402

KEYS = {"requests", "sequential_tokens", "batched_tokens", "sequential_tokens_per_s", "batched_tokens_per_s",
        "ratio", "identical_greedy", "batched_prompt_share", "batched_step_tokens_per_s"}


def test_bench_embedded_reports_both_runs():
    out = bench_embedded(parallel=2, requests=3, max_tokens=6)
    assert {"parallel", "threads", "peak_rss_mb", "schema"} | KEYS <= set(out)
    assert KEYS | {"valid_json_share"} <= set(out["schema"])
    assert out["sequential_tokens"] > 0 and out["batched_tokens"] > 0 and out["ratio"] > 0
    assert 0 <= out["identical_greedy"] <= 1 and out["batched_step_tokens_per_s"] > 0
    assert out["peak_rss_mb"] > 100


def test_bench_embedded_refuses_one_sequence():
    with pytest.raises(ConfigError, match="parallel"):
        bench_embedded(parallel=1)
