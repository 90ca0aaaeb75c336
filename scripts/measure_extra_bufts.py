"""Tokens/s of the packaged model with llama.cpp's use_extra_bufts on (1) or off (0): docs/embedded-model.md.

Usage: python scripts/measure_extra_bufts.py 1|0   (run the two settings alternately, in separate processes)
"""
import json
import sys
import time

import llama_cpp
import llama_cpp.llama_cpp as L

from unolearn.backends.llamacpp import packaged_model_path

FLAG = sys.argv[1] == "1"
QUERY = ("Explain how a tenant's notice period works under a residential lease, what the landlord must do, "
         "and what happens if either side breaks the agreement. ") * 4


def load() -> llama_cpp.Llama:
    """The packaged model, loaded with use_extra_bufts set to FLAG."""
    orig = L.llama_model_default_params

    def patched():
        params = orig()
        params.use_extra_bufts = FLAG
        return params

    L.llama_model_default_params = patched
    try:
        return llama_cpp.Llama(model_path=str(packaged_model_path()), n_ctx=2048, n_threads=2, n_threads_batch=2,
                               seed=42, verbose=False)
    finally:
        L.llama_model_default_params = orig


def timed(llm: llama_cpp.Llama, content: str, max_tokens: int) -> tuple[dict, float]:
    """One fresh completion and its seconds."""
    llm.reset()
    start = time.perf_counter()
    out = llm.create_chat_completion([{"role": "user", "content": content}], max_tokens=max_tokens, temperature=0)
    return out, time.perf_counter() - start


llm = load()
pp, tg = [], []
for _ in range(3):
    o, seconds = timed(llm, QUERY, 1)
    pp.append(o["usage"]["prompt_tokens"] / seconds)
    prompt_tokens = o["usage"]["prompt_tokens"]
    o, seconds = timed(llm, "Write about the history of Rome.", 128)
    tg.append(o["usage"]["completion_tokens"] / seconds)
print(json.dumps({"use_extra_bufts": FLAG, "prompt_tok_per_s": [round(x) for x in pp],
                  "gen_tok_per_s": [round(x, 1) for x in tg], "prompt_tokens": prompt_tokens}))
