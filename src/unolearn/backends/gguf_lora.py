"""Convert a PEFT LoRA adapter folder into a GGUF LoRA adapter that llama.cpp applies at run time.

Why: expert adapters are trained with PEFT (transformers tensor names, safetensors) but served by the
embedded llama.cpp backend, which reads adapters as GGUF files named in llama.cpp's own scheme.

The file written here is the contract llama.cpp checks when it loads an adapter:
- metadata ``general.architecture`` = the base model's GGUF architecture, ``general.type = "adapter"``,
  ``adapter.type = "lora"``, ``adapter.lora.alpha`` = the PEFT ``lora_alpha`` (llama.cpp scales each
  update by alpha / rank, as PEFT does);
- for each adapted base weight ``W`` (GGUF name, e.g. ``blk.3.attn_q.weight``) two float32 tensors
  ``W.lora_a`` of shape ``(rank, in)`` and ``W.lora_b`` of shape ``(out, rank)`` (numpy order), i.e.
  PEFT's ``lora_A`` / ``lora_B`` weights unchanged, except for architectures whose converter permutes
  the rows of the query/key projections (``llama``): the same row permutation is applied to ``lora_b``.
"""

from __future__ import annotations

import json
import math
import os
import struct
import tempfile
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from ..errors import ConfigError, InputError

#: Architectures whose GGUF conversion keeps transformers' weight layout.
_PLAIN = {"qwen2", "qwen3", "gemma3"}
#: Architectures whose GGUF conversion interleaves the rotary halves of the q/k projection rows.
_ROPE_PERMUTED = {"llama"}


def convert_peft_to_gguf_lora(peft_dir: str | Path, out_path: str | Path,
                              base_gguf_or_hf_config: str | Path) -> Path:
    """Write the PEFT LoRA adapter in ``peft_dir`` to ``out_path`` as a GGUF LoRA adapter.

    ``base_gguf_or_hf_config`` describes the base model: its GGUF file, or its transformers
    ``config.json`` (or the folder holding it). The file is written atomically. Returns ``out_path``.
    """
    import gguf

    config = _adapter_config(Path(peft_dir))
    base = _base_info(Path(base_gguf_or_hf_config))
    names = gguf.get_tensor_name_map(_arch_enum(base["arch"]), base["n_blocks"])
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=out.name, suffix=".part")
    os.close(fd)
    try:
        writer = gguf.GGUFWriter(tmp, base["arch"])
        writer.add_type(gguf.GGUFType.ADAPTER)
        writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
        writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, _alpha(config))
        for hf_name, (a, b) in sorted(_lora_pairs(Path(peft_dir)).items()):
            gguf_name = names.get_name(f"{hf_name}.weight", try_suffixes=(".weight",))
            if gguf_name is None:
                raise InputError(f"no {base['arch']} GGUF tensor for the adapted weight {hf_name}", file=str(peft_dir))
            b = _permute_rows(b, hf_name, base)
            writer.add_tensor(f"{gguf_name}.lora_a", np.ascontiguousarray(a, dtype=np.float32))
            writer.add_tensor(f"{gguf_name}.lora_b", np.ascontiguousarray(b, dtype=np.float32))
        _write(writer)
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out


def _write(writer: Any) -> None:
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def _adapter_config(peft_dir: Path) -> dict[str, Any]:
    """Read ``adapter_config.json`` and refuse the PEFT variants a GGUF LoRA cannot express."""
    path = peft_dir / "adapter_config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError("not a PEFT adapter folder (no adapter_config.json)", file=str(peft_dir)) from None
    if config.get("peft_type", "LORA") != "LORA":
        raise InputError(f"only LoRA adapters convert, not {config['peft_type']}", file=str(path))
    for key in ("use_dora", "rank_pattern", "alpha_pattern", "modules_to_save"):
        if config.get(key):
            raise InputError(f"{key} is not supported by GGUF LoRA adapters", file=str(path))
    if config.get("lora_bias"):
        raise InputError("lora_bias is not supported by GGUF LoRA adapters", file=str(path))
    return config


def _alpha(config: dict[str, Any]) -> float:
    """The alpha llama.cpp needs so that alpha / rank equals PEFT's scaling (rsLoRA uses sqrt(rank))."""
    alpha, rank = float(config["lora_alpha"]), int(config["r"])
    return alpha * math.sqrt(rank) if config.get("use_rslora") else alpha


def _lora_pairs(peft_dir: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Map each adapted transformers weight name (``model.layers.0.self_attn.q_proj``) to its (A, B)."""
    from safetensors.numpy import load_file

    path = peft_dir / "adapter_model.safetensors"
    if not path.is_file():
        raise InputError("no adapter_model.safetensors", file=str(peft_dir))
    parts: dict[str, dict[str, np.ndarray]] = {}
    for key, value in load_file(str(path)).items():
        stem, dot, kind = key.rpartition(".lora_")
        if not dot or kind not in ("A.weight", "B.weight"):
            raise InputError(f"unexpected tensor {key} (only lora_A / lora_B weights convert)", file=str(path))
        parts.setdefault(stem.removeprefix("base_model.model."), {})[kind[0]] = value.astype(np.float32)
    missing = [k for k, v in parts.items() if set(v) != {"A", "B"}]
    if missing:
        raise InputError(f"{missing[0]} has only one of lora_A / lora_B", file=str(path))
    return {k: (v["A"], v["B"]) for k, v in parts.items()}


def _base_info(base: Path) -> dict[str, Any]:
    """Architecture, layer count, head counts and width of the base model, from its GGUF or config.json."""
    if base.is_dir():
        base = base / "config.json"
    if not base.is_file():
        raise ConfigError(f"{base}: no such base model file")
    if base.suffix == ".json":
        cfg = json.loads(base.read_text(encoding="utf-8"))
        cfg = cfg.get("text_config", cfg)
        heads = cfg.get("num_attention_heads", 0)
        return {"arch": cfg["model_type"], "n_blocks": cfg["num_hidden_layers"], "n_head": heads,
                "n_head_kv": cfg.get("num_key_value_heads") or heads, "n_embd": cfg.get("hidden_size", 0)}
    return _gguf_base_info(base)


def _gguf_base_info(path: Path) -> dict[str, Any]:
    meta = gguf_scalars(path)
    arch = meta.get("general.architecture")
    if not isinstance(arch, str):
        raise ConfigError(f"{path}: not a GGUF model (no general.architecture)")
    heads = int(meta.get(f"{arch}.attention.head_count", 0))
    return {"arch": arch, "n_blocks": int(meta.get(f"{arch}.block_count", 0)), "n_head": heads,
            "n_head_kv": int(meta.get(f"{arch}.attention.head_count_kv", heads)),
            "n_embd": int(meta.get(f"{arch}.embedding_length", 0))}


#: GGUF value types with a fixed size: type id -> struct format.
_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_STRING, _ARRAY = 8, 9


def gguf_scalars(path: str | Path) -> dict[str, Any]:
    """The scalar and string metadata of a GGUF file, arrays skipped.

    Much faster than :class:`gguf.GGUFReader`, which decodes the whole vocabulary.
    """
    with open(path, "rb") as f:
        if f.read(4) != b"GGUF":
            raise ConfigError(f"{path}: not a GGUF file")
        _version, _n_tensors, n_kv = struct.unpack("<IQQ", f.read(20))
        out = {}
        for _ in range(n_kv):
            key = _read_str(f)
            (vtype,) = struct.unpack("<I", f.read(4))
            value = _read_value(f, vtype)
            if value is not None:
                out[key] = value
        return out


def _read_str(f: BinaryIO) -> str:
    (n,) = struct.unpack("<Q", f.read(8))
    return f.read(n).decode("utf-8", errors="replace")


def _read_value(f: BinaryIO, vtype: int) -> Any:
    """Read one value; arrays are skipped (``None``)."""
    if vtype in _SCALARS:
        fmt = "<" + _SCALARS[vtype]
        return struct.unpack(fmt, f.read(struct.calcsize(fmt)))[0]
    if vtype == _STRING:
        return _read_str(f)
    if vtype != _ARRAY:
        raise ConfigError(f"unknown GGUF value type {vtype}")
    item_type, n = struct.unpack("<IQ", f.read(12))
    if item_type in _SCALARS:
        f.seek(n * struct.calcsize("<" + _SCALARS[item_type]), 1)
    else:
        for _ in range(n):
            _read_value(f, item_type)
    return None


def _arch_enum(arch: str) -> Any:
    import gguf

    if arch not in _PLAIN | _ROPE_PERMUTED:
        raise ConfigError(f"LoRA conversion is not supported for the {arch} architecture "
                          f"(supported: {', '.join(sorted(_PLAIN | _ROPE_PERMUTED))})")
    return next(e for e, name in gguf.MODEL_ARCH_NAMES.items() if name == arch)


def _permute_rows(b: np.ndarray, hf_name: str, base: dict[str, Any]) -> np.ndarray:
    """Reorder ``lora_b``'s rows as the GGUF converter reorders the base q/k projection rows."""
    if base["arch"] not in _ROPE_PERMUTED:
        return b
    if hf_name.endswith(".q_proj"):
        n_head = base["n_head"]
    elif hf_name.endswith(".k_proj"):
        n_head = base["n_head_kv"]
    else:
        return b
    rows, rank = b.shape
    return b.reshape(n_head, 2, rows // n_head // 2, rank).swapaxes(1, 2).reshape(rows, rank)
