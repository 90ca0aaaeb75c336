import json
from pathlib import Path

import pytest
from conftest import chat, write_jsonl

from unolearn.prompt_sets import packaged_dir
from unolearn.readers import read_logs
from unolearn.records import Log, Rejected


def items(path: Path, fmt: str = "auto"):
    return [item for _, item, _ in read_logs(path, fmt)]


def test_openai_jsonl(tmp_path):
    p = write_jsonl(tmp_path / "a.jsonl", [
        chat("q1", "a1", "shorter please", actions=["dislike", {"kind": "edit", "edited": "a1'"}],
             rating=2, lang="en", timestamp="2026-01-01T00:00:00Z", metadata={"app": "x"}),
        {"messages": [{"role": "developer", "content": "sys"},
                      {"role": "user", "content": [{"type": "text", "text": "part 1 "},
                                                   {"type": "text", "text": "part 2"}]}]},
    ])
    a, b = items(p, "openai")
    assert a.query == "q1" and a.first_answer == "a1" and a.feedback == ("shorter please",)
    assert [x.kind for x in a.actions] == ["dislike", "edit"] and a.actions[1].edited == "a1'"
    assert a.rating == 2 and a.source == "a.jsonl" and a.metadata == {"app": "x"}
    assert b.messages[0].role == "system" and b.query == "part 1 part 2" and not b.has_feedback


def test_memorybench_python_literal_fields(tmp_path):
    dialog = [{"role": "user", "content": "What is tort law?"},
              {"role": "assistant", "content": "It is ..."},
              {"role": "user", "content": "Please cite the statute."}]
    rec = {"test_idx": 7, "dataset_name": "LexEval-QA", "lang": "en", "input_prompt": "What is tort law?",
           "dialog": repr(dialog), "implicit_feedback": repr([{"type": "like"}]),
           "info": repr({"golden_answer": "x"})}
    rec2 = {"test_idx": 8, "dataset_name": "NFCats", "lang": "en", "input_prompt": "ironside meaning",
            "dialog": None, "implicit_feedback": None, "info": {}}
    rec3 = {**rec, "test_idx": 9, "dialog": json.dumps(dialog), "implicit_feedback": json.dumps(["copy"])}
    a, b, c = items(write_jsonl(tmp_path / "m.jsonl", [rec, rec2, rec3]))
    assert a.source == "LexEval-QA" and a.feedback == ("Please cite the statute.",)
    assert [x.kind for x in a.actions] == ["like"] and a.metadata["info"] == {"golden_answer": "x"}
    assert a.metadata["test_idx"] == 7
    assert b.query == "ironside meaning" and b.first_answer is None and b.source == "NFCats"
    assert c.feedback == a.feedback and [x.kind for x in c.actions] == ["copy"]


def test_every_format_reads_the_user(tmp_path):
    conversation = [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]
    records = [chat("q", "a", "no", user="alice"), {**chat("q", "a", "no"), "user": 17},
               {"id": "s1", "conversations": conversation, "user": "bob"},
               {"test_idx": 1, "dataset_name": "NFCats", "input_prompt": "q", "user": "carol"},
               chat("q", "a", "no")]
    openai, numbered, sharegpt, memorybench, nobody = items(write_jsonl(tmp_path / "u.jsonl", records))
    assert (openai.user, numbered.user, sharegpt.user, memorybench.user, nobody.user) == (
        "alice", "17", "bob", "carol", None)
    assert openai.id != nobody.id and openai.user_key == "user:alice" and nobody.user_key == "anonymous"
    assert nobody.id == "log-v1-91ea747fd867d047c68c4b64"  # its key from before logs had users


def test_packaged_memorybench_prompt_files_read_cleanly():
    out = items(packaged_dir() / "lexeval_qa_test.jsonl")
    assert len(out) == 50 and all(isinstance(x, Log) for x in out)
    assert {x.lang for x in out} == {"zh"}


def sharegpt(i: int) -> dict:
    return {"id": f"c{i}", "conversations": [
        {"from": "human", "value": f"question {i} 问题"}, {"from": "gpt", "value": "answer " * 50},
        {"from": "human", "value": "more detail please"}]}


def test_sharegpt_array_and_jsonl(tmp_path):
    arr = tmp_path / "s.json"
    arr.write_text(json.dumps([sharegpt(i) for i in range(3)], indent=2))
    logs = items(arr, "sharegpt")
    assert [x.metadata["id"] for x in logs] == ["c0", "c1", "c2"]
    assert logs[0].feedback == ("more detail please",)
    jl = write_jsonl(tmp_path / "s.jsonl", [sharegpt(i) for i in range(3)])
    assert [(x.query, x.feedback) for x in items(jl)] == [(x.query, x.feedback) for x in logs]


def test_truncated_sharegpt_array_yields_every_complete_record(tmp_path):
    # Records large enough to cross the reader's 64 KiB chunks, with multi-byte characters.
    recs = [{**sharegpt(i), "conversations": [{"from": "human", "value": "长" * 30000 + str(i)},
                                             {"from": "gpt", "value": "ok"}]} for i in range(5)]
    text = json.dumps(recs, ensure_ascii=False, indent=1)
    cut = text.rindex('"id": "c4"') + 20  # inside the last record
    p = tmp_path / "t.json"
    p.write_text(text[:cut], encoding="utf-8")
    out = items(p)
    logs = [x for x in out if isinstance(x, Log)]
    assert [x.metadata["id"] for x in logs] == ["c0", "c1", "c2", "c3"]
    assert logs[3].query == "长" * 30000 + "3"
    assert isinstance(out[-1], Rejected) and "truncated" in out[-1].reason


def test_array_line_numbers(tmp_path):
    p = tmp_path / "l.json"
    p.write_text('[\n' + json.dumps(sharegpt(0)) + ',\n' + json.dumps({"conversations": []}) + '\n]')
    out = items(p)
    assert isinstance(out[0], Log)
    assert isinstance(out[1], Rejected) and out[1].line == 3 and "no user turn" in out[1].reason


@pytest.mark.parametrize("raw, reason", [
    ("{not json", "not valid JSON"),
    (json.dumps({"messages": [{"role": "assistant", "content": "hi"}]}), "no user turn"),
    (json.dumps({"messages": [{"role": "wizard", "content": "hi"}]}), "messages[0].role: unknown role"),
    (json.dumps({"messages": [{"role": "user", "content": 42}]}), "messages[0].content: expected a string"),
    (json.dumps({"messages": "hello"}), "messages: expected a list"),
    (json.dumps(chat("q", "a", rating="good")), "rating: expected a number"),
    (json.dumps(chat("q", "a", rating=float("nan"))), "rating: expected a finite number, got nan"),
    ('{"messages": [{"role": "user", "content": "q"}], "rating": 1e999}', "rating: expected a finite number"),
    (json.dumps(chat("q", "a", timestamp="bob@example.com")), "timestamp: expected an ISO-8601 date or time"),
    (json.dumps(chat("q", "a", timestamp=1700000000)), "timestamp: expected an ISO-8601 date or time"),
    (json.dumps(chat("q", "a", actions=["shrug"])), "actions[0]"),
    (json.dumps(chat("q", "a", actions=[{"kind": "edit"}])), "edited answer"),
    (json.dumps(chat("q", "a", user="")), "user: expected a non-empty string"),
    (json.dumps(chat("q", "a", user={"id": 1})), "user: expected a non-empty string or an integer"),
    (json.dumps({"foo": 1}), "unknown record format"),
    (json.dumps([1, 2]), "expected a JSON object"),
])
def test_bad_records_are_rejected_with_line_and_reason(tmp_path, raw, reason):
    p = write_jsonl(tmp_path / "bad.jsonl", [chat("good", "a"), raw])
    good, bad = items(p)
    assert isinstance(good, Log)
    assert isinstance(bad, Rejected) and bad.line == 2 and reason in bad.reason, bad.reason
    assert bad.raw == raw


def test_a_content_part_without_text_adds_no_text(tmp_path):
    parts = [{"type": "text", "text": None}, {"type": "text", "text": "How do I reset it?"}]
    (log,) = items(write_jsonl(tmp_path / "parts.jsonl", [{"messages": [{"role": "user", "content": parts}]}]))
    assert log.query == "How do I reset it?"  # before: "NoneHow do I reset it?"


def test_forced_format_rejects_other_shapes(tmp_path):
    p = write_jsonl(tmp_path / "x.jsonl", [sharegpt(0)])
    (bad,) = items(p, "openai")
    assert isinstance(bad, Rejected) and "messages" in bad.reason
