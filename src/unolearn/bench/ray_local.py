"""A real Ray cluster on this machine (127.0.0.1), for ``bench scale`` and the test suite: a head node and
worker nodes, CPU only, usage stats off, started with `ray start` (no local mode) and stopped afterwards."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import BackendError, ConfigError
from . import free_port

RAY = Path(sys.executable).with_name("ray")


def _ray(*args: str, env: dict[str, str]) -> None:
    p = subprocess.run([str(RAY), *args], capture_output=True, text=True, env=env, timeout=180)
    if p.returncode != 0:
        raise BackendError(f"ray {args[0]} failed: {p.stderr[-2000:]}")


def _running(name: str) -> bool:
    """Whether a process named ``name`` runs on this machine (Linux /proc; False where there is none)."""
    for comm in Path("/proc").glob("[0-9]*/comm"):
        try:
            if comm.read_text().strip() == name:
                return True
        except OSError:
            continue
    return False


@contextmanager
def ray_cluster(cpus_per_node: int = 1, workers: int = 1) -> Iterator[str]:
    """Start a head and ``workers`` worker nodes on this machine; yield the cluster's address
    (``127.0.0.1:PORT``)."""
    if not RAY.exists():
        raise ConfigError(f"no `ray` command beside {sys.executable}: pip install 'unolearn[ray]'")
    if _running("raylet"):
        raise ConfigError("a Ray cluster already runs on this machine; stop it first (`ray stop`): the one started "
                          "here is stopped with `ray stop --force`, which would stop that one too")
    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's socket paths must stay under 107 bytes
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    port = free_port()
    address = f"127.0.0.1:{port}"
    common = ["--node-ip-address=127.0.0.1", f"--num-cpus={cpus_per_node}", "--num-gpus=0", "--disable-usage-stats"]
    try:
        _ray("start", "--head", f"--port={port}", "--include-dashboard=false", f"--temp-dir={temp}", *common,
             env=env)
        for _ in range(workers):
            _ray("start", f"--address={address}", *common, env=env)
        yield address
    finally:
        subprocess.run([str(RAY), "stop", "--force"], capture_output=True, env=env, timeout=120)
        shutil.rmtree(temp, ignore_errors=True)
