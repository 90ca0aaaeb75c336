"""The second noise filter of the distil stage: strings a small model writes where a rule belongs.

Measured on the embedded 0.5B model (issue "UNO must make answers better"): prior rules that are
questions or restate the query, feedback "rules" that are a follow-up question, a "thank you", a
copy of the first answer, a refusal ("I'm sorry, but I can't assist with that request."), one
phrase repeated until the token limit, only the phrase the user quoted ("In short:" for "Start
with 'In short:'"), or the case's answer rewritten with its parties' names. Each would become a
preference pair, a cluster member, a critic target and a line of the `rules` baseline's memory.
:func:`reject_reason` names what is wrong with one rule (None when it is a rule); :func:`filter_rules` keeps
the rules and counts the others; :func:`echo_rules` takes rules from the user's own sentences when the model's
were rejected, and :func:`lost_sentences` those whose literal requirement (a quoted phrase, a number) the
model's rules dropped; :func:`feedback_rules` decides one log's rules with them.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal, NamedTuple

from .text import tokens

if TYPE_CHECKING:
    from .records import Log

REFUSAL = re.compile(r"(?i)\b(i'?m sorry|i am sorry|i apologi[sz]e|i can ?not|i can'?t|i am unable|i'?m unable|"
                     r"as an ai)\b|抱歉|对不起|无法(回答|提供|协助|帮助)|作为(一个)?\s*(ai|人工智能)")
ACKNOWLEDGEMENTS = frozenset(
    "thanks thank thx you great perfect awesome nice ok okay got it cool cheers that helps helped helpful "
    "so much a lot again very good 谢谢 多谢 感谢 好的 好 的 明白了 明白 了 收到 你 不错 非常".split())
QUOTE_MARKS = "'\"‘’“”「」『』"
#: A quoted phrase: an apostrophe inside a word ("don't", "user's") opens or closes none.
QUOTED = re.compile(f"(?<![A-Za-z0-9])['\"‘“「『]([^{QUOTE_MARKS}]{{1,60}})['\"’”」』](?![A-Za-z0-9])")
#: Where a sentence ends: ASCII punctuation before a space ("TL;DR", "3.5" and "e.g.," stay whole; so does a list's
#: numbering written inline, "用1. 2. 3.编号", held-out seed 1017), CJK punctuation before anything but more punctuation
#: or a closing quote or bracket, and a line break.
SENTENCE_END = re.compile(r"(?<=[.!?;])(?<![0-9]\.)\s+|(?<=[0-9]\.)\s+(?![0-9]+\.)"
                          r"|(?<=[。！？；])(?![.!?;。！？；)）\]'\"’”」』])\s*|\n+")
#: Where a log's feedback rules came from (:func:`feedback_rules`).
RuleSource = Literal["model", "echo", "recall"]
COPY_RUN = 6  # tokens in a row shared with the query or the answer make a copy ...
COPY_SHARE = 0.6  # ... when they are at least this share of the rule's tokens
CASE_RUN = 6  # tokens in a row from the query or the answer that the feedback does not say: the user's case


#: A number a rule names (the phrases it quotes: :data:`QUOTED`).
NUMBER = re.compile(r"[0-9０-９]+(?:[.,][0-9]+)?")
_FULLWIDTH = str.maketrans("０１２３４５６７８９", "0123456789")


#: What may close a quoted phrase without changing it (after NFKC, which makes full-width marks ASCII).
_CLOSING = ".。!?:;,、 \t"


def phrase(quoted: str) -> str:
    """A quoted phrase as :func:`markers` compares it: NFKC, case-folded, without the punctuation that closes it
    (the whole phrase where it is nothing else, such as "- ")."""
    text = unicodedata.normalize("NFKC", quoted).strip().casefold()
    return text.rstrip(_CLOSING).strip() or text


def markers(rule: str) -> frozenset[str]:
    """What a check of the rule would look for literally: the phrases it quotes (:func:`phrase`: case, width and
    closing punctuation aside) and the numbers it names.

    Why merging needs them to agree: short rules embed close together whatever they ask. Under the
    multilingual embedder "请用“结论：”开头" (open with 结论：) and "请加一行以“总结：”开头的总结"
    (a 总结： line) have cosine 0.93, "最多3句话" and "最多4句话" 0.98: merged, one user's preference
    vanished into another's entry and lent it support it did not have (held-out seed 1005, whose guide lost
    the 结论： opening). Closing punctuation is no difference: the 0.5B model distils one sign-off as
    ‘以上仅供参考.’ and as “以上仅供参考。” (held-out seed 1010, cosine 0.96-0.99), and two users' entries stayed
    apart, each unsupported. The distil stage uses them too (:func:`lost_sentences`).
    """
    quoted = {phrase(m) for m in QUOTED.findall(rule)}
    return frozenset(quoted | {n.translate(_FULLWIDTH) for n in NUMBER.findall(rule)})


def _words(text: str, lang: str) -> list[str]:
    return [t for t in tokens(text, lang) if re.search(r"\w", t)]


def longest_shared_run(a: Sequence[str], b: Sequence[str]) -> int:
    """The length of the longest run of tokens that ``a`` and ``b`` share (dynamic programming)."""
    best, prev = 0, [0] * (len(b) + 1)
    for x in a:
        cur = [0] * (len(b) + 1)
        for j, y in enumerate(b, 1):
            if x == y:
                cur[j] = prev[j - 1] + 1
                best = max(best, cur[j])
        prev = cur
    return best


def repetitive(words: Sequence[str]) -> bool:
    """One word is most of the text, or a three-word phrase comes back three times or more."""
    if len(words) < 6:
        return False
    if Counter(words).most_common(1)[0][1] > 0.5 * len(words):
        return True
    grams = Counter(tuple(words[i:i + 3]) for i in range(len(words) - 2))
    return grams.most_common(1)[0][1] >= 3


def _bare(text: str) -> str:
    """``text`` without spaces, quote marks and punctuation, lower-cased: for comparing phrases."""
    return re.sub(r"[\W_]+", "", text).lower()


def quoted(feedback: str) -> set[str]:
    """The phrases the user put in quotes (bare, see :func:`_bare`), e.g. a phrase to start or end with."""
    return {_bare(m) for m in QUOTED.findall(feedback)} - {""}


class _Conversation(NamedTuple):
    """What a rule is judged against, tokenised once for all the rules of a log."""

    sources: tuple[list[str], list[str]]  # the query's and the first answer's words
    quoted: set[str]  # the phrases the feedback quotes
    case: set[tuple[str, ...]] | None  # the case's runs (:func:`case_runs`); None without feedback


def _conversation(lang: str, query: str, answer: str | None, feedback: str | None) -> _Conversation:
    sources = (_words(query, lang), _words(answer or "", lang))
    case = None if feedback is None else case_runs(sources, _words(feedback, lang))
    return _Conversation(sources, quoted(feedback) if feedback else set(), case)


def reject_reason(rule: str, lang: str, query: str, answer: str | None = None,
                  feedback: str | None = None) -> str | None:
    """Why ``rule`` is not a rule — ``question``, ``refusal``, ``thanks``, ``repetition``, ``copy`` (of the
    query or of the first ``answer``), ``quote`` (only a phrase the user quoted in ``feedback``, without
    what to do with it), ``case`` (it retells the user's case: :func:`retells_case`, only with ``feedback``)
    — or None when it is one."""
    return _reason(rule, lang, _conversation(lang, query, answer, feedback))


def _reason(rule: str, lang: str, conv: _Conversation) -> str | None:
    text = rule.strip()
    if text.endswith(("?", "？")):
        return "question"
    if REFUSAL.search(text):
        return "refusal"
    words = _words(text, lang)
    if words and all(w in ACKNOWLEDGEMENTS for w in words):  # thanks, in one word or several
        return "thanks"
    if _bare(text) in conv.quoted:
        return "quote"
    if repetitive(words):
        return "repetition"
    for source in conv.sources:
        run = longest_shared_run(words, source)
        if run >= COPY_RUN and run >= COPY_SHARE * len(words):
            return "copy"
    if conv.case is not None and retells_case(words, conv.case):
        return "case"
    return None


def _grams(words: Sequence[str], n: int) -> set[tuple[str, ...]]:
    return {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}


def case_runs(sources: Sequence[Sequence[str]], said: Sequence[str]) -> set[tuple[str, ...]]:
    """The runs of :data:`CASE_RUN` words of the ``sources`` (the query's and the first answer's words) that the
    feedback's words (``said``) do not hold."""
    return set().union(*(_grams(source, CASE_RUN) for source in sources)) - _grams(said, CASE_RUN)


def retells_case(words: Sequence[str], case: set[tuple[str, ...]]) -> bool:
    """A run of :data:`CASE_RUN` of the rule's ``words`` is one of the ``case``'s runs (:func:`case_runs`: from
    the query or the first answer, not from the feedback): the rule retells this conversation (its parties, its
    statute, its conclusion) where it should say how to answer.

    Why: the embedded model answered a complaint about form ("open with 根据, close with 以上意见仅供参考。")
    with the case's answer rewritten, the parties named ("根据《…》的规定，刘三、黄十一关于增资认缴的主张不能获得
    支持。以上意见仅供参考。"); the `rules` memory put it into other users' prompts and the model repeated it
    to 23 of 50 of them as their answer (preferences-alt.yaml, all 143 test prompts; docs/benchmarks.md). A run
    the feedback itself says (a phrase of the answer the user quoted) is the user's rule, not the case."""
    return not case.isdisjoint(_grams(words, CASE_RUN))


def filter_rules(rules: Sequence[str], lang: str, query: str, answer: str | None = None,
                 feedback: str | None = None) -> tuple[list[str], Counter]:
    """The rules that are rules, and a count of the others by :func:`reject_reason`."""
    kept: list[str] = []
    rejected: Counter[str] = Counter()
    conv = _conversation(lang, query, answer, feedback)
    for rule in rules:
        reason = _reason(rule, lang, conv)
        if reason:
            rejected[reason] += 1
        else:
            kept.append(rule)
    return kept, rejected


def sentences(rule: str, lang: str) -> list[str]:
    """The rule's sentences (:data:`SENTENCE_END`), each once and in order, when every one has two words or more;
    else the rule itself. A small model writes one user's several complaints as one rule ("举一个例子。结尾写上“以上
    仅供参考。”。用3-6个要点。"): as one text, no two users' rules are alike, and none gains support."""
    parts = list(dict.fromkeys(p.strip() for p in SENTENCE_END.split(rule) if p.strip()))
    if len(parts) < 2 or any(len(_words(p, lang)) < 2 for p in parts):
        return [rule]
    return parts


def without_sentences(rule: str, gone: set[str], lang: str) -> str:
    """``rule`` without its sentences in ``gone`` ("" when nothing of it is left)."""
    if rule in gone:
        return ""
    parts = sentences(rule, lang)
    if not gone.intersection(parts):
        return rule
    kept = [p for p in parts if p not in gone]
    return ("" if lang == "zh" else " ").join(kept)


def echo_rules(feedback: Sequence[str], lang: str, query: str, answer: str | None = None) -> list[str]:
    """The user's own sentences that pass as rules (two words or more; no question, thanks, copy, ...), in
    order, once each.

    The distil stage falls back on them when the model wrote rules the filter rejected: measured on the
    embedded 0.5B model, a complaint such as "Start with 'In short:' and the answer in one line" came back
    as the bare phrase, the answer itself or a copy of it, while the user's sentence says exactly what
    to change (docs/embedded-model.md).
    """
    out: list[str] = []
    conv = _conversation(lang, query, answer, None)
    for turn in feedback:
        for sentence in SENTENCE_END.split(turn):
            sentence = sentence.strip()
            if (len(_words(sentence, lang)) >= 2 and sentence not in out
                    and _reason(sentence, lang, conv) is None):
                out.append(sentence)
    return out


def lost_sentences(feedback: Sequence[str], rules: Sequence[str], lang: str, query: str,
                   answer: str | None = None) -> list[str]:
    """The user's own sentences (as :func:`echo_rules` takes them) that name a marker (:func:`markers`: a quoted
    phrase, a number) which none of ``rules`` names: what the rules dropped of the complaint.

    Why: the 0.5B model keeps about two thirds of them. On six held-out preference files, 153 of 237 markers
    that users named reached the rules of their log (41% and 53% on the two files where the guide trailed the rules
    memory most): "Give me a one-line 'Summary:' ... bold. Just 5 sentences at most, please." came back as
    "Summarize the key points in bold." (docs/benchmarks.md, "Distillation drops what users quote").
    """
    kept = frozenset().union(*(markers(r) for r in rules))
    return [s for s in echo_rules(feedback, lang, query, answer) if markers(s) - kept]


def feedback_rules(raw: list[str], log: Log, unreadable: bool = False) -> tuple[list[str], Counter, RuleSource]:
    """The model's ``raw`` feedback rules that pass the filter — or, when it rejected any of them or its answer
    was ``unreadable`` (not valid JSON: cut by the token budget, or broken), the
    user's own sentences (:func:`echo_rules`) where they give a rule; the rejected
    ones by reason; and where the rules came from: ``model``, ``echo`` (the user's sentences instead), or
    ``recall`` (the model's, then the user's sentences naming a quoted phrase or a number they dropped,
    :func:`lost_sentences`; only where the model wrote a rule: no rule is its verdict that the
    feedback asks for no change).

    Why all of them: a small model that copied the answer or wrote only the quoted phrase has not
    understood the complaint, and its other rules are rarely better (docs/embedded-model.md). Why unreadable
    answers too: asked again, the model writes the same (the request is seeded and cached), and the log stayed
    without rules — 8 complaints, every one naming quoted phrases and numbers, of the 18–21 logs with words on
    each of the random preference files 1010–1017 (0 to 3 per file)."""
    kept, rejected = filter_rules(raw, log.lang, log.query, log.first_answer, "\n".join(log.feedback))
    if unreadable:
        rejected["unreadable"] += 1
    if rejected and log.feedback:
        echoed = echo_rules(log.feedback, log.lang, log.query, log.first_answer)
        if echoed:
            return echoed, rejected, "echo"
    # a sentence already among the rules names no dropped marker; no rule at all: the model read no complaint
    lost = lost_sentences(log.feedback, kept, log.lang, log.query, log.first_answer) if kept else []
    return kept + lost, rejected, "recall" if lost else "model"
