"""What a real vLLM answers to the adapter calls unolearn makes, edge cases included: an adapter loaded twice,
more adapters loaded than ``--max-loras``, an unknown one unloaded, a path it cannot read, a request naming an
unloaded adapter. Prints one JSON line per call (status and the answer's first 300 characters).

    python scripts/probe_vllm_lora.py BASE_MODEL_DIR ADAPTER_DIR [ADAPTER_DIR ...] [--venv DIR]

Starts vLLM's CPU build from the virtualenv ``bench scale`` makes (``--max-loras 2``) and stops it at the end.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from unolearn.bench import free_port
from unolearn.bench.vllm_cpu import default_venv, ensure_vllm, post_json, served_models, vllm_server


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("base", type=Path)
    ap.add_argument("adapters", type=Path, nargs="+")
    ap.add_argument("--venv", type=Path, default=None)
    args = ap.parse_args()
    python, version = ensure_vllm(args.venv or default_venv(), print)
    print(json.dumps({"vllm": version}))
    log = Path("probe-vllm.log").resolve()
    with vllm_server(python, args.base, free_port(), log) as url:
        base = served_models(url)[0]

        def call(what: str, path: str, body: dict) -> None:
            status, _, answer = post_json(f"{url}{path}", body)
            print(json.dumps({"call": what, "status": status, "answer": str(answer)[:300]}), flush=True)

        names = [f"a{i}" for i in range(len(args.adapters))]
        for name, path in zip(names, args.adapters):
            call(f"load {name}", "/load_lora_adapter", {"lora_name": name, "lora_path": str(path)})
        call("load a0 again", "/load_lora_adapter", {"lora_name": "a0", "lora_path": str(args.adapters[0])})
        call("load a path it cannot read", "/load_lora_adapter", {"lora_name": "bad", "lora_path": "/nonexistent"})
        print(json.dumps({"models": served_models(url)}))
        for name in names:
            call(f"ask {name}", "/chat/completions", {"model": name, "max_tokens": 8, "temperature": 0,
                                                     "messages": [{"role": "user", "content": "Say hi."}]})
        call("unload a0", "/unload_lora_adapter", {"lora_name": "a0"})
        call("unload a0 again", "/unload_lora_adapter", {"lora_name": "a0"})
        call("ask a0 after unload", "/chat/completions", {"model": "a0", "max_tokens": 8, "temperature": 0,
                                                          "messages": [{"role": "user", "content": "Say hi."}]})
        call("ask base", "/chat/completions", {"model": base, "max_tokens": 8, "temperature": 0,
                                               "messages": [{"role": "user", "content": "Say hi."}]})
        print(json.dumps({"models": served_models(url)}))


if __name__ == "__main__":
    main()
