"""LangSmith runs and feedback, built and serialised with the ``langsmith`` package's own schema models (as
``Client.list_runs`` and ``Client.list_feedback`` return them), with LangChain's serialised messages in the LLM
runs, read by content and ingested as conversations with their feedback and users."""

import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from conftest import write_jsonl
from langsmith.schemas import Feedback, FeedbackSourceBase, Run

from unolearn.readers import read_logs
from unolearn.records import Log, Rejected

T0 = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
ROLE_OF = {"SystemMessage": "system", "HumanMessage": "human", "AIMessage": "ai", "AIMessageChunk": "AIMessageChunk"}


def lc(cls: str, text: str) -> dict:
    """A message as LangChain serialises it into a run (``dumpd``)."""
    return {"lc": 1, "type": "constructor", "id": ["langchain", "schema", "messages", cls],
            "kwargs": {"content": text, "type": ROLE_OF[cls]}}


def uid(n: int) -> uuid.UUID:
    return uuid.UUID(int=n)


def chat_run(n: int, trace: int, messages: list, answer: str, minute: int, parent: int | None = None,
             **metadata) -> Run:
    """A ChatOpenAI call as LangChain traces it: a batch of one message list, one generation with its message."""
    return Run(id=uid(n), trace_id=uid(trace), parent_run_id=uid(parent) if parent else None, name="ChatOpenAI",
               run_type="llm", start_time=T0 + timedelta(minutes=minute), end_time=T0 + timedelta(minutes=minute + 1),
               inputs={"messages": [messages]},
               outputs={"generations": [[{"text": answer, "type": "ChatGenerationChunk",
                                          "message": lc("AIMessageChunk", answer)}]],
                        "llm_output": None, "run": None, "type": "LLMResult"},
               extra={"metadata": {"ls_provider": "openai", "ls_model_name": "gpt-x", **metadata}},
               session_id=uid(999), dotted_order=f"20261201T10{minute:02d}00000000Z{uid(n)}")


def feedback(n: int, run: int | None, trace: int, key: str, source: str = "api", **kw) -> Feedback:
    return Feedback(id=uid(5000 + n), run_id=uid(run) if run else None, trace_id=uid(trace), key=key,
                    created_at=T0 + timedelta(hours=1), modified_at=T0 + timedelta(hours=1),
                    feedback_source=FeedbackSourceBase(type=source), **kw)


SYSTEM = lc("SystemMessage", "Be a helpdesk.")
Q1 = lc("HumanMessage", "How do I reset my router?")
A1 = "Unplug it."
Q2 = lc("HumanMessage", "Numbered steps please")


def records() -> list:
    root = Run(id=uid(10), trace_id=uid(10), name="helpdesk", run_type="chain", start_time=T0,
               inputs={"question": "How do I reset my router?"}, outputs={"output": A1},
               extra={"metadata": {"thread_id": "th-1"}})
    france = Run(id=uid(30), trace_id=uid(30), name="openai.chat.completions", run_type="llm",
                 start_time=T0 + timedelta(minutes=5), extra={"metadata": {"user_id": "bob"}},
                 inputs={"messages": [{"role": "user", "content": "Capital of France?"}], "model": "gpt-x"},
                 outputs={"id": "chatcmpl-1", "object": "chat.completion",
                          "choices": [{"index": 0, "message": {"role": "assistant", "content": "Paris."}}]})
    bad = chat_run(40, 40, [lc("HumanMessage", "hi")], "hello", 7)
    return [
        root,
        chat_run(11, 10, [SYSTEM, Q1], A1, 0, parent=10, thread_id="th-1", user_id="alice"),
        Run(id=uid(12), trace_id=uid(10), parent_run_id=uid(10), name="search", run_type="tool", start_time=T0,
            inputs={"query": "router reset"}, outputs={"output": "docs"}),
        # the thread's next trace resends the history
        chat_run(21, 20, [SYSTEM, Q1, lc("AIMessage", A1), Q2], "1. Unplug. 2. Wait.", 2, thread_id="th-1",
                 user_id="alice"),
        france,
        bad.model_copy(update={"inputs": {"messages": [[{"role": "alien", "content": "?"}]]}}),
        feedback(1, 11, 10, "user_score", score=0, comment="too short, give steps"),
        feedback(2, 30, 30, "correctness", source="model", score=0, comment="the judge says wrong"),
        feedback(3, 30, 30, "thumbs", value="thumbs_up"),
        feedback(4, 30, 30, "correction", correction={"output": "Paris is the capital of France."}),
        feedback(5, 10, 10, "quality", score=0.8),  # on the trace's root run: its first answer
        feedback(6, 404, 404, "user_score", score=1),
    ]


def export(tmp_path: Path) -> Path:
    return write_jsonl(tmp_path / "langsmith-runs.jsonl", [r.model_dump_json() for r in records()])


def test_langsmith_runs_and_feedback_become_conversations(tmp_path):
    items = [item for _, item, _ in read_logs(export(tmp_path)) if item is not None]
    logs = {log.query: log for log in items if isinstance(log, Log)}
    assert set(logs) == {"How do I reset my router?", "Capital of France?"}
    router = logs["How do I reset my router?"]
    assert [m.role for m in router.messages] == ["system", "user", "assistant", "user", "assistant"]
    assert router.first_answer == "Unplug it." and router.user == "alice"
    assert router.feedback == ("Numbered steps please", "too short, give steps")
    assert [(a.kind, a.turn) for a in router.actions] == [("dislike", 0)]
    assert router.rating == 0.8 and router.metadata["conversation"] == "th-1"
    france = logs["Capital of France?"]
    # the evaluator's feedback (a model's) is no user's; the thumbs-up and the correction are
    assert [(a.kind, a.edited) for a in france.actions] == [("like", None),
                                                            ("edit", "Paris is the capital of France.")]
    assert france.user == "bob" and france.feedback == () and france.first_answer == "Paris."
    rejected = sorted((r.line, r.reason) for r in items if isinstance(r, Rejected))
    assert [line for line, _ in rejected] == [6, 12]
    assert "alien" in rejected[0][1] and str(uid(404)) in rejected[1][1]


def test_a_json_array_named_or_detected(tmp_path):
    path = tmp_path / "data.json"
    path.write_text("[\n" + ",\n".join(r.model_dump_json() for r in records()) + "\n]\n", encoding="utf-8")
    named = [i for _, i, _ in read_logs(path, "langsmith") if isinstance(i, Log)]
    auto = [i for _, i, _ in read_logs(path) if isinstance(i, Log)]
    assert [log.id for log in named] == [log.id for log in auto] and len(auto) == 2


def test_prompts_and_a_page_of_runs(tmp_path):
    run = Run(id=uid(1), trace_id=uid(1), name="OpenAI", run_type="llm", start_time=T0,
              inputs={"prompts": ["Summarise this contract"]},
              outputs={"generations": [[{"text": "It is a lease.", "generation_info": None}]]},
              extra={"metadata": {"conversation_id": "c-9", "tenant": "acme", "user_id": 42}})
    page = {"runs": [json.loads(run.model_dump_json())], "cursors": {"next": None}}
    thumbs = feedback(1, 1, 1, "thumbs", score=False, comment="cite the clauses")
    path = write_jsonl(tmp_path / "page.jsonl", [page, thumbs.model_dump_json()])
    (log,) = [i for _, i, _ in read_logs(path) if i is not None]
    assert (log.query, log.first_answer) == ("Summarise this contract", "It is a lease.")
    assert log.user == "42" and log.tenant == "acme" and log.metadata["conversation"] == "c-9"
    assert log.feedback == ("cite the clauses",) and [a.kind for a in log.actions] == ["dislike"]
