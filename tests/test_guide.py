"""The guide chosen per question: votes of the nearest anchors, held-out validation, the stored form, old snapshots."""

import json

import numpy as np
import pytest
from doubles import HashEmbedder, as_plans

from unolearn.guide import Guide
from unolearn.records import Clustering
from unolearn.snapshot import PlanSnapshot

CITE, SHORT, BOLD = "Cite the statute.", "Answer in one sentence.", "Bold the key terms."


def axis(i: int, dim: int = 4) -> np.ndarray:
    v = np.zeros(dim, dtype=np.float32)
    v[i] = 1.0
    return v


def law_and_travel() -> Guide:
    """Four law anchors (CITE; the first also BOLD) near axis 0, one travel anchor (SHORT) near axis 1."""
    anchors = np.stack([axis(0) + 0.1 * axis(2) * i for i in range(4)] + [axis(1)])
    return Guide.build("en", [CITE, SHORT, BOLD], anchors, [(0, 2), (0,), (0,), (0,), (1,)],
                       ["l0", "l1", "l2", "l3", "t0"])


def test_a_question_gets_the_entries_two_of_its_five_nearest_logs_support():
    guide = law_and_travel()
    text = guide.for_query(axis(0))
    # the five nearest are all five anchors: CITE has 4 votes; SHORT (the stray travel log) and BOLD have 1
    assert CITE in text and SHORT not in text and BOLD not in text
    assert guide.for_query(axis(1)) == guide.text([0])  # all five are its nearest: CITE's 4 votes win again
    scattered = Guide.build("en", [CITE, SHORT, BOLD], np.stack([axis(0), axis(1), axis(2)]), [(0,), (1,), (2,)])
    assert scattered.for_query(axis(1)) == scattered.text([1])  # no entry has two votes: the nearest anchor's own
    assert guide.for_query(None) == guide.text() and all(r in guide.text() for r in (CITE, SHORT, BOLD))
    assert guide.nearest(axis(0), votes=1) == [0, 1, 2]  # one vote each: the rules memory's way, every neighbour's


def test_each_entry_comes_in_the_words_of_the_nearest_logs_that_asked_for_it():
    """As the rules memory gives them: the nearest log's wordings first, each once; a guide stored without
    wordings gives its entries' own texts; wordings that leave out an entry an anchor supports are refused."""
    anchors = np.stack([axis(0), axis(0) + 0.2 * axis(1), axis(0) + 0.4 * axis(1), axis(1)])
    says = [[(0, "Cite the law."), (1, SHORT)], [(0, CITE)], [(0, "Cite the law."), (1, "Be brief.")], [(2, BOLD)]]
    guide = Guide.build("en", [CITE, SHORT, BOLD], anchors, [[e for e, _ in s] for s in says], "abcd", says)
    assert guide.for_query(axis(0)) == guide._numbered(["Cite the law.", SHORT, CITE, "Be brief."])
    held = guide.without("a")  # SHORT keeps one supporter (c): gone with a; a's wording of CITE goes with it
    assert held.for_query(axis(0)) == held._numbered([CITE, "Cite the law."])
    again = Guide.from_json(json.loads(json.dumps(guide.as_json())))
    assert again.says == guide.says and again.for_query(axis(0)) == guide.for_query(axis(0))
    plain = Guide.build("en", [CITE, SHORT, BOLD], anchors, [[e for e, _ in s] for s in says])
    assert plain.for_query(axis(0)) == plain.text([0, 1]) and "says" not in plain.as_json()
    with pytest.raises(ValueError, match="wordings"):
        Guide.build("en", [CITE, SHORT, BOLD], anchors, [(0, 1), (0,), (0, 1), (2,)], "abcd", [s[:1] for s in says])


def test_held_out_a_log_gives_neither_its_anchor_nor_the_entries_only_it_and_one_other_support():
    guide = Guide.build("en", [CITE, SHORT], np.stack([axis(0), axis(0), axis(0), axis(1), axis(1)]),
                        [(0,), (0,), (0,), (1,), (1,)], ["a", "b", "c", "d", "e"])
    held = guide.without("d")
    assert held.sources == ("a", "b", "c", "e") and held.supports[-1] == ()  # SHORT had d and e: e supports none
    assert held.nearest(axis(1)) == [0]  # e is the nearest, supporting nothing; CITE has the other three's votes
    assert guide.without("a").nearest(axis(0)) == [0, 1]  # CITE keeps b and c; all four left are among the five
    assert guide.without("unknown") is guide


def test_the_stored_guide_round_trips_and_a_text_only_guide_gives_every_question_its_text():
    guide = law_and_travel()
    again = Guide.from_json(json.loads(json.dumps(guide.as_json())))
    assert again.rules == guide.rules and again.supports == guide.supports
    assert np.allclose(again.anchors, guide.anchors) and again.for_query(axis(0)) == guide.for_query(axis(0))
    assert "sources" not in guide.as_json()  # log ids stay where the guide was built
    old = Guide.from_json("Users wanted:\n1. Be brief.\n\n## Question\n")
    assert old.for_query(axis(0)) == old.text() == "Users wanted:\n1. Be brief.\n\n## Question\n"


def test_a_snapshot_published_before_anchors_still_routes_its_guide(ws):
    """A proxy upgraded over a workspace whose newest snapshot is of format 1 (guides as text) keeps serving it."""
    embedder = HashEmbedder(dim=16)
    centroid = embedder.embed(["contract statute court"])[0].astype("float32")
    ws.replace_clustering(Clustering(id=0, embedder="hash", created_at=""), [(0, 3, centroid.tobytes())], [])
    version = ws.clustering_id()
    text = "Users wanted:\n1. Cite the statute.\n\n## Question\n"
    mid = ws.ensure_guide(0, text, [], [], [], {}, version)
    ws.replace_plans(as_plans([(0, "uno-guided", "guide", mid, None, 1.0, "t")]), version)
    body = ws.snapshot()
    old = {k: v for k, v in body.items() if k not in ("id", "created_at")} | {"format": 1, "guides": {mid: text}}
    with ws.transaction() as c:
        c.execute("INSERT INTO plan_snapshots (clustering, body, created_at) VALUES (?,?,?)",
                  (version, json.dumps(old), body["created_at"]))
    snapshot = PlanSnapshot.load(ws, embedder)
    assert snapshot.id > body["id"]
    route = snapshot.route("contract statute court question", "uno-guided")
    assert (route.path, route.guide) == ("guide", text)


def test_a_guide_with_the_same_text_but_new_wordings_is_a_new_module(ws):
    """Its id once covered only the text and the logs: a rebuilt guide whose entries kept their texts was
    validated as built, yet the first body stayed stored and served."""
    centroid = np.zeros(16, dtype=np.float32)
    ws.replace_clustering(Clustering(id=0, embedder="hash", created_at=""), [(0, 3, centroid.tobytes())], [])
    first = law_and_travel()
    says = [[(e, "Cite the law." if e == 0 else first.rules[e]) for e in s] for s in first.supports]
    second = Guide.build("en", [CITE, SHORT, BOLD], first.anchors, first.supports, says=says)
    ids = [ws.ensure_guide(0, g.text() or "", [], ["l0"], [], {}, ws.clustering_id(), g.as_json())
           for g in (first, second)]
    assert ids[0] != ids[1]
    assert [Guide.from_json(ws.guide_body(i)).says for i in ids] == [(), second.says]


def test_a_question_whose_nearest_logs_asked_for_nothing_gets_no_entry():
    """The cluster's training logs that support no entry are neighbours too, as in the rules memory: a travel
    question whose five nearest logs are travel logs that asked for nothing gets none of the law logs' entries.
    With the supporters alone as anchors (as before), the nearest of them lent it CITE, however far away it was."""
    law = [axis(0) + 0.1 * axis(2) * i for i in range(3)]
    travel = [axis(1) + 0.1 * axis(3) * i for i in range(5)]
    supporters = Guide.build("en", [CITE], np.stack(law), [(0,)] * 3, ["l0", "l1", "l2"])
    assert supporters.for_query(axis(1)) == supporters.text([0])  # the attack on the old way: CITE for travel
    guide = Guide.build("en", [CITE], np.stack(law + travel), [(0,)] * 3 + [()] * 5,
                        ["l0", "l1", "l2", "t0", "t1", "t2", "t3", "t4"], [[(0, CITE)]] * 3 + [[]] * 5)
    assert guide.for_query(axis(1)) is None and guide.nearest(axis(1)) == []
    assert CITE in guide.for_query(axis(0))  # a law question still gets it
    assert guide.without("t0").for_query(axis(1)) is None  # held out, the other travel logs still answer for it
    again = Guide.from_json(json.loads(json.dumps(guide.as_json())))
    assert again.supports == guide.supports and again.for_query(axis(1)) is None
