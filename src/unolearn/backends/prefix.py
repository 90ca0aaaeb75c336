"""How the embedded backend reuses a cached prompt prefix: in whole blocks of a fixed size.

Shared by the one-at-a-time path (:mod:`.llamacpp`) and the batch decoder (:mod:`.llamacpp_batch`).
"""

from __future__ import annotations

from typing import Any

#: Prompts are evaluated in blocks of this many tokens counted from position 0, and a cached prefix is
#: reused only in whole blocks of the previous prompt (:class:`.llamacpp.AlignedEvals`). llama.cpp's kernels
#: depend on the batch they compute, so a prompt evaluated from another offset gets slightly different
#: logits, which can flip a near-tie greedy token (measured on an AVX2 CPU: 1 answer in 4 changed;
#: on AVX-512 none). Aligned reuse evaluates every prompt token in the same batch as a fresh model.
PROMPT_BLOCK = 128


def shared_prefix(a: Any, b: list[int]) -> int:
    """How many leading tokens the sequences ``a`` and ``b`` have in common."""
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n
