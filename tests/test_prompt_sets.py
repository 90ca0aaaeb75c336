"""The packaged MemoryBench prompt sets: names, export, and the commands that accept them."""

import json
import sys

import pytest

from unolearn.bench.demo import run_sampled
from unolearn.errors import InputError
from unolearn.prompt_sets import PROMPT_SETS, export, packaged_dir, resolve
from unolearn.simulate import load_prompt_records


def test_packaged_sets_have_the_documented_sizes_and_licence():
    d = packaged_dir()
    assert "MIT License" in (d / "LICENSE").read_text(encoding="utf-8")
    sizes = {f.stem: len(load_prompt_records([f])) for f in sorted(d.glob("*.jsonl"))}
    assert sizes == {"nfcats_train": 200, "nfcats_test": 50, "lexeval_qa_train": 200, "lexeval_qa_test": 50,
                     "hellobench_ak_qa_train": 170, "hellobench_ak_qa_test": 43}


def test_names_resolve_to_files():
    assert [p.name for p in resolve("memorybench:test")] == [f"{s}_test.jsonl" for s in PROMPT_SETS]
    assert [p.name for p in resolve("memorybench:nfcats_train")] == ["nfcats_train.jsonl"]
    assert resolve("some/file.jsonl")[0].as_posix() == "some/file.jsonl"
    with pytest.raises(InputError, match="memorybench:nope: unknown packaged prompt set"):
        resolve("memorybench:nope")


def test_export_copies_prompts_licence_and_readme(tmp_path):
    written = export(tmp_path / "out")
    names = {p.name for p in written}
    assert {"LICENSE", "README.md", "lexeval_qa_test.jsonl"} <= names and len(names) == 8
    assert (tmp_path / "out" / "nfcats_test.jsonl").read_bytes() == (packaged_dir() / "nfcats_test.jsonl").read_bytes()


def test_data_commands_and_a_bad_name(run_cli, tmp_path):
    r = run_cli("data", "export", str(tmp_path / "d"), "--json")
    assert r.code == 0 and len(json.loads(r.out)["files"]) == 8
    r = run_cli("data", "path")
    assert r.code == 0 and r.out.strip() == str(packaged_dir())
    r = run_cli("bench", "quality", "--test", "memorybench:tests")
    assert r.code == 2 and "unknown packaged prompt set" in r.err and "Traceback" not in r.err


def test_process_tree_peak_counts_children(tmp_path):
    # The parent stays small; a grandchild holds ~300 MB: the summed tree peak must see it.
    grandchild = "import time; b = bytearray(300 * 2**20); b[::4096] = b'x' * len(b[::4096]); time.sleep(1.5)"
    child = f"import subprocess, sys; subprocess.run([sys.executable, '-c', {grandchild!r}]); print('done')"
    out = run_sampled([sys.executable, "-c", child], interval_s=0.05)
    assert out["returncode"] == 0 and out["stdout"].strip() == "done"
    assert out["peak_tree_mb"] >= 300
