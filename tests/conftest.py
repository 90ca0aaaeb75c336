"""Shared fixtures: a fresh workspace on either store backend and a runner of the real ``unolearn`` command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from postgres import SWITCH, PostgresServer, find_bindir, start_server

from unolearn.store import Workspace
from unolearn.store.admin import scratch_store

#: The store backends that the store, serve and end-to-end tests run on.
BACKENDS = ("sqlite", "postgresql")


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


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A throwaway PostgreSQL server for the session (see tests/postgres.py); fails when none is installed,
    unless UNOLEARN_TEST_POSTGRES=0 asks to skip the PostgreSQL tests."""
    if os.environ.get(SWITCH) == "0":
        pytest.skip(f"{SWITCH}=0: the PostgreSQL store is not tested")
    bindir = find_bindir()
    if bindir is None:
        pytest.fail("PostgreSQL's server binaries (initdb, pg_ctl, postgres) were not found: install Debian's "
                    f"postgresql package (as .ci/run does), or set {SWITCH}=0 to skip the PostgreSQL tests")
    server = start_server(bindir)  # a failed start cleans up after itself, and is retried on a new port
    try:
        yield server
    finally:
        server.stop()


@contextmanager
def store_of(request: pytest.FixtureRequest, backend: str) -> Iterator[str | None]:
    """The store URL of ``backend``: None (the workspace's SQLite file), or a fresh database of the session's
    PostgreSQL server (dropped afterwards)."""
    if backend == "sqlite":
        yield None
        return
    with scratch_store(request.getfixturevalue("postgres_server").url(), prefix="unolearn_test") as url:
        yield url


@pytest.fixture(params=BACKENDS)
def each_store(request: pytest.FixtureRequest) -> Iterator[str | None]:
    """Each store backend in turn (a test module that runs on both makes ``store_url`` this fixture)."""
    with store_of(request, request.param) as url:
        yield url


@pytest.fixture
def store_url() -> str | None:
    """The store of ``ws`` and ``run_cli``: the workspace's SQLite file, unless a module overrides it."""
    return None


@pytest.fixture
def ws(ws_dir: Path, store_url: str | None):
    with Workspace.open(ws_dir, store_url) as w:
        yield w


@pytest.fixture
def run_cli(ws_dir: Path, store_url: str | None):
    """Run ``python -m unolearn -d WS [--store URL] ARGS...`` in a child process, as a user would."""

    def run(*args: str, workspace: bool = True, timeout: float = 120) -> CliResult:
        where = ["-d", str(ws_dir), *(["--store", store_url] if store_url else [])] if workspace else []
        cmd = [sys.executable, "-m", "unolearn", *where, *args]
        env = {**{k: v for k, v in os.environ.items() if k != "UNOLEARN_STORE"}, "PYTHONUNBUFFERED": "1"}
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
