"""Shared fixtures: a fresh workspace and a runner of the real ``unolearn`` command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from unolearn.store import Workspace


@dataclass
class CliResult:
    """Exit code and output of one ``unolearn`` process."""

    code: int
    out: str
    err: str

    def json(self):
        return json.loads(self.out)


@pytest.fixture
def ws_dir(tmp_path: Path) -> Path:
    return tmp_path / "ws"


@pytest.fixture
def ws(ws_dir: Path):
    with Workspace.open(ws_dir) as w:
        yield w


@pytest.fixture
def run_cli(ws_dir: Path):
    """Run ``python -m unolearn -d WS ARGS...`` in a child process, as a user would."""

    def run(*args: str, workspace: bool = True, timeout: float = 120) -> CliResult:
        cmd = [sys.executable, "-m", "unolearn", *(["-d", str(ws_dir)] if workspace else []), *args]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
        return CliResult(p.returncode, p.stdout, p.stderr)

    return run


def write_jsonl(path: Path, records: list) -> Path:
    """Write records (dicts, or raw strings written as-is) one per line."""
    with path.open("w", encoding="utf-8") as fh:
        for r in records:
            fh.write((r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)) + "\n")
    return path


def chat(q: str, a: str | None = None, *feedback: str, **extra) -> dict:
    """An OpenAI-format log record."""
    msgs = [{"role": "user", "content": q}]
    if a is not None:
        msgs.append({"role": "assistant", "content": a})
    msgs += [{"role": "user", "content": f} for f in feedback]
    return {"messages": msgs, **extra}
