import json

import pytest
from doubles import HashEmbedder, MockChatModel
from test_train import TOPICS, seed_workspace

from unolearn.answer import plan_route
from unolearn.backends import Models
from unolearn.cluster import Router
from unolearn.decisions import Candidate, choose_epoch, decide, decide_guided
from unolearn.errors import ConfigError
from unolearn.funnel import funnel
from unolearn.guide import Guide
from unolearn.plans import load_plan
from unolearn.records import RuleEntry, RuleMember
from unolearn.selection import SelectConfig, best_critic_epoch, outcome, run
from unolearn.snapshot import PlanSnapshot
from unolearn.store import now
from unolearn.text import drift, ngram_bleu, tokens

CFG = SelectConfig()



def statute_judge(req):
    """An LLM judge that scores 9 the answers that mention the statute, 5 the others."""
    answer = req.messages[0]["content"].rsplit("## Answer\n", 1)[1]
    return json.dumps({"reason": "r", "score": 9 if "statute" in answer else 5})

def bleu(candidate: str, reference: str, lang: str = "en") -> float:
    """Sentence BLEU with the brevity penalty (the drift guard's plain counterpart)."""
    return ngram_bleu(tokens(candidate, lang), [tokens(reference, lang)], 4, brevity=True)


def test_bleu():
    assert bleu("the cat sat on the mat", "the cat sat on the mat") == pytest.approx(1.0)
    assert bleu("completely different words here", "the cat sat on the mat") < 0.05
    assert 0.05 < bleu("the cat sat on a mat today", "the cat sat on the mat") < 1.0
    assert bleu("", "x") == 0.0
    assert bleu("根据合同法第五条的规定", "根据合同法第五条的规定", "zh") == pytest.approx(1.0)
    assert bleu("今天天气很好", "根据合同法第五条的规定", "zh") < 0.05


BASE_ANSWER = ("Rice is cooked by rinsing it until the water runs clear, then simmering one part rice in "
               "about two parts water with a pinch of salt. Bring the pot to a boil, cover it, turn the heat "
               "to low and let it cook for around eighteen minutes without lifting the lid. Take it off the heat, "
               "leave it covered for five more minutes so the steam finishes the grains, then fluff the rice "
               "with a fork before serving. Brown rice needs more water and about forty minutes. A rice "
               "cooker does the same with less attention: add rice and water, press start, and wait.")
QUERY = "How do I cook rice on the stove?"


def test_drift_guard_passes_a_short_answer_on_the_subject():
    short = "Rinse the rice, simmer one part rice in two parts water, covered, for eighteen minutes; rest five."
    assert bleu(short, BASE_ANSWER) < 0.05  # plain BLEU: the brevity penalty alone rejects it
    assert drift(short, BASE_ANSWER, QUERY, "en") > SelectConfig().bleu_min


@pytest.mark.parametrize("drifted", [
    "The French Revolution began in 1789 when the Estates-General met at Versailles and the third estate "
    "declared itself a national assembly, which led to the storming of the Bastille in July.",
    "rice " * 60,  # degenerate repetition
    "I'm sorry, but I can't assist with that request.",
])
def test_drift_guard_catches_answers_off_the_subject(drifted):
    assert drift(drifted, BASE_ANSWER, QUERY, "en") <= SelectConfig().bleu_min


def test_drift_guard_in_chinese():
    base = "根据合同法的规定，租赁合同期满后，承租人应当返还租赁物；出租人提前通知的，承租人在通知期内可以继续居住。"
    assert drift("通知期内承租人可以继续居住，期满返还租赁物。", base, "租客收到通知后可以住多久？", "zh") > 0.05
    assert drift("今天天气很好，我们去公园散步吧。", base, "租客收到通知后可以住多久？", "zh") <= 0.05


@pytest.mark.parametrize("sm, si, b, ratio, expected", [
    (8, 5, 0.3, 1.0, 1.0), (5, 5, 0.3, 1.0, 0.5), (4, 5, 0.3, 1.0, 0.0),
    (9, 5, 0.05, 1.0, 0.0),   # drifted: BLEU must exceed 0.05
    (9, 5, 0.06, 0.09, 0.0),  # collapsed: under 10% of the initial length
    (9, 5, 0.06, 0.10, 1.0),
])
def test_outcome_guards(sm, si, b, ratio, expected):
    assert outcome(sm, si, b, ratio, CFG) == expected


def test_choose_epoch_on_a_hand_made_table():
    table = {1: [1, 0, 0.5, 0], 2: [1, 1, 0.5, 0], 3: [1, 1, 0.5, 0], 4: [0, 0, 0, 0]}
    assert choose_epoch(table, 0.53) == (2, 0.625)  # earliest of the best
    assert choose_epoch({1: [1, 0], 2: [0.5, 0.5]}, 0.53) == (None, 0.5)  # best 0.5 < 0.53 → fall back
    assert choose_epoch({1: [1, 0, 0.5, 0.62 / 0.5 * 0.5]}, 0.53)[0] == 1
    assert choose_epoch({}, 0.53) == (None, 0.0)


def test_best_critic_epoch():
    assert best_critic_epoch({"eval_loss": {"1": 2.0, "2": 1.5, "3": 1.7}}, 3) == 2
    assert best_critic_epoch({"eval_loss": {}}, 8) == 8


def E(mid, epoch, rate, outcomes=()):  # an expert candidate, as validation leaves it
    return Candidate("primary", mid, epoch, rate, tuple(outcomes))


def C(mid, epoch, rate=None, outcomes=()):  # a critic candidate
    return Candidate("reflective", mid, epoch, rate, tuple(outcomes))


def G(mid, rate, outcomes=()):  # a guide candidate
    return Candidate("guide", mid, None, rate, tuple(outcomes))


def test_decide_each_case():
    def paths(plans):
        return {p.system: (p.path, p.module_id, p.epoch) for p in plans}

    assert paths(decide(0, "primary", E("e", 3, 0.6), C("c", 2, 0.6))) == {
        "uno": ("primary", "e", 3), "uno-single": ("primary", "e", 3)}
    assert paths(decide(0, "primary", E("e", None, 0.4), C("c", 2, 0.6))) == {
        "uno": ("reflective", "c", 2), "uno-single": ("base", None, None)}
    assert paths(decide(0, "reflective", None, C("c", 1, 0.53))) == {
        "uno": ("reflective", "c", 1), "uno-single": ("base", None, None)}
    assert paths(decide(0, "primary", None, None)) == {"uno": ("base", None, None), "uno-single": ("base", None, None)}
    high = decide(0, "reflective", E("e", 2, 0.75), C("c", 1, 0.7), gap_note="gap 0.12 ≥ 0.08")  # high gap
    assert paths(high) == {"uno": ("reflective", "c", 1), "uno-single": ("base", None, None)}
    assert "high cognitive gap; gap 0.12 ≥ 0.08; expert epoch 2 won 0.75 of validation comparisons, not used" in (
        high[0].reason)


def test_a_critic_that_did_not_validate_is_not_used():
    """The paper takes a high-gap cluster's critic whatever its validation said; here it must win its items."""
    lost, unjudged = decide(0, "reflective", None, C("c", 2, 0.5)), decide(0, "reflective", None, C("c", 2))
    assert [(p.system, p.path) for p in lost] == [("uno", "base"), ("uno-single", "base")]
    assert "critic epoch 2 won 0.50 of validation comparisons, below 0.53: not used" in lost[0].reason
    assert unjudged[0].path == "base" and "critic epoch 2 not judged: not used" in unjudged[0].reason
    assert decide(0, "reflective", None, C("c", 2, 0.5), threshold=0.5)[0].path == "reflective"


def test_an_expert_with_too_few_validation_items_is_not_judged(ws):
    ids = seed_workspace(ws)
    with ws.transaction() as c:
        c.execute("INSERT INTO clusters VALUES (?,?,?,?,?)", (0, 6, b"\0" * 16, "hash", now()))
        c.executemany("INSERT INTO cluster_members VALUES (?,?)", [(i, 0) for i in ids["rice"]])
    add_module(ws, "exp-rice", 0, "expert", ids["rice"][:1])
    with ws.transaction() as c:  # a judgement left by an earlier selection
        c.execute("INSERT INTO validation (module_id, epoch, log_id, sample, score_initial, score_module, bleu, "
                  "length_ratio, outcome) VALUES ('exp-rice', 1, ?, 0, 5, 9, 0.5, 1, 1)", (ids["rice"][0],))
    gen = MockChatModel(responder=lambda req: "x")
    [uno, single, guided] = run(ws, Models(ws, generator=gen, judge=gen))
    assert (uno.path, single.path, guided.path) == ("base", "base", "base") and not gen.history
    assert ws.count("validation") == 0
    assert "not judged: 1 validation item(s), fewer than min_val_items 2" in uno.reason


def test_config_validation():
    with pytest.raises(ConfigError):
        SelectConfig(min_val_items=0)
    with pytest.raises(ConfigError):
        SelectConfig(win_threshold=1.5)
    with pytest.raises(ConfigError):
        SelectConfig(judge_samples=0)


def add_module(ws, mid, cluster, kind, val_ids, epochs=2, metrics=None, train_ids=()):
    with ws.transaction() as c:
        c.execute("INSERT INTO modules (id, cluster, kind, path, epochs, base_model, data_hash, config, metrics, "
                  "train_logs, val_logs, seconds, created_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                  (mid, cluster, kind, f"/m/{mid}", epochs, "base", "h", "{}", json.dumps(metrics or {}),
                   json.dumps(list(train_ids)), json.dumps(val_ids), 1.0, now()))


def test_select_validates_and_stores_plans(ws):
    ids = seed_workspace(ws)
    with ws.transaction() as c:
        for cid, theme in enumerate(["rice", "law"]):
            c.execute("INSERT INTO clusters VALUES (?,?,?,?,?)", (cid, 6, b"\0" * 16, "hash", now()))
            c.executemany("INSERT INTO cluster_members VALUES (?,?)", [(i, cid) for i in ids[theme]])
        c.execute("INSERT INTO gaps VALUES (1,'embedding',0.2,0.2,0.2,6,'primary',0.45)")
    add_module(ws, "exp-rice", 0, "expert", ids["rice"][:2])
    add_module(ws, "exp-law", 1, "expert", ids["law"][:2])
    add_module(ws, "crit-law", 1, "critic", [], metrics={"eval_loss": {"1": 1.0, "2": 2.0}})

    def generator(req):  # epoch 2 of the rice expert adds detail; everything else gives the base answer
        if req.adapter == "exp-rice@2":
            return "A long answer about rice plus the numbered steps."
        return "A long answer about rice."

    def judge(req):
        answer = req.messages[0]["content"].rsplit("## Answer\n", 1)[1]
        return json.dumps({"reason": "r", "score": 9 if "numbered steps" in answer else 5})

    gen, jud = MockChatModel(responder=generator), MockChatModel(responder=judge)
    plans = run(ws, Models(ws, generator=gen, judge=jud))
    got = {(p.cluster, p.system): (p.path, p.module_id, p.epoch) for p in plans}
    assert got[(0, "uno")] == ("primary", "exp-rice", 2) and got[(0, "uno-single")] == ("primary", "exp-rice", 2)
    assert got[(1, "uno")] == ("base", None, None) and got[(1, "uno-single")] == ("base", None, None)  # critic tied
    assert set(gen.adapters) == {"exp-rice@1", "exp-rice@2", "exp-law@1", "exp-law@2", "crit-law@1"}
    rate = {p.cluster: p.win_rate for p in plans if p.system == "uno"}
    assert rate[0] == 1.0 and rate[1] == 0.5  # law's reflective path revises into the base answer: ties
    # The critic (its epoch of lowest eval loss) is judged on the expert's validation items, like an expert
    crit = ws.conn.execute("SELECT epoch, log_id, score_initial, score_module FROM validation "
                           "WHERE module_id='crit-law' ORDER BY log_id").fetchall()
    assert crit == [(1, i, 5.0, 5.0) for i in sorted(ids["law"][:2])]
    critiques = [r for r in gen.history if r.adapter == "crit-law@1"]
    assert len(critiques) == 2 and "A long answer about rice." in critiques[0].messages[0]["content"]
    law_uno = next(p for p in plans if (p.cluster, p.system) == (1, "uno"))
    assert "critic epoch 1 won 0.50 of validation comparisons (2 items), below 0.53: not used" in law_uno.reason
    assert "; gap 0.20 < 0.45 (embedding, 6 logs scored)" in law_uno.reason
    # One row per validation item and epoch (2 val logs × 2 epochs), its judge samples averaged
    rows = ws.conn.execute("SELECT epoch, score_initial, score_module, same_as_base FROM validation "
                           "WHERE module_id='exp-rice' ORDER BY epoch").fetchall()
    assert rows == [(1, 5.0, 5.0, 1), (1, 5.0, 5.0, 1), (2, 5.0, 9.0, 0), (2, 5.0, 9.0, 0)]
    assert [r.temperature for r in jud.history[:3]] == [0.0, 1.0, 1.0]
    base_requests = [r for r in gen.history if r.adapter is None and "## Draft answer" not in r.messages[-1]["content"]]
    assert len(base_requests) == 4  # a fresh base answer per validation query, shared by expert and critic
    answers = [r for r in gen.history if r.adapter != "crit-law@1"]
    assert {r.max_tokens for r in answers} == {SelectConfig().answer_max_tokens}
    stored = load_plan(ws, 0, "uno")
    assert (stored.path, stored.module_id, stored.epoch, stored.win_rate) == ("primary", "exp-rice", 2, 1.0)
    assert "epoch 2" in stored.reason and load_plan(ws, 5, "uno") is None


def test_a_high_gap_clusters_expert_is_validated_but_the_critic_serves(ws):
    ids = seed_workspace(ws)
    with ws.transaction() as c:
        c.execute("INSERT INTO clusters VALUES (?,?,?,?,?)", (0, 6, b"\0" * 16, "hash", now()))
        c.executemany("INSERT INTO cluster_members VALUES (?,?)", [(i, 0) for i in ids["law"]])
        c.execute("INSERT INTO gaps VALUES (0,'embedding',0.9,0.9,0.9,6,'reflective',0.45)")
    add_module(ws, "exp-law", 0, "expert", ids["law"][:2])
    add_module(ws, "crit-law", 0, "critic", [], metrics={"eval_loss": {"1": 1.0, "2": 2.0}})

    def generator(req):  # the expert's epoch 1 and the critic's revision cite the statute
        revision = "## Draft answer" in req.messages[-1]["content"]
        return "An answer citing the statute." if req.adapter == "exp-law@1" or revision else "An answer."

    gen = MockChatModel(responder=generator)
    plans = run(ws, Models(ws, generator=gen, judge=MockChatModel(responder=statute_judge)))
    assert {"exp-law@1", "exp-law@2"} <= set(gen.adapters)
    uno = next(p for p in plans if p.system == "uno")
    assert (uno.path, uno.module_id) == ("reflective", "crit-law")
    assert "expert epoch 1 won 1.00 of validation comparisons, not used" in uno.reason
    assert funnel(ws)["experts_passed"] == 1


def test_a_cross_fitted_critic_is_judged_on_every_log_each_by_the_fold_critic_that_did_not_train_on_it(ws):
    """A cluster of six logs whose critic trained on them all (``train.critic_folds``): its two fold critics are
    each judged on the three logs they did not train on, and their six outcomes decide. A held-out split of a small
    cluster leaves one item or none, and the critic is never judged (``uno`` falls to base)."""
    ids = seed_workspace(ws)["law"]
    with ws.transaction() as c:
        c.execute("INSERT INTO clusters VALUES (?,?,?,?,?)", (0, 6, b"\0" * 16, "hash", now()))
        c.executemany("INSERT INTO cluster_members VALUES (?,?)", [(i, 0) for i in ids])
        c.execute("INSERT INTO gaps VALUES (0,'embedding',0.9,0.9,0.9,6,'reflective',0.45)")
    add_module(ws, "fold-old", 0, "critic-fold", ids[:3], metrics={"partition": "logs-old"}, train_ids=ids[3:])
    add_module(ws, "fold-1", 0, "critic-fold", ids[:3], metrics={"partition": "logs-p", "eval_loss": {"1": 2.0,
               "2": 1.0}}, train_ids=ids[3:])
    add_module(ws, "fold-2", 0, "critic-fold", ids[3:], metrics={"partition": "logs-p", "eval_loss": {"1": 2.0,
               "2": 1.5}}, train_ids=ids[:3])
    add_module(ws, "crit-law", 0, "critic", [], metrics={"partition": "logs-p"}, train_ids=ids)

    def generator(req):  # the fold critics ask for the statute; the base model's revision follows them
        if req.adapter in ("fold-1@2", "fold-2@2"):
            return "1. Cite the statute."
        content = req.messages[-1]["content"]
        return "An answer citing the statute." if "Cite the statute" in content else "An answer."

    gen = MockChatModel(responder=generator)
    plans = run(ws, Models(ws, generator=gen, judge=MockChatModel(responder=statute_judge), embedder=HashEmbedder()))
    uno = next(p for p in plans if p.system == "uno")
    assert (uno.path, uno.module_id, uno.epoch, uno.win_rate) == ("reflective", "crit-law", 2, 1.0)
    assert "critic epoch 2 (won 1.00 of validation comparisons (cross-fitted, 6 items))" in uno.reason
    critiques = {(r.adapter, r.owners[0]) for r in gen.history if r.adapter}
    assert critiques == {*(("fold-1@2", i) for i in ids[:3]), *(("fold-2@2", i) for i in ids[3:])}
    judged = dict(ws.conn.execute("SELECT module_id, count(*) FROM validation GROUP BY module_id").fetchall())
    assert judged == {"fold-1": 3, "fold-2": 3}  # the served critic's own items: none (it trained on all)

def test_uno_guided_takes_the_best_validated_path():
    expert, critic = E("e", 2, 0.6, (1,) * 6 + (0,) * 4), C("c", 1, 0.7, (1,) * 7 + (0.5,) * 3)
    assert (decide_guided(0, expert, critic, G("g", 0.9), 0.53).path, decide_guided(0, expert, critic, G("g", 0.9),
                                                                                   0.53).module_id) == ("guide", "g")
    # a guide that tied base is kept: the critic's 2 items cannot show it beats the rules memory's way (seed 1006)
    assert decide_guided(0, expert, critic, G("g", 0.5), 0.53).path == "guide"
    # worse than base only where the items show it (a sign test): 1 win in 3 shows nothing (seed 1010), 0 in 5 does
    assert decide_guided(0, expert, critic, G("g", 1 / 3, (1, 0, 0)), 0.53).path == "guide"
    assert decide_guided(0, None, None, G("g", 0.25, (1, 0, 0.5, 0)), 0.53).path == "guide"
    worse = decide_guided(0, expert, critic, G("g", 0.0, (0,) * 5), 0.53)
    assert worse.path == "reflective" and "guide 0.00" in worse.reason
    assert decide_guided(0, None, None, G("g", 0.1, (0,) * 9 + (1,)), 0.53).path == "base"
    assert decide_guided(0, None, None, G("g", 0.3, (0,) * 7 + (1,) * 3), 0.53).path == "guide"  # p = 0.17
    tie = decide_guided(0, E("e", 2, 0.7, critic.outcomes), critic, G("g", 0.7), 0.53)  # ties: the guide first
    assert (tie.path, tie.epoch, tie.module_id) == ("guide", None, "g")
    first = decide_guided(0, E("e", 2, 1.0), C("c", 1, 1.0), G("g", 0.6), 0.53)  # a validated guide is not replaced
    assert (first.path, first.module_id) == ("guide", "g") and "the guide validated" in first.reason
    tie = decide_guided(0, E("e", 2, 0.7, critic.outcomes), critic, None, 0.53)  # then the expert, then the critic
    assert (tie.path, tie.epoch) == ("primary", 2)
    # where no guide is, an expert or critic must show on its items that it beats base (seed 1017: a critic that
    # won 2 of 3 served at 2.7 times the rules memory's prompt tokens, no better than base); 5 wins of 5 do
    assert decide_guided(0, None, C("c", 1, 2 / 3, (1, 1, 0)), None, 0.53).path == "base"
    assert decide_guided(0, E("e", 1, 1.0, (1, 1)), None, None, 0.53).path == "base"
    assert decide_guided(0, E("e", 1, 0.6, (1,) * 6 + (0,) * 4), None, None, 0.53).path == "base"  # p = 0.38
    assert decide_guided(0, None, C("c", 1, 1.0, (1,) * 5), None, 0.53).path == "reflective"
    assert decide_guided(0, None, C("c", 1, 0.75, (1,) * 7 + (0, 0.5, 0.5)), None, 0.53).path == "reflective"
    failed = decide_guided(0, E("e", None, 0.9), None, G("g", None), 0.53)  # no epoch passed; guide not judged
    assert failed.path == "base" and "guide not judged; primary 0.90" in failed.reason
    assert decide_guided(0, None, None, None, 0.53).path == "base"


def test_the_guide_is_validated_with_the_rulebook_before_the_question(ws):
    ids = seed_workspace(ws)
    with ws.transaction() as c:
        c.execute("INSERT INTO clusters VALUES (?,?,?,?,?)", (0, 6, b"\0" * 16, "hash", now()))
        c.executemany("INSERT INTO cluster_members VALUES (?,?)", [(i, 0) for i in ids["law"]])
        c.execute("INSERT INTO gaps VALUES (0,'embedding',0.9,0.9,0.9,6,'reflective',0.45)")
    add_module(ws, "crit-law", 0, "critic", ids["law"][:2], metrics={"eval_loss": {"1": 1.0}})
    member = RuleMember(log_id=ids["law"][2], user="u", rule="Cite the statute.")
    ws.replace_rulebook([RuleEntry(id="rule-1", cluster=0, text="Cite the statute.", lang="en", members=(member,),
                                   status="kept"),
                         RuleEntry(id="rule-2", cluster=0, text="Use emoji.", lang="en", members=(member,),
                                   status="unsupported")])

    def generator(req):
        turn = req.messages[-1]["content"]
        return "An answer citing the statute." if "1. Cite the statute.\n\n## Question\n" in turn else "An answer."

    gen = MockChatModel(responder=generator)
    plans = {p.system: p for p in run(ws, Models(ws, generator=gen, judge=MockChatModel(responder=statute_judge)))}
    guided = plans["uno-guided"]
    assert guided.path == "guide" and guided.win_rate == 1.0
    assert "guide 1.00 (2 won, 0 lost of 2); reflective 0.50 (0 won, 0 lost of 2)" in guided.reason
    text = Guide.from_json(ws.guide_body(guided.module_id)).text()
    assert "1. Cite the statute." in text and "emoji" not in text
    f = funnel(ws)
    assert f["plans"]["uno-guided"]["guide"] == 1 and f["guide_win_rates"] == {guided.module_id: 1.0}
    assert f["guide_items"][guided.module_id] >= 2


def stated_gain(req):
    """A scorer as a model that follows stated rules: an answer citing the statute gains 4 nats once
    "Cite the article of the statute." is stated in the request; any other answer loses 1."""
    stated = "Cite the article of the statute." in req.messages[-1]["content"]
    return -20.0 + (4.0 if "statute" in req.continuation else -1.0) * stated


def test_the_likelihood_judge_compares_how_much_the_stated_rules_raise_each_answer(ws):
    ids = seed_workspace(ws)
    with ws.transaction() as c:
        c.execute("INSERT INTO clusters VALUES (?,?,?,?,?)", (0, 6, b"\0" * 16, "hash", now()))
        c.executemany("INSERT INTO cluster_members VALUES (?,?)", [(i, 0) for i in ids["law"]])
        c.execute("INSERT INTO gaps VALUES (0,'embedding',0.1,0.1,0.1,6,'primary',0.45)")
    add_module(ws, "exp-law", 0, "expert", ids["law"][:2], epochs=1)

    def generator(req):  # the expert's epoch 1 and the critic's revision cite the statute
        revision = "## Draft answer" in req.messages[-1]["content"]
        return "An answer citing the statute." if req.adapter == "exp-law@1" or revision else "An answer."

    gen, judge = MockChatModel(responder=generator), MockChatModel(scorer=stated_gain)
    plans = {p.system: p for p in run(ws, Models(ws, generator=gen, judge=judge))}  # judge: auto → likelihood
    assert (plans["uno"].path, plans["uno"].win_rate) == ("primary", 1.0)
    assert judge.history and all(r.continuation is not None for r in judge.history)
    stated = [r for r in judge.history if "follow these requirements:\n- Cite the article" in r.messages[-1]["content"]]
    assert len(stated) * 2 == len(judge.history)  # each answer scored with the rules stated and without
    rows = ws.conn.execute("SELECT score_initial, score_module, outcome FROM validation WHERE module_id='exp-law'"
                           ).fetchall()
    assert rows == [(-1.0, 4.0, 1.0)] * 2
    # judge: llm asks the same model for 1-10 scores instead; a model that cannot score refuses likelihood
    plans = {p.system: p for p in run(ws, Models(ws, generator=gen, judge=MockChatModel(
        responder=lambda r: json.dumps({"reason": "r", "score": 5}))), SelectConfig(judge="llm"))}
    assert plans["uno"].path == "base" and plans["uno"].win_rate == 0.5
    with pytest.raises(ConfigError, match="likelihood needs a judge model that scores replies"):
        run(ws, Models(ws, generator=gen, judge=MockChatModel()), SelectConfig(judge="likelihood"))
    with pytest.raises(ConfigError, match="judge must be one of auto, llm, likelihood"):
        SelectConfig(judge="coin")


def test_a_mixed_cluster_guides_each_question_by_the_rules_of_its_nearest_logs(ws):
    """One cluster holding two topics whose users asked for different things (as a small clustering can make):
    a question gets the entries of its nearest training logs, not the other topic's; the whole guide, as served
    before, gave every question both."""
    ids = seed_workspace(ws)
    embedder = HashEmbedder(dim=64)
    mixed = ids["law"] + ids["travel"]
    centroid = embedder.embed([f"{TOPICS['law'][0]} {TOPICS['travel'][0]}"])[0].astype("float32")
    with ws.transaction() as c:
        c.execute("INSERT INTO clusters VALUES (?,?,?,?,?)", (0, 12, centroid.tobytes(), "hash", now()))
        c.executemany("INSERT INTO cluster_members VALUES (?,?)", [(i, 0) for i in mixed])
    train = ids["law"][1:] + ids["travel"][1:]
    add_module(ws, "crit-mixed", 0, "critic", [ids["law"][0], ids["travel"][0]], metrics={"eval_loss": {"1": 1.0}},
               train_ids=train)
    cite, short = TOPICS["law"][1], TOPICS["travel"][1]
    members = {rule: tuple(RuleMember(log_id=i, user=f"u{n}", rule=rule) for n, i in enumerate(ids[theme][1:]))
               for theme, rule in (("law", cite), ("travel", short))}  # 5 supporting logs per entry
    ws.replace_rulebook([RuleEntry(id=f"rule-{n}", cluster=0, text=rule, lang="en", members=m, status="kept")
                         for n, (rule, m) in enumerate(members.items())])

    def generator(req):  # follows the rules it is given, and only those
        turn = req.messages[-1]["content"]
        return " ".join(["An answer."] + ["It cites the statute."] * (cite in turn) + ["Short."] * (short in turn))

    def judge(req):  # the item's own rule decides: citing for law, brevity for travel
        item, answer = req.messages[0]["content"].rsplit("## Answer\n", 1)
        wanted = "statute" if "Cite" in item else "Short"
        return json.dumps({"reason": "r", "score": 9 if wanted in answer and answer.count(".") <= 2 else 5})

    models = Models(ws, generator=MockChatModel(responder=generator), judge=MockChatModel(responder=judge),
                    embedder=embedder)
    guided = {p.system: p for p in run(ws, models)}["uno-guided"]
    assert guided.path == "guide" and funnel(ws)["guide_items"] == {guided.module_id: 12}  # 2 validation + 10 training
    # judged as held out: a training log's question never gets its own anchor, and an entry it supports only
    # when two other logs still support it; the entries have 5 each, so every item keeps its topic's rule
    assert guided.win_rate == 1.0
    guide = Guide.from_json(ws.guide_body(guided.module_id))
    assert cite in guide.text() and short in guide.text()  # the cluster's whole guide: both topics' rules
    snapshot = PlanSnapshot.load(ws, embedder)
    router = Router.load(ws, embedder)
    for theme, own, other in (("law", cite, short), ("travel", short, cite)):
        query = f"{TOPICS[theme][0]} question 9"
        for route in (snapshot.route(query, "uno-guided"), plan_route(ws, router, query, "uno-guided")):
            assert route.path == "guide" and own in route.guide and other not in route.guide


def test_a_question_among_logs_that_asked_for_nothing_gets_no_other_topics_entry(ws):
    """A mixed cluster whose only entry is the law logs' (the travel users asked for nothing that earned a
    place): a travel question's nearest training logs are travel logs, so it gets no entry. The guide built
    from the entries' supporters alone gave it the law rule, the nearest supporter's (the README's demo: LexEval's
    opening given to every HelloBench question)."""
    ids = seed_workspace(ws)
    embedder = HashEmbedder(dim=64)
    centroid = embedder.embed([f"{TOPICS['law'][0]} {TOPICS['travel'][0]}"])[0].astype("float32")
    with ws.transaction() as c:
        c.execute("INSERT INTO clusters VALUES (?,?,?,?,?)", (0, 12, centroid.tobytes(), "hash", now()))
        c.executemany("INSERT INTO cluster_members VALUES (?,?)", [(i, 0) for i in ids["law"] + ids["travel"]])
    add_module(ws, "crit-mixed", 0, "critic", [ids["law"][0], ids["travel"][0]], metrics={"eval_loss": {"1": 1.0}},
               train_ids=ids["law"][1:] + ids["travel"][1:])
    cite = TOPICS["law"][1]
    members = tuple(RuleMember(log_id=i, user=f"u{n}", rule=cite) for n, i in enumerate(ids["law"][1:]))
    ws.replace_rulebook([RuleEntry(id="rule-0", cluster=0, text=cite, lang="en", members=members, status="kept")])

    def judge(req):  # law items want the statute; travel items are indifferent
        item, answer = req.messages[0]["content"].rsplit("## Answer\n", 1)
        return json.dumps({"reason": "r", "score": 9 if "Cite" not in item or "statute" in answer else 5})

    models = Models(ws, generator=MockChatModel(responder=lambda r: "An answer." + " It cites the statute." * (
        cite in r.messages[-1]["content"])), judge=MockChatModel(responder=judge), embedder=embedder)
    guided = {p.system: p for p in run(ws, models)}["uno-guided"]
    assert guided.path == "guide"
    snapshot = PlanSnapshot.load(ws, embedder)
    law, travel = (snapshot.route(f"{TOPICS[t][0]} question 9", "uno-guided") for t in ("law", "travel"))
    assert law.path == "guide" and cite in law.guide
    assert cite not in (travel.guide or "")
    supports = Guide.from_json(ws.guide_body(guided.module_id)).supports
    assert len(supports) == 10 and supports.count(()) == 5  # every training log a neighbour, supporting or not


def test_validations_run_together_and_the_first_error_is_raised_as_itself():
    """select validates clusters (and a cluster's paths) concurrently; an error must still reach the CLI as the
    stage's own one-line error, not wrapped in an exception group, and the other validations stop."""
    import asyncio

    from unolearn.errors import InputError
    from unolearn.selection import together

    cancelled = []

    async def slow():
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.append("slow")
            raise

    async def bad():
        raise InputError("no module expert-x")

    with pytest.raises(InputError, match="no module expert-x"):
        asyncio.run(together(slow(), bad()))
    assert cancelled == ["slow"]
    assert asyncio.run(together(asyncio.sleep(0, "a"), asyncio.sleep(0, "b"))) == ["a", "b"]
