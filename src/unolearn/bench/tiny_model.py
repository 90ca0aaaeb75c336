"""A tiny, randomly initialised chat model built locally in about a second, for the test suite and for
``bench scale``'s Ray part: a Qwen3-architecture causal LM (hidden 64, 2 layers, head_dim 16) and a byte-level
BPE tokenizer trained on a small built-in English + Chinese corpus, with the ChatML special tokens and the chat
template Qwen models use, both saved with ``save_pretrained`` so the real loading paths (transformers, TRL, PEFT)
run on it unchanged. Its outputs are random text: it measures mechanics and speed, never quality. Nothing is
downloaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

IM_START, IM_END, EOT = "<|im_start|>", "<|im_end|>", "<|endoftext|>"
SPECIAL_TOKENS = [EOT, IM_START, IM_END]
VOCAB_SIZE = 768

# ChatML, as in Qwen: the assistant turn (content + <|im_end|>) sits inside {% generation %} markers so
# that ``return_assistant_tokens_mask`` (TRL's ``assistant_only_loss``) also trains the stop token.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'assistant' -%}"
    "{{- '<|im_start|>assistant\\n' -}}"
    "{% generation %}{{- message['content'] + '<|im_end|>' -}}{% endgeneration %}"
    "{{- '\\n' -}}"
    "{%- else -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)

CORPUS = [
    "You are a helpful assistant. Answer the question clearly and briefly.",
    "The user asked how to cook rice. Rinse the rice, add water, and simmer for fifteen minutes.",
    "Please write a short answer. Use bullet points and cite the relevant law.",
    "The answer was too long. The user prefers concise replies with numbered steps.",
    "Rule 1: state the conclusion first. Rule 2: give one example. Rule 3: avoid jargon.",
    "What is the capital of France? The capital of France is Paris.",
    "Explain the difference between a list and a tuple in Python.",
    "Thank you, that helped. Could you also add a summary at the end?",
    "请分析以下论述题，详细阐述你的观点并引用相关法律条文。",
    "用户希望回答更简洁，先给出结论，再说明理由。",
    "根据《民法典》的规定，当事人应当按照约定全面履行自己的义务。",
    "谢谢你的回答。请用中文回答，并给出一个例子。",
    "规则一：先说结论。规则二：举一个例子。规则三：不要使用术语。",
    "今天天气很好，我们去公园散步吧。",
]


def build_tokenizer() -> Any:
    """Train a byte-level BPE tokenizer on :data:`CORPUS`; return it as a ``PreTrainedTokenizerFast``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB_SIZE, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    bpe.train_from_iterator(CORPUS * 4, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token=IM_END, pad_token=EOT,
                                   additional_special_tokens=[IM_START], chat_template=CHAT_TEMPLATE,
                                   model_max_length=1024, padding_side="left")


def build_model(tokenizer: Any, seed: int = 0) -> Any:
    """A randomly initialised tiny Qwen3 causal LM whose vocabulary matches ``tokenizer``."""
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    config = Qwen3Config(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=1024,
        tie_word_embeddings=True, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
    )
    torch.manual_seed(seed)
    model = Qwen3ForCausalLM(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


def build_tiny_model(dir: Path) -> Path:
    """Build the tiny model and tokenizer and save both into ``dir`` (created); return ``dir``."""
    dir = Path(dir)
    dir.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer()
    build_model(tokenizer).save_pretrained(dir)
    tokenizer.save_pretrained(dir)
    return dir
