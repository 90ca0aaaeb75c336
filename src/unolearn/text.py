"""Words of a text, for the overlap measures (BLEU, drift, copies of the query): one tokenizer for
both languages."""

from __future__ import annotations

import re
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
