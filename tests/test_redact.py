"""The redactor on its own: Presidio offline, identifiers inside Chinese text, placeholders per record."""

from __future__ import annotations

import socket

import pytest

from unolearn.errors import ConfigError
from unolearn.records import Log, Message
from unolearn.redact import RedactConfig, Redactor, analysis_view, resident_id_valid


@pytest.fixture(scope="module")
def redactor() -> Redactor:
    return Redactor()


@pytest.mark.parametrize("text, expected", [
    ("Mail alice.smith@example.com or call +1 415-555-0132.", "Mail <EMAIL_1> or call <PHONE_1>."),
    ("请拨打13812345678联系我", "请拨打<PHONE_1>联系我"),
    ("电话：＋８６ １３８１２３４５６７８。", "电话：<PHONE_1>。"),
    ("身份证11010519491231002X，邮箱li.wei@example.cn谢谢", "身份证<CN_ID_1>，邮箱<EMAIL_1>谢谢"),
    ("card 4111-1111-1111-1111, IBAN GB82 WEST 1234 5698 7654 32", "card <CARD_1>, IBAN <IBAN_1>"),
    ("ssn 536-22-8726 from 203.0.113.77 or 2001:db8::8a2e:370:7334", "ssn <SSN_1> from <IP_1> or <IP_2>"),
    ("https://app.example.com/reset?token=9f8a7c6b5d4e&lang=en", "https://app.example.com/reset?token=<SECRET_1>&lang=en"),
    ("https://x.example.com/u?email=bob%40mail.example.com", "https://x.example.com/u?email=<EMAIL_1>"),
    ("Mastercard 2551 9798 7320 0087 expired", "Mastercard <CARD_1> expired"),
    ("block dead:beef:cafe::babe now", "block <IP_1> now"),
    ("Servers 10.1.12.3 and 10.11.2.3 are down", "Servers <IP_1> and <IP_2> are down"),
    ("a.b@example.com is not ab@example.com", "<EMAIL_1> is not <EMAIL_2>"),
    ("call +1 415-555-0132 or 14155550132", "call <PHONE_1> or <PHONE_1>"),
])
def test_identifiers_are_replaced_by_typed_placeholders(redactor, text, expected):
    assert redactor.text(text) == expected


@pytest.mark.parametrize("clean", [
    "See https://docs.python.org/3/library/re.html for details.",
    "依据《民法典》第1165条，2023年5月1日起施行，版本1.2.3，价格100元。",
    "Card numbers that fail Luhn like 4111 1111 1111 1112 are not cards.",
    "身份证号码的第18位是校验码，例如110105194912310021这样校验不对的号码。",
    "2015年5月至2016年3月，会议于2020年11月16日至17日召开",
    "2021-11-16 14:30:05,123 INFO start; log at 2021-11-16 14:30 ok",
])
def test_clean_text_and_invalid_numbers_stay(redactor, clean):
    assert redactor.text(clean) == clean


def test_one_value_one_placeholder_across_a_log(redactor):
    log = Log.from_messages([Message(role="user", content="I am bob@example.com, ring 13812345678"),
                             Message(role="assistant", content="Hi"),
                             Message(role="user", content="Again: BOB@example.com, and ann@example.com")],
                            user="u1", metadata={"note": "from bob@example.com"})
    red = redactor.log(log)
    assert red.query == "I am <EMAIL_1>, ring <PHONE_1>"
    assert red.feedback == ("Again: <EMAIL_1>, and <EMAIL_2>",)
    assert red.metadata == {"note": "from <EMAIL_1>"} and red.user == "u1"
    assert redactor.log(red) == red  # redacting twice changes nothing


def test_no_network_is_needed(redactor, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the redactor tried to reach the network")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    assert Redactor(RedactConfig(entities=["EMAIL_ADDRESS"])).text("x@y.example.com") == "<EMAIL_1>"


def test_disabled_and_chosen_kinds():
    assert Redactor(RedactConfig(enabled=False)).text("bob@example.com") == "bob@example.com"
    only_email = Redactor(RedactConfig(entities=["EMAIL_ADDRESS"]))
    assert only_email.text("bob@example.com 13812345678") == "<EMAIL_1> 13812345678"
    with pytest.raises(ConfigError, match="unknown kind 'PERSON'"):
        RedactConfig(entities=["PERSON"])


def test_the_analysis_view_keeps_offsets():
    text = "电话１３８abc"
    assert len(analysis_view(text)) == len(text) and analysis_view(text) == "  138abc"
    assert resident_id_valid("11010519491231002X") and not resident_id_valid("110105194912310021")


def test_a_row_the_redactor_fails_on_is_recorded_without_its_text():
    from unolearn.serve.recorder import _redact_row

    class Failing(Redactor):
        def served_row(self, row):
            raise RuntimeError("detector crashed")

    row = ("r1", '[{"role": "user", "content": "bob@example.com"}]', "answer to bob@example.com", "{}", "m", "t", "u")
    assert _redact_row(Failing(), "served", row) == ("r1", "[]", "", "{}", "m", "t", "u")


def test_metadata_keys_that_redact_alike_keep_both_values(redactor):
    """Two keys holding one address written two ways got one placeholder: the second value overwrote the first."""
    log = Log.from_messages([Message(role="user", content="hi")], lang="en",
                            metadata={"Bob@example.com": "first", "bob@example.com": "second", "ok": 1})
    assert redactor.log(log).metadata == {"<EMAIL_1>": "first", "<EMAIL_1> (2)": "second", "ok": 1}


def test_metadata_keys_numbers_and_the_source_are_redacted(redactor):
    log = Log.from_messages([Message(role="user", content="hi")], lang="en",
                            source="chat of bob@example.com +1 415 555 0123",
                            metadata={"bob@example.com": "x", "phone": 14155550123, "card": 4111111111111111,
                                      "turns": 3, "score": 0.5, "ok": True})
    out = redactor.log(log)
    assert out.source == "chat of <EMAIL_1> <PHONE_1>"  # before: every one of them stored as written
    assert out.metadata == {"<EMAIL_1>": "x", "phone": "<PHONE_1>", "card": "<CARD_1>", "turns": 3, "score": 0.5,
                            "ok": True}
