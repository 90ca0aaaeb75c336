"""The model training starts from: a Hugging Face folder named in the config, else the embedded chat model
converted once from its GGUF file; and whether the machine trains in bf16."""

from __future__ import annotations

import shutil
from pathlib import Path

from .errors import ConfigError
from .store import Workspace


def gpu_bf16() -> bool:
    """Whether a CUDA GPU that supports bf16 is present."""
    import torch

    return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())


def cpu_bf16(cpuinfo: str | None = None) -> bool:
    """Whether the CPU computes bf16 natively (AVX512-BF16 or AMX-BF16 in /proc/cpuinfo).

    Measured on one with AVX512-BF16 (2 cores, a 2 × 512-token step of the 0.5B model with gradient
    checkpointing): bf16 weights 27 s and 2.3 GB resident, fp32 39 s and 3.8 GB. Without native
    support torch emulates bf16 slowly, so such CPUs keep fp32.
    """
    from .backends.llamacpp import cpu_flags, read_cpuinfo

    return bool({"avx512_bf16", "amx_bf16"} & cpu_flags(read_cpuinfo() if cpuinfo is None else cpuinfo))


def resolve_base_model(ws: Workspace, base_model: str | None) -> Path:
    """The Hugging Face folder to train on: ``base_model`` (the config's), else the embedded model converted once."""
    if base_model:
        path = Path(base_model)
        if not (path / "config.json").is_file():
            raise ConfigError(f"base_model: {path} is not a Hugging Face model folder (no config.json)")
        return path
    return embedded_hf_model(ws.artifacts / "base-model")


def embedded_hf_model(dest: Path) -> Path:
    """Convert the packaged GGUF chat model into a Hugging Face folder at ``dest`` (once).

    The model is built on the meta device and the dequantised GGUF tensors are moved into it, so the
    weights exist once in memory (transformers' own ``from_pretrained(gguf_file=...)`` holds them twice:
    4.1 GB peak for the 0.5B model). They are kept in bf16 (3.8 GB peak in fp32): the rounding
    (< 0.4% of a weight) is far below the 4–5-bit quantization of the served model, and a CPU with native
    bf16 trains on these weights as they are; others load them as fp32. Saved in 200 MB shards:
    safetensors copies a shard into memory to write it.
    """
    if (dest / "config.json").is_file():
        return dest
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    from .backends.llamacpp import packaged_model_path

    gguf = packaged_model_path()
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    config = AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    tensors = load_gguf_checkpoint(str(gguf), return_tensors=True, model_to_load=model,
                                   torch_dtype=torch.bfloat16)["tensors"]
    missing, unexpected = model.load_state_dict(tensors, strict=False, assign=True)
    del tensors
    model.tie_weights()
    left = [k for k in missing if not (k == "lm_head.weight" and config.tie_word_embeddings)]
    if left or unexpected or any(p.is_meta for p in model.parameters()):
        raise ConfigError(f"{gguf.name}: the GGUF tensors do not fill the model "
                          f"(missing {left[:3]}, unexpected {unexpected[:3]})")
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, max_shard_size="200MB")
    tok.save_pretrained(tmp)
    tmp.replace(dest)
    return dest
