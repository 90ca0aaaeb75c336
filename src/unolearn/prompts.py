"""The serving paths' prompts: the critic's input and the guide before the question.

Why a module of its own: training writes critics on the same input that serving gives them, and the rulebook
stage builds the guide text that serving places; both sides import these from here, so serving imports no
training or rulebook code.
"""

from __future__ import annotations

from typing import Any

from .text import clip

CRITIC_PROMPT = {
    "en": ("Provide suggestions to make the answer better. Read the question and the answer, then write "
           "numbered, concrete rules that a revised answer should follow to satisfy this user.\n\n"
           "## Question\n{query}\n\n## Answer\n{answer}"),
    "zh": ("请提出让回答变得更好的建议。阅读问题和回答，"
           "然后写出带编号的具体规则，说明修改后的回答应当怎样满足这位用户。"
           "\n\n## 问题\n{query}\n\n## 回答\n{answer}"),
}


#: Characters of the question and of the answer that the critic sees (both in training and at answer
#: time), so that a critic example fits in 512 tokens with its rules: LexEval cases run
#: to 650 Chinese characters (median) and a 256-token answer to about 1,000 English ones.
CRITIC_CLIP = {"en": 700, "zh": 250}


def critic_prompt(query: str, answer: str, lang: str) -> list[dict[str, str]]:
    """The critic's input: the question and the first answer, each clipped to :data:`CRITIC_CLIP` characters."""
    limit = CRITIC_CLIP[lang]
    content = CRITIC_PROMPT[lang].format(query=clip(query, limit), answer=clip(answer, limit))
    return [{"role": "user", "content": content}]


GUIDE_HEADER = {
    "en": "Users who asked similar questions wanted answers to follow these rules:\n{rules}\n\n## Question\n",
    "zh": "提出类似问题的用户希望回答遵守以下规则：\n{rules}\n\n## 问题\n",
}


def guide_messages(messages: list[dict[str, Any]], guide: str) -> list[dict[str, Any]]:
    """``messages`` with the guide placed before the content of the last user turn, as ``rules`` places its
    rules (the 0.5B model follows rules there better than in a system message; docs/guide/rulebooks.md);
    as the system message when no user turn holds text."""
    for i in range(len(messages) - 1, -1, -1):
        m = messages[i]
        if m.get("role") != "user":
            continue
        if isinstance(m.get("content"), str):
            sep = "" if guide.endswith("\n") else "\n\n"  # a guide stored before the question header existed
            return [*messages[:i], {**m, "content": guide + sep + m["content"]}, *messages[i + 1:]]
        if isinstance(m.get("content"), list):
            parts = [{"type": "text", "text": guide}, *m["content"]]
            return [*messages[:i], {**m, "content": parts}, *messages[i + 1:]]
        break
    return [{"role": "system", "content": guide.rsplit("\n\n", 1)[0]}, *messages]
