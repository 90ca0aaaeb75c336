"""Bad records in a platform's export: each one is rejected alone, with its line and reason, and its neighbours
are kept; an export repeated in one file makes no false feedback; a rejected record is redacted as written."""

import json

import pytest
from conftest import chat, write_jsonl

from unolearn.ingest import ingest
from unolearn.readers import read_logs
from unolearn.records import Log, Rejected
from unolearn.redact import Redactor

GOOD = {"id": "t0", "timestamp": "2026-12-01T10:00:00Z", "input": "How do I reset my router?",
        "output": "Hold the button."}
BIG = "1" + "0" * 400  # an integer no float holds


def otlp_span(trace: str, start: str, **extra_attrs) -> dict:
    attrs = {"gen_ai.input.messages": json.dumps([{"role": "user", "parts": [{"type": "text", "content": "hi"}]}]),
             **extra_attrs}
    return {"resourceSpans": [{"scopeSpans": [{"spans": [{
        "traceId": trace, "spanId": trace + "s", "startTimeUnixNano": start,
        "attributes": [{"key": k, "value": {"stringValue": v}} for k, v in attrs.items()]}]}]}]}


def items(path) -> tuple[list[Log], list[Rejected]]:
    out = [item for _, item, _ in read_logs(path) if item is not None]
    return [x for x in out if isinstance(x, Log)], [x for x in out if isinstance(x, Rejected)]


@pytest.mark.parametrize("bad, reason", [
    ('{"id": "t1", "timestamp": "2026", "input": "bad \\ud800 text", "output": "a"}',
     "langfuse: input: invalid Unicode (a lone surrogate at character 4)"),
    ('{"name": "fb", "traceId": "t1", "dataType": "NUMERIC", "value": ' + BIG + "}",
     "langfuse: cannot be read (int too large to convert to float)"),
    ('{"context": {"trace_id": "t1", "span_id": "s1"}, "span_kind": "LLM", "attributes": {"input.value": "q", '
     '"x": ' + '{"a":' * 900 + '"x"' + "}" * 900 + "}}", "openinference: cannot be read (maximum recursion depth"),
], ids=["lone-surrogate", "huge-score", "deep-attributes"])
def test_a_bad_record_of_an_export_is_rejected_alone(tmp_path, bad, reason):
    first = (GOOD if "context" not in bad else
             {"context": {"trace_id": "t0", "span_id": "s0"}, "span_kind": "LLM",
              "attributes": {"input.value": "How do I reset my router?", "output.value": "Hold the button."}})
    logs, rejected = items(write_jsonl(tmp_path / "export.jsonl", [first, bad]))
    assert [log.query for log in logs] == ["How do I reset my router?"]
    assert [(r.line, r.reason[:len(reason)]) for r in rejected] == [(2, reason)]


def test_a_comment_that_is_not_text_is_no_feedback(tmp_path):
    score = {"name": "fb", "traceId": "t0", "dataType": "NUMERIC", "value": 4, "comment": 5}
    logs, rejected = items(write_jsonl(tmp_path / "export.jsonl", [GOOD, score]))
    assert rejected == [] and [(log.feedback, log.rating) for log in logs] == [((), 4.0)]


def test_a_span_starting_past_year_9999_has_no_time(tmp_path):
    logs, rejected = items(write_jsonl(tmp_path / "otel.jsonl", [otlp_span("a", "1700000000000000000"),
                                                                 otlp_span("b", "9" * 30)]))
    assert rejected == [] and sorted(log.timestamp or "" for log in logs) == ["", "2023-11-14T22:13:20+00:00"]


def test_a_trace_repeated_in_one_file_is_one_turn(tmp_path):
    logs, _ = items(write_jsonl(tmp_path / "export.jsonl", [GOOD, GOOD]))
    assert [(log.query, log.feedback, len(log.messages)) for log in logs] == [
        ("How do I reset my router?", (), 2)]


def test_a_rejected_record_written_with_ascii_escapes_is_redacted(ws, tmp_path):
    record = {**chat("我的电话13812345678，请回电"), "rating": "good"}  # rejected: a rating is a number
    path = tmp_path / "logs.jsonl"
    path.write_text(json.dumps(record) + "\n")  # json.dumps' default: every CJK character as \\uXXXX
    assert "\\u8bdd13812345678" in path.read_text()
    assert ingest(ws, [path], progress=False, redactor=Redactor()).rejected == 1
    (raw,) = [r for (r,) in ws.conn.execute("SELECT raw FROM rejected")]
    assert "13812345678" not in raw and "电话<PHONE_1>" in raw


def test_a_trace_timestamp_that_is_no_time_is_not_kept(tmp_path):
    logs, rejected = items(write_jsonl(tmp_path / "export.jsonl", [{**GOOD, "timestamp": "bob@example.com"}]))
    assert rejected == [] and [(log.query, log.timestamp) for log in logs] == [("How do I reset my router?", None)]


class FailsOnBoom(Redactor):
    """A redactor whose detector crashes on one log (Presidio raising on an input it cannot take)."""

    def log(self, log: Log) -> Log:
        if "boom" in log.query:
            raise RuntimeError("detector crashed")
        return super().log(log)


def test_a_log_the_redactor_fails_on_is_rejected_with_its_line(ws, tmp_path):
    """Such a log was rejected as line 0: nobody could tell which record of the file it was."""
    path = write_jsonl(tmp_path / "logs.jsonl", [chat("How do I boil rice?"), chat("boom: call bob@example.com"),
                                                 chat("How do I fry eggs?")])
    result = ingest(ws, [path], progress=False, redactor=FailsOnBoom())
    assert (result.ingested, result.rejected) == (2, 1)
    (line, reason, raw), = ws.conn.execute("SELECT line, reason, raw FROM rejected").fetchall()
    assert (line, raw) == (2, "") and reason == "cannot be redacted (RuntimeError); not stored"


def test_conversations_of_an_export_the_redactor_fails_on_are_each_named_and_kept(ws, tmp_path):
    """A platform's log gathers several lines: its rejection had line 0 and no name, so two such conversations
    were one rejection (same file, line and empty text: one key) and the second was lost. Each is now kept,
    with its first line and its conversation, whose id is redacted like any text."""
    session = {"sessionId": "bob@example.com", "input": "boom", "output": "a"}
    path = write_jsonl(tmp_path / "export.jsonl", [GOOD, {**GOOD, **session, "id": "t8"},
                                                   {**GOOD, "id": "t9", "input": "boom again"}])
    assert ingest(ws, [path], progress=False, redactor=FailsOnBoom()).rejected == 2
    rows = sorted(ws.conn.execute("SELECT line, reason FROM rejected").fetchall())
    assert [line for line, _ in rows] == [2, 3]
    assert all(r.endswith("cannot be redacted (RuntimeError); not stored") for _, r in rows)
    assert rows[0][1].startswith("conversation <EMAIL_1>: ") and rows[1][1].startswith("conversation t9: ")
    assert "bob@example.com" not in str(rows)
    one_line = tmp_path / "array.json"  # an export written as one JSON array on one line: one line for all
    one_line.write_text(json.dumps([{**GOOD, "id": "a1", "input": "boom"}, {**GOOD, "id": "a2", "input": "boom"}]))
    assert ingest(ws, [one_line], progress=False, redactor=FailsOnBoom()).rejected == 2
    assert ws.conn.execute("SELECT count(*) FROM rejected WHERE file = ?", (str(one_line),)).fetchone() == (2,)


def test_a_log_the_store_refuses_is_rejected_with_its_file_and_line(ws, tmp_path):
    """The store's refusal of one row (here a real SQLite trigger) was rejected as line 0 under the log's
    ``source`` field, which a record may set to anything: nobody could find the record in the file."""
    ws.conn.execute("CREATE TRIGGER refuse BEFORE INSERT ON logs WHEN NEW.record LIKE '%poison%' "
                    "BEGIN SELECT RAISE(ABORT, 'refused'); END")
    path = write_jsonl(tmp_path / "logs.jsonl", [chat("How do I boil rice?"),
                                                 chat("poison", source="somewhere else"), chat("How do I fry eggs?")])
    result = ingest(ws, [path], progress=False)
    assert (result.ingested, result.rejected) == (2, 1)
    (file, line, reason), = ws.conn.execute("SELECT file, line, reason FROM rejected").fetchall()
    assert (file, line) == (str(path), 2) and reason.startswith("the store refused log ")
