"""A chat model run in this process by transformers, with PEFT LoRA adapters switched per request.

This is the backend that answers with exactly the model unolearn trained (a Hugging Face folder plus
the adapters saved by ``unolearn train``): the test suite's tiny model, or a small model on a CPU.
It has no constrained decoding; JSON answers are validated (and re-asked) by :class:`ChatModel`.
"""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

from ..errors import BackendError, ConfigError
from .base import ChatModel, ChatRequest, ChatResult


class TransformersChatModel(ChatModel):
    """A causal LM from a Hugging Face folder; ``add_adapter`` loads PEFT adapters by name. It also scores
    given replies (:attr:`ChatRequest.continuation`)."""

    scores_continuations = True

    def __init__(self, model_dir: str | Path, *, device: str | None = None) -> None:
        super().__init__()
        self.path = Path(model_dir)
        if not (self.path / "config.json").is_file():
            raise ConfigError(f"{self.path}: not a Hugging Face model folder (no config.json)")
        self.model_id = f"hf:{self.path.resolve()}"
        self.device = device
        self._model: Any = None
        self._tok: Any = None
        self._adapters: dict[str, str] = {}
        self._lock = threading.Lock()

    def _load(self) -> None:
        if self._model is not None:
            return
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.device = self.device or ("cuda" if torch.cuda.is_available() else "cpu")
        self._tok = AutoTokenizer.from_pretrained(self.path)
        model = AutoModelForCausalLM.from_pretrained(self.path)
        self._model = model.to(self.device).eval()  # type: ignore[arg-type]  # @wraps(Module.to) hides the binding

    async def add_adapter(self, name: str, path: str) -> None:
        """Load the PEFT adapter folder ``path`` under ``name`` (a no-op when already loaded)."""
        if self._adapters.get(name) == path:
            return
        await asyncio.to_thread(self._add_adapter, name, path)

    def _add_adapter(self, name: str, path: str) -> None:
        from peft import PeftModel

        with self._lock:
            self._load()
            if not (Path(path) / "adapter_config.json").is_file():
                raise BackendError(f"{path}: not a PEFT adapter folder (no adapter_config.json)")
            if isinstance(self._model, PeftModel):
                self._model.load_adapter(path, adapter_name=name)
            else:
                self._model = PeftModel.from_pretrained(self._model, path, adapter_name=name).eval()
            self._adapters[name] = path

    async def complete(self, request: ChatRequest) -> ChatResult:
        """Generate one answer in a worker thread (one generation at a time)."""
        if request.adapter is not None and request.adapter not in self._adapters:
            raise BackendError(f"unknown adapter {request.adapter!r} (known: {', '.join(self._adapters) or 'none'})")
        return await asyncio.to_thread(self._generate, request)

    def _generate(self, request: ChatRequest) -> ChatResult:
        import torch

        with self._lock:
            self._load()
            start = time.perf_counter()
            if request.continuation is not None:
                return self._score(request, start)
            ids = self._tok.apply_chat_template(list(request.messages), add_generation_prompt=True,
                                                return_tensors="pt", return_dict=True)["input_ids"].to(self.device)
            if request.seed is not None:
                torch.manual_seed(request.seed)
            sample = request.temperature > 0
            kwargs: dict[str, Any] = {"max_new_tokens": request.max_tokens, "do_sample": sample,
                                      "pad_token_id": self._tok.pad_token_id or self._tok.eos_token_id}
            if sample:
                kwargs.update(temperature=request.temperature, top_p=request.top_p)
            with torch.no_grad(), self._adapter_context(request.adapter):
                out = self._model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), **kwargs)
            new = out[0, ids.shape[1]:]
            text = self._tok.decode(new, skip_special_tokens=True)
            eos = self._model.generation_config.eos_token_id
            cut = len(new) >= request.max_tokens and int(new[-1]) not in (eos if isinstance(eos, list) else [eos])
            return ChatResult(text=text, prompt_tokens=int(ids.shape[1]), completion_tokens=int(new.shape[0]),
                              latency_s=time.perf_counter() - start, finish_reason="length" if cut else "stop")

    def _score(self, request: ChatRequest, start: float) -> ChatResult:
        """The log-probability of ``request.continuation`` as the whole reply (its tokens, then end of turn)."""
        import torch

        assert request.continuation is not None  # the request scores one
        head = self._tok.apply_chat_template(list(request.messages), add_generation_prompt=True, tokenize=True,
                                             return_dict=True)["input_ids"]
        tail = self._tok(request.continuation, add_special_tokens=False)["input_ids"] + [self._tok.eos_token_id]
        ids = torch.tensor([list(head) + tail], device=self.device)
        with torch.no_grad(), self._adapter_context(request.adapter):
            logits = self._model(input_ids=ids).logits[0, len(head) - 1:-1].float()
        lp = torch.log_softmax(logits, dim=-1).gather(1, ids[0, len(head):, None]).sum()
        return ChatResult(text=request.continuation, prompt_tokens=len(head), completion_tokens=len(tail),
                          latency_s=time.perf_counter() - start, logprob=float(lp))

    def _adapter_context(self, name: str | None) -> Any:
        from contextlib import nullcontext

        if not self._adapters:
            return nullcontext()
        if name is None:
            return self._model.disable_adapter()
        self._model.set_adapter(name)
        return nullcontext()
