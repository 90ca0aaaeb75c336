"""The check library: counting rules, every check both ways (English and Chinese), parameter errors."""

from __future__ import annotations

import pytest

from unolearn.constraints import (
    CHECKS,
    compliance,
    count_bullets,
    count_numbered,
    count_paragraphs,
    count_words,
    parse_check,
    run_check,
    split_sentences,
)
from unolearn.errors import ConfigError

EN_LONG = " ".join(["word"] * 30)
ZH_LONG = "法" * 30


def test_count_words_english_chinese_and_mixed():
    assert count_words("The quick brown fox.") == 4
    assert count_words("这是一个测试") == 6
    assert count_words("用 Python 写一个脚本") == 7  # 1 + 1 + 5
    assert count_words("Python是一种语言") == 6  # the ideographs split the Latin token off
    assert count_words("- ## — ... **") == 0  # punctuation-only tokens are not words
    assert count_words("") == 0


def test_split_sentences_both_languages():
    assert split_sentences("It costs 3.5 dollars. Really? Yes!") == ["It costs 3.5 dollars", "Really", "Yes"]
    assert split_sentences("好的。真的吗？是的！") == ["好的", "真的吗", "是的"]
    assert len(split_sentences("Mixed 中文。And English. 最后")) == 3
    assert len(split_sentences("See example.com for more")) == 1
    assert split_sentences("...!!") == []


def test_structure_counters():
    text = "# Title\n\nIntro.\n\n- a\n* b\n+ c\n• d\n-no space\n**bold**\n\n1. x\n2) y\n3、z\n（4）w\n①v\n一、u"
    assert count_bullets(text) == 4
    assert count_numbered(text) == 6
    assert count_paragraphs(text) == 4
    assert count_paragraphs("  \n\n ") == 0


# (check, param, passing answer, failing answer): every registered check, Chinese where counting matters.
CASES = [
    ("max_words", 10, "Short answer here.", EN_LONG),
    ("max_words", 10, "简短的回答。", ZH_LONG),
    ("min_words", 20, EN_LONG, "Too short."),
    ("min_words", 20, ZH_LONG, "太短了。"),
    ("max_sentences", 2, "One. Two.", "One. Two. Three."),
    ("max_sentences", 2, "第一句。第二句。", "第一句。第二句！第三句？"),
    ("bullet_list", {"min": 2, "max": 3}, "Points:\n- a\n- b", "Points:\n- a"),
    ("bullet_list", {"min": 2, "max": 3}, "要点：\n- 甲\n- 乙\n- 丙", "要点：\n- 甲\n- 乙\n- 丙\n- 丁"),
    ("bullet_list", True, "- only one", "no bullets"),
    ("bullet_list", False, "no bullets", "- one bullet"),
    ("numbered_list", True, "1. first\n2. second", "1. only one item"),
    ("numbered_list", True, "（1）第一\n（2）第二", "第一，第二"),
    ("numbered_list", False, "plain prose", "1. a\n2. b"),
    ("starts_with", "Yes", "  Yes, it is.", "Well, yes."),
    ("starts_with", "答：", "答：可以。", "可以。答："),
    ("ends_with", "Hope this helps.", "Done. Hope this helps.  \n", "Hope this helps. Bye."),
    ("ends_with", "结论：成立。", "分析……\n结论：成立。", "结论：成立。补充"),
    ("contains", r"(?i)\bexample\b", "For EXAMPLE, this.", "No instances here."),
    ("contains", r"例如", "例如，甲。", "比方说，甲。"),
    ("not_contains", r"(?i)\A\W*sure\b", "The answer is 4.", "Sure! The answer is 4."),
    ("language", "en", "This is an English answer.", "这是一个中文回答。"),
    ("language", "zh", "这是一个中文回答，含有 API 一词。", "This is English with 一 char."),
    ("paragraphs", 2, "First.\n\nSecond.", "Only one paragraph."),
    ("paragraphs", {"min": 2, "max": 3}, "甲。\n\n乙。\n\n丙。", "甲。\n\n乙。\n\n丙。\n\n丁。"),
    ("json_object", True, '```json\n{"a": 1}\n```', "[1, 2]"),
    ("json_object", True, ' {"answer": "是"} ', "{not json"),
    ("json_object", False, "plain text", '{"a": 1}'),
    ("heading", True, "Intro\n## Section\ntext", "#hashtag without space"),
    ("heading", False, "No heading here.", "# Title"),
    ("quote_source", r"《[^》]*法[^》]*》第[一二三四五六七八九十百千0-9]+条", "依据《民法典》第一千二百条……",
     "依据民法典的规定……"),
    ("quote_source", {"pattern": r"\[\d+\]", "min": 2}, "As shown [1] and [2].", "As shown [1] and [1]."),
]


@pytest.mark.parametrize("name,param,good,bad", CASES)
def test_check_true_and_false(name, param, good, bad):
    _, norm = parse_check({name: param})
    assert run_check(name, norm, good) is True
    assert run_check(name, norm, bad) is False


def test_an_answer_nested_too_deeply_is_no_json_object():
    _, norm = parse_check({"json_object": True})
    assert run_check("json_object", norm, "[" * 5000) is False  # Python's parser raises RecursionError on it


def test_every_registered_check_is_tested():
    assert {c[0] for c in CASES} == set(CHECKS)


@pytest.mark.parametrize("check,fragment", [
    ({"max_wordz": 3}, "unknown check 'max_wordz'"),
    ({"max_words": 0}, "max_words: expected a whole number ≥ 1"),
    ({"max_words": "80"}, "max_words: expected a whole number"),
    ({"max_words": True}, "max_words: expected a whole number"),
    ({"bullet_list": {"min": 4, "max": 2}}, "min (4) is greater than max (2)"),
    ({"bullet_list": {"least": 1}}, "bullet_list: expected {min: A, max: B}"),
    ({"numbered_list": "yes"}, "expected true or false"),
    ({"contains": "(unclosed"}, "invalid regex"),
    ({"language": "fr"}, "expected 'en' or 'zh'"),
    ({"starts_with": "  "}, "expected a non-empty string"),
    ({"quote_source": {"pattern": "x", "min": 0}}, "expected a whole number ≥ 1"),
    ({"max_words": 3, "min_words": 1}, "exactly one"),
    ({}, "exactly one"),
])
def test_bad_checks_are_rejected(check, fragment):
    with pytest.raises(ValueError) as e:
        parse_check(check)
    assert fragment in str(e.value)


def test_normalised_params_parse_again_to_themselves():
    for name, param, _, _ in CASES:
        _, norm = parse_check({name: param})
        assert parse_check({name: norm}) == (name, norm)


def test_compliance_maps_ids_to_results_and_rejects_bad_dicts():
    constraints = [{"id": "short", "check": {"max_words": 3}}, {"id": "zh", "check": {"language": "zh"}}]
    assert compliance("太长了吧这个", constraints) == {"short": False, "zh": True}
    assert compliance("ok", constraints) == {"short": True, "zh": False}
    with pytest.raises(ConfigError, match="constraint 'x': unknown check 'nope'"):
        compliance("ok", [{"id": "x", "check": {"nope": 1}}])
