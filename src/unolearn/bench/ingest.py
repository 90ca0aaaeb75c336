"""Benchmarks: each measures one target side by side in one run and returns JSON-ready figures."""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from ..errors import UnolearnError
from ..store.admin import scratch_store
from . import child_env


def write_synthetic_logs(path: Path, n: int) -> None:
    """Write ``n`` distinct OpenAI-format logs with feedback and actions to ``path`` (streaming)."""
    topics = ["tax law", "python packaging", "sourdough", "marathon training", "photosynthesis"]
    with path.open("w", encoding="utf-8") as fh:
        for i in range(n):
            topic = topics[i % len(topics)]
            rec = {"messages": [
                {"role": "system", "content": "You are a helpful assistant."},
                {"role": "user", "content": f"Question {i}: explain {topic} in a few sentences."},
                {"role": "assistant", "content": f"Answer {i} about {topic}. " * 20},
                {"role": "user", "content": "Too long, and please cite a source."}],
                "actions": ["dislike"] if i % 3 == 0 else [], "source": "bench"}
            fh.write(json.dumps(rec) + "\n")


def bench_ingest(n: int, store: str | None = None) -> dict[str, Any]:
    """Ingest ``n`` synthetic records with the real CLI in a child process, into a throwaway workspace: its
    SQLite file, or with a PostgreSQL ``store``, a scratch database of that server (dropped afterwards; the
    store's own tables are never written).

    Returns records per second (wall time of the child) and the child's peak resident memory in MB.
    """
    with tempfile.TemporaryDirectory(prefix="unolearn-bench-") as tmp, scratch_store(store) as scratch:
        data = Path(tmp) / "logs.jsonl"
        write_synthetic_logs(data, n)
        cmd = [sys.executable, "-m", "unolearn", "-d", str(Path(tmp) / "ws"), "ingest", "--json", str(data)]
        start = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, env=child_env(scratch))
        seconds = time.perf_counter() - start
        if proc.returncode != 0:
            raise UnolearnError(f"ingest failed: {proc.stderr.strip()[-500:]}")
        counts = json.loads(proc.stdout)
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {"n": n, "store": "postgresql" if scratch else "sqlite", "ingested": counts["ingested"],
            "seconds": round(seconds, 2),
            "records_per_s": round(n / seconds, 1), "peak_mb": round(peak_kb / 1024, 1)}
