"""`unolearn ingest langfuse+http://HOST`: a pull from a Langfuse server's public API, against a real HTTP server
on 127.0.0.1 replaying the API's pages (built with the langfuse package's models): cursors, a 429, a page
with a bad observation, feedback on an answer an earlier pull took, and a pull that resumes."""

import base64
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import pytest
from langfuse.api.observations.types.observations_v2meta import ObservationsV2Meta
from langfuse.api.observations.types.observations_v2response import ObservationsV2Response
from langfuse.api.scores.types.get_scores_v3meta import GetScoresV3Meta
from langfuse.api.scores.types.get_scores_v3response import GetScoresV3Response
from langfuse.api.scores.types.score_v3 import ScoreV3_Boolean
from test_importers_langfuse import generation, score_v3

OBSERVATIONS, SCORES = "/api/public/v2/observations", "/api/public/v3/scores"


class Replay:
    """The pages the server answers with, the requests it saw, and failures to answer first."""

    def __init__(self) -> None:
        g1 = generation("g1", "t1", None, "alice", [{"role": "user", "content": "How do I boil an egg?"}],
                        "Put it in water.", 0)
        g2 = generation("g2", "t2", None, "bob", [{"role": "user", "content": "Capital of Peru?"}], "Lima.", 1)
        old = generation("g0", "t0", None, "carol", [{"role": "user", "content": "What is OTLP?"}], "A protocol.", -60)
        bad = json.loads(generation("gx", "tx", None, "dan", [], "x", 2).json())
        bad["input"] = 5  # a page with a bad observation: that one is rejected, its neighbours stored
        self.pages = {
            (OBSERVATIONS, None): ObservationsV2Response(data=[g1], meta=ObservationsV2Meta(cursor="c2")).json(),
            (OBSERVATIONS, "c2"): json.dumps({"data": [bad, json.loads(g2.json())], "meta": {"cursor": None}}),
            (OBSERVATIONS, "t0"): ObservationsV2Response(data=[old], meta=ObservationsV2Meta(cursor=None)).json(),
            (SCORES, None): GetScoresV3Response(data=[
                ScoreV3_Boolean(value=False, name="thumbs", source="API", comment="give the minutes",
                                **score_v3("s1", "g1", "t1")),
                ScoreV3_Boolean(value=True, name="thumbs", source="API", **score_v3("s0", "g0", "t0")),
            ], meta=GetScoresV3Meta(limit=100)).json(),
        }
        self.requests: list[tuple[str, dict, str]] = []
        self.fail: list[int] = [429]  # statuses answered first, whatever is asked

    def answer(self, path: str, query: dict) -> tuple[int, str]:
        if self.fail:
            return self.fail.pop(0), '{"message": "slow down"}'
        key = query.get("traceId") or query.get("cursor")
        return 200, self.pages[(path, key)]


@pytest.fixture
def langfuse_server(monkeypatch):
    replay = Replay()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            url = urlparse(self.path)
            query = {k: v[0] for k, v in parse_qs(url.query).items()}
            replay.requests.append((url.path, query, self.headers.get("Authorization", "")))
            status, body = replay.answer(url.path, query)
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Retry-After", "0")
            self.end_headers()
            self.wfile.write(body.encode())

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("LANGFUSE_PUBLIC_KEY", "pk-lf-test")
    monkeypatch.setenv("LANGFUSE_SECRET_KEY", "sk-lf-test")
    replay.url = f"langfuse+http://127.0.0.1:{server.server_address[1]}"
    yield replay
    server.shutdown()


def test_a_pull_pages_retries_and_takes_the_answers_late_feedback_names(run_cli, langfuse_server):
    r = run_cli("ingest", langfuse_server.url, "--json")
    assert r.code == 0, r.err
    assert r.json() == {"ingested": 3, "duplicates": 0, "rejected": 1}
    assert f"{langfuse_server.url}:2:" in r.err and "input" in r.err  # the bad observation, named by its line
    auth = "Basic " + base64.b64encode(b"pk-lf-test:sk-lf-test").decode()
    assert {a for _, _, a in langfuse_server.requests} == {auth}
    assert [q.get("traceId") for p, q, _ in langfuse_server.requests if p == OBSERVATIONS][-1] == "t0"
    exported = run_cli("logs", "export", "--json").out.splitlines()
    logs = {rec["query"]: rec for rec in map(json.loads, exported)}
    assert logs["How do I boil an egg?"]["feedback"] == ["give the minutes"]
    assert logs["What is OTLP?"]["actions"][0]["kind"] == "like"  # feedback on an answer an earlier pull took

    langfuse_server.requests.clear()
    again = run_cli("ingest", langfuse_server.url, "--json")
    assert again.code == 0, again.err
    assert again.json()["ingested"] == 0
    first = langfuse_server.requests[0][1]
    assert first["fromStartTime"].startswith("2026-12-01T10:02")  # the newest observation pulled, the bad one too
    scores = next(q for p, q, _ in langfuse_server.requests if p == SCORES)
    assert scores["fromTimestamp"].startswith("2026-12-01T10:30")


def test_an_interrupted_pull_stores_nothing_and_resumes(run_cli, langfuse_server):
    langfuse_server.fail = [503] * 6  # the server gives up on this pull
    r = run_cli("ingest", langfuse_server.url)
    assert r.code != 0 and "503" in r.err.strip().splitlines()[-1]
    assert run_cli("logs", "export", "--json").out.strip() == ""
    resumed = run_cli("ingest", langfuse_server.url, "--json")
    assert resumed.code == 0, resumed.err
    assert resumed.json()["ingested"] == 3
    assert all("fromStartTime" not in q for p, q, _ in langfuse_server.requests if p == OBSERVATIONS)


def test_an_answer_nested_too_deeply_is_a_clear_error(run_cli, langfuse_server):
    langfuse_server.pages[(OBSERVATIONS, None)] = "[" * 5000  # Python's parser raises RecursionError on it
    r = run_cli("ingest", langfuse_server.url)
    assert r.code != 0 and r.err.strip().splitlines()[-1].endswith("the answer is not JSON")
    assert "Traceback" not in r.err


def test_a_pull_without_keys_says_so(run_cli, langfuse_server, monkeypatch):
    monkeypatch.delenv("LANGFUSE_SECRET_KEY")
    r = run_cli("ingest", langfuse_server.url)
    assert r.code != 0 and "LANGFUSE_SECRET_KEY" in r.err and langfuse_server.requests == []
    keyed = langfuse_server.url.replace("http://", "http://pk:sk@")  # a URL with keys would be stored as it is
    r = run_cli("ingest", keyed)
    assert r.code != 0 and "not in the URL" in r.err and langfuse_server.requests == []


def test_run_pulls_too(run_cli, langfuse_server):
    r = run_cli("run", langfuse_server.url, "--stop-after", "ingest", "--json")
    assert r.code == 0, r.err
    assert (r.json()["ingest"]["ingested"], r.json()["ingest"]["rejected"]) == (3, 1)
