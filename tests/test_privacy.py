"""Personal data end to end: redaction before anything is stored (ingest of every format, rejected records,
the proxy's recorder), and forgetting a user after `run` and `serve`, on each store backend; the bytes of the
SQLite file, its WAL and the artifacts are scanned. Each defence is shown failing without it."""

from __future__ import annotations

import json
from datetime import UTC
from pathlib import Path

import httpx
import pytest
from conftest import chat, each_store, write_jsonl  # noqa: F401
from fake_openai import FakeOpenAI
from test_pipeline import workspace_config
from tiny_model import tiny_model_dir  # noqa: F401

from unolearn.bench.server import serve_asgi
from unolearn.config import load_backends
from unolearn.forget import RetentionConfig, apply_retention
from unolearn.serve import ServeConfig, create_app
from unolearn.store import Workspace

EMAILS = ["bob.smith@corp-mail.com", "li.wei+cases@example.cn", "ops@data.example.org", "zoe@mail.example.io"]
PHONES = ["+1 415-555-0132", "13812345678", "+44 20 7946 0958", "+49 30 901820"]
SERVED_PHONE = "+33 1 42 68 53 00"


@pytest.fixture
def store_url(each_store):
    return each_store


def respond(body):
    """Rules are the user's own words (the worst case: everything they wrote travels on); revisions echo them."""
    text = "\n".join(m["content"] for m in body["messages"])
    said = text.split("afterwards")[-1].split("## ")[-1].strip()[-160:]
    if "You study requests" in text:
        return json.dumps({"rules": ["Answer directly."]})
    if "You read what a user wrote" in text:
        return "yes"
    if "You study conversations" in text:
        return json.dumps({"rules": [said]})
    if "You grade an answer" in text:
        return json.dumps({"reason": "ok", "score": 9 if "brief" in text.rsplit("## Answer", 1)[1] else 4})
    if "Rewrite the earlier answer" in text:
        return f"A brief answer. {said}"
    return "A brief answer about the question." if body["model"] != "fake-model" else "A long answer about it."


def user_logs(path: Path) -> Path:
    """Eight logs of four users; each query carries an e-mail and a phone number, each feedback the user's marker
    (a feedback with contact data would make a rule that screening quarantines, and nothing would be trained)."""
    recs = [chat(f"how do I cook rice, case {i}? I am {EMAILS[i % 4]}, call {PHONES[i % 4]}",
                 f"A long answer about rice {i}.", f"Too long, keep it short. quokka{i % 4}",
                 user=f"u{i % 4}") for i in range(8)]
    return write_jsonl(path, recs)


def stored_text(ws_dir: Path, store: str | None) -> str:
    """Every value of every table of the store, as text (both databases)."""
    with Workspace.open(ws_dir, store) as ws:
        tables = [r[0] for r in ws.conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'" if store is None else
            "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()")]
        return "\n".join(str(row) for t in tables for row in ws.conn.execute(f"SELECT * FROM {t}"))


def file_bytes(ws_dir: Path) -> bytes:
    """The bytes of every file of the workspace folder: the SQLite file, its WAL, the artifacts."""
    return b"".join(p.read_bytes() for p in sorted(ws_dir.rglob("*")) if p.is_file())


def assert_absent(needles: list[str], ws_dir: Path, store: str | None) -> None:
    text, raw = stored_text(ws_dir, store), file_bytes(ws_dir)
    for needle in needles:
        assert needle not in text, f"{needle!r} is in the store"
        assert needle.encode() not in raw, f"{needle!r} is in the workspace's files"


def test_run_stores_no_identifier_and_forget_reaches_everything_derived(run_cli, ws_dir, tmp_path, tiny_model_dir,
                                                                       store_url):
    fake = FakeOpenAI(dim=16)
    fake.responder = respond
    with fake.running():
        ws_dir.mkdir(parents=True)
        (ws_dir / "config.yaml").write_text(workspace_config(fake.url, str(tiny_model_dir)))
        r = run_cli("run", str(user_logs(tmp_path / "logs.jsonl")), "--json", timeout=600)
        assert r.code == 0, r.err
        sent = json.dumps([q.body for q in fake.requests()])
        assert "<EMAIL_1>" in sent and "quokka1" in sent  # the user's words reached the model, redacted
        assert not any(e in sent for e in EMAILS) and "13812345678" not in sent
        assert_absent(EMAILS + PHONES, ws_dir, store_url)
        trained = {m["id"] for m in r.json()["train"]}
        assert trained and any((ws_dir / "artifacts" / "modules" / m).exists() for m in trained)

        answer, rid = serve_and_feedback(ws_dir, store_url, fake)
        assert answer["route"] != "base"
        assert SERVED_PHONE not in stored_text(ws_dir, store_url)  # the recorder redacted it
        assert run_cli("run", "--stop-after", "ingest").code == 0  # the served answer becomes a log

        dry = run_cli("forget", "--user", "u1", "--dry-run", "--json")
        assert dry.code == 0 and dry.json()["removed"]["logs"] == 3, dry.out  # 2 ingested + 1 served
        assert "quokka1" in stored_text(ws_dir, store_url)
        gone = run_cli("forget", "--user", "u1", "--json")
        assert gone.code == 0, gone.err
        out = gone.json()
        assert {m["id"] for m in out["retired"]} >= trained - {m for m in trained if m.startswith("guide")}
        assert out["removed"]["served"] == 1 and out["removed"]["feedback"] == 1 and out["removed"]["llm_cache"] > 0
        assert_absent(["quokka1", rid], ws_dir, store_url)
        assert not any((ws_dir / "artifacts" / "modules" / m).exists() for m in trained)
        assert "quokka0" in stored_text(ws_dir, store_url)  # other users' data stays

        with Workspace.open(ws_dir, store_url) as ws:
            snapshot = ws.snapshot()
        assert not {m["id"] for m in out["retired"]} & {p[3] for p in snapshot["plans"]}  # never served again
        again = run_cli("run", "--json", timeout=600)
        assert again.code == 0, again.err
        assert any(not m["reused"] for m in again.json()["train"]), "the next run retrains what was retired"
        assert_absent(["quokka1"], ws_dir, store_url)

        nothing = run_cli("forget", "--user", "nobody")
        assert nothing.code == 0 and "nothing matched" in nothing.out


def serve_and_feedback(ws_dir: Path, store: str | None, fake: FakeOpenAI) -> tuple[dict, str]:
    """One request of user u1 through the real proxy, with a phone number and u1's marker, and its feedback."""
    backends = load_backends(ws_dir / "config.yaml")
    app = create_app(ws_dir, ServeConfig(upstream=fake.url), store=store, backends=backends)
    with serve_asgi(app, lifespan="on") as url, httpx.Client(base_url=url, timeout=30) as client:
        resp = client.post("/v1/chat/completions", json={
            "model": "fake-model", "user": "u1",
            "messages": [{"role": "user", "content": f"how do I cook rice? quokka1, call {SERVED_PHONE}"}]})
        assert resp.status_code == 200, resp.text
        assert SERVED_PHONE in json.dumps([q.body for q in fake.requests()])  # the upstream got the user's words
        rid = resp.json()["id"]
        fb = client.post("/v1/feedback", json={"response_id": rid, "text": f"too long quokka1 {SERVED_PHONE}",
                                                "user": "u1"})
        assert fb.status_code == 200
        return {"route": resp.headers["x-unolearn-route"]}, rid


def test_ingest_redacts_every_format_and_rejected_records(run_cli, ws_dir, tmp_path, store_url):
    path = write_jsonl(tmp_path / "mixed.jsonl", [
        chat("mail bob.smith@corp-mail.com", "ok", "call 13812345678", user="a"),
        {"test_idx": 1, "dataset_name": "x", "lang": "zh", "input_prompt": "身份证11010519491231002X怎么补办",
         "dialog": [{"role": "user", "content": "身份证11010519491231002X怎么补办"},
                    {"role": "assistant", "content": "去派出所"},
                    {"role": "user", "content": "卡号4111 1111 1111 1111"}]},
        {"id": "s1", "conversations": [{"from": "human", "value": "my ip is 203.0.113.77"},
                                       {"from": "gpt", "value": "ok"}, {"from": "human", "value": "IBAN GB82 WEST "
                                                                                             "1234 5698 7654 32"}]},
        '{"messages": [{"role": "robot", "content": "ssn 536-22-8726 and eve@evil.example.org"}]}',
    ])
    r = run_cli("ingest", str(path), "--json")
    assert r.code == 0 and r.json() == {"ingested": 3, "duplicates": 0, "rejected": 1}, r.err
    assert "eve@evil.example.org" not in r.err
    planted = ["bob.smith@corp-mail.com", "13812345678", "11010519491231002X", "4111 1111 1111 1111", "203.0.113.77",
               "GB82 WEST 1234 5698 7654 32", "536-22-8726", "eve@evil.example.org"]
    assert_absent(planted, ws_dir, store_url)
    text = stored_text(ws_dir, store_url)
    for placeholder in ("<EMAIL_1>", "<PHONE_1>", "<CN_ID_1>", "<CARD_1>", "<IP_1>", "<IBAN_1>", "<SSN_1>"):
        assert placeholder in text


def test_without_redaction_the_identifiers_are_stored_and_a_warning_says_so(run_cli, ws_dir, tmp_path, store_url):
    ws_dir.mkdir(parents=True)
    (ws_dir / "config.yaml").write_text("redact: {enabled: false}\n")
    r = run_cli("ingest", str(write_jsonl(tmp_path / "a.jsonl", [chat("mail bob.smith@corp-mail.com", "ok", "no")])))
    assert r.code == 0 and "redaction is off" in r.err
    assert "bob.smith@corp-mail.com" in stored_text(ws_dir, store_url)  # the attack the default prevents


def test_retention_forgets_what_was_ingested_long_ago(ws, tmp_path, store_url):
    from datetime import datetime, timedelta

    from unolearn.ingest import ingest

    ingest(ws, [write_jsonl(tmp_path / "a.jsonl", [chat("old question", "a", "too long", user="u")])])
    assert apply_retention(ws, RetentionConfig(days=None)) is None
    assert apply_retention(ws, RetentionConfig(days=30)).removed["logs"] == 0
    later = datetime.now(UTC) + timedelta(days=31)
    assert apply_retention(ws, RetentionConfig(days=30), now=later).removed["logs"] == 1
    assert ws.count("logs") == 0


#: A record each format rejects, naming its user where that format does (Langfuse ``userId``, LangSmith
#: ``extra.metadata.user_id``, an OTLP resource's ``user.id``, OpenInference's nested ``user.id``, an openai
#: ``user`` that is an e-mail address: redacted in the raw text, found before), and a line cut short.
REJECTED_OF_ALICE = {
    "langfuse": {"id": "t1", "timestamp": "2024-01-01T00:00:00Z", "input": 42, "output": "my secret diagnosis",
                 "userId": "alice"},
    "langsmith": {"id": "r1", "run_type": "llm", "trace_id": "t1", "inputs": 5, "outputs": "my secret diagnosis",
                  "extra": {"metadata": {"user_id": "alice"}}},
    "otel": {"resourceSpans": [{
        "resource": {"attributes": [{"key": "user.id", "value": {"stringValue": "alice"}}]},
        "scopeSpans": [{"spans": [{"traceId": "t1", "spanId": "s1", "startTimeUnixNano": "1700000000000000000",
                                   "attributes": [{"key": "gen_ai.input.messages", "value": {"stringValue": "[5]"}},
                                                  {"key": "n", "value": {"stringValue": "my secret diagnosis"}}]}]}]}]},
    "openinference": {"context": {"trace_id": "t1", "span_id": "s1"}, "span_kind": "LLM",
                      "attributes": {"llm": {"input_messages": 5}, "user": {"id": "alice"},
                                     "output": {"value": "my secret diagnosis"}}},
    "openai-email-user": chat("my secret diagnosis", "a", rating="good", user="alice@example.com"),
    "cut-short": '{"messages": [{"role": "user", "content": "my secret diagnosis"}], "user": "alice", "ra',
}


@pytest.mark.parametrize("fmt", REJECTED_OF_ALICE)
def test_forget_reaches_a_rejected_record_whatever_its_format_calls_the_user(ws, tmp_path, store_url, fmt):
    from unolearn.forget import forget
    from unolearn.ingest import ingest

    user = "alice@example.com" if fmt == "openai-email-user" else "alice"
    assert ingest(ws, [write_jsonl(tmp_path / "x.jsonl", [REJECTED_OF_ALICE[fmt]])], progress=False).rejected == 1
    assert "my secret diagnosis" in str(ws.conn.execute("SELECT raw FROM rejected").fetchall())
    assert forget(ws, users=(user[:2], "bob")).nothing  # an id is matched whole: forgetting 'al' keeps alice's
    assert forget(ws, users=(user,)).removed["rejected"] == 1  # before: only a top-level 'user' was matched
    assert ws.count("rejected") == 0


def test_forget_finds_the_user_in_a_rejected_record_kept_before_users_were_recorded(ws, store_url):
    from unolearn.forget import forget
    from unolearn.records import Rejected

    raw = json.dumps({"id": "r1", "run_type": "llm", "extra": json.dumps({"metadata": {"user_id": 7}})})
    ws.add_logs([], [Rejected(file="old.jsonl", line=1, reason="langsmith: inputs: missing", raw=raw)])
    assert forget(ws, users=("7",)).removed["rejected"] == 1
