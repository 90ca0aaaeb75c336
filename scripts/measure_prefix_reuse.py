"""Time distil-like requests on the embedded model with and without reusing the shared prompt prefix.

    python scripts/measure_prefix_reuse.py reuse|fresh [N]

Builds N feedback-rule requests (the distil prompt with its worked examples, then N different NFCats
queries from the packaged train set) and answers them one after another. ``fresh`` clears the KV
cache before every request, as the backend did before it reused prefixes; ``reuse`` is the backend as
it is. Run the two modes in separate processes, one after the other, on an idle machine; compare the
per-request latencies after the first and check the texts are the same.
"""

from __future__ import annotations

import json
import sys
import time

from unolearn.backends.base import ChatRequest
from unolearn.backends.llamacpp import LlamaCppChatModel
from unolearn.distill import PROMPTS, RULES_SCHEMA
from unolearn.distill_examples import feedback_turns
from unolearn.prompt_sets import resolve


def main(mode: str, n: int) -> None:
    path = next(p for p in resolve("memorybench:train") if "nfcats" in p.name)
    queries = [json.loads(line)["input_prompt"] for line in path.read_text(encoding="utf-8").splitlines()[:n]]
    model = LlamaCppChatModel()
    p = PROMPTS["en"]
    out = []
    for q in queries:
        if mode == "fresh":
            model._llm.reset()
        req = ChatRequest.of([{"role": "system", "content": p["feedback"]}, *feedback_turns("en", p["feedback_input"]),
                              {"role": "user", "content": p["feedback_input"].format(
                                  query=q, answer="It depends.", feedback="too short, give details")}],
                             schema=RULES_SCHEMA, max_tokens=128, seed=1)
        start = time.perf_counter()
        res = model._complete_locked(req)
        out.append({"prompt_tokens": res.prompt_tokens, "seconds": round(time.perf_counter() - start, 2),
                    "text": res.text})
    print(json.dumps({"mode": mode, "requests": out}, ensure_ascii=False, indent=1))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 6)
