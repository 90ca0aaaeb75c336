"""The redaction benchmark: its labelled corpus and the shape of its report (not its targets: those are measured)."""

from __future__ import annotations

import json

import pytest

from unolearn.bench.redact import bench_redact, load_corpus
from unolearn.redact import DEFAULT_ENTITIES


@pytest.fixture(scope="module")
def report() -> dict:
    return bench_redact(n_records=50)


def test_report_structure(report):
    json.dumps(report)  # JSON-ready
    assert set(report["recall"]) == set(DEFAULT_ENTITIES) == set(report["planted"])
    for kind in DEFAULT_ENTITIES:
        assert report["planted"][kind] >= 30, kind
        assert isinstance(report["recall"][kind], float) and 0.0 <= report["recall"][kind] <= 1.0, kind
    assert len(report["missed"]) <= 20 and len(report["changed"]) <= 20
    for m in report["missed"]:
        assert m["kind"] in DEFAULT_ENTITIES and m["value"] in m["text"]
    for c in report["changed"]:
        assert c["text"] != c["redacted"]
    assert report["clean_sentences"] >= 300
    assert 0.0 <= report["clean_changed"] <= 1.0
    t = report["throughput"]
    assert t["n_records"] == 50 and t["threads"]
    assert t["records_per_s_redacted"] > 0 and t["records_per_s_plain"] > 0 and t["ratio"] > 0
    ingest = t["ingest"]
    assert ingest["records_per_s_redacted"] > 0 and ingest["records_per_s_plain"] > 0
    assert ingest["ingested_redacted"] == ingest["ingested_plain"] == 50


def test_corpus_size():
    corpus = load_corpus()
    planted = [p for row in corpus for p in row["planted"]]
    clean = [row for row in corpus if not row["planted"]]
    assert len(planted) >= 300
    assert len(clean) >= 300
    assert {row["lang"] for row in corpus} == {"en", "zh"}
    assert {p["kind"] for p in planted} == set(DEFAULT_ENTITIES)


def test_planted_values_are_verbatim_in_their_text():
    for row in load_corpus():
        for p in row["planted"]:
            assert p["kind"] in DEFAULT_ENTITIES
            assert p["value"] and p["value"] in row["text"], (p, row["text"])
