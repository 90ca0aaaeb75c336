"""Code-checkable answer constraints: the hidden preferences of simulated users.

A constraint is ``{id, check: {NAME: PARAM}, feedback: [complaint, ...]}``. Each check is a small
pure function ``(answer, param) -> bool`` registered once in :data:`CHECKS` together with the parser
that validates and normalises its parameter. The benchmark later calls :func:`compliance` on new
answers, so what "satisfied" means must not depend on anything but the answer text.

Counting rules (the same for every check that counts):

- **Words**: every CJK ideograph (U+3400–4DBF, U+4E00–9FFF, U+F900–FAFF, the ranges
  :func:`unolearn.records.detect_lang` uses) counts as one word. In the rest of the text (the
  ideographs replaced by spaces) every whitespace-separated token that holds at least one letter or
  digit counts as one word; punctuation-only tokens (``-``, ``##``, ``—``) count zero. Mixed text
  therefore adds both: ``"用 Python 写一个脚本"`` is 1 + 1 + 5 = 7 words.
- **Sentences**: the text is split after runs of ``。！？`` and after runs of ``. ! ?`` followed by
  whitespace, a closing quote or bracket, or the end (so ``3.5`` and ``example.com`` do not split);
  a piece counts when it holds a letter, digit or ideograph. Line breaks alone do not end a sentence;
  abbreviations such as ``e.g.`` followed by a space do.
- **Bullets**: lines starting with ``-``, ``*``, ``+`` or ``•`` followed by a space; every bullet
  line in the answer counts, across lists.
- **Numbered items**: lines starting with ``1.``, ``1)``, ``1、``, ``(1)``, ``（1）``, ``①``…``⑳`` or
  ``一、``; a numbered list is at least two such lines.
- **Paragraphs**: blocks of non-blank lines separated by blank lines.
- **Regexes** (``contains``, ``not_contains``, ``quote_source``) use :func:`re.search` without flags;
  write inline flags such as ``(?i)`` or ``(?m)`` in the pattern.

Check forms: ``max_words: N``, ``min_words: N``, ``max_sentences: N``, ``bullet_list: {min, max}``
(or ``true`` = at least one, ``false`` = none), ``numbered_list: bool``, ``starts_with: text`` and
``ends_with: text`` (case-sensitive, surrounding whitespace ignored), ``contains: regex``,
``not_contains: regex``, ``language: en|zh``, ``paragraphs: N`` (exactly) or ``{min, max}``,
``json_object: bool`` (the answer, optionally in a code fence, is one JSON object), ``heading: bool``
(a markdown ``#`` heading line), ``quote_source: regex`` or ``{pattern, min}`` (at least ``min``,
default 1, distinct citations match). For the ``bool`` forms ``false`` asks for the absence.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .errors import ConfigError, loads_json
from .records import CJK, detect_lang

_WORDLIKE = re.compile(r"\w")
_SENTENCE_END = re.compile(r"[.!?]+(?=[\s\"'”’)\]]|$)|[。！？]+")
_BULLET = re.compile(r"^[ \t]*[-*+•][ \t]+\S", re.MULTILINE)
_NUMBERED = re.compile(r"^[ \t]*(?:\d+[.)、．]|[(（]\d+[)）]|[①-⑳]|[一二三四五六七八九十]+、)[ \t]*\S",
                       re.MULTILINE)
_HEADING = re.compile(r"^[ \t]{0,3}#{1,6}[ \t]+\S", re.MULTILINE)
_BLANK_LINES = re.compile(r"\n[ \t]*\n")
_FENCE = re.compile(r"\A```[\w-]*\n(.*)\n?```\Z", re.DOTALL)


# -- counting ----------------------------------------------------------------------------------


def count_words(text: str) -> int:
    """Words in ``text``: one per CJK ideograph plus one per other token with a letter or digit."""
    ideographs = len(CJK.findall(text))
    rest = CJK.sub(" ", text)
    return ideographs + sum(1 for tok in rest.split() if _WORDLIKE.search(tok))


def split_sentences(text: str) -> list[str]:
    """The sentences of ``text`` (see the module docstring for the rule)."""
    return [p.strip() for p in _SENTENCE_END.split(text) if _WORDLIKE.search(p)]


def count_bullets(text: str) -> int:
    """Bullet lines (``-``, ``*``, ``+``, ``•`` then a space) anywhere in ``text``."""
    return len(_BULLET.findall(text))


def count_numbered(text: str) -> int:
    """Numbered-item lines (``1.``, ``1)``, ``1、``, ``(1)``, ``①``, ``一、``) in ``text``."""
    return len(_NUMBERED.findall(text))


def count_paragraphs(text: str) -> int:
    """Blocks of non-blank lines separated by blank lines."""
    return sum(1 for block in _BLANK_LINES.split(text.strip()) if block.strip())


# -- check functions: (answer, normalised param) -> bool -----------------------------------------


def _in_range(n: int, bounds: Mapping[str, int | None]) -> bool:
    lo, hi = bounds.get("min"), bounds.get("max")
    return (lo is None or n >= lo) and (hi is None or n <= hi)


@functools.lru_cache(maxsize=256)
def _regex(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def check_max_words(answer: str, n: int) -> bool:
    """At most ``n`` words."""
    return count_words(answer) <= n


def check_min_words(answer: str, n: int) -> bool:
    """At least ``n`` words."""
    return count_words(answer) >= n


def check_max_sentences(answer: str, n: int) -> bool:
    """At most ``n`` sentences."""
    return len(split_sentences(answer)) <= n


def check_bullet_list(answer: str, bounds: Mapping[str, int | None]) -> bool:
    """The number of bullet lines lies within ``bounds`` (``min``/``max``, either may be None)."""
    return _in_range(count_bullets(answer), bounds)


def check_numbered_list(answer: str, wanted: bool) -> bool:
    """A numbered list (two or more numbered lines) is present (``True``) or absent (``False``)."""
    return (count_numbered(answer) >= 2) == wanted


def check_starts_with(answer: str, text: str) -> bool:
    """The answer, leading whitespace ignored, starts with ``text``."""
    return answer.lstrip().startswith(text)


def check_ends_with(answer: str, text: str) -> bool:
    """The answer, trailing whitespace ignored, ends with ``text``."""
    return answer.rstrip().endswith(text)


def check_contains(answer: str, pattern: str) -> bool:
    """``pattern`` matches somewhere in the answer."""
    return _regex(pattern).search(answer) is not None


def check_not_contains(answer: str, pattern: str) -> bool:
    """``pattern`` matches nowhere in the answer."""
    return _regex(pattern).search(answer) is None


def check_language(answer: str, lang: str) -> bool:
    """The answer is written in ``lang`` (``en`` or ``zh``, by :func:`detect_lang`)."""
    return bool(answer.strip()) and detect_lang(answer) == lang


def check_paragraphs(answer: str, bounds: Mapping[str, int | None]) -> bool:
    """The number of paragraphs lies within ``bounds``."""
    return _in_range(count_paragraphs(answer), bounds)


def check_json_object(answer: str, wanted: bool) -> bool:
    """The whole answer (optionally fenced) is (``True``) or is not (``False``) one JSON object."""
    body = answer.strip()
    fenced = _FENCE.match(body)
    try:
        is_object = isinstance(loads_json(fenced.group(1) if fenced else body), dict)
    except ValueError:
        is_object = False
    return is_object == wanted


def check_heading(answer: str, wanted: bool) -> bool:
    """A markdown heading line is present (``True``) or absent (``False``)."""
    return (_HEADING.search(answer) is not None) == wanted


def check_quote_source(answer: str, spec: Mapping[str, Any]) -> bool:
    """At least ``spec["min"]`` distinct strings match the citation pattern ``spec["pattern"]``."""
    found = {m.group(0) for m in _regex(spec["pattern"]).finditer(answer) if m.group(0)}
    return len(found) >= spec["min"]


# -- parameter parsers: raise ValueError, return the normalised parameter ------------------------


def _count(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"expected a whole number ≥ 0, got {value!r}")
    return value


def _positive(value: Any) -> int:
    if _count(value) < 1:
        raise ValueError(f"expected a whole number ≥ 1, got {value!r}")
    return value


def _flag(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {value!r}")
    return value


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"expected a non-empty string, got {value!r}")
    return value


def _pattern(value: Any) -> str:
    _text(value)
    try:
        _regex(value)
    except re.error as e:
        raise ValueError(f"invalid regex {value!r}: {e}") from e
    return value


def _lang(value: Any) -> str:
    if value not in ("en", "zh"):
        raise ValueError(f"expected 'en' or 'zh', got {value!r}")
    return value


def _bounds(value: Any) -> dict[str, int | None]:
    if not isinstance(value, Mapping) or not value or set(value) - {"min", "max"}:
        raise ValueError(f"expected {{min: A, max: B}} (either may be left out), got {value!r}")
    lo = None if value.get("min") is None else _count(value["min"])
    hi = None if value.get("max") is None else _count(value["max"])
    if lo is None and hi is None:
        raise ValueError("give at least one of min and max")
    if lo is not None and hi is not None and lo > hi:
        raise ValueError(f"min ({lo}) is greater than max ({hi})")
    return {"min": lo, "max": hi}


def _bullet_bounds(value: Any) -> dict[str, int | None]:
    if isinstance(value, bool):
        return {"min": 1, "max": None} if value else {"min": None, "max": 0}
    return _bounds(value)


def _paragraph_bounds(value: Any) -> dict[str, int | None]:
    if isinstance(value, int) and not isinstance(value, bool):
        n = _positive(value)
        return {"min": n, "max": n}
    return _bounds(value)


def _source(value: Any) -> dict[str, Any]:
    if isinstance(value, str):
        return {"pattern": _pattern(value), "min": 1}
    if not isinstance(value, Mapping) or "pattern" not in value or set(value) - {"pattern", "min"}:
        raise ValueError(f"expected a regex or {{pattern: regex, min: N}}, got {value!r}")
    return {"pattern": _pattern(value["pattern"]), "min": _positive(value.get("min", 1))}


@dataclass(frozen=True)
class CheckSpec:
    """One registered check: its function and the parser of its parameter."""

    fn: Callable[[str, Any], bool]
    parse: Callable[[Any], Any]


#: Every check a preference file may name. Add a check here and nowhere else.
CHECKS: dict[str, CheckSpec] = {
    "max_words": CheckSpec(check_max_words, _positive),
    "min_words": CheckSpec(check_min_words, _positive),
    "max_sentences": CheckSpec(check_max_sentences, _positive),
    "bullet_list": CheckSpec(check_bullet_list, _bullet_bounds),
    "numbered_list": CheckSpec(check_numbered_list, _flag),
    "starts_with": CheckSpec(check_starts_with, _text),
    "ends_with": CheckSpec(check_ends_with, _text),
    "contains": CheckSpec(check_contains, _pattern),
    "not_contains": CheckSpec(check_not_contains, _pattern),
    "language": CheckSpec(check_language, _lang),
    "paragraphs": CheckSpec(check_paragraphs, _paragraph_bounds),
    "json_object": CheckSpec(check_json_object, _flag),
    "heading": CheckSpec(check_heading, _flag),
    "quote_source": CheckSpec(check_quote_source, _source),
}


def parse_check(check: Any) -> tuple[str, Any]:
    """Validate a ``{NAME: PARAM}`` mapping; return ``(NAME, normalised PARAM)`` or raise ValueError."""
    if not isinstance(check, Mapping) or len(check) != 1:
        raise ValueError(f"expected exactly one {{check_name: parameter}}, got {check!r}")
    (name, param), = check.items()
    if name not in CHECKS:
        raise ValueError(f"unknown check {name!r} (known: {', '.join(CHECKS)})")
    try:
        return name, CHECKS[name].parse(param)
    except ValueError as e:
        raise ValueError(f"{name}: {e}") from e


def run_check(name: str, param: Any, answer: str) -> bool:
    """Apply the registered check ``name`` (with an already normalised ``param``) to ``answer``."""
    return CHECKS[name].fn(answer, param)


def compliance(answer: str, constraints: Iterable[Any]) -> dict[str, bool]:
    """``{constraint id: satisfied}`` for ``answer``.

    ``constraints`` are objects with ``id`` and ``check`` (a one-entry ``{NAME: PARAM}`` mapping),
    e.g. :class:`unolearn.simulate.Constraint`, or plain dicts of that shape (validated here:
    a bad check raises :class:`ConfigError`).
    """
    out: dict[str, bool] = {}
    for c in constraints:
        cid, check = (c["id"], c["check"]) if isinstance(c, Mapping) else (c.id, c.check)
        try:
            name, param = parse_check(check)
        except ValueError as e:
            raise ConfigError(f"constraint {cid!r}: {e}") from e
        out[cid] = run_check(name, param, answer)
    return out
