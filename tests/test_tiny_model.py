"""The tiny local test model: builds fast, loads through the Auto classes, chats, generates, trains."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from tiny_model import IM_END, build_tiny_model, tiny_model_dir  # noqa: F401

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

MESSAGES = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "What is rice? 米是什么？"},
    {"role": "assistant", "content": "Rice is a grain. 米是一种谷物。"},
]


@pytest.fixture(scope="module")
def tok(tiny_model_dir):
    return transformers.AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    return transformers.AutoModelForCausalLM.from_pretrained(tiny_model_dir)


def test_builds_in_seconds_and_saves_both_parts(tmp_path: Path):
    from transformers import PreTrainedTokenizerFast, Qwen3ForCausalLM  # noqa: F401  (time the build, not imports)

    start = time.perf_counter()
    out = build_tiny_model(tmp_path / "m")
    assert time.perf_counter() - start < 10
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= names


def test_model_is_tiny_qwen3_with_matching_vocab(model, tok):
    assert model.config.model_type == "qwen3"
    assert (model.config.hidden_size, model.config.num_hidden_layers) == (64, 2)
    assert model.get_input_embeddings().weight.shape[0] == len(tok)
    assert model.config.eos_token_id == tok.convert_tokens_to_ids(IM_END)


def test_tokenizer_special_tokens_are_single_ids(tok):
    for t in ("<|im_start|>", "<|im_end|>", "<|endoftext|>"):
        assert len(tok(t, add_special_tokens=False)["input_ids"]) == 1
    assert tok.pad_token == "<|endoftext|>" and tok.eos_token == "<|im_end|>"
    assert tok.pad_token_id != tok.eos_token_id


def test_chat_template_renders_chatml_and_round_trips(tok):
    text = tok.apply_chat_template(MESSAGES, tokenize=False)
    assert text == ("<|im_start|>system\nBe brief.<|im_end|>\n"
                    "<|im_start|>user\nWhat is rice? 米是什么？<|im_end|>\n"
                    "<|im_start|>assistant\nRice is a grain. 米是一种谷物。<|im_end|>\n")
    assert tok.decode(tok(text)["input_ids"]) == text
    prompt = tok.apply_chat_template(MESSAGES[:2], tokenize=False, add_generation_prompt=True)
    assert prompt.endswith("<|im_end|>\n<|im_start|>assistant\n") and text.startswith(prompt)


def test_assistant_mask_covers_answer_and_stop_token(tok):
    out = tok.apply_chat_template(MESSAGES, return_dict=True, return_assistant_tokens_mask=True)
    kept = [i for i, m in zip(out["input_ids"], out["assistant_masks"]) if m]
    assert tok.decode(kept) == MESSAGES[2]["content"] + IM_END


def test_generate_runs(model, tok):
    enc = tok.apply_chat_template(MESSAGES[:2], add_generation_prompt=True, return_tensors="pt",
                                  return_dict=True)
    out = model.generate(**enc, max_new_tokens=6, min_new_tokens=6, do_sample=False)
    assert out.shape == (1, enc["input_ids"].shape[1] + 6)


def test_trl_sft_with_lora_changes_adapter_not_base(tiny_model_dir, tmp_path: Path):
    pytest.importorskip("trl")
    pytest.importorskip("peft")
    from datasets import Dataset
    from peft import LoraConfig
    from trl import SFTConfig, SFTTrainer

    data = Dataset.from_list([{"messages": MESSAGES}] * 6)
    args = SFTConfig(output_dir=str(tmp_path), max_steps=3, per_device_train_batch_size=2, learning_rate=1e-2,
                     logging_steps=1, save_strategy="no", report_to="none", use_cpu=True, max_length=64,
                     assistant_only_loss=True, disable_tqdm=True)
    trainer = SFTTrainer(model=str(tiny_model_dir), args=args, train_dataset=data,
                         peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    assert any("loss" in rec for rec in trainer.state.log_history)
    after = dict(trainer.model.named_parameters())
    lora = [n for n in before if "lora_" in n]
    assert lora and any(not torch.equal(before[n], after[n]) for n in lora)
    assert all(torch.equal(before[n], after[n]) for n in before if "lora_" not in n)


def test_backend_scores_a_reply_as_the_model_computes_it(tiny_model_dir, model, tok):
    from unolearn.backends.base import ChatRequest
    from unolearn.backends.hf import TransformersChatModel

    backend = TransformersChatModel(tiny_model_dir)
    [res] = backend.generate_sync([ChatRequest.of(MESSAGES[:2], continuation=MESSAGES[2]["content"])])
    ids = tok.apply_chat_template(MESSAGES, tokenize=True, return_dict=True)["input_ids"]
    head = len(tok.apply_chat_template(MESSAGES[:2], tokenize=True, add_generation_prompt=True, return_dict=True)
               ["input_ids"])
    reply = ids[head:-1]  # the reply and its end of turn, without the template's final newline
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids[:head + len(reply) - 1]])).logits[0, head - 1:]
    expected = torch.log_softmax(logits.float(), -1).gather(1, torch.tensor(reply)[:, None]).sum()
    assert res.ok and res.completion_tokens == len(reply)
    assert abs(res.logprob - float(expected)) < 1e-4
    [cut] = backend.generate_sync([ChatRequest.of(MESSAGES[:2], max_tokens=3)])  # the random model never ends in 3
    assert cut.ok and cut.completion_tokens == 3 and cut.finish_reason == "length"
