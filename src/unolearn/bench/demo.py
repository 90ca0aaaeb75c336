"""The demo benchmark: wall time and the peak resident memory of the whole process tree.

A stage may run in a child process, so the parent's own peak (``ru_maxrss``) understates what the
machine must hold: the figure here is the peak, over time, of the summed resident memory of the
command's process and all its descendants, sampled with psutil. Pages shared between processes
(a memory-mapped model file) count once per process, so the figure errs high.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import UnolearnError
from . import child_env


def tree_rss(proc: Any) -> int:
    """The summed resident bytes of ``proc`` (a ``psutil.Process``) and its living descendants."""
    import psutil

    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.Error:  # ended between listing and reading
            pass
    return total


def run_sampled(cmd: Sequence[str], interval_s: float = 0.2, env: dict[str, str] | None = None,
                ) -> dict[str, Any]:
    """Run ``cmd``; return its exit code, wall seconds, stdout and the peak summed RSS of its tree (MB)."""
    import psutil

    start = time.perf_counter()
    child = subprocess.Popen(list(cmd), stdout=subprocess.PIPE, text=True, env=env)
    proc = psutil.Process(child.pid)
    peak, done = 0, threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            try:
                peak = max(peak, tree_rss(proc))
            except psutil.Error:
                return
            done.wait(interval_s)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out = child.communicate()[0]
    done.set()
    sampler.join()
    return {"returncode": child.returncode, "wall_s": round(time.perf_counter() - start, 1),
            "peak_tree_mb": round(peak / 2**20), "stdout": out}


def bench_demo(workspace: Path, flags: Sequence[str] = ()) -> dict[str, Any]:
    """Run ``unolearn -d WORKSPACE demo --json FLAGS`` in a child process, on the workspace's own SQLite file
    (never a store named in ``UNOLEARN_STORE``: the demo re-clusters); return its time, peak and table."""
    cmd = [sys.executable, "-m", "unolearn", "-d", str(workspace), "demo", "--json", *flags]
    res = run_sampled(cmd, env=child_env())
    if res["returncode"] != 0:
        raise UnolearnError(f"the demo exited with {res['returncode']} (its errors are above)")
    result = json.loads(res["stdout"])
    return {"command": " ".join(["unolearn", "-d", str(workspace), "demo", *flags]),
            "wall_s": res["wall_s"], "peak_tree_mb": res["peak_tree_mb"], "n_prompts": result.get("n_prompts"),
            "compliance": {k: v.get("compliance") for k, v in result.get("systems", {}).items()}}
