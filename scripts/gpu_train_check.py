"""The training path on the machine's accelerator (issue 36, part 3): one short run that prints JSON.

    python scripts/gpu_train_check.py [--pairs 24] [--out result.json]

It builds the tiny model (nothing is downloaded; the embedder is the packaged one), seeds one cluster of
``--pairs`` logs with a rule and a preference pair each, and runs the real train stage with the ``gpu`` profile
(TRL DPO + SFT for the expert, SFT for the critic; bf16 where the GPU supports it), then reports per module the
seconds, optimizer steps, steps/s and losses, and the peak CUDA memory. On a machine without CUDA it runs the
same path with the ``cpu`` profile, so the script itself is tested before a device session spends its minutes.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import torch

from unolearn.backends import make_embedder
from unolearn.bench.tiny_model import build_tiny_model
from unolearn.bench.train import seed_cluster
from unolearn.config import load_backends
from unolearn.store import Workspace
from unolearn.train import TrainConfig
from unolearn.train import run as train


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pairs", type=int, default=24)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    cuda = torch.cuda.is_available()
    out: dict = {"torch": torch.__version__, "python": platform.python_version(), "cuda": cuda,
                 "device": torch.cuda.get_device_name(0) if cuda else platform.processor() or "cpu"}
    with tempfile.TemporaryDirectory(prefix="unolearn-gpu-check-") as tmp:
        tiny = build_tiny_model(Path(tmp) / "tiny-model")
        cfg = TrainConfig(base_model=str(tiny), profile="gpu" if cuda else "cpu", epochs=4, critic_epochs=4,
                          min_pairs=2, min_steps_per_epoch=None, max_length=512).resolved()
        out["config"] = {k: getattr(cfg, k) for k in ("profile", "bf16", "lora_r", "grad_accum", "max_length")}
        with Workspace.open(Path(tmp) / "ws") as ws:
            seed_cluster(ws, make_embedder(load_backends(None).embedder), args.pairs, answer_words=60)
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            start = time.perf_counter()
            modules = train(ws, cfg)
            out["total_s"] = round(time.perf_counter() - start, 2)
        for m in modules:
            steps = m.metrics.get("steps") or 0
            out[m.kind] = {"seconds": round(m.seconds, 2), "steps": steps,
                           "steps_per_s": round(steps / m.seconds, 2) if m.seconds else None,
                           "n_train": m.n_train, "train_loss": m.metrics.get("train_loss")}
        if cuda:
            out["peak_cuda_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    text = json.dumps(out, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
