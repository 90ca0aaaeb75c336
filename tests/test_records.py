import pytest

from unolearn.records import Log, Message, content_hash, detect_lang


def test_content_hash_is_versioned_and_key_order_independent():
    a = content_hash("log", {"x": 1, "y": "é"})
    assert a == content_hash("log", {"y": "é", "x": 1})
    assert a.startswith("log-v1-") and len(a) == len("log-v1-") + 24
    assert a != content_hash("log", {"x": 2, "y": "é"})


def test_detect_lang():
    assert detect_lang("什么是合同法的基本原则？") == "zh"
    assert detect_lang("What is the statute of limitations?") == "en"
    assert detect_lang("") == "en"


def test_from_messages_derives_query_answer_feedback():
    msgs = [Message(role="system", content="be brief"), Message(role="user", content="q"),
            Message(role="assistant", content="a1"), Message(role="user", content="too long"),
            Message(role="assistant", content="a2"), Message(role="user", content="cite it")]
    log = Log.from_messages(msgs, source="s")
    assert (log.query, log.first_answer, log.feedback) == ("q", "a1", ("too long", "cite it"))
    assert log.has_feedback and log.lang == "en"
    assert log.id == Log.from_messages(msgs, source="s").id


def test_from_messages_requires_a_user_turn():
    with pytest.raises(ValueError, match="no user turn"):
        Log.from_messages([Message(role="assistant", content="hi")])


def test_query_without_answer_has_no_feedback():
    log = Log.from_messages([Message(role="user", content="只有问题")])
    assert log.first_answer is None and not log.has_feedback and log.lang == "zh"
