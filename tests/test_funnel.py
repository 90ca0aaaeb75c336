"""The learning funnel, counted on a hand-made workspace."""

import json

from test_selection import add_module
from test_train import seed_workspace

from unolearn.funnel import count_test_paths, funnel, funnel_lines
from unolearn.records import Log, Message
from unolearn.store import now


def test_funnel_counts_every_step(ws):
    ids = seed_workspace(ws)  # 18 logs with feedback, rules and a pair each (6 per theme; 2 themes clustered)
    ws.add_logs([Log.from_messages([Message(role="user", content="no reaction here"),
                                    Message(role="assistant", content="fine")], source="t")])
    noise = Log.from_messages([Message(role="user", content="q"), Message(role="assistant", content="a"),
                               Message(role="user", content="thanks")], source="t")
    ws.add_logs([noise])
    with ws.transaction() as c:
        c.execute("INSERT INTO rules VALUES (?, 'feedback', '[]', 'm', ?)", (noise.id, now()))
        for cid, theme in enumerate(["rice", "law"]):
            c.execute("INSERT INTO clusters VALUES (?,?,?,?,?)", (cid, 6, b"\0" * 16, "hash", now()))
            c.executemany("INSERT INTO cluster_members VALUES (?,?)", [(i, cid) for i in ids[theme]])
        c.execute("INSERT INTO gaps VALUES (0,'embedding',0.2,0.2,0.2,6,'primary',0.45)")
        c.execute("INSERT INTO gaps VALUES (1,'embedding',0.9,0.9,0.9,6,'reflective',0.45)")
    add_module(ws, "exp-rice", 0, "expert", ids["rice"][:2], metrics={"steps": 3})
    add_module(ws, "crit-rice", 0, "critic", [])
    add_module(ws, "crit-law", 1, "critic", [])
    add_module(ws, "exp-law", 1, "expert", ids["law"][:1])  # passes, though its high-gap cluster takes the critic
    add_module(ws, "exp-old", 1, "expert", ids["law"][:1])  # lost every comparison
    ws.finish_run(ws.start_run("select", {"win_threshold": 0.6}), "ok", {})
    with ws.transaction() as c:
        c.execute("INSERT INTO validation (module_id, epoch, log_id, sample, score_initial, score_module, bleu, "
                  "length_ratio, outcome, same_as_base) VALUES ('exp-law', 1, ?, 0, 5, 9, 0.5, 1, 1.0, 0)",
                  (ids["law"][0],))
        c.execute("INSERT INTO validation (module_id, epoch, log_id, sample, score_initial, score_module, bleu, "
                  "length_ratio, outcome, same_as_base) VALUES ('exp-old', 1, ?, 0, 5, 2, 0.5, 1, 0.0, 0)",
                  (ids["law"][0],))
        c.executemany("INSERT INTO validation (module_id, epoch, log_id, sample, score_initial, score_module, bleu, "
                      "length_ratio, outcome, same_as_base) VALUES ('exp-rice',?,?,0,5,?,0.5,1,?,?)",
                      [(1, ids["rice"][0], 5, 0.5, 1), (1, ids["rice"][1], 5, 0.5, 1),
                       (2, ids["rice"][0], 8, 1.0, 0), (2, ids["rice"][1], 5, 0.5, 1)])
        c.executemany("INSERT INTO plans (cluster, system, path, module_id, epoch, win_rate, reason) "
                      "VALUES (?,?,?,?,?,?,?)", [
            (0, "uno", "primary", "exp-rice", 2, 0.75, "won"), (0, "uno-single", "primary", "exp-rice", 2, 0.75, "won"),
            (1, "uno", "reflective", "crit-law", 1, None, "gap"), (1, "uno-single", "base", None, None, None, "gap")])
    f = funnel(ws)
    assert (f["logs"], f["with_feedback"], f["feedback_rules_nonempty"], f["pairs"]) == (20, 19, 18, 18)
    assert f["clusters"] == {"n": 2, "sizes": [6, 6]}
    assert f["plans"] == {"uno": {"primary": 1, "reflective": 1, "guide": 0, "base": 0},
                          "uno-single": {"primary": 1, "reflective": 0, "guide": 0, "base": 1},
                          "uno-guided": {"primary": 0, "reflective": 0, "guide": 0, "base": 0}}
    assert (f["experts_trained"], f["experts_passed"], f["critics_trained"]) == (3, 2, 2)
    assert f["expert_win_rates"] == {"exp-rice": 0.75, "exp-law": 1.0, "exp-old": 0.0}  # rice: epoch 2's 1 and ½
    assert f["expert_steps"]["exp-rice"] == 3 and f["val_items"] == {"exp-rice": 2, "exp-law": 1, "exp-old": 1}
    assert f["val_answers_same_as_base"]["exp-rice"] == [3, 4]
    rice, law = f["per_cluster"]
    assert (rice["cluster"], rice["size"], rice["pairs"], rice["feedback_rules_nonempty"]) == (0, 6, 6, 6)
    assert rice["paths"] == {"uno": "primary", "uno-single": "primary"} and rice["val_items"] == 2
    assert (rice["expert_win_rate"], rice["expert_passed"]) == (0.75, True)
    assert law["gap_plan"] == "reflective" and law["critic"] is True
    assert (law["expert_win_rate"], law["expert_passed"]) == (0.0, False)  # the newest expert of the cluster
    json.dumps(f)  # JSON-ready
    f["test_paths"] = count_test_paths({"uno": ["primary", "unseen", "base", "primary"]})
    assert f["test_paths"] == {"uno": {"primary": 2, "reflective": 0, "guide": 0, "base": 1, "unseen": 1}}
    text = "\n".join(funnel_lines(f))
    assert "20 logs → 19 with feedback → 18 with feedback rules → 18 pairs → 2 clusters" in text
    assert "3/6 validation answers identical to base, best win rates [0.75, 1.0, 0.0]) → 2 passed" in text
    assert "uno primary 2" in text


def test_empty_workspace_funnel(ws):
    f = funnel(ws)
    assert f["logs"] == 0 and f["clusters"] == {"n": 0, "sizes": []} and f["experts_trained"] == 0
    assert funnel_lines(f)[0].startswith("funnel: 0 logs")
