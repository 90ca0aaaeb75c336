"""Random preference files: reproducible, valid, and every dataset's set can be met by one answer."""

from __future__ import annotations

import re

import yaml

from unolearn.constraints import compliance
from unolearn.prefgen import DATASETS, random_preferences
from unolearn.simulate import load_preferences

SEEDS = range(100)  # development seeds (0-99); the benchmark measures on seeds of 1000 and above


def witness(constraints, lang: str) -> str:
    """An answer built to meet every check of ``constraints`` (it fails when two of them clash)."""
    checks = {name: param for c in constraints for name, param in c.check.items()}
    word = "字" if lang == "zh" else "word "
    lines = [checks.get("starts_with", "") + ("是的" if lang == "zh" else " Yes")]
    if checks.get("heading"):
        lines.append("# Overview")
    if "bullet_list" in checks:
        lines += [f"- point {i}" for i in range(checks["bullet_list"]["min"] or 1)]
    if checks.get("numbered_list"):
        lines += ["1. first", "2. second"]
    if "quote_source" in checks:
        lines.append("依据《中华人民共和国民法典》第一百条")
    markers = ("Summary: short", "Note: mind this", "For example this", "It is **key**")  # one sentence in all
    for pattern in (p for c in constraints for name, p in c.check.items() if name == "contains"):
        lines.append(next(m for m in markers if re.search(pattern, m)))
    if "min_words" in checks:
        lines.append(word * checks["min_words"])
    text = "\n".join(lines)
    if "paragraphs" in checks:
        text = text + "\n\n" + "\n\n".join(["More"] * ((checks["paragraphs"]["min"] or 1) - 1))
    return text + (" " + checks["ends_with"] if "ends_with" in checks else "")


def test_a_seed_gives_the_same_file_and_seeds_differ():
    assert random_preferences(7) == random_preferences(7)
    assert len({yaml.safe_dump(random_preferences(s)) for s in range(20)}) == 20


def test_every_drawn_set_is_valid_and_can_be_met():
    for seed in SEEDS:
        prefs = load_preferences(f"random:{seed}")
        assert set(prefs.datasets) == set(DATASETS)
        for name, dataset in prefs.datasets.items():
            assert 2 <= len(dataset.constraints) <= 3, (seed, name)
            lang = "zh" if name.startswith("LexEval") else "en"
            answer = witness(dataset.constraints, lang)
            assert all(compliance(answer, dataset.constraints).values()), (seed, name, answer)
            for c in dataset.constraints:
                assert {c.complaints("en")[0], c.complaints("zh")[0]} <= set(c.feedback)


def test_the_cli_prints_a_random_file_that_reads_back(run_cli, tmp_path):
    r = run_cli("preferences", "random:7")
    assert r.code == 0, r.err
    (tmp_path / "p.yaml").write_text(r.out, encoding="utf-8")
    assert load_preferences(tmp_path / "p.yaml") == load_preferences("random:7")
    bad = run_cli("simulate", "memorybench:train", "--preferences", "random:x", "-o", str(tmp_path / "o.jsonl"))
    assert bad.code == 2 and "expected random:SEED" in bad.err
