"""Time greedy decoding on the packaged model with OpenMP's default wait policy and with passive waiting.

    python scripts/measure_wait_policy.py [--busy K] [--threads N] [--tokens T] [--rounds R]

Starts K busy processes (a pure-Python loop each, standing in for other work on the machine: another
unolearn job, a build, a browser), then decodes up to T tokens in a fresh child process R times per policy,
alternating: once with ``OMP_WAIT_POLICY`` unset (libgomp's default: idle threads spin first) and once with
``PASSIVE`` (they sleep). llama.cpp's CPU engine runs its threads through OpenMP, so on a machine with
fewer free cores than threads a spinning thread takes the core its partner needs. Prints JSON: tokens per
second for each round and policy, and the ratio of the medians (passive over default).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import time

from unolearn.backends.llamacpp import default_threads

CHILD = """
import sys, time
from llama_cpp import Llama
from unolearn.backends.llamacpp import MODEL_PARAMS, _model_params, packaged_model_path
with _model_params(MODEL_PARAMS):  # as the backend loads it, but without its choice of wait policy
    llm = Llama(model_path=str(packaged_model_path()), n_ctx=1024, n_threads={threads},
                n_threads_batch={threads}, seed=0, verbose=False)
prompt = "Explain, step by step, how the gears of a bicycle change the effort of pedalling."
llm(prompt, max_tokens=4, temperature=0.0)
start = time.perf_counter()
out = llm(prompt + " Be thorough.", max_tokens={tokens}, temperature=0.0)
print(out["usage"]["completion_tokens"] / (time.perf_counter() - start))
"""


def burn() -> None:
    """Keep one core busy until killed."""
    while True:
        pass


def tokens_per_s(policy: str | None, threads: int, tokens: int) -> float:
    """Greedy decoding speed (up to ``tokens`` tokens) in a fresh process under ``policy`` (None: unset)."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if policy:
        env["OMP_WAIT_POLICY"] = policy
    out = subprocess.run([sys.executable, "-c", CHILD.format(threads=threads, tokens=tokens)], env=env,
                         capture_output=True, text=True, check=True).stdout.split()
    return float(out[0])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--busy", type=int, default=0, help="busy processes started first (default 0: idle)")
    ap.add_argument("--threads", type=int, default=default_threads(), help="default: as the backend picks")
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    burners = [multiprocessing.Process(target=burn, daemon=True) for _ in range(args.busy)]
    for b in burners:
        b.start()
    try:
        times: dict[str, list[float]] = {"default": [], "passive": []}
        for _ in range(args.rounds):
            times["default"].append(round(tokens_per_s(None, args.threads, args.tokens), 2))
            times["passive"].append(round(tokens_per_s("PASSIVE", args.threads, args.tokens), 2))
    finally:
        for b in burners:
            b.terminate()
    ratio = statistics.median(times["passive"]) / statistics.median(times["default"])
    print(json.dumps({"busy": args.busy, "threads": args.threads, "tokens": args.tokens, "tokens_per_s": times,
                      "passive_over_default": round(ratio, 2), "at": time.strftime("%Y-%m-%d %H:%M")}))


if __name__ == "__main__":
    main()
