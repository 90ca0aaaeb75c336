"""How long one llama.cpp decode step takes with 1, 4, 8 or 16 sequences, on the packaged model.

    python scripts/measure_decode_steps.py [--max 16] [--unified] [--flash]

Each sequence first reads a 200-token prompt; then every step decodes one token of each of N
sequences (logits for all of them, as generation needs). Prints milliseconds per step and tokens per
second per N: the ceiling of what decoding N requests together can gain, before prompt reading and
sampling. ``--unified`` puts all sequences in one KV buffer, ``--flash`` turns flash attention on.
"""

from __future__ import annotations

import argparse
import time

import llama_cpp

from unolearn.backends.llamacpp import LlamaCppChatModel


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--max", type=int, default=16, help="The most sequences per step (16).")
    ap.add_argument("--unified", action="store_true")
    ap.add_argument("--flash", action="store_true")
    ap.add_argument("--steps", type=int, default=10)
    args = ap.parse_args()
    llm = LlamaCppChatModel()._llm
    params = llm.context_params
    params.n_ctx, params.n_seq_max, params.n_batch, params.n_ubatch = 4096 * args.max, args.max, 512, 512
    params.kv_unified, params.flash_attn_type = args.unified, int(args.flash)
    ctx = llama_cpp.llama_init_from_model(llm.model, params)
    batch = llama_cpp.llama_batch_init(512, 0, 1)
    pos = [0] * args.max

    def decode(seqs: list[int], tokens_each: int) -> None:
        batch.n_tokens = 0
        for s in seqs:
            for _ in range(tokens_each):
                i = batch.n_tokens
                batch.token[i], batch.pos[i], batch.n_seq_id[i], batch.logits[i] = 100 + i, pos[s], 1, True
                batch.seq_id[i][0] = s
                batch.n_tokens += 1
                pos[s] += 1
        if llama_cpp.llama_decode(ctx, batch) != 0:
            raise SystemExit("llama_decode failed")

    for s in range(args.max):
        decode([s], 200)
    for n in (x for x in (1, 2, 4, 8, 16, 32) if x <= args.max):
        start = time.perf_counter()
        for _ in range(args.steps):
            decode(list(range(n)), 1)
        step = (time.perf_counter() - start) / args.steps
        print(f"{n:>2} sequences: {step * 1000:6.1f} ms/step, {n / step:6.1f} tokens/s", flush=True)


if __name__ == "__main__":
    main()
