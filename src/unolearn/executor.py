"""Where a stage's independent jobs run: one after another in this process (``local``, the default), or as Ray
tasks on a Ray cluster (``ray``), each with the CPUs and GPUs it reserves. The jobs: distil's chunks of logs,
each cluster's expert and critic training, each cluster's validation in ``select``.

A distil or select job builds its models from the workspace's ``backends`` settings: an OpenAI-compatible server
(vLLM) is shared by all of them, so Ray multiplies the requests in flight; the embedded model is loaded by each
task (about 1.1 GB each), which suits a cluster of CPU machines rather than one small one.

On Ray, every machine reaches the same store (PostgreSQL across machines; the SQLite file when the cluster is
one machine) and the same workspace folder at the same path (a shared file system), since a task opens the
workspace itself and writes its artifacts there. A task whose worker dies is rerun by Ray (``max_retries``);
past its retries, or when it raises, its job's outcome holds the error and the other jobs complete.
Results do not depend on the executor: a job computes the same thing wherever it runs (module ids are keys of
their data and settings; training is seeded), given the same torch threads (a Ray task's are its ``num_cpus``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .config import opt
from .errors import ConfigError

KINDS = ("local", "ray")


@dataclass
class ExecutorConfig:
    """Where the fan-out runs (config.yaml ``executor:``; ``--executor`` on ``run``, ``distill``, ``train``,
    ``select``)."""

    kind: str = opt("local", "local: in this process, one job after another; ray: as Ray tasks on a Ray cluster "
                             "(pip install 'unolearn[ray]').")
    address: str | None = opt(None, "The Ray cluster's address (as `ray start --head` prints it); None: "
                                    "RAY_ADDRESS, else the cluster started on this machine ('auto').")
    num_cpus: float = opt(1.0, "CPUs a Ray task reserves; a training task's torch threads are as many.")
    num_gpus: float = opt(0.0, "GPUs a training task reserves on Ray (1 for the gpu profile on a GPU cluster).")
    max_retries: int = opt(2, "Times Ray reruns a task whose worker died before its job counts as failed.")

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(f"executor.kind must be one of {', '.join(KINDS)}, not {self.kind!r}")
        if self.num_cpus <= 0 or self.num_gpus < 0 or self.max_retries < 0:
            raise ConfigError("executor.num_cpus must be > 0, num_gpus and max_retries ≥ 0")


@dataclass(frozen=True)
class Outcome:
    """One job's result, or the error it ended with (on Ray; locally an error propagates)."""

    key: str
    value: Any = None
    error: BaseException | None = None


def run_jobs(cfg: ExecutorConfig, fn: Callable[..., Any], jobs: Sequence[tuple[str, tuple[Any, ...]]],
             *, gpu: bool = False) -> list[Outcome]:
    """``fn(*args)`` for every ``(key, args)`` of ``jobs``, in order; ``gpu``: the job reserves ``num_gpus``."""
    if cfg.kind == "local":
        return [Outcome(key, fn(*args)) for key, args in jobs]
    return _on_ray(cfg, fn, jobs, gpu)


def _on_ray(cfg: ExecutorConfig, fn: Callable[..., Any], jobs: Sequence[tuple[str, tuple[Any, ...]]],
            gpu: bool) -> list[Outcome]:
    ray = connect(cfg)
    remote = ray.remote(num_cpus=cfg.num_cpus, num_gpus=cfg.num_gpus if gpu else 0, max_retries=cfg.max_retries,
                        runtime_env={"env_vars": {"OMP_NUM_THREADS": str(max(1, int(cfg.num_cpus)))}})(fn)
    refs = [(key, remote.remote(*args)) for key, args in jobs]
    out = []
    for key, ref in refs:
        try:
            out.append(Outcome(key, ray.get(ref)))
        except ray.exceptions.RayError as e:  # the job raised (RayTaskError), or its worker died past retries
            out.append(Outcome(key, error=e))
    return out


def connect(cfg: ExecutorConfig) -> Any:
    """The ``ray`` module, connected to the cluster of ``cfg`` (once per process)."""
    try:
        import ray
    except ImportError as e:
        raise ConfigError("executor 'ray' needs Ray: pip install 'unolearn[ray]'") from e
    if not ray.is_initialized():
        address = cfg.address or os.environ.get("RAY_ADDRESS") or "auto"
        try:
            ray.init(address=address, log_to_driver=False, configure_logging=False)
        except ConnectionError as e:
            raise ConfigError(f"no Ray cluster at {address!r} (start one with `ray start --head`, or set "
                              f"executor.address): {e}") from e
    return ray
