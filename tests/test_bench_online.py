"""`unolearn bench online` end to end: a real `unolearn serve` in front of the fake OpenAI server, simulated
users posting feedback, `unolearn run` training on the tiny model between rounds, and the proxy reloading
its plan without a restart."""

import pytest
import yaml
from fake_openai import FakeOpenAI
from test_pipeline import respond, workspace_config
from tiny_model import tiny_model_dir  # noqa: F401

PREFS = {"noise": {"off_topic": 0.0, "thanks": 0.0, "unrelated_complaint": 0.0, "implicit_only": 0.0},
         "datasets": {"NFCats": {"constraints": [{"id": "brief", "check": {"max_words": 6},
                                                  "feedback": ["Too long, keep it short.", "太长了。"]}]}}}
LONG = "A long answer about it, with many more words than anyone asked for."


def answer_online(body):
    """The pipeline's prompts as in test_pipeline; chat answers long from the base model, brief from an adapter."""
    text = respond(body)
    if text not in ("A brief answer about the question.", "A long answer about it."):
        return text
    return "A brief answer." if body["model"].startswith(("expert-", "critic-")) else LONG


@pytest.fixture
def server():
    fake = FakeOpenAI(dim=16)
    fake.responder = answer_online
    with fake.running():
        yield fake


def test_two_rounds_learn_while_serving_without_a_restart(server, run_cli, tmp_path, tiny_model_dir):
    ws_dir = tmp_path / "ws"
    ws_dir.mkdir()
    config = workspace_config(server.url, str(tiny_model_dir), n_revisions=1, epochs=1, min_pairs=2)
    (ws_dir / "config.yaml").write_text(config)
    prefs = tmp_path / "prefs.yaml"
    prefs.write_text(yaml.safe_dump(PREFS))
    r = run_cli("bench", "online", "--workspace", str(ws_dir), "--rounds", "2", "--train-per-set", "3",
                "--test-per-set", "2", "--preferences", str(prefs), "--upstream", server.url, "--json", timeout=900)
    assert r.code == 0, r.err
    out = r.json()
    assert (out["proxy_restarts"], out["failed_requests"], out["system"]) == (0, 0, "uno-guided")
    r0, r1, r2 = out["rounds"]
    assert (r0["plan_id"], r0["logs"], r0["compliance"], r0["compliance_ci_vs_round0"]) == (None, 0, 0.0, None)
    assert r1["feedback_posted"] == 3 and r1["logs"] == 3 and r1["modules"] >= 1  # test prompts never become logs
    assert r2["logs"] == 6 and r2["plan_id"] > r1["plan_id"] is not None
    assert r1["n_checks"] == r2["n_checks"] == 2 and len(r2["compliance_ci_vs_round0"]) == 2
    assert r1["reload_s"] is not None and r2["reload_s"] is not None
    served = [q for q in server.requests() if q.body.get("user", "").startswith("sim-NFCats-")]
    assert len(served) >= 6 and {q.body["user"] for q in served} == {"sim-NFCats-1", "sim-NFCats-2"}
