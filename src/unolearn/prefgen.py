"""Random preference files: hidden preferences nobody tuned for.

Why: decisions taken while looking at two hand-written preference files did not carry over to a third one
(27 points behind the rules memory). A change is judged on files drawn at random instead — ``random:SEED``
wherever a preference file is named (``unolearn simulate``, ``bench quality``, ``bench online``) — with seeds
that were not looked at while the change was made.

A file draws, for each dataset, two or three constraints from different *families* (length, opening,
closing, structure, content), each with its parameters and a complaint in English and in Chinese (the
simulator complains in the prompt's language). Families that could contradict each other are never drawn
together (a sentence limit with a list or headings), so every drawn set can be met by one answer. The noise
of the packaged default file is kept, so that only the preferences change. The same seed gives the same
file on every machine.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence
from typing import Any

from .errors import ConfigError

#: The datasets of the packaged MemoryBench prompts.
DATASETS = ("NFCats", "LexEval-QA", "HelloBench-Academic&Knowledge-QA")
#: The noise of the packaged default preference file.
NOISE = {"off_topic": 0.1, "thanks": 0.1, "unrelated_complaint": 0.05, "implicit_only": 0.1}
PREFIX = "random:"

Constraint = dict[str, Any]
Template = Callable[[random.Random, str], Constraint]
#: The language of a dataset's prompts (others: English): fixed openings and sign-offs are written in it.
LANGS = {"LexEval-QA": "zh"}


def _constraint(cid: str, check: dict[str, Any], en: Sequence[str], zh: Sequence[str]) -> Constraint:
    return {"id": cid, "check": check, "feedback": [*en, *zh]}


def _max_words(rng: random.Random, lang: str) -> Constraint:
    n = rng.choice((60, 80, 100, 120, 150, 200, 250, 300))
    return _constraint(f"max-words-{n}", {"max_words": n},
                       [f"Too long. Keep the whole answer under {n} words.", f"Cut it down to {n} words at most."],
                       [f"太长了，全文控制在{n}字以内。", f"请精简一点，最多{n}个字。"])


def _min_words(rng: random.Random, lang: str) -> Constraint:
    n = rng.choice((150, 200, 300))
    return _constraint(f"min-words-{n}", {"min_words": n},
                       [f"That's too thin. Give me a fuller answer, at least {n} words.",
                        f"Please go into more depth: {n} words or more."],
                       [f"太简略了，请写得充实一些，至少{n}字。", f"请展开讲讲，不少于{n}字。"])


def _max_sentences(rng: random.Random, lang: str) -> Constraint:
    n = rng.choice((2, 3, 4, 5))
    return _constraint(f"max-sentences-{n}", {"max_sentences": n},
                       [f"Just {n} sentences at most, please.", f"Keep it to {n} sentences or fewer."],
                       [f"最多{n}句话就够了。", f"请控制在{n}句话以内。"])


_OPENINGS = {"en": (("In short:", "in-short"), ("Short answer:", "short-answer"), ("TL;DR:", "tldr"),
                     ("Answer:", "answer")),
             "zh": (("结论：", "jielun"), ("答：", "da"), ("简要回答：", "jianyao"))}
_SIGNOFFS = {"en": (("Hope this helps!", "hope-this-helps"), ("Good luck!", "good-luck"),
                     ("Any other questions?", "any-questions")),
             "zh": (("以上仅供参考。", "jin-gong-can-kao"), ("希望对你有帮助！", "xi-wang-you-bang-zhu"))}


def _fixed_text(rng: random.Random, lang: str, check: str, choices: dict[str, tuple[tuple[str, str], ...]],
                complaints: tuple[str, ...]) -> Constraint:
    """A fixed opening or sign-off in ``lang``; ``complaints`` (two English, two Chinese) say ``{text}``."""
    text, slug = rng.choice(choices[lang])
    said = [c.format(text=text) for c in complaints]
    return _constraint(f"{check.replace('_', '-')}-{slug}", {check: text}, said[:2], said[2:])


def _starts_with(rng: random.Random, lang: str) -> Constraint:
    return _fixed_text(rng, lang, "starts_with", _OPENINGS, (
        "Start your answer with '{text}' so I can find the answer at once.",
        'Begin with "{text}" and then the answer itself.',
        "回答请以“{text}”开头，方便我一眼看到答案。", "请用“{text}”开头，然后直接给出答案。"))


def _ends_with(rng: random.Random, lang: str) -> Constraint:
    return _fixed_text(rng, lang, "ends_with", _SIGNOFFS, (
        "Always sign off with '{text}' at the very end.", 'Finish with "{text}" as the last words.',
        "结尾请固定写上“{text}”。", "最后一句请用“{text}”结束。"))


def _no_preamble(rng: random.Random, lang: str) -> Constraint:
    pattern = r"(?i)\A\W*(?:(?:sure|certainly|of course|great question|good question|absolutely|hello|hi)\b|当然|好的)"
    return _constraint("no-preamble", {"not_contains": pattern},
                       ["Skip the 'Sure!' or 'Great question' opener and answer right away.",
                        "No pleasantries at the start, please; get to the point."],
                       ["不要用“当然”“好的”之类的开场白，直接回答。", "开头别寒暄，直接说重点。"])


def _summary_line(rng: random.Random, lang: str) -> Constraint:
    return _constraint("summary-line", {"contains": r"(?m)^[ \t]*(?:\*\*)?(?:Summary|总结)(?:\*\*)?[:：]"},
                       ["Add a line starting with 'Summary:' that sums it up.",
                        "Give me a one-line 'Summary:' so I don't have to read everything."],
                       ["请加一行以“总结：”开头的总结。", "最后用“总结：”一句话概括一下。"])


def _bullets(rng: random.Random, lang: str) -> Constraint:
    lo, hi = rng.choice(((2, 4), (3, 5), (3, 6), (2, 5)))
    return _constraint(f"bullets-{lo}-{hi}", {"bullet_list": {"min": lo, "max": hi}},
                       [f"Put the main points in a bullet list of {lo} to {hi} items.",
                        f"I want {lo}-{hi} bullet points, not a block of prose."],
                       [f"请把要点列成{lo}到{hi}条无序列表（用“- ”开头）。",
                        f"用{lo}-{hi}个“- ”要点列出来，别写成大段文字。"])


def _numbered(rng: random.Random, lang: str) -> Constraint:
    return _constraint("numbered-list", {"numbered_list": True},
                       ["Answer step by step as a numbered list.", "Number your points: 1., 2., 3."],
                       ["请分点作答，用1. 2. 3.编号。", "请用编号列表一条一条写。"])


def _heading(rng: random.Random, lang: str) -> Constraint:
    return _constraint("heading", {"heading": True},
                       ["Give the answer a markdown heading (a line starting with #).",
                        "Structure it under a markdown heading, please."],
                       ["请加一个 markdown 标题（以 # 开头的一行）。", "请用 markdown 标题把内容组织起来。"])


def _paragraphs(rng: random.Random, lang: str) -> Constraint:
    lo, hi = rng.choice(((2, 3), (2, 4), (3, 5)))
    return _constraint(f"paragraphs-{lo}-{hi}", {"paragraphs": {"min": lo, "max": hi}},
                       [f"Split it into {lo} to {hi} paragraphs separated by blank lines.",
                        f"Use {lo}-{hi} short paragraphs, not one block."],
                       [f"请分成{lo}到{hi}段，段与段之间空一行。", f"请写成{lo}-{hi}个段落，不要挤成一段。"])


def _example(rng: random.Random, lang: str) -> Constraint:
    return _constraint("example", {"contains": r"(?i)\b(for example|for instance|e\.g\.)|例如|比如"},
                       ["Give me a concrete example ('for example, ...').", "Include at least one example, please."],
                       ["请举一个具体的例子（例如……）。", "至少给一个例子吧。"])


def _bold_terms(rng: random.Random, lang: str) -> Constraint:
    return _constraint("bold-terms", {"contains": r"\*\*[^*\n]+\*\*"},
                       ["Put the key terms in **bold** so I can skim.", "Highlight the important words in bold."],
                       ["请把关键词用**加粗**标出来。", "重点词语请加粗显示。"])


def _note_line(rng: random.Random, lang: str) -> Constraint:
    return _constraint("note-line", {"contains": r"(?m)^[ \t]*(?:\*\*)?(?:Note|注意)(?:\*\*)?[:：]"},
                       ["Add a line starting with 'Note:' for the caveat I should know.",
                        "Flag the main caveat on its own 'Note:' line."],
                       ["请单独加一行“注意：”写出需要注意的地方。", "有什么需要注意的，请用“注意：”单独列一行。"])


def _statute(rng: random.Random, lang: str) -> Constraint:
    pattern = "《[^》]{0,30}法[^》]{0,15}》第[一二三四五六七八九十百千零〇0-9]+条"
    return _constraint("cite-statute", {"quote_source": pattern},
                       ["Cite the exact statute and article, as 《…法》第…条.",
                        "Which law says so? Quote the article in the form 《…法》第…条."],
                       ["请引用具体法条，写成《…法》第…条。", "依据是哪条法律？请按《…法》第…条的格式引用。"])


#: Families of templates: at most one constraint per family in a dataset's set.
FAMILIES: dict[str, tuple[Template, ...]] = {
    "length": (_max_words, _min_words, _max_sentences),
    "opening": (_starts_with, _no_preamble),
    "closing": (_ends_with, _summary_line),
    "structure": (_bullets, _numbered, _heading, _paragraphs),
    "content": (_example, _bold_terms, _note_line),
}
#: Templates only for datasets of one kind (legal questions in Chinese).
LEGAL = (_statute,)


def random_preferences(seed: int, datasets: Sequence[str] = DATASETS) -> dict[str, Any]:
    """A preference file (as its YAML would decode) drawn at random for ``seed``: two or three constraints per
    dataset from different families, with complaints in English and Chinese."""
    rng = random.Random(f"unolearn-preferences:{seed}")
    return {"noise": dict(NOISE), "datasets": {name: {"constraints": _draw(rng, name)} for name in datasets}}


#: Templates that cannot be met together: a few sentences cannot carry a list, headings or paragraphs.
CLASHES = {frozenset({_max_sentences, t}) for t in FAMILIES["structure"]}


def _draw(rng: random.Random, dataset: str) -> list[Constraint]:
    """Two or three compatible constraints from different families for one dataset."""
    lang, want = LANGS.get(dataset, "en"), rng.choice((2, 3))
    drawn: list[Template] = []
    for family in rng.sample(sorted(FAMILIES), len(FAMILIES)):
        extra = LEGAL if family == "content" and dataset.startswith("LexEval") else ()
        fits = [t for t in FAMILIES[family] + extra if not any(frozenset({t, d}) in CLASHES for d in drawn)]
        if fits:
            drawn.append(rng.choice(fits))
        if len(drawn) == want:
            break
    return [template(rng, lang) for template in drawn]


def is_random(spec: object) -> bool:
    """True when ``spec`` names a random preference file (``random:SEED``)."""
    return isinstance(spec, str) and spec.startswith(PREFIX)


def parse_seed(spec: str) -> int:
    """The seed of ``random:SEED``; a ConfigError for anything else."""
    value = spec[len(PREFIX):]
    if not re.fullmatch(r"-?\d{1,18}", value):
        raise ConfigError(f"preferences {spec!r}: expected random:SEED with a whole number SEED, e.g. random:1001")
    return int(value)
