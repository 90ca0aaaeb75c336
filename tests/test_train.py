"""Expert and critic training on the tiny model, module reuse, and `answer` on every path."""

import asyncio
import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from doubles import HashEmbedder
from safetensors.torch import load_file
from tiny_model import tiny_model_dir  # noqa: F401

from unolearn.answer import answer, plan_route
from unolearn.backends import Models
from unolearn.backends.hf import TransformersChatModel
from unolearn.cluster import ClusterConfig, Router
from unolearn.cluster import run as cluster
from unolearn.errors import ConfigError, InputError
from unolearn.prompts import CRITIC_CLIP, critic_prompt
from unolearn.records import Log, Message
from unolearn.store import Workspace, now
from unolearn.text import clip
from unolearn.train import (
    CPU_VOCAB_TILE,
    TrainConfig,
    accumulation,
    cpu_bf16,
    list_modules,
    module_kinds,
    run,
    run_in_child,
)
from unolearn.training_data import (
    critic_rows,
    critic_splits,
    expert_rows,
    fold_ids,
    learning_rows,
    split_ids,
    split_members,
)

TOPICS = {  # cluster theme → (query words, feedback rule); themes share no words, so they cluster apart
    "rice": ("how to cook rice grains pot", "Give numbered steps."),
    "law": ("contract statute liability court", "Cite the article of the statute."),
    "travel": ("train ticket station paris", "Answer in one sentence."),
}


def seed_workspace(ws: Workspace) -> dict[str, list[str]]:
    """Six logs per theme with feedback rules and a preference pair each."""
    return {theme: [add_theme_log(ws, theme, i) for i in range(6)] for theme in TOPICS}


def add_theme_log(ws: Workspace, theme: str, i: int) -> str:
    """One log of ``theme`` with its feedback and prior rules and a preference pair; its id."""
    words, rule = TOPICS[theme]
    log = Log.from_messages([Message(role="user", content=f"{words} question {i}"),
                             Message(role="assistant", content=f"A long answer about {theme} {i}."),
                             Message(role="user", content="not like this")], source="t")
    ws.add_logs([log])
    with ws.transaction() as c:
        c.execute("INSERT INTO rules VALUES (?, 'feedback', ?, 'm', ?)", (log.id, json.dumps([rule]), now()))
        c.execute("INSERT INTO rules VALUES (?, 'prior', ?, 'm', ?)", (log.id, json.dumps(["Be clear."]), now()))
        c.execute("INSERT INTO pairs VALUES (?,?,?,?,?,?,?,?,?,?)",
                  (f"pair-{log.id}", log.id, "revision", json.dumps([{"role": "user", "content": log.query}]),
                   f"Short answer about {theme}.", log.first_answer, 9.0, "[]", "m", now()))
    return log.id


@pytest.fixture(scope="module")
def trained(tiny_model_dir, tmp_path_factory):
    ws = Workspace.open(tmp_path_factory.mktemp("trained") / "ws")
    ids = seed_workspace(ws)
    embedder = HashEmbedder(dim=64)
    cluster(ws, embedder, ClusterConfig(threshold=1.0))
    by_theme = {t: ws.conn.execute("SELECT cluster FROM cluster_members WHERE log_id = ?", (v[0],)).fetchone()[0]
                for t, v in ids.items()}
    assert len(set(by_theme.values())) == 3, "test data should form one cluster per theme"
    with ws.transaction() as c:  # the law cluster is planned reflective
        for theme, cid in by_theme.items():
            plan = "reflective" if theme == "law" else "primary"
            c.execute("INSERT INTO gaps VALUES (?,?,?,?,?,?,?,?)", (cid, "embedding", 0.5, 0.5, 0.5, 6, plan, 0.45))
    cfg = TrainConfig(base_model=str(tiny_model_dir), epochs=2, critic_epochs=2, lora_r=4, lora_alpha=8,
                      grad_accum=1, max_length=256, min_pairs=3)
    modules = run(ws, cfg)
    yield ws, cfg, modules, by_theme, embedder
    ws.close()


def test_split_is_seeded_80_20():
    ids = [f"id{i}" for i in range(10)]
    train, val = split_ids(ids, 0.2, 42)
    assert len(train) == 8 and len(val) == 2 and split_ids(list(reversed(ids)), 0.2, 42) == (train, val)
    assert split_ids(["a"], 0.2, 42) == (["a"], []) and split_ids(ids, 0.2, 1) != (train, val)


def test_a_small_cluster_keeps_enough_validation_items_to_be_judged():
    ids = [f"log{i}" for i in range(7)]  # 20% of 7 rounds to one item, which select never judges
    assert len(split_ids(ids, 0.2, 42)[1]) == 1
    train, val = split_ids(ids, 0.2, 42, min_val=2)
    assert len(val) == 2 and len(train) == 5 and not set(train) & set(val)
    assert len(split_ids(ids[:5], 0.2, 42, min_val=2)[1]) == 1  # under 3 × min_val: the share alone
    assert len(split_ids([f"log{i}" for i in range(20)], 0.2, 42, min_val=2)[1]) == 4
    assert TrainConfig().min_val_logs == 2


def test_folds_deal_every_id_once_and_need_two():
    ids = [f"log{i}" for i in range(5)]
    folds = fold_ids(ids, 2, 42)
    assert sorted(len(f) for f in folds) == [2, 3] and sorted(sum(folds, [])) == ids
    assert fold_ids(list(reversed(ids)), 2, 42) == folds and fold_ids(ids, 2, 1) != folds
    assert sorted(fold_ids(ids[:2], 3, 42)) == [["log0"], ["log1"]] and fold_ids(ids[:1], 2, 42) == []
    assert fold_ids(ids, 1, 42) == fold_ids(ids, 0, 42) == []


def test_a_cross_fitted_critic_trains_on_every_log_and_its_folds_on_the_others(ws):
    ids = seed_workspace(ws)["law"]
    with ws.transaction() as c:
        c.execute("INSERT INTO clusters VALUES (?,?,?,?,?)", (0, 6, b"\0" * 16, "hash", now()))
        c.executemany("INSERT INTO cluster_members VALUES (?,?)", [(i, 0) for i in ids])
    splits = critic_splits(ws, 0, TrainConfig())
    assert [(k, len(t), len(v)) for k, t, v in splits] == [("critic-fold", 3, 3), ("critic-fold", 3, 3),
                                                            ("critic", 6, 0)]
    for _, train, val in splits[:2]:
        assert sorted(train + val) == sorted(ids)
    held_out = TrainConfig(critic_folds=0)  # as the reference: one critic on the held-out split
    assert critic_splits(ws, 0, held_out) == [("critic", *split_members(ws, 0, held_out))]
    with pytest.raises(ConfigError, match="critic_folds"):
        TrainConfig(critic_folds=-1)

def test_logs_whose_feedback_gave_no_rules_train_as_no_change_pairs(ws):
    ids = seed_workspace(ws)
    quiet = Log.from_messages([Message(role="user", content="how to cook rice grains pot question 9"),
                               Message(role="assistant", content="Rinse, simmer, rest."),
                               Message(role="user", content="thanks!")], source="t")
    ws.add_logs([quiet])
    with ws.transaction() as c:
        c.execute("INSERT INTO rules VALUES (?, 'feedback', '[]', 'm', ?)", (quiet.id, now()))
        c.execute("INSERT INTO clusters VALUES (0, 7, ?, 'hash', ?)", (b"\0" * 16, now()))
        c.executemany("INSERT INTO cluster_members VALUES (?, 0)", [(i,) for i in [*ids["rice"], quiet.id]])
    train_ids, val_ids = split_members(ws, 0, TrainConfig(val_fraction=0.2, seed=42, min_val_logs=1))
    assert quiet.id in train_ids and quiet.id not in val_ids and len(val_ids) == 1  # split of the 6 with rules
    rows = expert_rows(ws, train_ids)
    keep = [r for r in rows if r["chosen"] == r["rejected"]]
    assert len(rows) == 6 and keep == [{"prompt": [{"role": "user", "content": quiet.query}],
                                        "chosen": [{"role": "assistant", "content": "Rinse, simmer, rest."}],
                                        "rejected": [{"role": "assistant", "content": "Rinse, simmer, rest."}]}]
    assert learning_rows("expert", rows) == 5 and len(critic_rows(ws, train_ids)) == 5  # critics: rules only


def test_experts_and_critics_follow_the_plan(trained):
    ws, _, modules, by_theme, _ = trained
    kinds = {(m.cluster, m.kind) for m in modules}
    assert (by_theme["rice"], "expert") in kinds and (by_theme["travel"], "expert") in kinds
    assert (by_theme["law"], "expert") in kinds and (by_theme["law"], "critic") in kinds  # as the reference
    assert len([m for m in modules if m.kind == "critic"]) == 3
    for m in modules:
        assert set(m.metrics["train_loss"]) == {1, 2} and all(np.isfinite(list(m.metrics["train_loss"].values())))
        assert [p.name for p in sorted(Path(m.path).iterdir())] == ["epoch-1", "epoch-2"]
    for c in by_theme.values():
        expert, critic = ws.modules(c, "expert")[0], ws.modules(c, "critic")[0]
        assert len(expert["train_logs"]) == 4 and len(expert["val_logs"]) == 2  # min_val_logs (2) held out, not 20%
        # the critic is cross-fitted (train.critic_folds 2): it trains on all six logs, each fold critic on three
        # and is judged on the other three, so that every log is judged once
        assert len(critic["train_logs"]) == 6 and critic["val_logs"] == []
        folds = ws.modules(c, "critic-fold")
        assert [(len(f["train_logs"]), len(f["val_logs"])) for f in folds] == [(3, 3), (3, 3)]
        assert sorted(folds[0]["val_logs"] + folds[1]["val_logs"]) == sorted(critic["train_logs"])
        assert {f["metrics"]["partition"] for f in folds} == {critic["metrics"]["partition"]}


def test_critic_sees_long_questions_and_answers_clipped():
    query, answer = "案情：" + "甲与乙签订合同。" * 250, "回答：" + "根据合同法第五十二条。" * 100
    [msg] = critic_prompt(query, answer, "zh")
    assert len(msg["content"]) < 2 * CRITIC_CLIP["zh"] + 120  # the prompt's own words and the two " … "
    assert "案情：甲" in msg["content"] and msg["content"].count(" … ") == 2 and msg["content"].endswith("条。")
    assert clip("short", 10) == "short" and clip("abcdefghijkl", 6) == "abcd … kl"
    [short] = critic_prompt("How do I boil rice?", "Boil it.", "en")
    assert "How do I boil rice?" in short["content"] and " … " not in short["content"]


def test_which_clusters_get_which_modules():
    def kinds(experts, critics, plan):
        return module_kinds(TrainConfig(experts=experts, critics=critics), plan)

    assert kinds("all", "all", "reflective") == ["expert", "critic"] == kinds("all", "all", None)
    assert kinds("primary", "all", "reflective") == ["critic"]
    assert kinds("primary", "all", "primary") == ["expert", "critic"]
    assert kinds("all", "reflective", "primary") == ["expert"]
    assert kinds("none", "reflective", "reflective") == ["critic"]
    assert kinds("none", "none", "primary") == []
    with pytest.raises(ConfigError, match="experts: 'some'"):
        TrainConfig(experts="some")


def test_lora_weights_changed_and_base_weights_did_not(trained, tiny_model_dir):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    _, _, modules, _, _ = trained
    expert = next(m for m in modules if m.kind == "expert")
    w1 = load_file(f"{expert.path}/epoch-1/adapter_model.safetensors")
    w2 = load_file(f"{expert.path}/epoch-2/adapter_model.safetensors")
    lora_b = [k for k in w2 if "lora_B" in k]
    assert lora_b and all(torch.count_nonzero(w2[k]) > 0 for k in lora_b)  # PEFT initialises B to zero
    assert any(not torch.equal(w1[k], w2[k]) for k in w2)
    assert not any("lora" not in k for k in w2), "the adapter must hold LoRA weights only"
    fresh = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    peft = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), f"{expert.path}/epoch-2")
    base_after = {k.replace("base_model.model.", "").replace(".base_layer", ""): v
                  for k, v in peft.state_dict().items() if "lora" not in k}
    for k, v in fresh.state_dict().items():
        assert torch.equal(v, base_after[k]), k
    ids = torch.tensor([[1, 5, 9, 12]])
    with torch.no_grad():
        with_adapter = peft(ids).logits
        with peft.disable_adapter():
            without = peft(ids).logits
    assert not torch.allclose(with_adapter, without)


def test_same_data_and_config_is_not_retrained(trained):
    ws, cfg, modules, _, _ = trained
    again = run(ws, cfg)
    assert all(m.reused for m in again) and {m.id for m in again} == {m.id for m in modules}
    assert len(list_modules(ws)) == len(modules)


def test_modules_do_not_depend_on_where_the_model_or_the_workspace_lies(trained, tmp_path):
    ws, cfg, modules, _, _ = trained
    moved_model = shutil.copytree(cfg.base_model, tmp_path / Path(cfg.base_model).name)
    again = run(ws, replace(cfg, base_model=str(moved_model)))  # the same model elsewhere: nothing retrained
    assert all(m.reused for m in again) and {m.id for m in again} == {m.id for m in modules}
    stored = [r[0] for r in ws.conn.execute("SELECT path FROM modules WHERE kind != 'guide'")]
    assert stored and all(p.startswith("artifacts/modules/") for p in stored)
    copy = shutil.copytree(ws.root, tmp_path / "moved-ws")
    with Workspace.open(copy) as moved:
        paths = [Path(moved.module(m.id)["path"]) for m in modules]
    assert all(p.is_dir() and p.is_relative_to(copy) for p in paths)


def test_a_new_clustering_drops_the_old_plans_and_never_selects_its_modules(tiny_model_dir, tmp_path):
    from unolearn.plans import load_plan
    from unolearn.selection import _latest_module

    with Workspace.open(tmp_path / "ws") as ws:
        seed_workspace(ws)
        embedder = HashEmbedder(dim=64)
        cluster(ws, embedder, ClusterConfig(threshold=1.0))
        cfg = TrainConfig(base_model=str(tiny_model_dir), epochs=1, critic_epochs=1, lora_r=4, lora_alpha=8,
                          grad_accum=1, max_length=256, min_pairs=3, experts="all", critics="none")
        trained_for = {m.cluster: m.id for m in run(ws, cfg, cluster=0)}
        _plan(ws, 0, "primary", trained_for[0], 1)
        assert load_plan(ws, 0, "uno").module_id == trained_for[0]
        assert _latest_module(ws, 0, "expert")["id"] == trained_for[0]
        cluster(ws, embedder, ClusterConfig(threshold=1.5))  # other settings, other clusters (ids reused)
        assert load_plan(ws, 0, "uno") is None
        assert _latest_module(ws, 0, "expert") is None
        assert ws.conn.execute("SELECT count(*) FROM plans").fetchone()[0] == 0


def test_new_logs_retrain_only_the_cluster_they_joined(tiny_model_dir, tmp_path):
    with Workspace.open(tmp_path / "ws") as ws:
        ids = seed_workspace(ws)
        embedder, settings = HashEmbedder(dim=64), ClusterConfig(threshold=1.0)
        cluster(ws, embedder, settings)
        theme_of = {ws.member_map()[v[0]]: t for t, v in ids.items()}
        cfg = TrainConfig(base_model=str(tiny_model_dir), epochs=1, critic_epochs=1, lora_r=4, lora_alpha=8,
                          grad_accum=1, max_length=256, min_pairs=3, experts="all", critics="none")
        first = {theme_of[m.cluster]: m.id for m in run(ws, cfg)}
        assert len(first) == 3
        new = [add_theme_log(ws, "rice", i) for i in (6, 7)]
        res = cluster(ws, embedder, settings)  # incremental: the new logs join the rice cluster, ids stay
        rice = ws.member_map()[ids["rice"][0]]
        assert res.mode == "incremental" and res.changed == [rice] and {ws.member_map()[i] for i in new} == {rice}
        again = {theme_of[m.cluster]: m for m in run(ws, cfg)}
        assert {t: m.reused for t, m in again.items()} == {"rice": False, "law": True, "travel": True}
        assert again["law"].id == first["law"] and again["travel"].id == first["travel"]
        assert again["rice"].id != first["rice"]


def test_train_errors(trained, tmp_path):
    ws, cfg, _, _, _ = trained
    with pytest.raises(InputError, match="no cluster 99"):
        run(ws, cfg, cluster=99)
    with pytest.raises(ConfigError, match="config.json"):
        run(ws, TrainConfig(base_model=str(tmp_path)))
    with pytest.raises(ConfigError):
        TrainConfig(critics="some")
    with Workspace.open(tmp_path / "empty") as empty:
        with pytest.raises(InputError, match="unolearn cluster"):
            run(empty, cfg)
        with pytest.raises(InputError, match="unolearn cluster"):  # raised in the child, re-raised here
            run_in_child(empty.root, cfg)


def test_a_module_whose_examples_are_all_too_long_is_skipped_not_fatal(tiny_model_dir, tmp_path, capsys):
    with Workspace.open(tmp_path / "ws") as ws:
        seed_workspace(ws)
        cluster(ws, HashEmbedder(dim=64), ClusterConfig(threshold=1.0))
        cfg = TrainConfig(base_model=str(tiny_model_dir), epochs=1, critic_epochs=1, lora_r=4, lora_alpha=8,
                          grad_accum=1, max_length=8, min_pairs=3, critics="all")
        modules = run(ws, cfg)
        result = json.loads(ws.conn.execute("SELECT result FROM runs WHERE stage = 'train'").fetchone()[0])
    assert not any(m.kind == "critic" for m in modules)  # 8 tokens hold no critic example
    assert len([s for s in result["skipped"] if "critic example fits in max_length=8" in s]) == 3
    assert "warning: cluster" in capsys.readouterr().err


def test_rows_longer_than_max_length_are_counted_and_reported(tiny_model_dir, tmp_path, capsys):
    from unolearn.funnel import funnel, funnel_lines

    with Workspace.open(tmp_path / "ws") as ws:
        ids = seed_workspace(ws)
        cluster(ws, HashEmbedder(dim=64), ClusterConfig(threshold=1.0))
        rice = ws.member_map()[ids["rice"][0]]
        cfg = TrainConfig(base_model=str(tiny_model_dir), epochs=1, lora_r=4, lora_alpha=8, grad_accum=1,
                          max_length=96, min_pairs=2, experts="all", critics="none")
        train_ids, _ = split_members(ws, rice, cfg)
        filler = " ".join(["grains"] * 400)
        long_prompt = json.dumps([{"role": "user", "content": f"how to cook rice {filler}"}])
        with ws.transaction() as c:  # one row's prompt alone is too long, another's answer runs past the limit
            c.execute("UPDATE pairs SET prompt = ? WHERE log_id = ?", (long_prompt, train_ids[0]))
            c.execute("UPDATE pairs SET chosen = ? WHERE log_id = ?", (f"Rice: {filler}", train_ids[1]))
        (expert,) = run(ws, cfg, cluster=rice)
        assert (expert.metrics["rows_left_out"], expert.metrics["rows_cut"]) == (1, 1)
        warning = f"cluster {rice} expert: 1 of its {len(train_ids)} training rows were left out"
        assert warning in capsys.readouterr().err
        f = funnel(ws)
        assert f["expert_rows_unfit"] == {expert.id: [1, 1]}
        assert any("1 left out, 1 cut" in line for line in funnel_lines(f))
        again = run(ws, replace(cfg, max_length=4096), cluster=rice)  # room for every row: none counted
        assert (again[0].metrics["rows_left_out"], again[0].metrics["rows_cut"]) == (0, 0)
        assert "training rows" not in capsys.readouterr().err


def test_narrow_vocabulary_tiles_give_the_same_log_probabilities(trained):
    """DPO's fused head on a CPU works on 8,192-column tiles (``trained`` loaded a model, which narrows them); the
    log-probabilities and gradients equal those of TRL's own width. The memory it saves is measured in
    scripts/measure_vocab_tile.py."""
    import trl.trainer.utils as trl_utils
    from trl.kernels import ChunkedLogProbFunction

    assert trl_utils._CHUNKED_LOGPROB_CHUNK_SIZE == CPU_VOCAB_TILE == 8192
    torch.manual_seed(0)
    weight = torch.randn(20_000, 32) * 0.1  # three tiles of 8,192 against one of 32,768
    targets = torch.randint(0, 20_000, (6,))
    results = []
    for tile in (32768, CPU_VOCAB_TILE):
        hidden = torch.randn(6, 32, generator=torch.Generator().manual_seed(1)).requires_grad_()
        log_probs = ChunkedLogProbFunction.apply(hidden, weight, None, targets, 1.0, tile, None, 1.0, ("entropy",))[0]
        log_probs.sum().backward()
        results.append((log_probs.detach(), hidden.grad))
    (wide, wide_grad), (narrow, narrow_grad) = results
    assert torch.allclose(wide, narrow, atol=1e-5) and torch.allclose(wide_grad, narrow_grad, atol=1e-5)
    assert torch.allclose(wide, torch.log_softmax(torch.randn(6, 32, generator=torch.Generator().manual_seed(1))
                                                  @ weight.T, -1)[torch.arange(6), targets], atol=1e-4)


def test_cpu_bf16_needs_native_support():
    assert cpu_bf16("flags\t\t: fpu avx2 avx512f avx512_bf16\n") is True
    assert cpu_bf16("flags\t\t: fpu avx2 amx_tile amx_bf16\n") is True
    assert cpu_bf16("flags\t\t: fpu avx2 avx512f\n") is False and cpu_bf16("") is False


def test_cpu_profile_checkpoints_gradients_and_gpu_does_not():
    assert TrainConfig(profile="cpu").resolved().gradient_checkpointing is True
    assert TrainConfig(profile="gpu").resolved().gradient_checkpointing is False
    assert TrainConfig(profile="cpu", gradient_checkpointing=False).resolved().gradient_checkpointing is False


def _plan(ws, cluster, path, module=None, epoch=None):
    with ws.transaction() as c:
        for system in ("uno", "uno-single"):
            p = path if system == "uno" or path != "reflective" else "base"
            c.execute("INSERT OR REPLACE INTO plans (cluster, system, path, module_id, epoch, win_rate, reason, "
                      "clustering) VALUES (?,?,?,?,?,?,?, (SELECT max(id) FROM clusterings))",
                      (cluster, system, p, module if p != "base" else None, epoch if p != "base" else None, None, "t"))


def test_answer_takes_each_path(trained, tiny_model_dir):
    ws, _, modules, by_theme, embedder = trained
    expert = next(m for m in modules if m.kind == "expert" and m.cluster == by_theme["rice"])
    critic = next(m for m in modules if m.kind == "critic" and m.cluster == by_theme["law"])
    _plan(ws, by_theme["rice"], "primary", expert.id, 2)
    _plan(ws, by_theme["law"], "reflective", critic.id, 1)
    _plan(ws, by_theme["travel"], "base")
    gen = TransformersChatModel(tiny_model_dir)
    models = Models(ws, generator=gen, embedder=embedder)
    router = Router.load(ws, embedder)

    def ask(q, system="uno"):
        return asyncio.run(answer(ws, models, router, [{"role": "user", "content": q}], system, max_tokens=8))

    primary = ask("how to cook rice grains pot question 9")
    assert (primary.route.path, primary.route.module_id, primary.route.epoch) == ("primary", expert.id, 2)
    assert gen.usage.calls == 1 and f"{expert.id}@2" in gen._adapters
    reflective = ask("contract statute liability court question 9")
    assert reflective.route.path == "reflective" and reflective.route.module_id == critic.id
    assert reflective.draft is not None and reflective.critique is not None and gen.usage.calls == 4
    base = ask("train ticket station paris question 9")
    assert base.route.path == "base" and base.route.cluster == by_theme["travel"] and gen.usage.calls == 5
    assert ask("contract statute liability court question 9", "uno-single").route.path == "base"
    assert plan_route(ws, router, "how to cook rice", "base").path == "base"
    with pytest.raises(ConfigError):
        plan_route(ws, router, "q", "magic")


def test_profile_fills_only_unset_fields():
    cpu = TrainConfig(profile="cpu", epochs=3).resolved()
    assert (cpu.profile, cpu.epochs, cpu.critic_epochs, cpu.lora_r, cpu.max_length, cpu.min_pairs) == (
        "cpu", 3, 2, 8, 1280, 2)
    gpu = TrainConfig(profile="gpu", lora_r=16).resolved()
    assert (gpu.epochs, gpu.lora_r, gpu.lora_alpha, gpu.grad_accum, gpu.max_length, gpu.min_pairs) == (
        8, 16, 128, 8, 1024, 4)
    auto = TrainConfig().resolved()
    assert auto.profile == ("gpu" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ConfigError, match="profile"):
        TrainConfig(profile="tpu")
    with pytest.raises(ConfigError):
        TrainConfig(epochs=0)


def test_small_clusters_take_more_optimizer_steps_for_the_same_compute():
    cpu, gpu = TrainConfig(profile="cpu").resolved(), TrainConfig(profile="gpu").resolved()
    assert [accumulation(cpu, n) for n in (3, 6, 12, 20, 100)] == [1, 1, 3, 4, 4]
    assert accumulation(gpu, 6) == 8  # the paper's settings stay as they are
    assert accumulation(TrainConfig(profile="cpu", min_steps_per_epoch=2).resolved(), 6) == 3


def test_bench_train_trains_one_seeded_cluster(tiny_model_dir, tmp_path):
    from unolearn.bench.train import bench_train

    cfg = TrainConfig(base_model=str(tiny_model_dir), profile="cpu", epochs=1, critic_epochs=1, lora_r=4,
                      lora_alpha=8, max_length=256)
    out = bench_train(5, cfg, HashEmbedder(dim=64), answer_words=12, workspace=tmp_path / "ws")
    assert out["config"]["profile"] == "cpu" and out["pairs"] == 5
    assert (out["expert"]["n_train"], out["expert"]["n_val"]) == (4, 1)
    assert (out["critic"]["n_train"], out["critic"]["n_val"]) == (5, 0)  # cross-fitted: judged by its folds
    assert out["critic_folds"]["n"] == 2 and sorted(out["critic_folds"]["n_val"]) == [2, 3]
    for kind in ("expert", "critic"):
        assert out[kind]["seconds"] > 0 and Path(out[kind]["path"], "epoch-1").is_dir()
    with Workspace.open(tmp_path / "ws") as ws:  # kept, with the modules recorded for select and answer
        assert {m["kind"] for m in list_modules(ws)} == {"expert", "critic", "critic-fold"}
        assert ws.conn.execute("SELECT embedder, size FROM clusters").fetchall() == [("hash", 5)]
    with pytest.raises(InputError, match="empty workspace"):
        bench_train(5, cfg, HashEmbedder(dim=64), answer_words=12, workspace=tmp_path / "ws")


def test_embedded_model_converts_to_a_hugging_face_folder(tmp_path):
    """The packaged GGUF model → a trainable HF folder, written once (the CPU users' base model)."""
    pytest.importorskip("llama_cpp")
    from unolearn.base_model import embedded_hf_model

    dest = embedded_hf_model(tmp_path / "base-model")
    config = json.loads((dest / "config.json").read_text())
    shards = sorted(dest.glob("model-*-of-*.safetensors"))  # sharded: a shard at a time is copied to write it
    assert len(shards) > 1 and (dest / "model.safetensors.index.json").is_file()
    weights = {k: v for f in shards for k, v in load_file(f).items()}
    embed = weights["model.embed_tokens.weight"]
    assert embed.shape == (config["vocab_size"], config["hidden_size"]) and embed.dtype == torch.bfloat16
    assert all(t.device.type == "cpu" and torch.isfinite(t).all() for t in weights.values())
    assert len(weights) > 200 and (dest / "tokenizer.json").is_file()
    stamp = shards[0].stat().st_mtime_ns
    assert embedded_hf_model(dest) == dest and shards[0].stat().st_mtime_ns == stamp
