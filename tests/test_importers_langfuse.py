"""Langfuse exports, built and serialised with the ``langfuse`` package's own API models (observations v2
pages, scores v3 and v1), read by content and ingested as conversations with their feedback and users."""

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from conftest import write_jsonl
from langfuse.api.commons.types.boolean_score import BooleanScore
from langfuse.api.commons.types.observation_v2 import ObservationV2
from langfuse.api.observations.types.observations_v2meta import ObservationsV2Meta
from langfuse.api.observations.types.observations_v2response import ObservationsV2Response
from langfuse.api.scores.types.get_scores_v3meta import GetScoresV3Meta
from langfuse.api.scores.types.get_scores_v3response import GetScoresV3Response
from langfuse.api.scores.types.score_subject_v3 import ScoreSubjectV3_Observation
from langfuse.api.scores.types.score_v3 import ScoreV3_Boolean, ScoreV3_Numeric

from unolearn.ingest import ingest
from unolearn.readers import read_logs
from unolearn.records import Log, Rejected
from unolearn.store.spool import Spool

T0 = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)


def generation(gid: str, trace: str, session: str | None, user: str, messages: list, answer: str,
               minute: int) -> ObservationV2:
    return ObservationV2(id=gid, trace_id=trace, start_time=T0 + timedelta(minutes=minute), project_id="p1",
                         type="GENERATION", user_id=user, session_id=session, input=messages,
                         output={"role": "assistant", "content": answer}, model="gpt-x")


def score_v3(sid: str, observation: str, trace: str, **kw) -> dict:
    common = {"id": sid, "project_id": "p1", "timestamp": T0 + timedelta(minutes=30), "environment": "default",
              "created_at": T0, "updated_at": T0,
              "subject": ScoreSubjectV3_Observation(id=observation, trace_id=trace)}
    return {**common, **kw}


def page(items, model, meta) -> str:
    return model(data=items, meta=meta).json()


def export(tmp_path: Path) -> Path:
    q1 = [{"role": "system", "content": "Be a helpdesk."}, {"role": "user", "content": "How do I reset my router?"}]
    a1 = "Unplug it."
    q2 = [*q1, {"role": "assistant", "content": a1}, {"role": "user", "content": "Give me numbered steps"}]
    observations = [
        generation("g1", "t1", "s1", "alice", q1, a1, 0),
        generation("g2", "t2", "s1", "alice", q2, "1. Unplug it. 2. Wait.", 2),  # resends the history
        generation("g3", "t3", None, "bob", [{"role": "user", "content": "Capital of France?"}], "Paris.", 5),
    ]
    scores = [
        ScoreV3_Boolean(value=False, name="thumbs", source="API", comment="too short, give steps",
                        **score_v3("sc1", "g1", "t1")),
        ScoreV3_Numeric(value=0.1, name="llm-judge", source="EVAL", comment="judge says bad",
                        **score_v3("sc2", "g3", "t3")),
        ScoreV3_Boolean(value=True, name="thumbs", source="ANNOTATION", **score_v3("sc3", "g3", "t3")),
        ScoreV3_Boolean(value=True, name="thumbs", source="API", **score_v3("sc4", "g-missing", "t9")),
    ]
    return write_jsonl(tmp_path / "langfuse-export.jsonl", [
        page(observations[:2], ObservationsV2Response, ObservationsV2Meta(cursor="c1")),
        '{"id": "x", "traceId": "t7", "type": "GENERATION", "startTime": "2026-12-01T10:00:00Z", "input": 5}',
        page(observations[2:], ObservationsV2Response, ObservationsV2Meta(cursor=None)),
        page(scores, GetScoresV3Response, GetScoresV3Meta(limit=50)),
        BooleanScore(id="sc5", trace_id="t3", name="thumbs", source="API", value=1, string_value="True",
                     timestamp=T0, created_at=T0, updated_at=T0, environment="default",
                     comment="great, short").json(),
    ])


def test_a_langfuse_export_becomes_conversations_with_feedback(tmp_path):
    items = [item for _, item, _ in read_logs(export(tmp_path)) if item is not None]
    logs = {log.query: log for log in items if isinstance(log, Log)}
    assert set(logs) == {"How do I reset my router?", "Capital of France?"}
    router = logs["How do I reset my router?"]
    assert router.first_answer == "Unplug it."
    # the session's follow-up turn, and the thumbs-down's comment, are the first answer's feedback
    assert router.feedback == ("Give me numbered steps", "too short, give steps")
    assert [(a.kind, a.turn) for a in router.actions] == [("dislike", 0)]
    assert router.user == "alice" and router.metadata["conversation"] == "s1"
    assert [m.role for m in router.messages] == ["system", "user", "assistant", "user", "assistant"]
    france = logs["Capital of France?"]
    # the evaluator's score (source EVAL) is no user's feedback; the annotation and the v1 score are
    assert [a.kind for a in france.actions] == ["like", "like"] and france.feedback == ("great, short",)
    assert france.user == "bob"
    rejected = sorted((r.line, r.reason) for r in items if isinstance(r, Rejected))
    assert rejected[0][0] == 2 and "input" in rejected[0][1]
    assert rejected[1][0] == 4 and "g-missing" in rejected[1][1]


def test_a_named_format_and_detection_by_content(tmp_path):
    path = export(tmp_path)
    renamed = path.rename(tmp_path / "data.json")  # the name says nothing: the content does
    named = [i for _, i, _ in read_logs(renamed, "langfuse") if isinstance(i, Log)]
    auto = [i for _, i, _ in read_logs(renamed) if isinstance(i, Log)]
    assert [log.id for log in named] == [log.id for log in auto] and len(auto) == 2


def test_a_trace_with_its_scores_inline(tmp_path):
    trace = {"id": "t1", "timestamp": "2026-12-01T10:00:00Z", "userId": 42, "metadata": {"tenant": "acme"},
             "input": json.dumps([{"role": "user", "content": "Summarise this contract"}]),
             "output": "It is a lease.", "observations": [],
             "scores": [{"id": "s", "name": "feedback", "dataType": "CATEGORICAL", "value": 0,
                         "stringValue": "thumbs down", "comment": "cite the clauses", "source": "API"}]}
    (log,) = [i for _, i, _ in read_logs(write_jsonl(tmp_path / "t.jsonl", [trace])) if i is not None]
    assert log.query == "Summarise this contract" and log.user == "42" and log.tenant == "acme"
    assert log.feedback == ("cite the clauses",) and log.actions[0].kind == "dislike"


def test_an_export_is_redacted_and_its_scratch_spool_removed(ws, tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    import tempfile
    monkeypatch.setattr(tempfile, "tempdir", None)  # TMPDIR read again
    with Spool():
        assert len(list((tmp_path / "tmp").glob("unolearn-spool-*"))) == 1  # where a spool lives during an ingest
    trace = {"id": "t1", "timestamp": "2026-12-01T10:00:00Z", "input": "Mail me at bob.smith@example.com",
             "output": "Sure.", "observations": [],
             "scores": [{"id": "s", "name": "fb", "dataType": "BOOLEAN", "value": 0, "source": "API",
                         "comment": "no, write to alice@example.org"}]}
    assert ingest(ws, [write_jsonl(tmp_path / "t.jsonl", [trace])], progress=False).ingested == 1
    (log,) = ws.iter_logs()
    assert "@example" not in log.query + "".join(log.feedback) and "<EMAIL_1>" in log.query
    assert list((tmp_path / "tmp").glob("unolearn-spool-*")) == []  # the spool (unredacted text) left with it


def test_an_export_whose_first_line_is_broken_is_still_told_by_its_content(tmp_path):
    good = export(tmp_path).read_text(encoding="utf-8")
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"id": "t0", "timestamp": \n' + good, encoding="utf-8")
    items = [i for _, i, _ in read_logs(broken) if i is not None]
    assert sum(isinstance(i, Log) for i in items) == 2
    assert [r.line for r in items if isinstance(r, Rejected)][0] == 1
