"""The embedded llama.cpp backend, on the real default model shipped in the ``embedded`` packages."""

from __future__ import annotations

import asyncio
import hashlib
import json
from pathlib import Path

import jsonschema
import numpy as np
import pytest

llama_cpp = pytest.importorskip("llama_cpp")

from unolearn.assess import yes_probability  # noqa: E402
from unolearn.backends.base import ChatRequest  # noqa: E402
from unolearn.backends.llamacpp import (  # noqa: E402
    DEFAULT_MODEL,
    MODEL_PARAMS,
    PROMPT_BLOCK,
    LlamaCppChatModel,
    PackagedModel,
    _assemble,
    cpu_flags,
    packaged_model_path,
)
from unolearn.config import ChatConfig  # noqa: E402
from unolearn.doctor import check_generation  # noqa: E402
from unolearn.errors import BackendError, ConfigError, InputError  # noqa: E402

RULES = {
    "type": "object",
    "properties": {"rules": {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": 3}},
    "required": ["rules"],
}


@pytest.fixture(scope="module")
def model():
    m = LlamaCppChatModel()
    yield m
    asyncio.run(m.aclose())


def test_default_model_is_pinned_and_identified(model):
    assert model.model_path.name == DEFAULT_MODEL.file_name
    assert model.model_path.stat().st_size == DEFAULT_MODEL.size
    assert model.model_id == f"llamacpp:{DEFAULT_MODEL.file_name}:{DEFAULT_MODEL.sha256[:12]}"


def test_opened_model_keeps_llama_cpp_off_its_extra_buffer_types(model):
    # The AMX buffer type segfaults on Sapphire Rapids CPUs (llama.cpp issue 20824): never used.
    assert MODEL_PARAMS == {"use_extra_bufts": False}
    assert model._llm.model_params.use_extra_bufts is False
    import llama_cpp.llama_cpp as low

    assert low.llama_model_default_params().use_extra_bufts is True  # the wrapper is gone after loading


def test_packaged_model_generates_in_a_child_process():
    # A native crash (SIGSEGV on AMX CPUs without the fix) would fail this test, not end pytest.
    check, out = check_generation(str(packaged_model_path()), ChatConfig(), tokens=8)
    assert check.status != "fail", check.detail
    assert out["tokens"] > 0 and out["use_extra_bufts"] is False


def test_cpu_flags_read_from_cpuinfo():
    text = "processor\t: 0\nmodel name\t: X\nflags\t\t: fpu avx2 avx512f amx_tile amx_int8\n\nprocessor\t: 1\n"
    assert {"avx2", "avx512f", "amx_tile", "amx_int8"} <= cpu_flags(text)
    assert cpu_flags("") == set()


def test_plain_request(model):
    [res] = model.generate_sync([ChatRequest.of("What is the capital of France? Answer in one word.",
                                                max_tokens=8)])
    assert res.ok, res.error
    assert "paris" in res.text.lower()
    assert res.prompt_tokens > 5 and 0 < res.completion_tokens <= 8 and res.finish_reason == "stop"
    assert model.usage.completion_tokens >= res.completion_tokens
    [cut] = model.generate_sync([ChatRequest.of("Tell the history of France in detail.", max_tokens=4)])
    assert cut.completion_tokens == 4 and cut.finish_reason == "length"


def test_schema_request_is_constrained_and_parsed(model):
    req = ChatRequest.of([{"role": "system", "content": "Write rules that make an answer better."},
                          {"role": "user", "content": "Query: how do I boil an egg?\nGive at most 3 rules."}],
                         schema=RULES, max_tokens=96)
    res = asyncio.run(model.complete(req))  # one call, no re-asking: the grammar alone must give valid JSON
    assert res.parsed is not None, res.text
    jsonschema.validate(res.parsed, RULES)
    assert all(r.strip() for r in res.parsed["rules"])


@pytest.mark.parametrize("parallel", [1, 8])
def test_a_prior_rules_answer_that_would_loop_closes_its_list_at_the_cap(model, parallel):
    # The README demo's one failed distil request: greedily, the model repeated "Be clear and concise." until
    # the token budget cut its JSON, on every re-ask. The schema's cap closes the list instead.
    from unolearn.distill import DistillConfig, prior_request
    from unolearn.records import Log, Message

    query = ("You should write a detailed response to the following question on Science.\n[Question]: Do you "
             "believe we are living in a simulation? Why or why not? And if so, who or what do you believe to be "
             "controlling said simulation?\n[Requirements]:\n1. The answer should be long enough to provide a "
             "comprehensive response.\n")
    log = Log.from_messages([Message(role="user", content=query)], source="t")
    cfg = DistillConfig()
    model.use_parallel(parallel)  # the batch decoder's grammar, too
    try:
        res = asyncio.run(model.complete(prior_request(log, cfg)))
    finally:
        model.use_parallel(1)
    assert res.finish_reason == "stop" and res.parsed is not None, res.text[-200:]
    assert 1 <= len(res.parsed["rules"]) <= cfg.max_prior_rules


def test_first_token_logprobs_answer_a_yes_no_question(model):
    def p_yes(question: str) -> float:
        [res] = model.generate_sync([ChatRequest.of(question + " Answer yes or no.", max_tokens=1, logprobs=10)])
        assert res.ok and len(res.top_logprobs) == 10 and all(lp <= 0 for lp in res.top_logprobs.values())
        assert res.text.strip().lower() in {t.strip().lower() for t in res.top_logprobs}  # greedy = most likely
        return yes_probability(res.top_logprobs)

    # The 0.5B model is a weak judge (measured: 0.62 and 0.42), but it leans the right way
    assert p_yes("Is Paris the capital of France?") > 0.5 > p_yes("Is the sun colder than ice?")


def test_fixed_seed_is_deterministic(model):
    req = ChatRequest.of("Write a two-line poem about the sea.", temperature=0.9, seed=7, max_tokens=24)
    first = model.generate_sync([req])[0]
    model.generate_sync([ChatRequest.of("Name a colour.", max_tokens=4)])  # something else in between
    again = model.generate_sync([req])[0]
    assert first.ok and first.text and again.text == first.text


def test_a_shared_prompt_prefix_is_reused_with_the_same_answers(tmp_path):
    system = {"role": "system", "content": "You answer in one short sentence. " * 30}
    reqs = [ChatRequest.of([system, {"role": "user", "content": q}], max_tokens=12)
            for q in ("Name a fruit.", "Name a river.", "Name a fruit.")]
    yes_no = ChatRequest.of([system, {"role": "user", "content": "Is water wet? Answer yes or no."}],
                            max_tokens=1, logprobs=5)
    fresh = []
    for req in [*reqs, yes_no]:  # each alone on a freshly opened model: nothing to reuse
        m = LlamaCppChatModel()
        fresh.append(m.generate_sync([req])[0])
        asyncio.run(m.aclose())
    m = LlamaCppChatModel()
    reused = m.generate_sync([*reqs, yes_no, reqs[1]])
    evaluated = llama_cpp.llama_perf_context(m._llm.ctx).n_p_eval  # prompt tokens llama.cpp evaluated
    asyncio.run(m.aclose())
    assert [r.text for r in reused] == [r.text for r in fresh] + [fresh[1].text]
    assert reused[3].top_logprobs.keys() == fresh[3].top_logprobs.keys()
    assert np.allclose(list(reused[3].top_logprobs.values()), list(fresh[3].top_logprobs.values()), atol=1e-3)
    # the shared system prompt is evaluated once, then reused in whole blocks: each later prompt evaluates
    # at most its own turn (under 20 tokens here) and the part of the prefix after the last block boundary
    suffix = 20
    assert evaluated <= reused[0].prompt_tokens + (len(reused) - 1) * (PROMPT_BLOCK + suffix)
    assert evaluated < sum(r.prompt_tokens for r in reused) * 0.75


def test_a_reply_is_scored_alike_on_a_fresh_model_and_after_other_requests():
    system = {"role": "system", "content": "You answer in one short sentence. " * 30}
    ask = ChatRequest.of([system, {"role": "user", "content": "Name a fruit."}], max_tokens=12)
    score = ChatRequest.of([system, {"role": "user", "content": "Name a fruit."}], continuation="An apple.")
    fresh = LlamaCppChatModel()
    [alone] = fresh.generate_sync([score])
    [first_answer] = fresh.generate_sync([ask])  # a generation after a scoring: as on a fresh model
    reply_tokens = len(fresh._llm.tokenize(b"An apple.", add_bos=False))
    asyncio.run(fresh.aclose())
    m = LlamaCppChatModel()
    [answer, after, again] = m.generate_sync([ask, score, score])  # the prompt's blocks come from the cache
    asyncio.run(m.aclose())
    assert alone.logprob < 0 and alone.text == "An apple."
    assert after.logprob == alone.logprob == again.logprob
    assert first_answer.text == answer.text
    assert alone.completion_tokens == reply_tokens + 1  # and the end of turn


def test_a_reply_that_follows_stated_rules_becomes_likelier_when_they_are_stated(model):
    q = "What is the capital of France?"
    rules = q + "\n\nIn your answer, follow these requirements:\n- Start with 'In short:'."
    gains = {}
    for reply in ("In short: Paris is the capital of France.", "The capital of France is Paris."):
        plain, stated = model.generate_sync([ChatRequest.of(q, continuation=reply),
                                             ChatRequest.of(rules, continuation=reply)])
        gains[reply] = stated.logprob - plain.logprob
    follows, ignores = gains.values()
    assert follows > 0 > ignores


def test_batch_results_keep_request_order(model):
    prompts = ["Say hi.", "Name one planet of the solar system, one word only.",
               "Translate to French, nothing else: 'The cat sleeps on the warm windowsill all afternoon.'"]
    reqs = [ChatRequest.of(p, max_tokens=6) for p in prompts]
    batch = model.generate_sync(reqs)
    alone = [model.generate_sync([r])[0] for r in reqs]
    assert [r.text for r in batch] == [r.text for r in alone]
    assert batch[0].prompt_tokens < batch[1].prompt_tokens < batch[2].prompt_tokens


def test_unknown_adapter_is_a_backend_error(model):
    [res] = model.generate_sync([ChatRequest.of("hi", adapter="nope", max_tokens=4)])
    assert isinstance(res.error, BackendError) and "nope" in str(res.error)


def test_missing_model_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="no such model file") as e:
        LlamaCppChatModel(str(tmp_path / "missing.gguf"))
    assert "\n" not in str(e.value)


def test_missing_adapter_file_is_a_config_error(model, tmp_path):
    with pytest.raises(ConfigError, match="adapter x"):
        LlamaCppChatModel(str(model.model_path), adapters={"x": str(tmp_path / "x.gguf")})


def test_sha_mismatch_is_a_config_error():
    bad = PackagedModel("m.gguf", "0" * 64, 1, (("pytest", "pytest/__init__.py"),))
    with pytest.raises(ConfigError, match="sha256"):
        packaged_model_path(bad)


def test_missing_package_is_a_config_error(tmp_path):
    gone = PackagedModel("m.gguf", "0" * 64, 1, (("no-such-dist-xyz", "a.bin"),))
    with pytest.raises(ConfigError, match="no-such-dist-xyz"):
        packaged_model_path(gone, tmp_path)


def test_assemble_concatenates_and_checks_sha(tmp_path):
    parts = [tmp_path / "p1", tmp_path / "p2"]
    parts[0].write_bytes(b"GGUF" * 1000)
    parts[1].write_bytes(b"tail")
    dest = tmp_path / "cache" / "m.gguf"
    with pytest.raises(ConfigError, match="sha256"):
        _assemble(parts, dest, "0" * 64)
    assert not dest.parent.exists() or not list(dest.parent.iterdir())  # nothing half-written left behind
    _assemble(parts, dest, hashlib.sha256(b"GGUF" * 1000 + b"tail").hexdigest())
    assert dest.read_bytes() == b"GGUF" * 1000 + b"tail"
    assert [p.name for p in dest.parent.iterdir()] == ["m.gguf"]



def _peft_folder(path: Path, base_gguf: Path, scale: float) -> Path:
    """A PEFT LoRA folder (q_proj and v_proj of every layer, rank 4) laid out as ``save_pretrained`` writes it."""
    from safetensors.numpy import save_file

    from unolearn.backends.gguf_lora import _base_info

    base = _base_info(base_gguf)
    head_dim = base["n_embd"] // base["n_head"]
    outs = {"self_attn.q_proj": base["n_embd"], "self_attn.v_proj": base["n_head_kv"] * head_dim}
    rng, tensors = np.random.default_rng(0), {}
    for i in range(base["n_blocks"]):
        for module, n_out in outs.items():
            key = f"base_model.model.model.layers.{i}.{module}"
            tensors[f"{key}.lora_A.weight"] = rng.normal(0, 0.05, (4, base["n_embd"])).astype(np.float32)
            tensors[f"{key}.lora_B.weight"] = scale * rng.normal(0, 0.2, (n_out, 4)).astype(np.float32)
    path.mkdir()
    save_file(tensors, str(path / "adapter_model.safetensors"))
    config = {"peft_type": "LORA", "r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"]}
    (path / "adapter_config.json").write_text(json.dumps(config))
    return path


def test_converted_peft_adapters_switch_at_run_time(model, tmp_path):
    from unolearn.backends.gguf_lora import convert_peft_to_gguf_lora

    base = model.model_path
    adapters = {}
    for name, scale in (("rand", 1.0), ("zero", 0.0)):
        peft_dir = _peft_folder(tmp_path / name, base, scale)
        adapters[name] = str(convert_peft_to_gguf_lora(peft_dir, tmp_path / f"{name}.gguf", base))
    m = LlamaCppChatModel(str(base), adapters=adapters)
    req = ChatRequest.of("What is the capital of France?", max_tokens=8)
    with_adapter = [ChatRequest(**{**req.__dict__, "adapter": a}) for a in ("rand", "zero")]
    try:
        plain, rand, zero, again = m.generate_sync([req, *with_adapter, req])
    finally:
        asyncio.run(m.aclose())
    assert all(r.ok for r in (plain, rand, zero, again))
    assert rand.text != plain.text  # the adapter is applied
    assert zero.text == plain.text  # a zero update changes nothing
    assert again.text == plain.text  # switching back to no adapter restores the base model


def test_unsupported_peft_variants_are_refused(tmp_path, model):
    from unolearn.backends.gguf_lora import convert_peft_to_gguf_lora

    folder = tmp_path / "dora"
    folder.mkdir()
    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 4, "lora_alpha": 8,
                                                            "use_dora": True}))
    with pytest.raises(InputError, match="use_dora"):
        convert_peft_to_gguf_lora(folder, tmp_path / "out.gguf", model.model_path)
    assert not (tmp_path / "out.gguf").exists()


def test_add_adapter_converts_a_peft_folder_once(model, tmp_path):
    peft_dir = _peft_folder(tmp_path / "expert@1", model.model_path, 1.0)
    m = LlamaCppChatModel(str(model.model_path))

    async def go():
        await m.add_adapter("expert@1", str(peft_dir))
        stamp = (peft_dir / "adapter.gguf").stat().st_mtime_ns
        await m.add_adapter("expert@1", str(peft_dir))
        req = ChatRequest.of("What is the capital of France?", max_tokens=8)
        outs = await m.generate([req, ChatRequest(**{**req.__dict__, "adapter": "expert@1"})])
        await m.aclose()  # closed, then asked again: the model and the adapter come back, the adapter once
        loads, load = [], m._load_adapter
        m._load_adapter = lambda name, path: loads.append(name) or load(name, path)
        await m.add_adapter("expert@1", str(peft_dir))
        (again,) = await m.generate([ChatRequest(**{**req.__dict__, "adapter": "expert@1"})])
        return stamp, outs, again, loads

    try:
        stamp, (plain, adapted), again, loads = asyncio.run(go())
    finally:
        asyncio.run(m.aclose())
    assert (peft_dir / "adapter.gguf").stat().st_mtime_ns == stamp
    assert plain.ok and adapted.ok and adapted.text != plain.text
    assert again.text == adapted.text and loads == ["expert@1"]
    with pytest.raises(BackendError, match="adapter_config.json"):
        asyncio.run(LlamaCppChatModel(str(model.model_path)).add_adapter("x", str(tmp_path)))
