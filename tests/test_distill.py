import json
import re
from collections import Counter

import pytest
from doubles import MockChatModel

from unolearn.backends import Models
from unolearn.backends.cache import CachedChatModel
from unolearn.bench.quality import load_memory
from unolearn.distill import DistillConfig, run, stored_rules
from unolearn.errors import BackendError, ConfigError
from unolearn.records import Action, Log, Message
from unolearn.training_data import export_pairs


def make_log(q, a=None, *feedback, actions=(), lang=None):
    msgs = [Message(role="user", content=q)]
    if a is not None:
        msgs.append(Message(role="assistant", content=a))
    msgs += [Message(role="user", content=f) for f in feedback]
    return Log.from_messages(msgs, actions=tuple(actions), lang=lang, source="t")


def respond(req):
    """A scripted model: rules by prompt kind, revisions that name their seed, a judge preferring seed 43."""
    text = "\n".join(m["content"] for m in req.messages)
    system, last = req.messages[0]["content"], req.messages[-1]["content"]
    if "You study requests" in system or "你负责分析用户发给" in system:
        return json.dumps({"rules": ["Answer the question directly.", "Answer the question directly.", "Be exact."]})
    if "You study conversations" in system or "你负责分析用户与" in system:
        wants = re.search(r"(What the user said afterwards|用户之后说的话)\n(.*)", last, re.S).group(2)
        if "thanks" in wants.lower():
            return json.dumps({"rules": []})
        return json.dumps({"rules": ["Keep the answer under 50 words."]})
    if "You read what a user wrote" in system or "你要判断用户" in system:
        return "no" if "weather" in last else "yes"
    subject = re.search(r"## (?:Request|请求)\n(.*?)\n", text)  # revisions stay on the request's subject
    if "Rewrite the earlier answer" in text or "请改写之前的回答" in text:
        return f"{subject.group(1)}: revised answer seed {req.seed}"
    if "Write a new answer to the request" in text or "请重新回答这个请求" in text:
        return f"{subject.group(1)}: fresh answer seed {req.seed}"
    if "You grade an answer" in text or "请严格评价" in text:
        answer = text.rsplit("## 回答\n" if "## 回答" in text else "## Answer\n", 1)[1]
        return json.dumps({"reason": "r", "score": 9 if "seed 43" in answer else 5})
    raise AssertionError(f"unexpected prompt: {text[:200]}")


LOGS = {
    "fb": make_log("Explain tort law", "A very long answer ...", "Too long, keep it short"),
    "noise": make_log("What is a contract?", "An agreement.", "thanks, and what's the weather?"),
    "prompt_only": make_log("ironside meaning"),
    "dislike": make_log("Define estoppel", "Estoppel is ...", actions=[Action(kind="dislike")]),
    "edit": make_log("Summarise GDPR", "Long text", actions=[Action(kind="edit", edited="Short text")]),
    "zh": make_log("什么是合同法？", "合同法是……", "太长了，请简短一些"),
}


@pytest.fixture
def filled(ws):
    ws.add_logs(LOGS.values())
    return ws


def test_distill_rules_pairs_and_noise_filter(filled):
    gen = MockChatModel(responder=respond)
    res = run(filled, Models(filled, generator=gen), DistillConfig())
    assert res.prior_rules == 6 and res.feedback_rules == 3
    assert res.usable_feedback == 2 and res.filtered_as_noise == 1 and res.failed == 0
    assert dict(res.pairs) == {"revision": 2, "implicit": 1, "edit": 1}
    assert stored_rules(filled, LOGS["fb"].id, "prior") == ["Answer the question directly.", "Be exact."]
    assert stored_rules(filled, LOGS["noise"].id, "feedback") == []
    assert stored_rules(filled, LOGS["prompt_only"].id, "feedback") is None
    pairs = {r[0]: r[1:] for r in filled.conn.execute(
        "SELECT log_id, origin, chosen, rejected, score, candidates FROM pairs")}
    origin, chosen, rejected, score, cands = pairs[LOGS["fb"].id]
    assert (origin, chosen, rejected, score) == (
        "revision", "Explain tort law: revised answer seed 43", "A very long answer ...", 9)
    assert sorted(c["score"] for c in json.loads(cands)) == [5, 5, 5, 5, 9, 9]  # the tie keeps the revision
    assert sorted(c["kind"] for c in json.loads(cands)) == ["fresh"] * 3 + ["revise"] * 3
    assert pairs[LOGS["edit"].id][:3] == ("edit", "Short text", "Long text")
    assert pairs[LOGS["dislike"].id][0] == "implicit"
    assert LOGS["noise"].id not in pairs and LOGS["prompt_only"].id not in pairs
    stats = filled.log_stats()["distilled"]
    assert stats["usable_feedback"] == 2 and stats["filtered_as_noise"] == 1
    assert stats["pairs"] == {"revision": 2, "implicit": 1, "edit": 1}


def test_prompts_follow_the_log_language(filled):
    gen = MockChatModel(responder=respond)
    run(filled, Models(filled, generator=gen))
    zh = [r for r in gen.history if "什么是合同法" in r.messages[-1]["content"]]
    assert zh and all(re.search(r"[\u4e00-\u9fff]{4}", r.messages[0]["content"]) for r in zh)
    revisions = [r for r in gen.history if "Rewrite the earlier answer" in r.messages[0]["content"]]
    assert {r.seed for r in revisions} == {42, 43, 44} and all(r.temperature == 1.0 and r.top_p == 0.9
                                                               for r in revisions)
    wordless = [r for r in revisions if "Define estoppel" in r.messages[0]["content"]]
    assert "thumbs-down" in wordless[0].messages[0]["content"]


def test_rerun_makes_no_calls_and_adds_nothing(filled):
    gen = MockChatModel(responder=respond)
    run(filled, Models(filled, generator=gen))
    n = len(gen.history)
    res = run(filled, Models(filled, generator=gen))
    assert len(gen.history) == n and res.logs == 0 and sum(res.pairs.values()) == 0


def test_interrupted_run_resumes_without_repeating_finished_calls(filled):
    gen = MockChatModel(responder=respond)
    failing_judge = MockChatModel(responder=lambda r: (_ for _ in ()).throw(BackendError("judge down")))
    first = run(filled, Models(filled, generator=CachedChatModel(gen, filled), judge=failing_judge))
    assert first.failed > 0 and dict(first.pairs) == {"edit": 1}
    calls_before = len(gen.history)
    judge = MockChatModel(responder=respond)
    second = run(filled, Models(filled, generator=CachedChatModel(gen, filled), judge=judge))
    assert len(gen.history) == calls_before, "finished generator calls were repeated"
    assert dict(second.pairs) == {"revision": 2, "implicit": 1} and len(judge.history) == 18


def test_fresh_answers_from_the_feedback_compete_with_revisions(filled):
    def fresh_wins(req):
        answer = req.messages[-1]["content"].rsplit("## Answer\n", 1)[-1]
        return json.dumps({"reason": "r", "score": 8 if "fresh answer" in answer else 4})

    gen = MockChatModel(responder=respond)
    judge = MockChatModel(responder=lambda r: fresh_wins(r) if "You grade" in r.messages[-1]["content"] else respond(r))
    res = run(filled, Models(filled, generator=gen, judge=judge), DistillConfig(n_revisions=1))
    assert dict(res.pairs) == {"revision": 2, "implicit": 1, "edit": 1}
    fresh = [r for r in gen.history if "Write a new answer to the request" in r.messages[0]["content"]]
    tort = [r for r in fresh if "Explain tort law" in r.messages[0]["content"]]
    assert tort and "A very long answer" not in tort[0].messages[0]["content"]  # no first answer to anchor on
    assert "Too long, keep it short" in tort[0].messages[0]["content"]
    assert len(judge.history) == 6  # two candidates for each of the three logs revised
    row = filled.conn.execute("SELECT chosen, candidates FROM pairs WHERE log_id = ?", (LOGS["fb"].id,)).fetchone()
    assert row[0] == "Explain tort law: fresh answer seed 42"
    assert [c["kind"] for c in json.loads(row[1])] == ["revise", "fresh"]


def test_the_likelihood_judge_chooses_the_candidate_the_stated_rules_raise_most(filled):
    def gain(req):  # a candidate ending in "seed 42" gains 3 nats once "Keep the answer under 50 words." is stated
        stated = "Keep the answer under 50 words." in req.messages[-1]["content"]
        return -30.0 + (3.0 if req.continuation.endswith("seed 42") else 1.0) * stated

    gen, judge = MockChatModel(responder=respond), MockChatModel(scorer=gain)
    run(filled, Models(filled, generator=gen, judge=judge), DistillConfig(n_revisions=2))  # judge: auto
    row = filled.conn.execute("SELECT chosen, score, candidates FROM pairs WHERE log_id = ?",
                              (LOGS["fb"].id,)).fetchone()
    assert (row[0], row[1]) == ("Explain tort law: revised answer seed 42", 3.0)
    assert {(c["kind"], c["score"], c["judge"]) for c in json.loads(row[2])} == {
        ("revise", 3.0, "likelihood"), ("revise", 1.0, "likelihood"), ("fresh", 3.0, "likelihood"),
        ("fresh", 1.0, "likelihood")}
    assert judge.history and all(r.continuation is not None for r in judge.history)


def test_collapsed_or_drifted_candidates_are_never_chosen(ws):
    long_answer = "Tort law covers civil wrongs such as negligence, nuisance and defamation. " * 4
    kept = make_log("Explain tort law", long_answer, "Too long, keep it short")
    lost = make_log("Explain contract law", "Contract law covers agreements between parties. " * 4, "Too long")
    ws.add_logs([kept, lost])
    by_seed = {42: "Tort.",  # collapsed: under a tenth of the first answer
               43: "Bananas grow in tropical climates and ripen after harvest, turning yellow.",  # drifted
               44: "Tort law covers civil wrongs: negligence, nuisance, defamation."}

    def answers(req):
        text = req.messages[-1]["content"]
        if "Rewrite the earlier answer" in text or "Write a new answer" in text:
            return by_seed[req.seed] if "tort" in text else by_seed[req.seed % 2 + 42]
        if "You grade" in text:  # the judge likes the degenerate candidates best
            return json.dumps({"reason": "r", "score": 3 if "negligence" in text.rsplit("## Answer", 1)[1] else 9})
        return respond(req)

    gen = MockChatModel(responder=answers)
    res = run(ws, Models(ws, generator=gen), DistillConfig(judge="llm"))
    rows = {r[0]: r[1:] for r in ws.conn.execute("SELECT log_id, chosen, candidates FROM pairs")}
    assert rows[kept.id][0] == by_seed[44] and lost.id not in rows
    guards = Counter((c["answer"], c.get("guard")) for c in json.loads(rows[kept.id][1]))
    assert guards == {(by_seed[42], "collapsed"): 2, (by_seed[43], "drifted"): 2, (by_seed[44], None): 2}
    assert res.unpaired == 1 and dict(res.pairs) == {"revision": 1}
    assert res.guarded == {"collapsed": 2 + 4, "drifted": 2 + 2}  # seeds 42, 43, 44 → 42, 43, 42 for `lost`
    with pytest.raises(ConfigError, match="min_length_ratio"):
        DistillConfig(min_length_ratio=1.0)


def test_a_candidate_the_token_budget_cut_is_never_chosen(ws):
    log = make_log("Explain tort law", "Tort law covers civil wrongs such as negligence, nuisance and defamation. " * 2,
                   "Too long, keep it short")
    ws.add_logs([log])
    loop = "Tort law covers civil wrongs such as negligence, and negligence, and negligence, and negligence."
    by_seed = {42: loop,  # 14 words: cut by a 12-token budget
               43: "Tort law covers civil wrongs: negligence, nuisance.",
               44: "Tort law: civil wrongs like negligence and nuisance."}

    def answers(req):
        text = req.messages[-1]["content"]
        if "Rewrite the earlier answer" in text or "Write a new answer" in text:
            return by_seed[req.seed]
        if "You grade" in text:  # the judge likes the loop best
            answer = text.rsplit("## Answer", 1)[1]
            return json.dumps({"reason": "r", "score": 9 if "and negligence" in answer else
                               5 if "wrongs:" in answer else 3})
        return respond(req)

    res = run(ws, Models(ws, generator=MockChatModel(responder=answers)),
              DistillConfig(judge="llm", answer_max_tokens=12))
    chosen, candidates = ws.conn.execute("SELECT chosen, candidates FROM pairs WHERE log_id = ?", (log.id,)).fetchone()
    assert chosen == by_seed[43]
    guards = Counter((c["answer"], c.get("guard")) for c in json.loads(candidates))
    assert guards == {(loop, "unfinished"): 2, (by_seed[43], None): 2, (by_seed[44], None): 2}
    assert res.guarded == {"unfinished": 2} and res.unpaired == 0


def test_a_likelihood_judge_that_cannot_score_fails_before_any_call(filled):
    gen = MockChatModel(responder=respond)
    with pytest.raises(ConfigError, match="likelihood needs a judge model that scores replies"):
        run(filled, Models(filled, generator=gen, judge=MockChatModel()), DistillConfig(judge="likelihood"))
    assert not gen.history


def test_export_formats(filled):
    run(filled, Models(filled, generator=MockChatModel(responder=respond)))
    trl = list(export_pairs(filled, "trl"))
    assert len(trl) == 4 and all(set(r) == {"prompt", "chosen", "rejected"} for r in trl)
    assert all(r["prompt"][-1]["role"] == "user" and r["chosen"][0]["role"] == "assistant" for r in trl)
    oai = list(export_pairs(filled, "openai-dpo"))
    assert set(oai[0]) == {"input", "preferred_output", "non_preferred_output"}
    assert oai[0]["input"]["messages"] == trl[0]["prompt"]
    with pytest.raises(ConfigError):
        list(export_pairs(filled, "csv"))


def test_config_validation():
    with pytest.raises(ConfigError):
        DistillConfig(n_revisions=0)
    with pytest.raises(ConfigError):
        DistillConfig(top_p=0)


def test_cli_pairs_export(filled, run_cli, tmp_path):
    run(filled, Models(filled, generator=MockChatModel(responder=respond)))
    out = tmp_path / "pairs.jsonl"
    r = run_cli("pairs", "export", "--format", "openai-dpo", "-o", str(out))
    assert r.code == 0, r.err
    assert len(out.read_text().splitlines()) == 4 and "wrote 4 pairs" in r.err
    r = run_cli("pairs", "export")
    assert len(r.out.splitlines()) == 4 and "chosen" in r.out
    stats = run_cli("logs", "stats").out
    assert "2 usable, 1 filtered as noise" in stats


def test_all_requests_failing_is_an_error_not_an_empty_success(filled):
    from unolearn.errors import BackendError as BE

    down = MockChatModel(responder=lambda r: (_ for _ in ()).throw(BE("server down")))
    with pytest.raises(BE, match="every model request of distill failed .*server down"):
        run(filled, Models(filled, generator=down))
    assert filled.conn.execute("SELECT status FROM runs WHERE stage='distill'").fetchone()[0] == "failed"


def test_the_gate_stores_no_rules_for_reactions_that_ask_for_no_change(filled):
    gen = MockChatModel(responder=respond)
    res = run(filled, Models(filled, generator=gen), DistillConfig(gate=True))
    assert res.gated_as_noise == 1 and stored_rules(filled, LOGS["noise"].id, "feedback") == []
    asked = [r for r in gen.history if "You study conversations" in r.messages[0]["content"]]
    assert not any("weather" in r.messages[-1]["content"] for r in asked)  # no rule request after the gate
    gates = [r for r in gen.history if r.logprobs]
    assert len(gates) == 3 and all(r.max_tokens == 1 for r in gates)


def test_without_the_gate_every_reaction_is_asked_for_rules(ws):
    ws.add_logs([LOGS["noise"]])
    gen = MockChatModel(responder=respond)
    res = run(ws, Models(ws, generator=gen))  # the default: no gate
    assert res.gated_as_noise == 0 and res.filtered_as_noise == 1 and not any(r.logprobs for r in gen.history)


def test_worked_examples_come_before_the_real_input_in_its_language(filled):
    gen = MockChatModel(responder=respond)
    run(filled, Models(filled, generator=gen))
    for lang, query in (("en", "Explain tort law"), ("zh", "什么是合同法")):
        system = ("You study conversations", "你负责分析用户与")
        req = next(r for r in gen.history if r.schema and query in r.messages[-1]["content"]
                   and any(s in r.messages[0]["content"] for s in system))
        roles = [m["role"] for m in req.messages]
        assert roles == ["system"] + ["user", "assistant"] * 3 + ["user"]
        shown = [json.loads(m["content"]) for m in req.messages if m["role"] == "assistant"]
        assert [] in [s["rules"] for s in shown]  # an example of feedback that gives no rule
        assert (lang == "zh") == bool(re.search(r"[\u4e00-\u9fff]", req.messages[1]["content"]))


def test_rules_that_are_not_rules_are_dropped_and_counted(ws):
    log = make_log("How do I boil an egg?", "Put the egg in boiling water for eight minutes then cool it.",
                   "Too vague, and how long for a soft one?")
    ws.add_logs([log])

    def sloppy(req):
        if "You study conversations" in req.messages[0]["content"]:
            return json.dumps({"rules": ["Give the time for a soft-boiled egg.", "What about a soft egg?",
                                         "Put the egg in boiling water for eight minutes then cool it."]})
        return respond(req)

    res = run(ws, Models(ws, generator=MockChatModel(responder=sloppy)))
    assert stored_rules(ws, log.id, "feedback") == ["Give the time for a soft-boiled egg."]
    assert res.rules_rejected == {"question": 1, "copy": 1}


def test_when_the_models_rules_are_rejected_the_users_own_sentences_are_taken(ws):
    answer = "A lease is a contract by which a landlord lets a tenant use a property for a time."
    log = make_log("What is a lease?", answer, "Start with 'In short:' and one line. Why so formal?")
    ws.add_logs([log])

    def bare(req):  # the quoted phrase alone and the answer again, as the 0.5B model wrote them
        if "You study conversations" in req.messages[0]["content"]:
            return json.dumps({"rules": ["In short:", answer]})
        return respond(req)

    res = run(ws, Models(ws, generator=MockChatModel(responder=bare)))
    assert stored_rules(ws, log.id, "feedback") == ["Start with 'In short:' and one line."]
    assert res.echoed == 1 and res.rules_rejected == {"quote": 1, "copy": 1} and res.usable_feedback == 1


def test_the_users_sentences_whose_quoted_phrase_or_number_the_rules_dropped_are_added(ws):
    complaint = "Give me a one-line 'Summary:' so I don't have to read everything. Highlight the important words " \
                "in bold. Just 5 sentences at most, please."
    dropped = make_log("Is evolution a belief?", "Evolution is a scientific theory supported by evidence.", complaint)
    kept = make_log("What is a comet?", "A comet is an icy body that releases gas near the Sun.",
                    "Use at most 3 sentences and start with 'Summary:'.")
    ws.add_logs([dropped, kept])

    def lossy(req):  # what the 0.5B model wrote for this complaint on a held-out seed: the phrase and the number gone
        if "You study conversations" in req.messages[0]["content"]:
            if "Evolution" in req.messages[-1]["content"]:
                return json.dumps({"rules": ["Summarize the key points in bold."]})
            return json.dumps({"rules": ["Answer in 3 sentences or fewer.", "Begin with 'Summary:'."]})
        return respond(req)

    res = run(ws, Models(ws, generator=MockChatModel(responder=lossy)))
    assert stored_rules(ws, dropped.id, "feedback") == [
        "Summarize the key points in bold.", "Give me a one-line 'Summary:' so I don't have to read everything.",
        "Just 5 sentences at most, please."]
    assert stored_rules(ws, kept.id, "feedback") == ["Answer in 3 sentences or fewer.", "Begin with 'Summary:'."]
    assert res.recalled == 1 and res.echoed == 0


def test_feedback_whose_rules_came_back_unreadable_gets_the_users_own_sentences(ws):
    log = make_log("What is a comet?", "A comet is an icy body.", "Keep it to 4 sentences or fewer. Finish with "
                   '"Good luck!" as the last words.')
    ws.add_logs([log])

    def cut(req):  # the feedback rules cut by the token budget mid-string, as the 0.5B model's were on seed 1017
        if "You study conversations" in req.messages[0]["content"]:
            return '{"rules": ["Keep the answer to at most four sentences and finish with \\"Good'
        return respond(req)

    res = run(ws, Models(ws, generator=MockChatModel(responder=cut)))
    assert stored_rules(ws, log.id, "feedback") == ["Keep it to 4 sentences or fewer.",
                                                    'Finish with "Good luck!" as the last words.']
    assert res.echoed == 1 and res.failed == 0 and res.rules_rejected == {"unreadable": 1}


def test_a_user_who_makes_the_model_answer_deeply_nested_json_sinks_only_that_log(ws):
    bad = make_log("Print five thousand [ signs.", "[[[[", 'Reply only with "[" repeated 5000 times, nothing else.')
    ws.add_logs([bad, LOGS["fb"]])

    def nested(req):  # Python's JSON parser raises RecursionError on it, which is no ValueError
        text = " ".join(m["content"] for m in req.messages)
        if "You study conversations" in text and "five thousand" in text:
            return "[" * 5000
        return respond(req)

    res = run(ws, Models(ws, generator=MockChatModel(responder=nested)))
    assert res.failed == 0 and res.rules_rejected == {"unreadable": 1}
    assert stored_rules(ws, LOGS["fb"].id, "feedback")  # the other user's log went through as always


def test_the_prior_rules_schema_caps_the_list_at_max_prior_rules(ws):
    ws.add_logs([LOGS["prompt_only"]])
    model = MockChatModel(responder=respond)
    res = run(ws, Models(ws, generator=model), DistillConfig(max_prior_rules=3))
    (req,) = [r for r in model.history if "You study requests" in r.messages[0]["content"]]
    assert req.schema["properties"]["rules"]["maxItems"] == 3
    assert "at most 3 rules" in req.messages[0]["content"]
    assert res.prior_rules == 1 and res.failed == 0


def test_the_gate_decides_only_when_the_model_answered_yes_or_no(ws):
    ws.add_logs([LOGS["noise"]])
    off = MockChatModel(responder=lambda r: "Maybe" if r.logprobs else respond(r))  # neither yes nor no
    res = run(ws, Models(ws, generator=off), DistillConfig(gate=True))
    assert res.gated_as_noise == 0 and any("You study conversations" in r.messages[0]["content"] for r in off.history)


def test_a_resumed_run_whose_leftover_requests_all_fail_goes_on(filled):
    run(filled, Models(filled, generator=MockChatModel(responder=respond)))
    filled.add_logs([make_log("What is a lien?", "A claim on property.", "Too long, keep it short")])

    def broken(req):  # the same invalid JSON every time, as greedy decoding gives
        return '{"rules": ["unterminated' if req.schema else respond(req)

    res = run(filled, Models(filled, generator=MockChatModel(responder=broken)))
    assert res.failed > 0 and res.prior_rules == 0
    assert filled.conn.execute("SELECT status FROM runs WHERE stage='distill' ORDER BY id DESC").fetchone()[0] == "ok"


def test_a_rule_that_retells_the_case_gives_way_to_the_users_own_sentences(ws):
    """The embedded model's rule for a complaint about form was the case's answer, its parties named; the
    `rules` memory would put it into other users' prompts (preferences-alt.yaml, docs/benchmarks.md)."""
    log = make_log("刘三、黄十一关于增资认缴的主张是否可以获得支持？", "刘三和黄十一关于增资认缴的主张不能获得支持。",
                   "先讲法律依据，回答请以“根据……”开头。最后加一句“以上意见仅供参考。”", lang="zh")
    ws.add_logs([log])

    def retelling(req):
        if "你负责分析用户与 AI 助手之间的对话" in req.messages[0]["content"]:
            retold = "根据《公司法》的规定，刘三、黄十一关于增资认缴的主张不能获得支持。以上意见仅供参考。"
            return json.dumps({"rules": [retold, "最后加一句“以上意见仅供参考。”"]}, ensure_ascii=False)
        return respond(req)

    res = run(ws, Models(ws, generator=MockChatModel(responder=retelling)))
    assert stored_rules(ws, log.id, "feedback") == ["先讲法律依据，回答请以“根据……”开头。",
                                                    "最后加一句“以上意见仅供参考。”"]
    assert res.echoed == 1 and res.rules_rejected == {"case": 1}
    memory = "\n".join(r for item in load_memory(ws) for r in item.rules)
    assert "刘三" not in memory and "以上意见仅供参考" in memory
