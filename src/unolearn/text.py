"""Words of a text, for the overlap measures (BLEU, drift, copies of the query): one tokenizer for
both languages."""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence


def tokens(text: str, lang: str) -> list[str]:
    """Words for BLEU: jieba segments Chinese; otherwise lower-cased words and punctuation."""
    if lang == "zh":
        import jieba

        jieba.setLogLevel(60)
        return [t for t in jieba.lcut(text) if t.strip()]
    return re.findall(r"\w+|[^\w\s]", text.lower())


#: Function words left out of content tokens: shared by texts on any subject.
STOP_WORDS = frozenset(
    "a an the and or but if of to in on at by for with from as is are was were be been being it its this that "
    "these those i you he she we they me my your our their not no do does did so than then there here can "
    "will would should could may might must have has had just also very about into over such what which who "
    "how when where why all any some each more most other 的 了 是 在 我 你 他 她 它 们 和 与 及 或 也 就 都 "
    "而 吧 呢 吗 啊 这 那 之 其 把 被 对 从 向 以 于 为 所 上 下 中".split())


def content_tokens(text: str, lang: str) -> list[str]:
    """:func:`tokens` without punctuation and :data:`STOP_WORDS`."""
    return [t for t in tokens(text, lang) if re.search(r"\w", t) and t not in STOP_WORDS]


def clip(text: str, limit: int) -> str:
    """``text`` cut to about ``limit`` characters: its first two thirds and last third around " … "."""
    if len(text) <= limit:
        return text
    head = limit * 2 // 3
    return f"{text[:head].rstrip()} … {text[len(text) - (limit - head):].lstrip()}"


def numbered(items: Sequence[str]) -> str:
    """Items as a numbered list, one per line."""
    return "\n".join(f"{i}. {x}" for i, x in enumerate(items, 1))


def ngram_bleu(cand: list[str], refs: list[list[str]], max_n: int = 4, brevity: bool = True) -> float:
    """The geometric mean of 1..``max_n``-gram precisions of ``cand`` (counts clipped by the most any
    reference has; add-one smoothed above unigrams), × the brevity penalty against the closest reference
    length when ``brevity``."""
    refs = [r for r in refs if r]
    if not cand or not refs:
        return 0.0
    max_n = min(max_n, len(cand), max(len(r) for r in refs))  # short texts: only the n-grams they can have
    log_p = 0.0
    for n in range(1, max_n + 1):
        c = Counter(tuple(cand[i:i + n]) for i in range(len(cand) - n + 1))
        r: Counter = Counter()
        for ref in refs:
            r |= Counter(tuple(ref[i:i + n]) for i in range(len(ref) - n + 1))
        match, total = sum(min(k, r[g]) for g, k in c.items()), max(1, sum(c.values()))
        if n > 1:
            match, total = match + 1, total + 1
        if match == 0:
            return 0.0
        log_p += math.log(match / total) / max_n
    closest = min((len(x) for x in refs), key=lambda n: (abs(n - len(cand)), n))
    penalty = min(0.0, 1.0 - closest / len(cand)) if brevity else 0.0
    return math.exp(log_p + penalty)


def drift(answer: str, base_answer: str, query: str, lang: str) -> float:
    """How much ``answer`` stays on the subject: BLEU-4 of its content words against the base answer
    and the query, without the brevity penalty.

    The guard exists to catch an adapter that drifted off the query (another subject, a refusal,
    degenerate repetition). Plain sentence BLEU also punishes an answer for being short (its brevity
    penalty alone is ~0.007 for a 20-word answer to a 120-word base answer), which is what "be concise"
    feedback asks for, and it counts shared function words and punctuation as overlap; the length
    guard (``min_length_ratio``) covers collapsed answers.
    """
    refs = [content_tokens(base_answer, lang), content_tokens(query, lang)]
    return ngram_bleu(content_tokens(answer, lang), refs, brevity=False)


def replacement_measures(answer: str, reference: str, query: str, lang: str) -> tuple[float, float]:
    """(:func:`drift`, length ratio) of ``answer`` as a replacement for ``reference`` (the answer it would
    replace), the two measures :func:`guard_failure` reads."""
    return drift(answer, reference, query, lang), len(answer) / max(1, len(reference))


def guard_failure(drift_score: float, length_ratio: float, *, bleu_min: float, min_length_ratio: float) -> str | None:
    """Why an answer with these :func:`replacement_measures` is a degenerate replacement: ``"collapsed"``
    when its length ratio is under ``min_length_ratio``, ``"drifted"`` when its drift is ≤ ``bleu_min``;
    None when neither. Select counts such an answer as a loss; distil never makes it a pair's chosen."""
    if length_ratio < min_length_ratio:
        return "collapsed"
    if drift_score <= bleu_min:
        return "drifted"
    return None
