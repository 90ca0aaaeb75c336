"""The Ray executor on a real Ray cluster on 127.0.0.1 (a head and a worker node): training jobs give the same
modules as the local executor, a job whose worker dies is rerun, and one that dies past its retries fails
alone while the others complete."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from doubles import HashEmbedder
from fake_openai import FakeOpenAI
from ray_cluster import ray_cluster
from test_pipeline import logs_file, respond, workspace_config
from test_train import seed_workspace
from tiny_model import tiny_model_dir  # noqa: F401

from unolearn.cluster import ClusterConfig
from unolearn.cluster import run as cluster
from unolearn.errors import ConfigError
from unolearn.executor import ExecutorConfig, run_jobs
from unolearn.store import Workspace
from unolearn.train import TrainConfig, list_modules, run


@pytest.fixture(scope="module")
def ray_address():
    ray = pytest.importorskip("ray")
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers cannot import this module
    with ray_cluster() as address:
        yield address
        ray.shutdown()


def dies_once(marker: str, value: int) -> int:
    """Kill the worker the first time (a lost machine), answer the second."""
    if not Path(marker).exists():
        Path(marker).write_text("died once")
        os._exit(1)
    return value * 2


def always_dies() -> None:
    os._exit(1)


def test_a_lost_worker_is_rerun_and_a_job_past_its_retries_fails_alone(ray_address, tmp_path):
    cfg = ExecutorConfig(kind="ray", address=ray_address, max_retries=1)
    jobs = [("retried", (dies_once, (str(tmp_path / "marker"), 21))), ("lost", (always_dies, ())),
            ("fine", (abs, (-3,)))]
    outcomes = run_jobs(cfg, lambda fn, args: fn(*args), jobs)
    assert [o.key for o in outcomes] == ["retried", "lost", "fine"]
    assert outcomes[0].value == 42 and outcomes[2].value == 3
    assert outcomes[1].error is not None and outcomes[1].value is None
    assert (tmp_path / "marker").read_text() == "died once"


def trained_workspace(root: Path, tiny_model_dir: Path, executor: ExecutorConfig) -> list:
    with Workspace.open(root) as ws:
        seed_workspace(ws)
        cluster(ws, HashEmbedder(dim=64), ClusterConfig(threshold=1.0))
        cfg = TrainConfig(base_model=str(tiny_model_dir), epochs=1, critic_epochs=1, lora_r=4, lora_alpha=8,
                          grad_accum=1, max_length=256, min_pairs=3, critics="none")
        run(ws, cfg, executor=executor)
        return [(m["id"], m["kind"], m["cluster"], m["metrics"].get("train_loss")) for m in list_modules(ws)]


def test_ray_trains_the_same_modules_as_local(ray_address, tiny_model_dir, tmp_path):  # noqa: F811
    torch = pytest.importorskip("torch")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a Ray task trains with its num_cpus (1) threads: the same here
    try:
        local = trained_workspace(tmp_path / "local", tiny_model_dir, ExecutorConfig())
    finally:
        torch.set_num_threads(threads)
    on_ray = trained_workspace(tmp_path / "ray", tiny_model_dir,
                               ExecutorConfig(kind="ray", address=ray_address, num_cpus=1))
    assert len(local) == 3
    assert [m[:3] for m in on_ray] == [m[:3] for m in local]  # the same module ids, kinds and clusters
    for (_, _, _, a), (_, _, _, b) in zip(local, on_ray):
        assert a == pytest.approx(b, rel=1e-4)


def test_executor_config_is_checked():
    with pytest.raises(ConfigError, match="executor.kind"):
        ExecutorConfig(kind="spark")
    with pytest.raises(ConfigError, match="num_cpus"):
        ExecutorConfig(kind="ray", num_cpus=0)


def test_the_main_job_on_ray_distils_trains_and_selects_as_it_does_locally(ray_address, tiny_model_dir,  # noqa: F811
                                                                          tmp_path):
    """`unolearn run --executor ray`: distil chunks, trainings and clusters' validations as Ray tasks, against
    the same OpenAI-compatible server; the same rules, pairs, modules and plans as the local run."""
    fake = FakeOpenAI(dim=16)
    fake.responder = respond
    outs = {}
    with fake.running():
        for kind in ("local", "ray"):
            ws_dir = tmp_path / kind
            ws_dir.mkdir()
            config = json.loads(workspace_config(fake.url, str(tiny_model_dir)))
            config["distill"]["chunk_size"] = 3  # 9 logs: three distil jobs
            config["executor"] = {"address": ray_address, "num_cpus": 1}
            (ws_dir / "config.yaml").write_text(json.dumps(config))
            r = subprocess.run([sys.executable, "-m", "unolearn", "-d", str(ws_dir), "run", str(logs_file(tmp_path)),
                                "--executor", kind, "--json"], capture_output=True, text=True, timeout=900)
            assert r.returncode == 0, r.stderr[-3000:]
            outs[kind] = json.loads(r.stdout)
            with Workspace.open(ws_dir) as ws:
                outs[kind]["rules"] = sorted(map(tuple, ws.conn.execute("SELECT log_id, kind, rules FROM rules")))
                outs[kind]["pairs"] = sorted(r[0] for r in ws.conn.execute("SELECT id FROM pairs"))
    local, on_ray = outs["local"], outs["ray"]
    assert local["distill"]["pairs"] == {"revision": 8} and len(local["rules"]) == 18
    for key in ("distill", "rules", "pairs", "select"):
        assert on_ray[key] == local[key], key
    assert [m["id"] for m in on_ray["train"]] == [m["id"] for m in local["train"]]
