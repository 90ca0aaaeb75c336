"""The user simulator: preference files, resolution, dialogs, noise, determinism, MemoryBench output."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest
import yaml
from doubles import MockChatModel

from unolearn.constraints import compliance
from unolearn.errors import BackendError, ConfigError
from unolearn.prompt_sets import packaged_dir
from unolearn.readers import from_memorybench, read_logs
from unolearn.records import Log, detect_lang
from unolearn.simulate import (
    OFF_TOPIC,
    THANKS,
    UNRELATED_COMPLAINTS,
    SimulateConfig,
    constraints_for,
    load_preferences,
    parse_preferences,
    simulate,
    summarize,
)

SHARED_NAMES = ("NFCats", "LexEval-QA", "HelloBench-Academic&Knowledge-QA")

BAD = "This answer is much longer than five words and has no bullet list at all."
GOOD = "- Short."


def prefs_dict(**noise: float) -> dict:
    return {"noise": noise, "datasets": {"T": {"constraints": [
        {"id": "short", "check": {"max_words": 5}, "feedback": ["Too long.", "太长了。"]},
        {"id": "bullets", "check": {"bullet_list": {"min": 1}}, "feedback": ["Use bullets.", "请用列表。"]},
    ]}}}


def prompt(i: int, fix: int = 1, ds: str = "T", q: str | None = None) -> dict:
    """A prompt whose model answer turns compliant after ``fix`` user turns (see ``responder``)."""
    return {"test_idx": i, "input_prompt": q or f"fix{fix}: question number {i}?", "dataset_name": ds,
            "lang": "en", "info": {"k": i}, "split": "train", "dialog": None, "implicit_feedback": None}


def responder(request) -> str:
    users = [m["content"] for m in request.messages if m["role"] == "user"]
    m = re.search(r"fix(\d)", users[0])
    return GOOD if len(users) > (int(m.group(1)) if m else 1) else BAD


def model() -> MockChatModel:
    return MockChatModel(responder=responder, concurrency=8)


def run(prompts, seed=7, rounds=3, **noise):
    return simulate(prompts, parse_preferences(prefs_dict(**noise)), model(), seed, rounds=rounds)


def users_after_first(rec: dict) -> list[str]:
    return [m["content"] for m in rec["dialog"][2:] if m["role"] == "user"]


# -- the packaged preference file -----------------------------------------------------------------


def test_packaged_preferences_cover_the_shared_datasets_in_both_languages():
    prefs = load_preferences()
    for name in SHARED_NAMES:
        cons = constraints_for(prefs, "some query", name)
        assert len(cons) >= 3, name
        for c in cons:
            assert {detect_lang(f) for f in c.feedback} == {"en", "zh"}, (name, c.id)


def test_packaged_keys_match_the_packaged_dataset_names_exactly():
    prefs = load_preferences()
    for path in packaged_dir().glob("*.jsonl"):
        for line in path.read_text(encoding="utf-8").splitlines()[:20]:
            rec = json.loads(line)
            assert rec["dataset_name"] in SHARED_NAMES
            assert len(constraints_for(prefs, rec)) >= 3, (path.name, rec["test_idx"])


GOOD_ANSWERS = {
    "NFCats": "Etiolated means pale and drawn out from growing without light.\n\n- Plants turn yellow\n"
              "- Stems grow long and weak",
    "LexEval-QA": "1. 依据《中华人民共和国民法典》第一千二百五十三条，使用人包童新应承担责任。\n"
                  "2. 所有人郝志强不能证明自己没有过错的，也应承担责任。\n结论：两被告应对温茂昌承担赔偿责任。",
    "HelloBench-Academic&Knowledge-QA": "# Food on European trains\n\n" + "Many trains sell food. " * 100 +
                                        "\n\n1. Dining cars\n2. Trolleys\n3. Bring your own\n\n## Key takeaways\n"
                                        "Plan ahead.",
}


@pytest.mark.parametrize("name", SHARED_NAMES)
def test_packaged_constraints_are_satisfiable_and_discriminate(name):
    cons = constraints_for(load_preferences(), "a plain question", name)
    assert all(compliance(GOOD_ANSWERS[name], cons).values())
    plain = "Sure! " + " ".join(["It depends on many things."] * 30)
    assert sum(not ok for ok in compliance(plain, cons).values()) >= 2


ALT = Path(__file__).resolve().parents[1] / "benchmarks" / "preferences-alt.yaml"
ALT_GOOD = {
    "NFCats": "In short: **etiolated** means pale from growing without light.\n\nStems grow long and weak.",
    "LexEval-QA": "根据《中华人民共和国民法典》第一千二百五十三条，"
                  "使用人应当承担侵权责任，所有人不能证明自己没有过错的，"
                  "也应承担责任。以上意见仅供参考。",
    "HelloBench-Academic&Knowledge-QA": "Trains sell food.\n\nFor example, dining cars serve meals.\n\n"
                                        "Trolleys pass by. Which would you choose?",
}


@pytest.mark.parametrize("name", SHARED_NAMES)
def test_second_preference_file_uses_other_checks_and_discriminates(name):
    alt, packaged = load_preferences(ALT), load_preferences()
    cons = constraints_for(alt, "a plain question", name)
    assert len(cons) == 3 and all({detect_lang(f) for f in c.feedback} == {"en", "zh"} for c in cons)
    kinds = {next(iter(c.check)) for c in cons}
    assert not kinds & {next(iter(c.check)) for c in constraints_for(packaged, "a plain question", name)
                        if next(iter(c.check)) not in ("contains", "not_contains")}
    assert all(compliance(ALT_GOOD[name], cons).values())
    plain = "- It depends.\n- " + " ".join(["It depends on many things."] * 30)
    assert sum(not ok for ok in compliance(plain, cons).values()) >= 2


def test_match_key_in_packaged_file_carves_out_definition_queries():
    prefs = load_preferences()
    assert prefs.resolve("definition of etiolated", "NFCats") == "nfcats-definitions"
    assert prefs.resolve("definition of etiolated", "LexEval-QA") == "LexEval-QA"
    assert prefs.resolve("is the avengers a film", "NFCats") == "NFCats"


# -- validating preference files ------------------------------------------------------------------


def write_prefs(tmp_path: Path, data, name: str = "prefs.yaml") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return path


def with_constraint(**kw) -> dict:
    return {"datasets": {"T": {"constraints": [{"id": "c1", "check": {"max_words": 5}, "feedback": ["x"], **kw}]}}}


@pytest.mark.parametrize("data,fragments", [
    (with_constraint(check={"max_wordz": 5}), ["constraint 'c1'", "unknown check 'max_wordz'"]),
    (with_constraint(check={"max_words": -1}), ["constraint 'c1'", "max_words: expected a whole number"]),
    (with_constraint(check={"bullet_list": {"min": 3, "max": 1}}), ["constraint 'c1'", "greater than max"]),
    (with_constraint(check={"contains": "(["}), ["constraint 'c1'", "invalid regex"]),
    (with_constraint(feedback=[]), ["constraint 'c1'", "feedback"]),
    (with_constraint(feedback=["  "]), ["constraint 'c1'", "must not be empty"]),
    (with_constraint(colour="red"), ["constraint 'c1'", "colour"]),
    ({"noise": {"thanks": 1.5}}, ["noise.thanks", "less than or equal to 1"]),
    ({"noise": {"off_topic": -0.1}}, ["noise.off_topic", "greater than or equal to 0"]),
    ({"noise": {"typos": 0.1}}, ["noise.typos"]),
    ({"datasets": {"T": {"match": "([", "constraints": []}}}, ["datasets.T.match", "invalid regex"]),
    ({"datasets": {"T": {"dataset": "X", "constraints": []}}}, ["datasets.T", "only allowed together with 'match'"]),
    ({"datasets": {"T": {"constraints": [{"id": "a", "check": {"max_words": 1}, "feedback": ["x"]}] * 2}}},
     ["duplicate constraint id 'a'"]),
    ({"dataset": {}}, ["dataset"]),
    ("- just\n- a list\n", ["expected a mapping"]),
    ("noise: {thanks: [unclosed\n", ["not valid YAML/JSON"]),
])
def test_bad_preference_files_give_one_line_config_errors(tmp_path, data, fragments):
    path = write_prefs(tmp_path, data)
    with pytest.raises(ConfigError) as e:
        load_preferences(path)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(str(path))
    for f in fragments:
        assert f in msg


def test_missing_preference_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read preferences"):
        load_preferences(tmp_path / "absent.yaml")


def test_json_preference_file_reads_like_yaml(tmp_path):
    data = prefs_dict(thanks=0.5)
    as_json = write_prefs(tmp_path, json.dumps(data, ensure_ascii=False), "p.json")
    assert load_preferences(as_json) == load_preferences(write_prefs(tmp_path, data))


# -- resolving constraints ------------------------------------------------------------------------


def test_constraints_for_resolves_dataset_names_and_match_keys():
    prefs = parse_preferences({"datasets": {
        "recipes": {"match": "(?i)recipe", "dataset": "T", "constraints": [
            {"id": "numbered", "check": {"numbered_list": True}, "feedback": ["Number the steps."]}]},
        "anything-zh": {"match": "[\u4e00-\u9fff]", "constraints": [
            {"id": "zh", "check": {"language": "zh"}, "feedback": ["请用中文。"]}]},
        "T": prefs_dict()["datasets"]["T"]}})
    ids = lambda cons: [c.id for c in cons]  # noqa: E731
    assert ids(constraints_for(prefs, prompt(1))) == ["short", "bullets"]
    assert ids(constraints_for(prefs, prompt(1, q="A recipe for bread?"))) == ["numbered"]
    assert ids(constraints_for(prefs, "A recipe for bread?", "Other")) == []  # restricted to dataset T
    assert ids(constraints_for(prefs, "什么是合同？", "Other")) == ["zh"]
    assert ids(constraints_for(prefs, "plain", "Unknown")) == []
    assert ids(constraints_for(prefs, {"input_chat_messages": [{"role": "user", "content": "a recipe"}],
                                       "dataset_name": "T"})) == ["numbered"]


# -- dialogs --------------------------------------------------------------------------------------


def assert_alternating(rec: dict) -> None:
    roles = [m["role"] for m in rec["dialog"]]
    assert roles[0] == "user"
    assert all(a != b for a, b in zip(roles, roles[1:])), roles


def test_violated_then_fixed_after_one_combined_complaint():
    (rec,) = run([prompt(1, fix=1)])
    d = rec["dialog"]
    assert [m["content"] for m in d[:4]] == [prompt(1)["input_prompt"], BAD, "Too long. Use bullets.", GOOD]
    sim = rec["info"]["simulated"]
    assert sim["violated"] == ["short", "bullets"] and sim["violated_final"] == [] and sim["rounds"] == 1
    assert sim["constraints"] == ["short", "bullets"] and sim["key"] == "T" and sim["noise"] == []
    assert rec["info"]["k"] == 1 and rec["split"] == "train"  # input fields kept
    assert_alternating(rec)


def test_satisfied_first_answer_gets_no_complaint():
    recs = run([prompt(i, fix=0) for i in range(30)])
    for rec in recs:
        assert rec["dialog"][1]["content"] == GOOD and rec["info"]["simulated"]["violated"] == []
        assert all(u in THANKS["en"] for u in users_after_first(rec))  # at most a thanks
        assert all(a["type"] in ("like", "copy") and a["turn"] == 0 for a in rec["implicit_feedback"])
    assert Counter(r["info"]["simulated"]["reaction"] for r in recs).keys() >= {"like", "copy"}


@pytest.mark.parametrize("rounds", [0, 1, 3])
def test_never_fixed_stops_after_rounds_and_dislikes(rounds):
    (rec,) = run([prompt(1, fix=9)], rounds=rounds)
    assert len(users_after_first(rec)) == rounds
    assert rec["dialog"][-1]["role"] == "assistant"
    assert rec["implicit_feedback"] == [{"type": "dislike", "turn": rounds}]
    assert rec["info"]["simulated"]["violated_final"] == ["short", "bullets"]
    assert_alternating(rec)


def test_complaints_follow_the_prompt_language():
    zh = prompt(1, q="fix1: 什么是合同法？请详细说明。")
    (rec,) = run([zh])
    assert rec["dialog"][2]["content"] == "太长了。请用列表。"
    assert rec["info"]["simulated"]["lang"] == "zh"


def test_prompts_without_constraints_pass_through_even_with_noise():
    noise = {k: 1.0 for k in ("off_topic", "thanks", "unrelated_complaint", "implicit_only")}
    (rec,) = run([prompt(1, ds="Elsewhere")], **noise)
    assert [m["role"] for m in rec["dialog"]] == ["user", "assistant"]
    assert rec["implicit_feedback"] == [] and rec["info"]["simulated"]["noise"] == []
    assert rec["info"]["simulated"]["constraints"] == []


def test_a_failed_answer_is_reported_not_raised():
    m = MockChatModel(responder=responder).enqueue(error=BackendError("server down"))
    (rec,) = simulate([prompt(1)], parse_preferences(prefs_dict()), m, seed=1)
    assert rec["info"]["simulated"]["error"] == "server down"
    assert rec["dialog"] == [{"role": "user", "content": prompt(1)["input_prompt"]}]


class CountingModel(MockChatModel):
    """Records the size of every ``generate`` batch."""

    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self.batches: list[int] = []

    async def generate(self, requests, **kw):
        self.batches.append(len(requests))
        return await super().generate(requests, **kw)


def test_one_batch_per_round():
    m = CountingModel(responder=responder)
    prompts = [prompt(i, fix=i % 4) for i in range(20)]
    simulate(prompts, parse_preferences(prefs_dict()), m, seed=3, rounds=3)
    assert m.batches == [20, 15, 10, 5]  # first answers, then the prompts still violated


# -- noise ----------------------------------------------------------------------------------------


def test_implicit_only_noise_gives_actions_and_no_text():
    bad = run([prompt(i, fix=1) for i in range(10)], implicit_only=1.0, off_topic=1.0)
    good = run([prompt(i, fix=0) for i in range(10)], implicit_only=1.0)
    for rec in bad:
        assert len(rec["dialog"]) == 2 and rec["implicit_feedback"] == [{"type": "dislike", "turn": 0}]
        assert rec["info"]["simulated"]["noise"] == ["implicit_only"]
    assert all(r["implicit_feedback"][0]["type"] in ("like", "copy") and len(r["dialog"]) == 2 for r in good)


def test_thanks_noise_replaces_the_complaint():
    for rec in run([prompt(i, fix=1) for i in range(10)], thanks=1.0):
        assert users_after_first(rec) == [rec["dialog"][2]["content"]]
        assert rec["dialog"][2]["content"] in THANKS["en"] and len(rec["dialog"]) == 3
        assert rec["info"]["simulated"]["noise"] == ["thanks"] and rec["info"]["simulated"]["rounds"] == 0


def test_unrelated_complaint_joins_the_first_feedback_even_when_satisfied():
    for rec in run([prompt(i, fix=0) for i in range(5)] + [prompt(i, fix=1) for i in range(5, 10)],
                   unrelated_complaint=1.0):
        first = users_after_first(rec)[0]
        assert any(u in first for u in UNRELATED_COMPLAINTS["en"])
        assert rec["info"]["simulated"]["noise"] == ["unrelated_complaint"]
        assert_alternating(rec)


def test_off_topic_noise_closes_with_an_answered_unrelated_question():
    for rec in run([prompt(i, fix=i % 3) for i in range(12)], off_topic=1.0):
        question = rec["dialog"][-2]["content"]
        assert any(question.endswith(q) for q in OFF_TOPIC["en"])
        assert rec["dialog"][-1]["role"] == "assistant"
        assert rec["info"]["simulated"]["noise"] == ["off_topic"]
        assert_alternating(rec)


def test_zero_noise_applies_nothing():
    recs = run([prompt(i, fix=i % 3) for i in range(30)])
    assert summarize(recs)["noise"] == {}


def test_noise_rates_are_roughly_honoured():
    recs = run([prompt(i, fix=1) for i in range(200)], seed=11,
               off_topic=0.2, thanks=0.2, unrelated_complaint=0.2, implicit_only=0.2)
    noise = [set(r["info"]["simulated"]["noise"]) for r in recs]
    implicit = sum("implicit_only" in n for n in noise)
    rest = [n for n in noise if "implicit_only" not in n]
    assert abs(implicit / 200 - 0.2) < 0.1
    for kind in ("off_topic", "thanks"):
        assert abs(sum(kind in n for n in rest) / len(rest) - 0.2) < 0.1, kind
    talkers = [n for n in rest if "thanks" not in n]
    assert abs(sum("unrelated_complaint" in n for n in talkers) / len(talkers) - 0.2) < 0.1


# -- determinism ----------------------------------------------------------------------------------


def test_same_seed_same_output_and_independent_of_batch():
    prompts = [prompt(i, fix=i % 3) for i in range(40)]
    noise = dict(off_topic=0.5, thanks=0.3, unrelated_complaint=0.3, implicit_only=0.3)
    a, b = run(prompts, seed=5, **noise), run(prompts, seed=5, **noise)
    assert json.dumps(a, ensure_ascii=False) == json.dumps(b, ensure_ascii=False)
    backwards = run(prompts[::-1][:25], seed=5, **noise)
    by_idx = {r["test_idx"]: r for r in a}
    assert all({**r, "user": None} == {**by_idx[r["test_idx"]], "user": None} for r in backwards)  # users: by position
    c = run(prompts, seed=6, **noise)
    assert [r["info"]["simulated"]["noise"] for r in a] != [r["info"]["simulated"]["noise"] for r in c]


# -- output format --------------------------------------------------------------------------------


def test_output_reads_back_as_memorybench_logs(tmp_path):
    prompts = [prompt(1, fix=1), prompt(2, fix=9), prompt(3, fix=0)]
    recs = run(prompts, rounds=2)
    path = tmp_path / "logs.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in recs), encoding="utf-8")
    logs = [item for _, item, _ in read_logs(path, "memorybench")]
    assert all(isinstance(log, Log) for log in logs)
    for rec, log in zip(recs, logs):
        assert log == from_memorybench(rec, "x").model_copy(update={"source": log.source})
        assert log.query == rec["input_prompt"] and log.first_answer == rec["dialog"][1]["content"]
        assert list(log.feedback) == users_after_first(rec)
        assert [(a.kind, a.turn) for a in log.actions] == [(a["type"], a["turn"]) for a in rec["implicit_feedback"]]
        assert log.metadata["info"]["simulated"] == rec["info"]["simulated"]
    assert logs[0].feedback == ("Too long. Use bullets.",)
    assert logs[1].feedback == ("Too long. Use bullets.",) * 2 and logs[1].actions[0].kind == "dislike"


def test_simulated_users_each_have_several_dialogs_of_one_dataset(tmp_path):
    prompts = [prompt(i, ds="A") for i in range(7)] + [prompt(i, ds="B") for i in range(2)]
    recs = simulate(prompts, parse_preferences(prefs_dict()), model(), 7, rounds=1, logs_per_user=3)
    assert [r["user"] for r in recs] == ["sim-A-1"] * 3 + ["sim-A-2"] * 3 + ["sim-A-3"] + ["sim-B-1"] * 2
    path = tmp_path / "logs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in recs), encoding="utf-8")
    assert [item.user for _, item, _ in read_logs(path, "memorybench")] == [r["user"] for r in recs]
    with pytest.raises(ConfigError, match="logs_per_user"):
        SimulateConfig(logs_per_user=0)


def test_simulate_accepts_a_preference_path_and_the_packaged_default(tmp_path):
    path = write_prefs(tmp_path, prefs_dict())
    (rec,) = simulate([prompt(1)], path, model(), seed=1)
    assert rec["info"]["simulated"]["rounds"] == 1
    (rec,) = simulate([prompt(1, ds="NFCats")], None, model(), seed=1)
    assert rec["info"]["simulated"]["key"] == "NFCats"


def test_load_prompt_records_reads_jsonl_and_arrays_and_names_bad_lines(tmp_path):
    from unolearn.errors import InputError
    from unolearn.simulate import load_prompt_records

    recs = [{"input_prompt": f"question {i}", "dataset_name": "NFCats"} for i in range(3)]
    jsonl, array = tmp_path / "p.jsonl", tmp_path / "p.json"
    jsonl.write_text("\n".join(json.dumps(r) for r in recs) + "\n\n")
    array.write_text(json.dumps(recs, indent=2))
    assert load_prompt_records([jsonl], limit=2) == recs[:2]
    assert load_prompt_records([array, jsonl]) == recs + recs
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(recs[0]) + "\n{broken\n")
    with pytest.raises(InputError, match=r"bad\.jsonl:2: not valid JSON"):
        load_prompt_records([bad])
    bad.write_text(json.dumps({"dataset_name": "x", "input_prompt": 3}) + "\n")
    with pytest.raises(InputError, match=r"bad\.jsonl:1:"):
        load_prompt_records([bad])
