import json

import numpy as np
import pytest
from doubles import HashEmbedder, MockChatModel

from unolearn.assess import AssessConfig, aggregate, embedding_novelty, run, yes_probability
from unolearn.backends import ChatResult, Models
from unolearn.errors import BackendError, ConfigError, InputError
from unolearn.records import Log, Message
from unolearn.store import now


def add_clustered(ws, cluster: int, q: str, feedback_rules: list[str], prior_rules: list[str]) -> str:
    log = Log.from_messages([Message(role="user", content=q), Message(role="assistant", content="a"),
                             Message(role="user", content="feedback")], source="t")
    ws.add_logs([log])
    with ws.transaction() as c:
        c.execute("INSERT OR IGNORE INTO clusters VALUES (?,?,?,?,?)",
                  (cluster, 1, np.zeros(4, np.float32).tobytes(), "hash", now()))
        for kind, rules in (("feedback", feedback_rules), ("prior", prior_rules)):
            c.execute("INSERT INTO rules VALUES (?,?,?,?,?)", (log.id, kind, json.dumps(rules), "m", now()))
        c.execute("INSERT INTO cluster_members VALUES (?,?)", (log.id, cluster))
    return log.id


def test_each_scorer_has_its_own_default_threshold():
    # 0.45 is the reference's, on P(not covered); e5's 1 − cosine separated covered from new rules at
    # 0.084 on the hand-labelled items of scripts/data/gap_calibration.jsonl (docs/embedded-model.md)
    assert AssessConfig(scorer="logprob").threshold == 0.45
    assert AssessConfig().threshold == AssessConfig(scorer="embedding").threshold == 0.084
    assert AssessConfig(threshold=0.3).threshold == 0.3


def test_embedding_novelty():
    e = HashEmbedder(dim=256)
    nov = embedding_novelty(e, ["cite the statute number", "use a table"], ["cite the statute number please"])
    assert nov[0] < 0.3 and nov[1] > 0.7
    assert embedding_novelty(e, ["a", "b"], []) == [1.0, 1.0]


def test_aggregate_mean_of_per_log_min():
    gaps = aggregate([(0, [0.2, 0.9]), (0, [0.4]), (1, [0.8, 0.6])], threshold=0.45)
    g0, g1 = gaps
    assert g0.gap == pytest.approx(0.3) and g0.gap_max == pytest.approx(0.65) and g0.plan == "primary"
    assert g0.gap_mean == pytest.approx((0.55 + 0.4) / 2) and g0.n_logs == 2
    assert g1.gap == pytest.approx(0.6) and g1.plan == "reflective"


def test_run_stores_gaps_and_plans(ws):
    # cluster 0: feedback the prior already knew; cluster 1: feedback the prior never mentions
    for i in range(3):
        add_clustered(ws, 0, f"q{i}", ["keep the answer short"], ["keep the answer short and clear"])
        add_clustered(ws, 1, f"r{i}", ["quote article 12 verbatim"], ["explain the law simply"])
    gaps = run(ws, Models(ws, embedder=HashEmbedder(dim=256)), AssessConfig(threshold=0.45))
    assert [g.plan for g in gaps] == ["primary", "reflective"]
    rows = ws.conn.execute("SELECT cluster, scorer, plan, n_logs, threshold FROM gaps ORDER BY cluster").fetchall()
    assert rows == [(0, "embedding", "primary", 3, 0.45), (1, "embedding", "reflective", 3, 0.45)]
    assert ws.count("novelty") == 6
    run(ws, Models(ws, embedder=HashEmbedder(dim=256)), AssessConfig(threshold=0.0))
    assert {r[0] for r in ws.conn.execute("SELECT plan FROM gaps")} == {"reflective"}
    assert ws.count("novelty") == 6


def test_logs_without_prior_rules_are_not_scored(ws):
    add_clustered(ws, 0, "q", ["keep the answer short"], ["keep the answer short and clear"])
    add_clustered(ws, 0, "q2", ["quote article 12 verbatim"], [])  # would count as novelty 1.0
    add_clustered(ws, 1, "r", ["quote article 12 verbatim"], [])  # nothing scored in the cluster
    g0, g1 = run(ws, Models(ws, embedder=HashEmbedder(dim=256)), AssessConfig(threshold=0.45))
    assert g0.n_logs == 1 and g0.gap < 0.45 and g0.plan == "primary"
    assert (g1.cluster, g1.gap, g1.n_logs, g1.plan) == (1, 0.0, 0, "primary")
    assert ws.count("novelty") == 1


def test_logprob_scorer(ws):
    add_clustered(ws, 0, "q", ["keep it short", "add an example"], ["be brief"])
    add_clustered(ws, 0, "q2", ["cite sources"], [])

    class LogprobJudge(MockChatModel):
        async def complete(self, request):
            self.history.append(request)
            yes = -0.1 if "keep it short" in request.messages[0]["content"] else -3.0
            return ChatResult(text="yes", top_logprobs={"yes": yes, "no": -1.5, " the": -4.0})

    judge = LogprobJudge()
    (g,) = run(ws, Models(ws, generator=judge), AssessConfig(scorer="logprob"))
    assert len(judge.history) == 2 and all(r.logprobs == 20 and r.max_tokens == 1 for r in judge.history)
    p_short = np.exp(-0.1) / (np.exp(-0.1) + np.exp(-1.5))
    assert g.gap == pytest.approx(1 - p_short) and g.n_logs == 1  # the log without prior rules is not scored
    assert ws.conn.execute("SELECT DISTINCT scorer FROM novelty").fetchall() == [("logprob",)]


def test_a_failed_assess_is_recorded_as_failed(ws):
    add_clustered(ws, 0, "q", ["keep it short"], ["be brief"])

    class Broken(HashEmbedder):
        def _embed(self, texts):
            raise RuntimeError("embedder down")

    with pytest.raises(RuntimeError, match="embedder down"):
        run(ws, Models(ws, embedder=Broken()), AssessConfig())
    status, result = ws.conn.execute("SELECT status, result FROM runs WHERE stage = 'assess'").fetchone()
    assert status == "failed" and json.loads(result)["error"] == "RuntimeError: embedder down"
    assert ws.count("gaps") == 0  # nothing half-written


def test_yes_probability():
    assert yes_probability({"Yes": 0.0, "No": 0.0}) == pytest.approx(0.5)
    assert yes_probability({" yes": -0.01, "no": -5}) > 0.99
    assert yes_probability({"maybe": -0.1}) == 0.5
    with pytest.raises(BackendError, match="no logprobs"):
        yes_probability(None)


def test_nothing_to_assess_and_bad_config(ws):
    with pytest.raises(InputError, match="unolearn cluster"):
        run(ws, Models(ws, embedder=HashEmbedder()))
    with pytest.raises(ConfigError):
        AssessConfig(scorer="magic")
    with pytest.raises(ConfigError):
        AssessConfig(threshold=2)
