"""Measure a GGUF chat model as unolearn's rule writer (see docs/embedded-model.md).

For each of N MemoryBench train prompts (a fixed mix of NFCats, HelloBench and LexEval) it asks the model
(a) for at most 5 answer-improvement rules given the query alone, and (b) for rules given the query, a
short first answer (written by the same model) and a canned user complaint. Both are schema-constrained
requests sent once (no re-asking). It prints valid-JSON rates and speed, and writes every answer to a
JSONL file so the rules can be read and judged.

    python scripts/measure_embedded.py MODEL.gguf --out rules.jsonl [--threads 1] [--data DIR]
    python scripts/measure_embedded.py MODEL.gguf --speed [--threads 2]   # generation speed only
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path

from unolearn.backends.base import ChatRequest, parse_json_output
from unolearn.backends.llamacpp import LlamaCppChatModel
from unolearn.errors import UnolearnError
from unolearn.prompt_sets import packaged_dir

#: The MemoryBench prompt sets shipped in the package.
DATA = packaged_dir()
MIX = {"nfcats_train.jsonl": 7, "hellobench_ak_qa_train.jsonl": 7, "lexeval_qa_train.jsonl": 6}
COMPLAINTS = {
    "en": ["Too long, get to the point.", "Too vague: give concrete examples.", "Is that right? Cite a source."],
    "zh": ["太长了，请引用相关法条。", "没有逐个回答问题，请分点分析并说明法律依据。"],
}
#: Rules are capped at 200 characters by the grammar, so one runaway string cannot eat the token budget.
SCHEMA = {
    "type": "object",
    "properties": {"rules": {"type": "array", "items": {"type": "string", "maxLength": 200},
                             "minItems": 1, "maxItems": 5}},
    "required": ["rules"],
}
PRIOR = ("An assistant received the user query below. Do not answer it. Instead write at most 5 rules that a "
         "high-quality answer to this query must follow: what it must contain, how accurate, long, structured "
         "and in what tone it must be. Each rule is one short imperative sentence (at most 25 words) about "
         "answering this query. Write the rules in the language of the query.\n\nQuery:\n<<<\n{query}\n>>>")
FEEDBACK = ("An assistant answered the user query below and the user gave feedback on the answer. Do not answer "
            "the query. Instead write at most 5 rules that a revised answer must follow so that this user is "
            "satisfied; the rules must address the feedback. Each rule is one short imperative sentence (at most "
            "25 words). Write the rules in the language of the query.\n\nQuery:\n<<<\n{query}\n>>>\n\n"
            "Answer:\n<<<\n{answer}\n>>>\n\nFeedback:\n<<<\n{feedback}\n>>>")


def load_prompts(data: Path, max_chars: int) -> list[dict]:
    """The first rows of each dataset in MIX, queries cut to ``max_chars``."""
    rows = []
    for name, n in MIX.items():
        with open(data / name, encoding="utf-8") as f:
            for line in list(f)[:n]:
                r = json.loads(line)
                rows.append({"dataset": r["dataset_name"], "lang": r["lang"], "query": r["input_prompt"][:max_chars]})
    return rows


async def ask(model: LlamaCppChatModel, req: ChatRequest) -> dict:
    """Send one request once; return text, parse outcome, tokens and seconds."""
    start = time.perf_counter()
    try:
        res = await model.complete(req)
    except UnolearnError as e:
        return {"text": "", "error": str(e), "valid": False, "tokens": 0, "seconds": time.perf_counter() - start}
    out = {"text": res.text, "tokens": res.completion_tokens, "seconds": time.perf_counter() - start}
    if req.schema is None:
        return out
    try:
        out["rules"], out["valid"] = parse_json_output(res.text, req.schema)["rules"], True
    except UnolearnError as e:
        out["error"], out["valid"] = str(e), False
    return out


async def measure_one(model: LlamaCppChatModel, i: int, row: dict) -> dict:
    """Prior rules, first answer, and feedback rules for one prompt."""
    q = row["query"]
    prior = await ask(model, ChatRequest.of(PRIOR.format(query=q), schema=SCHEMA, max_tokens=256))
    answer = await ask(model, ChatRequest.of(q + "\n\nAnswer briefly, in at most 3 sentences.", max_tokens=120))
    complaints = COMPLAINTS["zh" if row["lang"] == "zh" else "en"]
    complaint = complaints[i % len(complaints)]
    user = FEEDBACK.format(query=q, answer=answer["text"], feedback=complaint)
    fb = await ask(model, ChatRequest.of(user, schema=SCHEMA, max_tokens=256))
    return {**row, "answer": answer["text"], "complaint": complaint, "prior": prior, "feedback": fb,
            "answer_tokens": answer["tokens"], "answer_seconds": answer["seconds"]}


async def main() -> None:
    """Run the measurement and print a summary line per figure."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", help="GGUF file")
    ap.add_argument("--out", help="JSONL file for every prompt's answers and rules")
    ap.add_argument("--speed", action="store_true", help="only time 3 free generations of 128 tokens")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--data", type=Path, default=DATA, help="folder of the MemoryBench prompt sets")
    ap.add_argument("--max-chars", type=int, default=1500, help="cut long queries to this many characters")
    args = ap.parse_args()
    model = LlamaCppChatModel(args.model, n_threads=args.threads)
    if args.speed:
        return await speed(model)
    if not args.out:
        ap.error("--out is required")
    rows = []
    with open(args.out, "w", encoding="utf-8") as f:
        prompts = load_prompts(args.data, args.max_chars)
        for i, row in enumerate(prompts):
            rows.append(await measure_one(model, i, row))
            f.write(json.dumps(rows[-1], ensure_ascii=False) + "\n")
            f.flush()
            print(f"{i + 1}/{len(prompts)} {row['dataset']}: prior valid={rows[-1]['prior']['valid']} "
                  f"feedback valid={rows[-1]['feedback']['valid']}", flush=True)
    summarise(model.model_id, rows)


async def speed(model: LlamaCppChatModel) -> None:
    """Print tokens per second of three 128-token generations (prompt evaluation included, it is short)."""
    req = ChatRequest.of("Explain in detail how a bicycle works, part by part.", max_tokens=128)
    for _ in range(3):
        start = time.perf_counter()
        res = await model.complete(req)
        print(f"{model.model_id}: {res.completion_tokens} tokens in {time.perf_counter() - start:.1f} s "
              f"= {res.completion_tokens / (time.perf_counter() - start):.1f} tok/s", flush=True)


def summarise(model_id: str, rows: list[dict]) -> None:
    """Print valid-JSON rates and tokens per second."""
    calls = [r[k] for r in rows for k in ("prior", "feedback")]
    answers_tok = sum(r["answer_tokens"] for r in rows)
    answers_s = sum(r["answer_seconds"] for r in rows)
    print(f"model {model_id}")
    print(f"(a) prior valid JSON: {sum(r['prior']['valid'] for r in rows)}/{len(rows)}")
    print(f"(b) feedback valid JSON: {sum(r['feedback']['valid'] for r in rows)}/{len(rows)}")
    print(f"rule requests: {sum(c['tokens'] for c in calls)} tokens in {sum(c['seconds'] for c in calls):.1f} s "
          f"= {sum(c['tokens'] for c in calls) / sum(c['seconds'] for c in calls):.1f} tok/s end to end")
    print(f"free answers: {answers_tok} tokens in {answers_s:.1f} s = {answers_tok / answers_s:.1f} tok/s end to end")


if __name__ == "__main__":
    asyncio.run(main())
