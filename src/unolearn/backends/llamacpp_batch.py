"""Several sequences per decode step for the embedded backend (llama.cpp's batch API).

Why: decoding a small quantised model on a CPU reads every weight once per generated token, so one
sequence at a time leaves the cores waiting on memory; one decode step can carry a token of each of
several sequences for little more than the cost of one (docs/benchmarks.md, ``bench embedded``).

How: a llama.cpp context of its own beside the model's, with one KV-cache sequence per slot. A worker
thread takes queued requests in arrival order and fills free slots with requests for the adapter in use:
while slots run, a queued request for the active adapter goes before an older one for another adapter (which
is passed over at most :data:`PASS_OVER` × ``parallel`` times, then waits for the slots to drain and the
adapter switches), so requests of several adapters queued together do not decode one at a time. A new prompt is
read alone, in blocks of :data:`PROMPT_BLOCK` tokens counted from position 0, reusing whole blocks of the
slot's previous prompt, exactly as the one-at-a-time path reads it; then each step decodes one token of
every active sequence. Each sequence samples on its own: greedy (under the grammar of its JSON schema,
if any: :class:`_Greedy`), or with the chain llama-cpp-python builds for a sampled chat completion
(the repeat penalty, the grammar, top-k 40, typical 1, top-p, min-p 0.05, temperature and a draw seeded by
the request). A free-text answer's repeat penalty, if any, looks back on its own last generated tokens.

Imported only when an embedded model decodes in parallel, so llama-cpp-python is imported at the top.

Every llama.cpp call runs under the model's lock, so this context and the model's own one (which scores
continuations and reads logprobs) never compute at the same time.
"""

from __future__ import annotations

import concurrent.futures
import ctypes
import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import llama_cpp
import numpy as np
from llama_cpp._internals import LlamaSampler, LlamaTokenDataArray
from llama_cpp.llama_grammar import JSON_GBNF, LlamaGrammar

from ..errors import BackendError, SchemaError
from .base import ChatRequest, ChatResult, parse_json_output
from .prefix import PROMPT_BLOCK, shared_prefix

#: How many times per slot a queued request for another adapter may be passed over by later requests for the
#: active one (then no request is admitted until the slots drain and the adapter switches): bounds its wait.
PASS_OVER = 4

#: How many of a sequence's last generated tokens the repeat penalty looks back on: llama-cpp-python's default
#: ``last_n_tokens_size``, which the one-at-a-time path uses.
PENALTY_LAST_N = 64


@dataclass
class _Job:
    """One queued request and where its answer goes."""

    request: ChatRequest
    future: concurrent.futures.Future[ChatResult]
    start: float
    prompt: list[int] = field(default_factory=list)
    passed_over: int = 0  # times a later request for the active adapter went first


@dataclass
class _Slot:
    """One KV-cache sequence: the prompt it holds, and the request decoding in it (if any)."""

    seq: int
    prompt: list[int] = field(default_factory=list)  # the last prompt read into this sequence
    job: _Job | None = None
    sampler: Any = None
    generated: list[int] = field(default_factory=list)
    pos: int = 0  # the position of the next token to evaluate


class BatchDecoder:
    """Decodes up to ``parallel`` chat requests together on ``llm``'s model.

    ``tokens(request)`` turns a request into its prompt tokens; ``adapters`` maps adapter names to loaded
    llama.cpp LoRA adapters (read when a request names one); ``lock`` is the model's lock.
    """

    def __init__(self, llm: Any, *, parallel: int, n_ctx: int, seed: int, lock: threading.Lock,
                 tokens: Any, adapters: dict[str, Any], repeat_penalty: float = 1.0) -> None:
        self._llm, self._lock, self._tokens, self._adapters = llm, lock, tokens, adapters
        self.repeat_penalty = repeat_penalty
        self.parallel, self.n_ctx, self.seed = parallel, n_ctx, seed
        params = llm.context_params  # a copy: the model context's threads, flash attention and cache types
        params.n_ctx, params.n_seq_max, params.kv_unified = n_ctx * parallel, parallel, False
        params.n_batch = params.n_ubatch = max(PROMPT_BLOCK, parallel)
        self._ctx = llama_cpp.llama_init_from_model(llm.model, params)
        if not self._ctx:
            raise BackendError(f"llama.cpp could not make a context for {parallel} sequences of {n_ctx} tokens")
        self._mem = llama_cpp.llama_get_memory(self._ctx)
        self._batch = llama_cpp.llama_batch_init(params.n_batch, 0, 1)
        self._vocab = llama_cpp.llama_model_get_vocab(llm.model)
        self._n_vocab = llama_cpp.llama_vocab_n_tokens(self._vocab)
        self._slots = [_Slot(seq) for seq in range(parallel)]
        self._queue: deque[_Job] = deque()
        self._cv = threading.Condition()
        self._closed = False
        self._adapter: str | None = None
        self._grammars: dict[str, Any] = {}
        #: Time spent reading prompts and in decode steps, with their tokens (for ``bench embedded``).
        self.stats = {"prompt_tokens": 0, "prompt_s": 0.0, "steps": 0, "step_tokens": 0, "step_s": 0.0,
                      "adapter_switches": 0}
        self._thread = threading.Thread(target=self._run, name="llamacpp-batch", daemon=True)
        self._thread.start()

    def submit(self, request: ChatRequest) -> concurrent.futures.Future[ChatResult]:
        """Queue ``request``; its :class:`ChatResult` (or :class:`BackendError`) arrives in the future."""
        job = _Job(request, concurrent.futures.Future(), time.perf_counter())
        with self._cv:
            if self._closed:
                raise BackendError("the embedded model was closed")
            self._queue.append(job)
            self._cv.notify()
        return job.future

    def close(self) -> None:
        """Stop the worker (queued and running requests fail), then free the context."""
        with self._cv:
            self._closed = True
            self._cv.notify()
        self._thread.join()
        with self._lock:
            llama_cpp.llama_batch_free(self._batch)
            llama_cpp.llama_free(self._ctx)

    # -- the worker -------------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            try:
                if not self._turn():
                    return
            except Exception as e:  # noqa: BLE001 — a bug here must fail the requests, not hang them
                with self._cv:
                    self._fail_all(BackendError(f"the batch decoder failed: {e!r}"))

    def _turn(self) -> bool:
        """Admit what fits, read the new prompts, decode one step; False once closed."""
        with self._cv:
            while not self._closed and not self._queue and not self._active():
                self._cv.wait()
            if self._closed:
                self._fail_all(BackendError("the embedded model was closed"))
                return False
            admitted = self._admit()
        for slot in admitted:
            self._start(slot)
        for slot in self._active():
            if slot.job is not None and slot.job.future.cancelled():
                self._finish(slot, reason="cancelled")  # stop decoding for a caller that went away
        if self._active():
            self._step()
        return True

    def _active(self) -> list[_Slot]:
        return [s for s in self._slots if s.job is not None]

    def _admit(self) -> list[_Slot]:
        """Move queued requests into free slots, in arrival order among those that may go now (:meth:`_next`)."""
        admitted = []
        while any(s.job is None for s in self._slots) and (job := self._next()) is not None:
            if job.future.cancelled():  # its caller stopped waiting (a client that went away)
                continue
            try:
                job.prompt = self._tokens(job.request)
                if job.request.adapter != self._adapter:
                    self._switch_adapter(job.request.adapter)
            except BackendError as e:
                job.future.set_exception(e)
                continue
            free = [s for s in self._slots if s.job is None]
            slot = max(free, key=lambda s: shared_prefix(s.prompt, job.prompt))  # the longest reusable prefix
            slot.job = job
            admitted.append(slot)
        return admitted

    def _next(self) -> _Job | None:
        """Take the next request that may start now: the oldest when it uses the active adapter or no slot runs;
        else the oldest for the active adapter, unless the oldest has been passed over enough (None: wait)."""
        if not self._queue:
            return None
        head = self._queue[0]
        if head.request.adapter == self._adapter or not self._active():
            return self._queue.popleft()
        if head.passed_over >= PASS_OVER * self.parallel:
            return None
        for i, job in enumerate(self._queue):
            if job.request.adapter == self._adapter:
                del self._queue[i]
                head.passed_over += 1
                return job
        return None

    def _switch_adapter(self, name: str | None) -> None:
        """Make ``name`` (or none) the context's LoRA; every cached prompt was computed under the old one."""
        with self._lock:
            if name is None:
                rc = llama_cpp.llama_set_adapters_lora(self._ctx, None, 0, None)
            else:
                arr = (llama_cpp.llama_adapter_lora_p_ctypes * 1)(self._adapters[name])
                rc = llama_cpp.llama_set_adapters_lora(self._ctx, arr, 1, (ctypes.c_float * 1)(1.0))
            llama_cpp.llama_memory_clear(self._mem, True)
        for slot in self._slots:
            slot.prompt = []
        if rc != 0:
            raise BackendError(f"llama.cpp could not switch to adapter {name!r} (code {rc})")
        self._adapter = name
        self.stats["adapter_switches"] += 1

    def _start(self, slot: _Slot) -> None:
        """Read the slot's new prompt and sample its first token (a failure fails that request alone)."""
        job = slot.job
        assert job is not None
        try:
            with self._lock:
                prompt = job.prompt
                if len(prompt) >= self.n_ctx:
                    raise BackendError(f"the prompt's {len(prompt)} tokens do not fit the context of {self.n_ctx}")
                slot.sampler = self._sampler(job.request)
                self._read_prompt(slot, prompt)
                self._take(slot, self._sample(slot, self._batch.n_tokens - 1))
        except (BackendError, ValueError, RuntimeError) as e:
            self._finish(slot, error=e if isinstance(e, BackendError) else BackendError(f"llama.cpp: {e}"))

    def _read_prompt(self, slot: _Slot, prompt: list[int]) -> None:
        """Evaluate ``prompt`` in ``slot``'s sequence from the last whole block it shares with the slot's
        previous prompt, in blocks aligned to position 0 (callers hold the lock)."""
        start = time.perf_counter()
        reuse = min(shared_prefix(slot.prompt, prompt), len(prompt) - 1)
        reuse -= reuse % PROMPT_BLOCK
        llama_cpp.llama_memory_seq_rm(self._mem, slot.seq, reuse, -1)
        slot.prompt = []  # until the prompt is read whole
        for pos in range(reuse, len(prompt), PROMPT_BLOCK):
            chunk = prompt[pos:pos + PROMPT_BLOCK]
            self._batch.n_tokens = 0
            for i, token in enumerate(chunk):
                self._add(token, pos + i, slot.seq, logits=pos + i == len(prompt) - 1)
            self._decode()
        slot.prompt, slot.pos, slot.generated = prompt, len(prompt), []
        self.stats["prompt_tokens"] += len(prompt) - reuse
        self.stats["prompt_s"] += time.perf_counter() - start

    def _step(self) -> None:
        """Decode the last sampled token of every active sequence in one batch, then sample each one's next."""
        active = self._active()
        start = time.perf_counter()
        with self._lock:
            self._batch.n_tokens = 0
            for slot in active:
                self._add(slot.generated[-1], slot.pos, slot.seq, logits=True)
                slot.pos += 1
            try:
                self._decode()
            except BackendError as e:
                for slot in active:
                    self._finish(slot, error=e)
                return
            for i, slot in enumerate(active):
                self._take(slot, self._sample(slot, i))
        self.stats["steps"] += 1
        self.stats["step_tokens"] += len(active)
        self.stats["step_s"] += time.perf_counter() - start

    def _take(self, slot: _Slot, token: int) -> None:
        """Record a sampled token; finish the request at the end of its turn, its budget or the context."""
        job = slot.job
        assert job is not None
        if llama_cpp.llama_vocab_is_eog(self._vocab, token):
            self._finish(slot, reason="stop")
            return
        slot.generated.append(token)
        if len(slot.generated) >= job.request.max_tokens or slot.pos >= self.n_ctx:
            self._finish(slot, reason="length")

    def _finish(self, slot: _Slot, *, reason: str | None = None, error: BackendError | None = None) -> None:
        """Answer the slot's request and free the slot (its prompt stays cached for reuse)."""
        job = slot.job
        assert job is not None
        if isinstance(slot.sampler, _Greedy):
            slot.sampler.close()
        slot.job, slot.sampler = None, None
        if job.future.cancelled():
            return
        if error is not None:
            slot.prompt = []
            job.future.set_exception(error)
            return
        text = self._llm.detokenize(slot.generated, prev_tokens=slot.prompt).decode("utf-8", "ignore")
        parsed = None
        if job.request.schema is not None:
            try:
                parsed = parse_json_output(text, job.request.schema)
            except SchemaError:
                pass  # left unset: ChatModel re-asks
        job.future.set_result(ChatResult(
            text=text, parsed=parsed, prompt_tokens=len(slot.prompt), completion_tokens=len(slot.generated),
            latency_s=time.perf_counter() - job.start, finish_reason=reason))

    def _fail_all(self, error: BackendError) -> None:
        for slot in self._active():
            self._finish(slot, error=error)
        while self._queue:
            future = self._queue.popleft().future
            if not future.cancelled():
                future.set_exception(error)

    # -- llama.cpp calls (under the lock) ---------------------------------------------------------

    def _add(self, token: int, pos: int, seq: int, *, logits: bool) -> None:
        b, i = self._batch, self._batch.n_tokens
        b.token[i], b.pos[i], b.n_seq_id[i], b.logits[i] = token, pos, 1, logits
        b.seq_id[i][0] = seq
        b.n_tokens = i + 1

    def _decode(self) -> None:
        rc = llama_cpp.llama_decode(self._ctx, self._batch)
        if rc != 0:
            raise BackendError(f"llama.cpp could not decode a batch of {self._batch.n_tokens} tokens (code {rc})")

    def _sample(self, slot: _Slot, index: int) -> int:
        """The slot's next token from the logits of batch position ``index``."""
        if isinstance(slot.sampler, _Greedy):
            logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(self._ctx, index), shape=(self._n_vocab,))
            return slot.sampler.choose(logits)
        return int(llama_cpp.llama_sampler_sample(slot.sampler.sampler, self._ctx, index))

    def _sampler(self, request: ChatRequest) -> Any:
        """A greedy chooser, or the sampler chain llama-cpp-python builds for a sampled chat completion."""
        grammar = None if request.schema is None else self._grammar(request.schema)
        penalty = self.repeat_penalty if grammar is None else 1.0
        if request.temperature == 0:
            return _Greedy(self._vocab, grammar, penalty)
        chain = LlamaSampler()
        if penalty != 1:
            chain.add_penalties(self._n_vocab, PENALTY_LAST_N, penalty, 0.0, 0.0)
        if grammar is not None:
            chain.add_grammar(self._llm._model, grammar)
        chain.add_top_k(40)
        chain.add_typical(1.0, 1)
        chain.add_top_p(request.top_p, 1)
        chain.add_min_p(0.05, 1)
        chain.add_temp(request.temperature)
        chain.add_dist(self.seed if request.seed is None else request.seed)
        return chain

    def _grammar(self, schema: dict[str, Any]) -> Any:
        """The llama.cpp grammar of a JSON schema (compiled once; the generic JSON grammar where the schema
        has no GBNF translation, as in llama-cpp-python)."""
        key = json.dumps(schema)
        if key not in self._grammars:
            try:
                self._grammars[key] = LlamaGrammar.from_json_schema(key, verbose=False)
            except Exception:  # noqa: BLE001 — any failure of the translation falls back, as upstream does
                self._grammars[key] = LlamaGrammar.from_string(JSON_GBNF, verbose=False)
        return self._grammars[key]


class _Greedy:
    """The likeliest token (the first of equal maxima, as llama.cpp's greedy sampler), under a grammar when
    one is given: the likeliest token is checked alone, and the whole vocabulary is constrained only when
    the grammar refuses it. That is the token constraining first would give, at a small part of the cost
    (constraining 150k candidates took 27 ms a token here; llama.cpp's own common sampler does the same).

    With ``penalty`` > 1 (free text only, so never with a grammar), the logits of the tokens among the last
    :data:`PENALTY_LAST_N` chosen ones are first divided by it (multiplied, when not positive), as
    llama.cpp's penalties sampler does before its greedy one.
    """

    def __init__(self, vocab: Any, grammar: Any, penalty: float = 1.0) -> None:
        assert grammar is None or penalty == 1  # JSON answers are never penalised
        self._grammar = None if grammar is None else llama_cpp.llama_sampler_init_grammar(
            vocab, grammar._grammar.encode("utf-8"), grammar._root.encode("utf-8"))
        self._penalty = np.float32(penalty)
        self._recent: deque[int] = deque(maxlen=PENALTY_LAST_N)
        self._one = np.recarray((1,), dtype=_TOKEN_DATA)
        self._one_array = llama_cpp.llama_token_data_array(
            data=self._one.ctypes.data_as(llama_cpp.llama_token_data_p), size=1, selected=-1, sorted=False)

    def choose(self, logits: Any) -> int:
        """The next token given the logits; under a grammar, the grammar accepts it."""
        if self._penalty != 1:
            token = int(self._penalised(logits).argmax())
            self._recent.append(token)
            return token
        token = int(logits.argmax())
        if self._grammar is None:
            return token
        if not self._allows(token, float(logits[token])):
            token = self._constrained(logits)
        llama_cpp.llama_sampler_accept(self._grammar, token)
        return token

    def _penalised(self, logits: Any) -> Any:
        """A copy of ``logits`` with the recent tokens' ones penalised."""
        out = np.array(logits, dtype=np.float32)
        if not self._recent:
            return out
        seen = np.fromiter(set(self._recent), dtype=np.int64)
        vals = out[seen]
        out[seen] = np.where(vals <= 0, vals * self._penalty, vals / self._penalty)
        return out

    def _allows(self, token: int, logit: float) -> bool:
        self._one.id[0], self._one.logit[0], self._one.p[0] = token, logit, 0.0
        self._one_array.size, self._one_array.selected, self._one_array.sorted = 1, -1, False
        llama_cpp.llama_sampler_apply(self._grammar, ctypes.byref(self._one_array))
        return bool(self._one.logit[0] != float("-inf"))

    def _constrained(self, logits: Any) -> int:
        """The likeliest token the grammar allows."""
        candidates = LlamaTokenDataArray(n_vocab=len(logits))
        candidates.copy_logits(logits)
        llama_cpp.llama_sampler_apply(self._grammar, ctypes.byref(candidates.candidates))
        return int(candidates.candidates_data.logit.argmax())

    def close(self) -> None:
        """Free the grammar."""
        if self._grammar is not None:
            llama_cpp.llama_sampler_free(self._grammar)
            self._grammar = None


#: llama.cpp's ``llama_token_data`` as a numpy record.
_TOKEN_DATA = [("id", "i4"), ("logit", "f4"), ("p", "f4")]
