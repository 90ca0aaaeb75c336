"""The second noise filter: what the embedded model writes where a rule belongs, and real rules."""

import pytest

from unolearn.rulefilter import echo_rules, filter_rules, longest_shared_run, reject_reason

QUERY = "How long can a tenant stay in the flat after the landlord gives notice?"
ANSWER = ("A tenant can usually stay until the notice period ends, which is often one or two months "
          "depending on the lease and the local law.")


@pytest.mark.parametrize("rule, reason", [
    ("Could I use a fixed-term lease instead?", "question"),
    ("您能再举一个例子吗？", "question"),
    ("I'm sorry, but I can't assist with that request.", "refusal"),
    ("抱歉，我无法回答这个问题。", "refusal"),
    ("Thank you!", "thanks"),
    ("谢谢", "thanks"),
    ("Use a more specific phrase use a more specific phrase use a more specific phrase", "repetition"),
    ("A tenant can usually stay until the notice period ends, which is often one or two months", "copy"),
    ("How long can a tenant stay in the flat after the landlord gives notice", "copy"),
])
def test_what_is_not_a_rule(rule, reason):
    assert reject_reason(rule, "en" if rule.isascii() else "zh", QUERY, ANSWER) == reason


@pytest.mark.parametrize("rule", [
    "Keep the answer under 80 words.",
    "Make them shorter",
    "Cite the statute and the article that sets the notice period.",
    "State how long the tenant may stay after the notice, in the first sentence.",  # uses the query's words
    "Start with a direct yes or no.",
    "请引用具体的法律条文，写成《…法》第…条的形式。",
    "最后单独用一行“结论：”给出结论。",
])
def test_real_rules_pass(rule):
    assert reject_reason(rule, "en" if rule.isascii() else "zh", QUERY, ANSWER) is None


@pytest.mark.parametrize("rule, feedback", [
    ("In short:", "Start with 'In short:' and the answer in one line."),
    ("以上意见仅供参考。", "最后加一句“以上意见仅供参考。”"),
    # an apostrophe inside a word opened a "quote" up to the next mark, hiding 'Note:' after it
    ("Note:", "Keep a one-line 'Summary:' as I don't read it all, and a 'Note:' line."),
])
def test_a_bare_quoted_phrase_is_not_a_rule(rule, feedback):
    lang = "en" if rule.isascii() else "zh"
    assert reject_reason(rule, lang, QUERY, ANSWER, feedback) == "quote"
    assert reject_reason(rule, lang, QUERY, ANSWER) is None  # without the feedback it cannot be told
    assert reject_reason(f"Begin the answer with '{rule}'", lang, QUERY, ANSWER, feedback) is None


@pytest.mark.parametrize("said", ["Cheers, that helps.", "OK, thanks.", "好的，谢谢。", "收到，谢谢你。"])
def test_thanks_in_several_words_is_not_a_rule(said):
    assert reject_reason(said, "en" if said.isascii() else "zh", QUERY, ANSWER) == "thanks"


def test_echo_rules_keep_the_users_instructions_and_nothing_else():
    said = ["Start with 'In short:' and the answer in one line, then explain if you must. Give an example "
            "('For example, ...'). Why so long? 4. Thanks!", "OK, thanks."]
    assert echo_rules(said, "en", QUERY, ANSWER) == [
        "Start with 'In short:' and the answer in one line, then explain if you must.",
        "Give an example ('For example, ...')."]
    zh = ["语气能不能友好一点？先讲法律依据，回答请以“根据……”开头。最后加一句“以上意见仅供参考。”", "好的，谢谢。"]
    assert echo_rules(zh, "zh", QUERY, ANSWER) == ["先讲法律依据，回答请以“根据……”开头。",
                                                   "最后加一句“以上意见仅供参考。”"]
    assert echo_rules([ANSWER + " Thanks."], "en", QUERY, ANSWER) == []  # a copy of the answer stays out


def test_punctuation_inside_a_word_does_not_end_a_sentence():
    """Seed 1005 put 'Begin with "TL;' and 'DR:" and then the answer itself.' in a rulebook as two entries."""
    said = ['Begin with "TL;DR:" and then the answer itself.', "Keep it to 3.5 lines;no more. Cite the law."]
    assert echo_rules(said, "en", QUERY, ANSWER) == ['Begin with "TL;DR:" and then the answer itself.',
                                                     "Keep it to 3.5 lines;no more.", "Cite the law."]
    # seed 1017: three users' "number the points 1. 2. 3." became the fragments "请分点作答，用1." and "3.编号。"
    numbered = "请分点作答，用1. 2. 3.编号。"
    assert echo_rules(["语气能不能友好一点？" + numbered], "zh", QUERY, ANSWER) == [numbered]
    assert echo_rules(["Why so long? 4. Keep it to 5. Then stop."], "en", QUERY, ANSWER) == [
        "Keep it to 5.", "Then stop."]


def test_filter_rules_counts_what_it_drops():
    kept, rejected = filter_rules(["Be brief.", "Thanks!", "Why?", "Be brief."], "en", QUERY, ANSWER)
    assert kept == ["Be brief.", "Be brief."] and rejected == {"thanks": 1, "question": 1}


def test_longest_shared_run():
    assert longest_shared_run("a b c d".split(), "x b c d y".split()) == 3
    assert longest_shared_run([], ["a"]) == 0


# A LexEval case and what the embedded model made of a complaint about form (preferences-alt.yaml): the case's
# answer rewritten, its parties named. The `rules` memory served it to 23 of 50 other users as their answer.
CASE = "问题：刘三、黄十一关于增资认缴的主张是否可以获得支持？"
CASE_ANSWER = "刘三和黄十一关于增资认缴的主张不能获得支持，因为两人主张的出资款不一致。"
FORM = "先讲法律依据，回答请以“根据……”开头。最后加一句“以上意见仅供参考。”"
RETOLD = "根据《中华人民共和国公司法》的规定，刘三、黄十一关于增资认缴的主张不能获得支持。以上意见仅供参考。"


def test_a_rule_that_retells_the_users_case_is_not_a_rule():
    assert reject_reason(RETOLD, "zh", CASE, CASE_ANSWER, FORM) == "case"
    assert reject_reason(RETOLD, "zh", CASE, CASE_ANSWER) is None  # every other check lets it through
    assert reject_reason("回答以“根据”开头，最后加一句“以上意见仅供参考。”", "zh", CASE, CASE_ANSWER, FORM) is None
    # a phrase of the answer that the user quoted is the user's rule, not the case
    quoting = ("Never open with 'a tenant can usually stay until the notice period ends' again; give the months "
               "first, in one short and plain sentence.")
    assert reject_reason(quoting, "en", QUERY, ANSWER, quoting) is None
    retold = "Put the answer first, in bold: a tenant can usually stay until the notice period ends, then the law."
    assert reject_reason(retold, "en", QUERY, ANSWER, "Give me the answer first, in bold.") == "case"
