"""The embedded backend's batch decoder on the packaged model: several requests per decode step."""

from __future__ import annotations

import asyncio
import ctypes
import json

import jsonschema
import numpy as np
import pytest

llama_cpp = pytest.importorskip("llama_cpp")

from test_llamacpp import _peft_folder  # noqa: E402

from unolearn.backends.base import ChatRequest  # noqa: E402
from unolearn.backends.llamacpp import LlamaCppChatModel  # noqa: E402
from unolearn.backends.llamacpp_batch import PENALTY_LAST_N, _Greedy  # noqa: E402
from unolearn.bench.embedded import ANSWER_SCHEMA, packaged_prompts  # noqa: E402
from unolearn.errors import BackendError  # noqa: E402

PROMPTS = ["Say hi.", "Name one planet of the solar system, one word only.", "What is 2 + 3? Answer with a number.",
           "Name a colour.", "Write the word 'yes'.", "Name a month of the year.", "Name a fruit.",
           "Name an ocean."]


@pytest.fixture(scope="module")
def model():
    m = LlamaCppChatModel(n_ctx=1024, parallel=4)
    yield m
    asyncio.run(m.aclose())


def _one_at_a_time(model, requests):
    model.use_parallel(1)
    try:
        return model.generate_sync(requests)
    finally:
        model.use_parallel(4)


def test_first_tokens_equal_the_one_at_a_time_path(model):
    # a prompt is read alone, in the same blocks as one at a time: the first token comes from the same logits
    first = [ChatRequest.of(p, max_tokens=1) for p in PROMPTS]
    batched = model.generate_sync(first)
    alone = _one_at_a_time(model, first)
    assert [r.text for r in batched] == [r.text for r in alone]
    assert all(r.finish_reason == "length" and r.completion_tokens == 1 for r in batched)


def test_requests_keep_their_order_budget_and_finish_reason(model):
    reqs = [ChatRequest.of(p, max_tokens=n) for p, n in zip(PROMPTS, (3, 40, 40, 2, 40, 5, 40, 1))]
    results = model.generate_sync(reqs)
    assert all(r.ok for r in results)
    for req, res in zip(reqs, results):
        assert res.completion_tokens <= req.max_tokens
        assert res.finish_reason == ("length" if res.completion_tokens == req.max_tokens else "stop")
        assert res.prompt_tokens > 0
    assert "5" in results[2].text
    assert results[0].finish_reason == "length" and results[1].finish_reason == "stop"
    assert model.usage.calls >= len(reqs)


def test_more_requests_than_slots_all_answer_as_they_would_alone(model):
    reqs = [ChatRequest.of(p, max_tokens=6) for p in packaged_prompts(10)]
    batched = model.generate_sync(reqs)
    alone = _one_at_a_time(model, reqs)
    assert all(r.ok and r.text for r in batched)
    same = sum(a.text == b.text for a, b in zip(batched, alone))
    assert same >= 5, [(a.text, b.text) for a, b in zip(batched, alone)]  # numeric noise may flip a near tie


def test_schema_requests_are_constrained_and_parsed(model):
    reqs = [ChatRequest.of(p + " Answer in JSON: {\"answer\": \"...\"}", schema=ANSWER_SCHEMA, max_tokens=60)
            for p in PROMPTS[:6]]
    results = model.generate_sync(reqs)
    for res in results:
        assert res.ok, res.error
        jsonschema.validate(res.parsed, ANSWER_SCHEMA)
        assert json.loads(res.text) == res.parsed


def test_greedy_under_a_grammar_picks_the_best_allowed_token(model):
    from llama_cpp.llama_grammar import LlamaGrammar

    llm = model._llm
    vocab = llama_cpp.llama_model_get_vocab(llm.model)
    grammar = LlamaGrammar.from_json_schema(json.dumps(ANSWER_SCHEMA), verbose=False)
    n_vocab = llama_cpp.llama_vocab_n_tokens(vocab)
    brace = llm.tokenize(b"{", add_bos=False, special=False)[0]
    word = llm.tokenize(b"hello", add_bos=False, special=False)[0]
    logits = np.zeros(n_vocab, dtype=np.float32)
    logits[word], logits[brace] = 9.0, 5.0  # the likeliest token is not JSON: the grammar must refuse it
    chooser = _Greedy(vocab, grammar)
    assert chooser.choose(logits) == brace
    plain = _Greedy(vocab, None)
    assert plain.choose(logits) == word
    chooser.close()


def test_sampled_requests_are_seeded(model):
    req = ChatRequest.of("Write a two-line poem about the sea.", temperature=0.9, seed=7, max_tokens=16)
    first, again = model.generate_sync([req]), model.generate_sync([req])
    other = model.generate_sync([ChatRequest.of(req.messages[0]["content"], temperature=0.9, seed=8, max_tokens=16)])
    assert first[0].ok and first[0].text == again[0].text
    assert other[0].text != first[0].text


def test_a_prompt_too_long_fails_alone(model):
    long = ChatRequest.of("word " * 1200, max_tokens=4)
    short = ChatRequest.of("Say hi.", max_tokens=4)
    results = model.generate_sync([short, long, short])
    assert results[0].ok and results[2].ok and results[0].text == results[2].text
    assert isinstance(results[1].error, BackendError) and "context" in str(results[1].error)


def test_scoring_runs_beside_batched_generation(model):
    q = "What is the capital of France?"
    reqs = [ChatRequest.of(q, continuation="Paris."), *(ChatRequest.of(p, max_tokens=8) for p in PROMPTS[:4]),
            ChatRequest.of(q, continuation="Paris.")]
    results = model.generate_sync(reqs)
    assert all(r.ok for r in results)
    assert results[0].logprob == results[-1].logprob < 0


def test_a_shared_prefix_is_read_once_per_slot(tmp_path):
    system = {"role": "system", "content": "You answer in one short sentence. " * 30}
    reqs = [ChatRequest.of([system, {"role": "user", "content": p}], max_tokens=4) for p in PROMPTS]
    m = LlamaCppChatModel(n_ctx=1024, parallel=2)
    try:
        results = m.generate_sync(reqs)
        evaluated = llama_cpp.llama_perf_context(m._batcher._ctx).n_p_eval
    finally:
        asyncio.run(m.aclose())
    assert all(r.ok for r in results)
    # two slots: each reads the system prompt once; later prompts read their turn and the last partial block
    assert evaluated < sum(r.prompt_tokens for r in results) * 0.6


def test_closing_fails_queued_requests_and_a_later_request_reopens():
    m = LlamaCppChatModel(n_ctx=1024, parallel=2)

    async def close_while_busy():
        pending = asyncio.gather(*(m.complete(ChatRequest.of(p, max_tokens=40)) for p in PROMPTS),
                                 return_exceptions=True)
        await asyncio.sleep(0.5)
        await m.aclose()
        return await pending

    outcomes = asyncio.run(close_while_busy())
    assert any(isinstance(o, BackendError) for o in outcomes)
    assert all(isinstance(o, BackendError) or o.text for o in outcomes)
    [after] = m.generate_sync([ChatRequest.of("Say hi.", max_tokens=4)])
    asyncio.run(m.aclose())
    assert after.ok and after.text


def test_requests_for_different_adapters_are_not_mixed(tmp_path, model):
    from unolearn.backends.gguf_lora import convert_peft_to_gguf_lora

    base = model.model_path
    gguf = convert_peft_to_gguf_lora(_peft_folder(tmp_path / "rand", base, 1.0), tmp_path / "rand.gguf", base)
    m = LlamaCppChatModel(str(base), n_ctx=1024, adapters={"rand": str(gguf)}, parallel=4)
    plain = [ChatRequest.of(p, max_tokens=1) for p in PROMPTS[:4]]
    tuned = [ChatRequest(**{**r.__dict__, "adapter": "rand"}) for r in plain]
    mixed = [x for pair in zip(plain, tuned) for x in pair]
    try:
        batched = m.generate_sync(mixed)
        switches = m.batch_stats()["adapter_switches"]
        m.use_parallel(1)
        alone = m.generate_sync(mixed)
    finally:
        asyncio.run(m.aclose())
    assert [r.text for r in batched] == [r.text for r in alone]
    assert [r.text for r in batched[0::2]] != [r.text for r in batched[1::2]]  # the adapter applied to its own
    assert switches <= 2  # grouped by adapter: in arrival order alone, the alternating requests took 7 switches


def test_a_request_for_another_adapter_is_passed_over_a_bounded_number_of_times():
    """While slots run under one adapter, later requests for it go first, at most PASS_OVER × parallel times;
    then admission waits for the slots to drain, and the oldest request goes next."""
    import concurrent.futures
    from collections import deque

    from unolearn.backends.llamacpp_batch import PASS_OVER, BatchDecoder, _Job, _Slot

    def job(adapter):
        return _Job(ChatRequest.of("x", adapter=adapter), concurrent.futures.Future(), 0.0)

    dec = BatchDecoder.__new__(BatchDecoder)  # the admission policy alone: no context needed
    dec.parallel, dec._adapter = 2, "a"
    dec._slots = [_Slot(0, job=job("a")), _Slot(1)]
    other = job(None)
    dec._queue = deque([other, *(job("a") for _ in range(20))])
    taken = [dec._next() for _ in range(PASS_OVER * 2 + 1)]
    assert all(t is not None and t.request.adapter == "a" for t in taken[:-1]) and taken[-1] is None
    assert dec._queue[0] is other and other.passed_over == PASS_OVER * 2
    dec._slots[0].job = None  # the slots drained
    assert dec._next() is other


def test_the_config_sets_parallel():
    from unolearn.backends import make_chat
    from unolearn.config import ChatConfig

    m = make_chat(ChatConfig(parallel=3, n_ctx=512))
    assert m.parallel == 3 and m.concurrency == 6
    asyncio.run(m.aclose())


def test_a_caller_that_stops_waiting_does_not_fail_the_others(model):
    async def one_cancelled():
        tasks = [asyncio.ensure_future(model.complete(ChatRequest.of(p, max_tokens=24))) for p in PROMPTS]
        await asyncio.sleep(0.3)
        tasks[1].cancel()
        tasks[6].cancel()  # still queued or just admitted
        return await asyncio.gather(*tasks, return_exceptions=True)

    outcomes = asyncio.run(one_cancelled())
    assert isinstance(outcomes[1], asyncio.CancelledError) and isinstance(outcomes[6], asyncio.CancelledError)
    assert all(o.text for i, o in enumerate(outcomes) if i not in (1, 6))
    [after] = model.generate_sync([ChatRequest.of("Say hi.", max_tokens=4)])  # the decoder still serves
    assert after.ok and after.text


def test_greedy_with_a_repeat_penalty_chooses_as_llama_cpp_does():
    # llama.cpp's own penalties sampler, then its greedy one, on the same logits, step after step
    from llama_cpp._internals import LlamaSampler, LlamaTokenDataArray

    n_vocab, penalty = 300, 1.3
    chain = LlamaSampler()
    chain.add_penalties(n_vocab, PENALTY_LAST_N, penalty, 0.0, 0.0)
    chain.add_greedy()
    mine, plain = _Greedy(None, None, penalty), _Greedy(None, None)
    rng = np.random.default_rng(0)
    changed = 0
    for step in range(400):
        logits = rng.normal(size=n_vocab).astype(np.float32)
        logits[:6] += 2.5  # a few tokens stay likeliest, so the window holds them again and again
        if step % 2:
            logits -= 6.0  # every logit negative: the penalty multiplies them
        candidates = LlamaTokenDataArray(n_vocab=n_vocab)
        candidates.copy_logits(logits)
        llama_cpp.llama_sampler_apply(chain.sampler, ctypes.byref(candidates.candidates))
        theirs = int(candidates.candidates_data.id[candidates.candidates.selected])
        llama_cpp.llama_sampler_accept(chain.sampler, theirs)
        ours = mine.choose(logits)
        assert ours == theirs
        changed += ours != plain.choose(logits)
    assert changed > 30  # the penalty changed many choices: the test can tell it from none


def test_a_repeat_penalty_breaks_a_loop_alike_on_both_paths(model):
    loop = ChatRequest.of("Write the word 'echo' 40 times, separated by spaces.", max_tokens=48)
    json_req = ChatRequest.of(PROMPTS[1] + ' Answer in JSON: {"answer": "..."}', schema=ANSWER_SCHEMA, max_tokens=40)
    [looped, plain_json] = model.generate_sync([loop, json_req])
    assert looped.finish_reason == "length" and looped.text.count("echo") >= 40
    penalised = LlamaCppChatModel(n_ctx=1024, parallel=2, repeat_penalty=1.3)
    try:
        assert penalised.model_id == model.model_id + ":rp1.3"  # its answers never come from the other's cache
        [batched, batched_json] = penalised.generate_sync([loop, json_req])
        penalised.use_parallel(1)
        [alone, alone_json] = penalised.generate_sync([loop, json_req])
    finally:
        asyncio.run(penalised.aclose())
    assert batched.text == alone.text and batched.text.count("echo") < 20 and batched.finish_reason == "stop"
    assert batched_json.parsed == alone_json.parsed == plain_json.parsed  # JSON answers are not penalised


def test_a_repeat_penalty_below_one_is_refused():
    from unolearn.config import ChatConfig
    from unolearn.errors import ConfigError

    with pytest.raises(ConfigError, match="repeat_penalty"):
        ChatConfig(repeat_penalty=0.9)
