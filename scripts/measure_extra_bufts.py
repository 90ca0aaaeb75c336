"""Tokens/s of the packaged model with llama.cpp's use_extra_bufts on (1) or off (0): docs/embedded-model.md.

Usage: python scripts/measure_extra_bufts.py 1|0   (run the two settings alternately, in separate processes)
"""
import sys, time, json
import llama_cpp, llama_cpp.llama_cpp as L
from unolearn.backends.llamacpp import packaged_model_path
flag = sys.argv[1] == "1"
orig = L.llama_model_default_params
def patched():
    p = orig(); p.use_extra_bufts = flag; return p
L.llama_model_default_params = patched
llm = llama_cpp.Llama(model_path=str(packaged_model_path()), n_ctx=2048, n_threads=2, n_threads_batch=2, seed=42, verbose=False)
L.llama_model_default_params = orig
q = "Explain how a tenant's notice period works under a residential lease, what the landlord must do, and what happens if either side breaks the agreement. " * 4
pp, tg = [], []
for i in range(3):
    llm.reset()
    t = time.perf_counter(); o = llm.create_chat_completion([{"role": "user", "content": q}], max_tokens=1, temperature=0); t1 = time.perf_counter() - t
    pp.append(o["usage"]["prompt_tokens"] / t1)
    llm.reset()
    t = time.perf_counter(); o = llm.create_chat_completion([{"role": "user", "content": "Write about the history of Rome."}], max_tokens=128, temperature=0); t2 = time.perf_counter() - t
    tg.append(o["usage"]["completion_tokens"] / t2)
print(json.dumps({"use_extra_bufts": flag, "prompt_tok_per_s": [round(x) for x in pp], "gen_tok_per_s": [round(x, 1) for x in tg], "prompt_tokens": o["usage"]["prompt_tokens"]}))
