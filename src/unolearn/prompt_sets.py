"""The MemoryBench prompt sets shipped inside the package.

Why it exists: the demo, the simulator and the quality benchmark need prompts, and a user's fresh clone
(or a ``pip install``) has no data folder beside it. Three MemoryBench sets (NFCats en, LexEval-QA zh,
HelloBench academic QA en; MIT, see ``data/memorybench/LICENSE``) ship as JSONL files in
``unolearn/data/memorybench``. Commands that take prompt files also take the names ``memorybench:train``,
``memorybench:test`` (the three sets of that split) and ``memorybench:<set>_<split>`` (one file).
"""

from __future__ import annotations

import shutil
from importlib import resources
from pathlib import Path

from .errors import InputError

#: The prompt sets, in the order the demo and the benchmark use them.
PROMPT_SETS = ("nfcats", "lexeval_qa", "hellobench_ak_qa")
SPLITS = ("train", "test")
PREFIX = "memorybench:"


def packaged_dir() -> Path:
    """The installed folder holding the packaged prompt files (and their LICENSE and README)."""
    return Path(str(resources.files("unolearn").joinpath("data", "memorybench")))


def split_files(data_dir: Path, split: str) -> list[Path]:
    """The prompt files of ``split`` (train or test) in ``data_dir``, or an :class:`InputError` naming the missing."""
    files = [data_dir / f"{name}_{split}.jsonl" for name in PROMPT_SETS]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise InputError(f"missing prompt file(s): {', '.join(missing)}")
    return files


def resolve(name: str) -> list[Path]:
    """The files a prompt argument names: a packaged name (``memorybench:test``, ``memorybench:nfcats_train``)
    or a path."""
    if not name.startswith(PREFIX):
        return [Path(name)]
    which = name[len(PREFIX):]
    if which in SPLITS:
        return split_files(packaged_dir(), which)
    known = [f"{s}_{sp}" for s in PROMPT_SETS for sp in SPLITS]
    if which not in known:
        raise InputError(f"{name}: unknown packaged prompt set (known: {', '.join(SPLITS + tuple(known))})")
    return [packaged_dir() / f"{which}.jsonl"]


def export(dest: Path) -> list[Path]:
    """Copy the packaged prompt files, their LICENSE and README into ``dest`` (created); return the written paths."""
    dest.mkdir(parents=True, exist_ok=True)
    written = []
    for src in sorted(packaged_dir().iterdir()):
        if src.suffix == ".jsonl" or src.name in ("LICENSE", "README.md"):
            written.append(Path(shutil.copyfile(src, dest / src.name)))
    return written
