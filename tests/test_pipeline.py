"""The main job end to end through the real CLI: an OpenAI-compatible server (the fake) for chat and
embeddings, real training on the tiny model, then `answer` and a resumed re-run; on each store backend
(the workspace's SQLite file, then a PostgreSQL database named with --store)."""

import json

import pytest
from conftest import each_store, write_jsonl  # noqa: F401
from fake_openai import FakeOpenAI
from tiny_model import tiny_model_dir  # noqa: F401


def respond(body):
    """Rules, revisions and judgements by prompt kind; any other request gets a plain answer."""
    text = "\n".join(m["content"] for m in body["messages"])
    if "You study requests" in text:
        return json.dumps({"rules": ["Keep it short.", "Answer directly."]})
    if "You read what a user wrote" in text:  # the gate: does the reaction ask for a change?
        return "no" if "thanks" in body["messages"][-1]["content"].split("afterwards")[-1] else "yes"
    if "You study conversations" in text:
        return json.dumps({"rules": [] if "thanks" in text.split("afterwards")[-1] else ["Keep it short."]})
    if "You grade an answer" in text:
        return json.dumps({"reason": "ok", "score": 9 if "brief" in text.rsplit("## Answer", 1)[1] else 4})
    if "Rewrite the earlier answer" in text:
        return "A brief answer."
    return "A brief answer about the question." if body["model"] != "fake-model" else "A long answer about it."


@pytest.fixture
def store_url(each_store):
    """`run_cli` passes --store URL for the PostgreSQL run."""
    return each_store


@pytest.fixture
def server():
    fake = FakeOpenAI(dim=16)
    fake.responder = respond
    with fake.running():
        yield fake


def logs_file(tmp_path):
    recs = []
    for i in range(8):
        recs.append({"messages": [{"role": "user", "content": f"how do I cook rice, case {i}"},
                                  {"role": "assistant", "content": f"A long answer about rice {i}."},
                                  {"role": "user", "content": "Too long, keep it short."}]})
    recs.append({"messages": [{"role": "user", "content": "what is tort law"},
                              {"role": "assistant", "content": "Tort law is ..."},
                              {"role": "user", "content": "thanks"}]})
    return write_jsonl(tmp_path / "logs.jsonl", recs)


def workspace_config(url: str, tiny_model: str, *, n_revisions: int = 2, epochs: int = 2, min_pairs: int = 3) -> str:
    """config.yaml of a workspace whose models are the fake server at ``url`` and whose training uses the tiny model."""
    return json.dumps({
        "backends": {"generator": {"backend": "openai", "base_url": url, "model": "fake-model"},
                     "embedder": {"backend": "openai", "base_url": url, "model": "fake-embed"}},
        "distill": {"n_revisions": n_revisions},
        "cluster": {"threshold": 100.0},
        "train": {"base_model": tiny_model, "epochs": epochs, "critic_epochs": 1, "lora_r": 4,
                  "lora_alpha": 8, "grad_accum": 1, "max_length": 256, "min_pairs": min_pairs}})


def test_run_answer_and_resume(server, run_cli, ws_dir, tmp_path, tiny_model_dir, store_url):
    ws_dir.mkdir(parents=True)
    (ws_dir / "config.yaml").write_text(workspace_config(server.url, str(tiny_model_dir)))
    r = run_cli("run", str(logs_file(tmp_path)), "--json", timeout=600)
    assert r.code == 0, r.err
    out = r.json()
    assert out["ingest"]["ingested"] == 9
    assert out["distill"]["usable_feedback"] == 8 and out["distill"]["filtered_as_noise"] == 1
    assert out["distill"]["pairs"] == {"revision": 8}
    assert out["cluster"]["n_clusters"] == 1 and out["assess"][0]["plan"] == "primary"
    assert sorted(m["kind"] for m in out["train"]) == ["critic", "critic-fold", "critic-fold", "expert"]
    uno = next(p for p in out["select"] if p["system"] == "uno")
    assert uno["path"] == "primary" and uno["win_rate"] >= 0.53, uno
    assert any(name.startswith("expert-") for name in server.adapters)

    a = run_cli("answer", "how do I cook rice quickly", "--json")
    assert a.code == 0, a.err
    assert a.json()["route"]["path"] == "primary" and a.json()["text"] == "A brief answer about the question."
    assert server.requests()[-1].body["model"].startswith("expert-")

    calls = len(server.requests())
    again = run_cli("run", str(logs_file(tmp_path)), "--json", timeout=600)
    assert again.code == 0, again.err
    assert len(server.requests()) == calls, "a resumed run repeated model calls"
    assert again.json()["cluster"]["skipped"] == "input unchanged"
    assert all(m["reused"] for m in again.json()["train"])
    stats = run_cli("logs", "stats", "--json").json()
    assert stats["distilled"]["usable_feedback"] == 8
    assert (ws_dir / "unolearn.sqlite3").exists() == (store_url is None)  # every table, the caches too, in the store
    assert any((ws_dir / "artifacts").rglob("adapter_config.json"))  # the adapters, in the workspace folder
