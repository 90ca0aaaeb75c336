"""The online benchmark: the loop closed while serving, round after round, on real HTTP.

A real ``unolearn serve`` (the embedded model, or an upstream) runs for the whole benchmark and is
never restarted. Round 0 measures it before any learning. Each round then:

1. simulated users (:func:`unolearn.simulate.react`, each with a user id) send train prompts never
   used in an earlier round through the proxy and post their reactions to ``/v1/feedback``;
2. ``unolearn run`` turns the answers with feedback into logs and learns (incremental clustering,
   training of the changed clusters, selection, which publishes a new plan);
3. ``POST /v1/admin/reload`` makes the proxy serve the new plan;
4. the same test prompts go through the proxy under the system measured. They never get feedback,
   so they never become logs.

Compliance is measured by code against each test prompt's hidden constraints, with a paired
bootstrap interval of each round's difference to round 0.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..config import opt
from ..constraints import compliance
from ..errors import ConfigError, UnolearnError
from ..names import SERVED_SYSTEMS
from ..prompt_sets import resolve
from ..simulate import Preferences, constraints_for, load_prompt_records, react, record_query
from ..store import Workspace
from . import child_env
from .quality import paired_bootstrap_ci, prompt_counts
from .serve import ServeProcess


@dataclass
class OnlineConfig:
    """Settings of the online benchmark."""

    rounds: int = opt(3, "Learning rounds after round 0.")
    train_per_set: int = opt(4, "New train prompts per packaged set in each round (with constraints).")
    test_per_set: int = opt(5, "Test prompts per packaged set, the same in every round.")
    system: str = opt("uno-guided", "The system the test prompts are answered by.")
    max_tokens: int = opt(256, "Token budget of every answer.")
    seed: int = opt(42, "Seed of the answers and of the simulated users.")
    logs_per_user: int = opt(3, "Consecutive train prompts of one set that one simulated user sends.")

    def __post_init__(self) -> None:
        if self.rounds < 1 or self.train_per_set < 1 or self.test_per_set < 1 or self.max_tokens < 1:
            raise ConfigError("bench online: rounds, train_per_set, test_per_set and max_tokens must be ≥ 1")
        if self.system not in SERVED_SYSTEMS:
            raise ConfigError(f"bench online: system {self.system!r} is not one of {', '.join(SERVED_SYSTEMS)}")


class Client:
    """JSON over HTTP to the proxy (the standard library: the benchmark needs no client package)."""

    def __init__(self, url: str, timeout_s: float = 900.0) -> None:
        self.url, self.timeout_s = url, timeout_s
        self.failed = 0  #: requests that did not answer 200
        models, _ = self.call("GET", "/v1/models")
        if not models or not models.get("data"):
            raise UnolearnError(f"the proxy at {url} lists no model (GET /v1/models)")
        self.model = models["data"][0]["id"]  #: the model requests name: the upstream's first, or the embedded one

    def call(self, method: str, path: str, body: dict[str, Any] | None = None,
             headers: dict[str, str] | None = None) -> tuple[dict[str, Any] | None, dict[str, str]]:
        """The JSON answer and headers of one request; ``(None, {})`` (and counted) when it failed."""
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"content-type": "application/json", **(headers or {})})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                return json.loads(resp.read()), dict(resp.headers)
        except (urllib.error.URLError, OSError, ValueError):
            self.failed += 1
            return None, {}

    def chat(self, query: str, cfg: OnlineConfig, *, user: str | None = None,
             system: str | None = None) -> tuple[str | None, str | None]:
        """``(answer, response id)`` of one chat request through the proxy; ``(None, None)`` when it failed."""
        body = {"model": self.model, "messages": [{"role": "user", "content": query}],
                "max_tokens": cfg.max_tokens, "temperature": 0.0, "seed": cfg.seed}
        if user:
            body["user"] = user
        data, _ = self.call("POST", "/v1/chat/completions", body, {"x-unolearn-system": system} if system else None)
        if data is None:
            return None, None
        return data["choices"][0]["message"].get("content") or "", data.get("id")


def prompt_rounds(prefs: Preferences, cfg: OnlineConfig) -> tuple[list[list[dict[str, Any]]], list[dict[str, Any]]]:
    """The train prompts of each round (``train_per_set`` new ones per set, never reused) and the test prompts."""
    by_set: dict[str, list[dict[str, Any]]] = {}
    for rec in load_prompt_records(resolve("memorybench:train")):
        if constraints_for(prefs, rec):
            by_set.setdefault(str(rec.get("dataset_name")), []).append(rec)
    n = cfg.train_per_set
    rounds = [[rec for recs in by_set.values() for rec in recs[r * n:(r + 1) * n]] for r in range(cfg.rounds)]
    if not all(rounds):
        raise ConfigError("bench online: the packaged train prompts run out before the last round")
    tests = [r for r in load_prompt_records(resolve("memorybench:test"), cfg.test_per_set) if constraints_for(prefs, r)]
    if not tests:
        raise ConfigError("bench online: no test prompt has a constraint in the preference file")
    return rounds, tests


def user_id(record: dict[str, Any], index: int, per_user: int) -> str:
    """The simulated user of the ``index``-th train prompt of its set, over all rounds."""
    return f"sim-{record.get('dataset_name') or 'prompts'}-{index // per_user + 1}"


def send_train_round(client: Client, prompts: list[dict[str, Any]], prefs: Preferences, cfg: OnlineConfig,
                     seen: dict[str, int]) -> int:
    """Send one round's train prompts with their users' reactions; the number of feedbacks posted."""
    posted = 0
    for rec in prompts:
        dataset = str(rec.get("dataset_name"))
        k = seen[dataset] = seen.get(dataset, -1) + 1
        user = user_id(rec, k, cfg.logs_per_user)
        text, rid = client.chat(record_query(rec), cfg, user=user)
        if text is None:
            continue
        reaction, action = react(rec, text, prefs, cfg.seed)
        if reaction or action:  # the user's own feedback: the proxy refuses it from anyone else
            body = {"response_id": rid, "user": user, **({"text": reaction} if reaction else {}),
                    **({"action": action} if action else {})}
            posted += client.call("POST", "/v1/feedback", body)[0] is not None
    return posted


def measure(client: Client, tests: list[dict[str, Any]], prefs: Preferences, cfg: OnlineConfig) -> np.ndarray:
    """Per test prompt ``[satisfied, checked]`` under ``cfg.system`` (a failed answer satisfies nothing)."""
    rows = []
    for rec in tests:
        text, _ = client.chat(record_query(rec), cfg, system=cfg.system)
        checks = compliance(text or "", constraints_for(prefs, rec))
        rows.append({"checks": checks if text is not None else {k: False for k in checks}})
    return prompt_counts(rows)


def learn(ws_dir: Path, store: str | None) -> dict[str, Any]:
    """``unolearn run`` in a child process (it collects the served answers with feedback); its JSON."""
    cmd = [sys.executable, "-m", "unolearn", "-d", str(ws_dir), "run", "--json"]
    done = subprocess.run(cmd, capture_output=True, text=True, env=child_env(store))
    if done.returncode != 0:
        raise UnolearnError(f"unolearn run failed in the online benchmark: {done.stderr.strip()[-500:]}")
    return json.loads(done.stdout)


def run_online(ws_dir: Path, prefs: Preferences, cfg: OnlineConfig, *, upstream: str | None = None,
               store: str | None = None, echo: Callable[[str], None] = print) -> dict[str, Any]:
    """The rounds (see the module docstring) on the workspace at ``ws_dir``; the JSON-ready result."""
    train_rounds, tests = prompt_rounds(prefs, cfg)
    args = ["--system", cfg.system, "--reload-interval", "0"] + (["--load-adapters"] if upstream else [])
    server = ServeProcess(ws_dir, upstream, 1, ready_timeout_s=600.0, store=store, args=args)
    client, pids, rounds = Client(server.url), set(), []
    seen: dict[str, int] = {}
    try:
        base: np.ndarray | None = None
        for r in range(cfg.rounds + 1):
            start = time.perf_counter()
            info: dict[str, Any] = {}
            if r:
                echo(f"round {r}: {len(train_rounds[r - 1])} train prompts through the proxy")
                info["feedback"] = send_train_round(client, train_rounds[r - 1], prefs, cfg, seen)
                info["run"] = learn(ws_dir, store)
                reloaded, _ = client.call("POST", "/v1/admin/reload")
                info["reload_s"] = (reloaded or {}).get("reload_s")
            echo(f"round {r}: {len(tests)} test prompts under {cfg.system}")
            counts = measure(client, tests, prefs, cfg)
            base = counts if base is None else base
            health, _ = client.call("GET", "/healthz")
            pids.add((health or {}).get("pid"))
            rounds.append(_round_row(r, counts, base, ws_dir, store, health, info, time.perf_counter() - start))
            echo(f"round {r}: compliance {rounds[-1]['compliance']:.3f}, plan {rounds[-1]['plan_id']}")
        restarts = len(pids - {None}) - 1 + (server.proc.poll() is not None)
    finally:
        server.stop()
    return {"system": cfg.system, "n_test_prompts": len(tests), "train_per_round": len(train_rounds[0]),
            "rounds": rounds, "proxy_restarts": max(restarts, 0), "failed_requests": client.failed}


def _round_row(r: int, counts: np.ndarray, base: np.ndarray, ws_dir: Path, store: str | None,
               health: dict[str, Any] | None, info: dict[str, Any], seconds: float) -> dict[str, Any]:
    """One round's figures."""
    with Workspace.open(ws_dir, store) as ws:
        logs, modules = ws.count("logs"), len([m for m in ws.modules() if m["kind"] != "guide"])
    return {"round": r, "compliance": round(float(counts[:, 0].sum() / counts[:, 1].sum()), 4),
            "n_checks": int(counts[:, 1].sum()),
            "compliance_ci_vs_round0": paired_bootstrap_ci(counts, base) if r else None,
            "logs": logs, "modules": modules, "plan_id": (health or {}).get("plan_id"),
            "reload_s": info.get("reload_s"), "feedback_posted": info.get("feedback"),
            "minutes": round(seconds / 60, 2)}
