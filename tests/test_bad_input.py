"""One bad record never sinks its neighbours: each is rejected as file:line: reason, the rest stored, on each
store backend, from JSONL and from a JSON array."""

from __future__ import annotations

import json

import pytest
from conftest import chat, each_store  # noqa: F401

GOOD = [chat("first question", "an answer", "too long", user="a"), chat("second question", "b", "cite it", user="b")]
LONE_SURROGATE = '{"messages": [{"role": "user", "content": "bad \\ud800 text"}]}'
DEEP = "[" * 100_000 + "]" * 100_000
HUGE_INT = '{"messages": [{"role": "user", "content": "n"}], "rating": ' + "9" * 5000 + "}"


@pytest.fixture
def store_url(each_store):
    return each_store


def test_bad_lines_are_rejected_alone(run_cli, tmp_path, store_url):
    path = tmp_path / "logs.jsonl"
    path.write_text("\n".join([json.dumps(GOOD[0]), LONE_SURROGATE, DEEP, HUGE_INT, json.dumps(GOOD[1])]) + "\n")
    r = run_cli("ingest", str(path), "--json")
    assert r.code == 0, r.err
    assert r.json() == {"ingested": 2, "duplicates": 0, "rejected": 3}
    lines = r.err.strip().splitlines()
    assert lines[0] == f"{path}:2: messages[0].content: invalid Unicode (a lone surrogate at character 4)"
    assert lines[1] == f"{path}:3: not readable: JSON nested deeper than the reader allows"
    assert lines[2].startswith(f"{path}:4: not readable: Exceeds the limit") and "Traceback" not in r.err


def test_bad_array_elements_are_stepped_over(run_cli, tmp_path, store_url):
    path = tmp_path / "logs.json"
    path.write_text("[" + ",\n".join([json.dumps(GOOD[0]), DEEP, HUGE_INT, LONE_SURROGATE, json.dumps(GOOD[1])])
                    + "]")
    r = run_cli("ingest", str(path), "--json")
    assert r.code == 0, r.err
    assert r.json() == {"ingested": 2, "duplicates": 0, "rejected": 3}
    assert [line.split(": ")[0] for line in r.err.strip().splitlines()] == [f"{path}:{n}" for n in (2, 3, 4)]
