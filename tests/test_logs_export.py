"""`unolearn logs export`: every stored log as unolearn's record, as JSONL or a short block per log."""

import json

from conftest import chat, write_jsonl

from unolearn.log_export import LINE_LIMIT, shorten, text_block
from unolearn.records import Log, Message

FIELDS = ["id", "query", "first_answer", "feedback", "actions", "rating", "user", "tenant", "source", "timestamp",
          "lang", "metadata", "messages"]
LONG = "The tort of negligence needs a duty of care,\n\na breach of it and damage it caused. " * 4


def rated() -> dict:
    """An OpenAI-format record with a user, a follow-up feedback turn, a like action and a rating."""
    return chat("what is a tort?", LONG, "cite the statute", user="alice", actions=[{"kind": "like", "turn": 0}],
                rating=4.5, source="crm-export", timestamp="2024-05-01T10:00:00Z")


def test_json_gives_back_the_ingested_record(run_cli, tmp_path):
    p = write_jsonl(tmp_path / "logs.jsonl", [rated(), chat("plain question", "plain answer")])
    assert run_cli("ingest", str(p)).code == 0
    r = run_cli("logs", "export", "--json")
    assert r.code == 0, r.err
    records = [json.loads(line) for line in r.out.splitlines()]  # one JSON object per line
    assert len(records) == 2 and [rec["id"] for rec in records] == sorted(rec["id"] for rec in records)
    rec = next(rec for rec in records if rec["user"] == "alice")
    assert list(rec) == FIELDS
    assert rec["id"].startswith("log-v1-") and run_cli("logs", "show", rec["id"], "--json").json()["id"] == rec["id"]
    assert {k: v for k, v in rec.items() if k != "id"} == {
        "query": "what is a tort?",
        "first_answer": LONG,
        "feedback": ["cite the statute"],
        "actions": [{"kind": "like", "turn": 0, "edited": None}],
        "rating": 4.5,
        "user": "alice",
        "tenant": None,
        "source": "crm-export",
        "timestamp": "2024-05-01T10:00:00Z",
        "lang": "en",
        "metadata": {},
        "messages": [{"role": "user", "content": "what is a tort?"}, {"role": "assistant", "content": LONG},
                     {"role": "user", "content": "cite the statute"}],
    }
    plain = next(rec for rec in records if rec["user"] is None)
    assert plain["feedback"] == [] and plain["actions"] == [] and plain["rating"] is None
    assert plain["source"] == "logs.jsonl"  # the file's name when the record names no source

    only = run_cli("logs", "export", "--json", "--with-feedback").out.splitlines()
    assert [json.loads(line)["id"] for line in only] == [rec["id"]]
    assert len(run_cli("logs", "export", "--all", "--json").out.splitlines()) == 2


def test_text_shows_the_query_and_the_reactions_on_short_lines(run_cli, tmp_path):
    p = write_jsonl(tmp_path / "logs.jsonl", [rated(), chat("plain question", "plain answer")])
    run_cli("ingest", str(p))
    r = run_cli("logs", "export")
    assert r.code == 0, r.err
    blocks = r.out.strip().split("\n\n")
    assert len(blocks) == 2
    block = next(b for b in blocks if "user alice" in b)
    assert "source crm-export" in block and "  query:    what is a tort?" in block
    assert "  feedback: cite the statute" in block and "  action:   like (turn 0)" in block
    assert "  rating:   4.5" in block
    answer = next(line for line in block.splitlines() if line.startswith("  answer:"))
    assert len(answer.removeprefix("  answer:   ")) <= LINE_LIMIT and answer.endswith("…")
    assert "  query:    plain question" in r.out and "user -" in r.out


def test_tenant_is_the_group_option(run_cli, tmp_path):
    p = write_jsonl(tmp_path / "logs.jsonl", [chat("default question", "a"),
                                              chat("acme question", "a", tenant="acme")])
    run_cli("ingest", str(p))
    default = [json.loads(line) for line in run_cli("logs", "export", "--json").out.splitlines()]
    assert [(rec["query"], rec["tenant"]) for rec in default] == [("default question", None)]
    acme = [json.loads(line) for line in run_cli("--tenant", "acme", "logs", "export", "--json").out.splitlines()]
    assert [(rec["query"], rec["tenant"]) for rec in acme] == [("acme question", "acme")]


def test_an_empty_store_prints_no_record(run_cli):
    r = run_cli("logs", "export", "--json")
    assert r.code == 0 and r.out == ""
    r = run_cli("logs", "export")
    assert r.code == 0 and r.out == "" and "no logs stored" in r.err


def test_shorten_and_the_block_of_an_unanswered_log():
    assert shorten("a\n  b\tc") == "a b c"
    cut = shorten("word " * 60)
    assert len(cut) == LINE_LIMIT and cut.endswith("…") and "\n" not in cut
    log = Log.from_messages([Message(role="user", content="only a question")])
    assert text_block(log).splitlines() == [f"{log.id}  user -  source -", "  query:    only a question",
                                            "  answer:   -", "  rating:   -"]
