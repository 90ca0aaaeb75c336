"""Peak memory and time of TRL's chunked log-probabilities (DPO's fused LM head) on a CPU, per vocabulary tile.

One forward and backward over ``--tokens`` positions of a head shaped like Qwen2.5-0.5B's (151,936 × 896, bf16,
random weights: only the shapes matter), one child process per tile width so that each peak is its own. Prints
JSON: per tile, the peak resident memory added by the call (MB) and its seconds.

    python scripts/measure_vocab_tile.py --tokens 2560 --tiles 32768,16384,8192,4096
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

VOCAB, HIDDEN = 151_936, 896


def one(tile: int, tokens: int) -> dict[str, float]:
    """The added peak (MB) and seconds of one forward + backward at ``tile`` columns."""
    import torch
    from trl.kernels import ChunkedLogProbFunction

    from unolearn.train import limit_heap_growth

    limit_heap_growth()
    torch.manual_seed(0)
    weight = torch.empty(VOCAB, HIDDEN, dtype=torch.bfloat16).normal_(0, 0.02)
    hidden = torch.randn(tokens, HIDDEN, dtype=torch.bfloat16).requires_grad_()
    targets = torch.randint(0, VOCAB, (tokens,))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    out = ChunkedLogProbFunction.apply(hidden, weight, None, targets, 1.0, tile, None, 1.0,
                                       ("log_probs", "entropy", "mean_logits", "is_top1"))
    out[0].sum().backward()
    return {"tile": tile, "added_peak_mb": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024,
            "seconds": round(time.perf_counter() - start, 2)}


def main() -> None:
    """Each tile in a child process, one after the other."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=2560, help="positions scored (chosen + rejected rows)")
    ap.add_argument("--tiles", default="32768,16384,8192,4096", help="comma-separated tile widths")
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(one(args.one, args.tokens)))
        return
    rows = [json.loads(subprocess.run([sys.executable, __file__, "--one", t, "--tokens", str(args.tokens)],
                                      check=True, capture_output=True, text=True).stdout.splitlines()[-1])
            for t in args.tiles.split(",")]
    print(json.dumps({"tokens": args.tokens, "vocab": VOCAB, "hidden": HIDDEN, "tiles": rows}, indent=2))


if __name__ == "__main__":
    main()
