"""Each platform's export through the main job: `unolearn run` on a Langfuse, a LangSmith, an OpenTelemetry GenAI
and an OpenInference file (records written from the platforms' documented schemas; the importers' own tests
build theirs with the platforms' packages) reaches a published plan, on the fake server and the tiny model."""

import json
from pathlib import Path

from conftest import write_jsonl
from test_pipeline import server, workspace_config  # noqa: F401 — server: the fake OpenAI server fixture
from tiny_model import tiny_model_dir  # noqa: F401

from unolearn.store import Workspace

FOLLOW_UP = "Too long, keep it short."


def rice(i: int) -> tuple[str, str]:
    return f"how do I cook rice, case {i}", f"A long answer about rice {i}."


def langfuse(tmp_path: Path) -> Path:
    recs = []
    for i in (0, 1):
        q, a = rice(i)
        for n, (asked, answered) in enumerate(((q, a), (FOLLOW_UP, "Rice: rinse, boil, rest."))):
            recs.append({"id": f"t{i}-{n}", "timestamp": f"2026-12-01T10:0{n}:00Z", "sessionId": f"s{i}",
                         "userId": f"lf-user-{i}", "input": [{"role": "user", "content": asked}],
                         "output": answered, "observations": []})
    recs.append({"id": "t-tort", "timestamp": "2026-12-01T10:00:00Z", "userId": "lf-user-9",
                 "input": [{"role": "user", "content": "what is tort law"}], "output": "Tort law is ...",
                 "observations": [], "scores": [{"id": "sc", "name": "c", "dataType": "TEXT", "value": 0,
                                                 "stringValue": "thanks", "source": "API"}]})
    return write_jsonl(tmp_path / "langfuse.jsonl", recs)


def attr(key: str, value: str) -> dict:
    return {"key": key, "value": {"stringValue": value}}


def otel(tmp_path: Path) -> Path:
    spans = []
    for i in (2, 3):
        q, a = rice(i)
        first = [{"role": "user", "parts": [{"type": "text", "content": q}]}]
        resent = [*first, {"role": "assistant", "parts": [{"type": "text", "content": a}]},
                  {"role": "user", "parts": [{"type": "text", "content": FOLLOW_UP}]}]
        for n, (sent, answer) in enumerate(((first, a), (resent, "Rinse, boil, rest."))):
            out = f'[{{"role": "assistant", "parts": [{{"type": "text", "content": "{answer}"}}]}}]'
            spans.append({"traceId": f"{i:032x}", "spanId": f"{i * 10 + n:016x}", "name": "chat",
                          "startTimeUnixNano": str(1_764_000_000_000_000_000 + n * 10**9),
                          "attributes": [attr("gen_ai.conversation.id", f"c{i}"), attr("user.id", f"ot-user-{i}"),
                                         attr("gen_ai.input.messages", json.dumps(sent)),
                                         attr("gen_ai.output.messages", out)]})
    return write_jsonl(tmp_path / "otel.json", [{"resourceSpans": [{"scopeSpans": [{"spans": spans}]}]}])


def langsmith(tmp_path: Path) -> Path:
    recs = []
    for i in (4, 5):
        q, a = rice(i)
        run = f"00000000-0000-0000-0000-00000000000{i}"
        recs.append({"id": run, "trace_id": run, "name": "ChatOpenAI", "run_type": "llm",
                     "start_time": "2026-12-01T10:00:00", "extra": {"metadata": {"user_id": f"ls-user-{i}"}},
                     "inputs": {"messages": [[{"type": "human", "content": q}]]},
                     "outputs": {"generations": [[{"text": a, "message": {"type": "ai", "content": a}}]]}})
        recs.append({"id": f"f{i}", "run_id": run, "key": "user_feedback", "score": 0, "comment": FOLLOW_UP})
    return write_jsonl(tmp_path / "langsmith.jsonl", recs)


def openinference(tmp_path: Path) -> Path:
    spans, notes = [], []
    for i in (6, 7):
        q, a = rice(i)
        span = f"{i:016x}"
        spans.append({"traceId": f"{i:032x}", "spanId": span, "name": "ChatCompletion",
                      "startTimeUnixNano": "1764000000000000000",
                      "attributes": [attr("openinference.span.kind", "LLM"), attr("user.id", f"oi-user-{i}"),
                                     attr("llm.input_messages.0.message.role", "user"),
                                     attr("llm.input_messages.0.message.content", q),
                                     attr("llm.output_messages.0.message.role", "assistant"),
                                     attr("llm.output_messages.0.message.content", a)]})
        notes.append({"span_id": span, "name": "feedback", "annotator_kind": "HUMAN",
                      "result": {"label": "thumbs_down", "explanation": FOLLOW_UP}})
    return write_jsonl(tmp_path / "phoenix.jsonl", [{"resourceSpans": [{"scopeSpans": [{"spans": spans}]}]}, *notes])


def test_run_on_every_platform_export_publishes_a_plan(server, run_cli, ws_dir, tmp_path, tiny_model_dir):  # noqa: F811
    ws_dir.mkdir(parents=True)
    (ws_dir / "config.yaml").write_text(workspace_config(server.url, str(tiny_model_dir), epochs=1))
    files = [langfuse(tmp_path), otel(tmp_path), langsmith(tmp_path), openinference(tmp_path)]
    r = run_cli("run", *map(str, files), "--json", timeout=600)
    assert r.code == 0, r.err
    out = r.json()
    assert (out["ingest"]["ingested"], out["ingest"]["rejected"]) == (9, 0)
    assert out["distill"]["usable_feedback"] == 8 and out["distill"]["filtered_as_noise"] == 1
    assert out["cluster"]["n_clusters"] == 1
    assert {p["system"] for p in out["select"]} >= {"uno", "uno-guided"}
    exported = [line for line in run_cli("logs", "export", "--json").out.splitlines() if line]
    assert len(exported) == 9
    users = {json.loads(line)["user"] for line in exported}
    assert {"lf-user-0", "ot-user-2", "ls-user-4", "oi-user-6"} <= users
    with Workspace.open(ws_dir) as ws:
        assert ws.latest_snapshot_id() is not None  # the plan the proxy serves, published
