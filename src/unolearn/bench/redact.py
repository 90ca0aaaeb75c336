"""Redaction benchmark: what the redactor finds, what it wrongly changes, and what it costs, in one run.

Measured on the packaged labelled corpus ``unolearn/data/redact/corpus.jsonl`` (written by
``scripts/make_redact_corpus.py``): English and Chinese sentences with planted identifiers of every default
kind, and clean sentences (MemoryBench prompts, ShareGPT turns) that hold none but are rich in digits.

- ``recall``: per kind, the share of planted identifiers that are gone from the redacted sentence, replaced by
  a placeholder of their kind (``<EMAIL_``, ``<PHONE_`` ...). A value cut only in part, or covered by another
  kind's placeholder, is a miss.
- ``clean_changed``: the share of clean sentences that redaction changed (false positives).
- throughput: ``n_records`` OpenAI-format logs (system, user query, assistant answer, user feedback; texts of
  the corpus in turn, so a mix of clean and identifier-bearing ones) through :meth:`Redactor.log` with
  redaction on and off, and through the real :func:`unolearn.ingest.ingest` into a throwaway workspace, on
  and off. ``ratio`` is ``records_per_s_redacted / records_per_s_plain``: the share of the plain speed kept.

Targets: recall 100% for every default kind, at most 1% of clean sentences changed, at least 200 records/s
with redaction on (on 2 cores).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from ..records import Log, Message
from ..redact import DEFAULT_ENTITIES, LABELS, RedactConfig, Redactor

CORPUS = ("data", "redact", "corpus.jsonl")
SHOWN = 20  # examples of misses and of changed clean sentences reported


@cache
def load_corpus() -> tuple[dict[str, Any], ...]:
    """The labelled corpus: ``{"text", "lang", "planted": [{"kind", "value"}]}`` per sentence."""
    body = resources.files("unolearn").joinpath(*CORPUS).read_text(encoding="utf-8")
    return tuple(json.loads(line) for line in body.splitlines() if line.strip())


def _found(kind: str, value: str, redacted: str) -> bool:
    """Whether a planted ``value`` of ``kind`` is gone from ``redacted``, replaced by a placeholder of its kind."""
    return value not in redacted and f"<{LABELS[kind]}_" in redacted


def score(redactor: Redactor, corpus: tuple[dict[str, Any], ...]) -> dict[str, Any]:
    """Recall per kind over the planted sentences and the share of clean sentences changed."""
    planted = {k: 0 for k in DEFAULT_ENTITIES}
    hits = {k: 0 for k in DEFAULT_ENTITIES}
    missed: list[dict[str, str]] = []
    changed: list[dict[str, str]] = []
    clean = n_changed = 0
    for row in corpus:
        redacted = redactor.text(row["text"])
        if not row["planted"]:
            clean += 1
            if redacted != row["text"]:
                n_changed += 1
                if len(changed) < SHOWN:
                    changed.append({"text": row["text"], "redacted": redacted})
            continue
        for p in row["planted"]:
            planted[p["kind"]] += 1
            if _found(p["kind"], p["value"], redacted):
                hits[p["kind"]] += 1
            elif len(missed) < SHOWN:
                missed.append({"kind": p["kind"], "value": p["value"], "text": row["text"], "redacted": redacted})
    return {"recall": {k: round(hits[k] / planted[k], 4) if planted[k] else None for k in DEFAULT_ENTITIES},
            "planted": planted, "missed_count": sum(planted.values()) - sum(hits.values()), "missed": missed,
            "clean_sentences": clean, "clean_changed": round(n_changed / clean, 4) if clean else None,
            "clean_changed_count": n_changed, "changed": changed}


def make_logs(corpus: tuple[dict[str, Any], ...], n: int) -> list[Log]:
    """``n`` logs of a system prompt, a query, an answer and a feedback turn, texts of ``corpus`` in turn."""
    texts = [row["text"] for row in corpus]
    m = len(texts)
    logs = []
    for i in range(n):
        messages = [Message(role="system", content="You are a helpful assistant."),
                    Message(role="user", content=texts[i % m]),
                    Message(role="assistant", content=texts[(7 * i + 3) % m]),
                    Message(role="user", content=texts[(13 * i + 5) % m])]
        logs.append(Log.from_messages(messages, source="bench-redact", user=f"u{i % 37}"))
    return logs


def _rate(n: int, seconds: float) -> float:
    return round(n / seconds, 1) if seconds > 0 else float("inf")


def _ratio(plain_s: float, redacted_s: float) -> float | None:
    """``records_per_s_redacted / records_per_s_plain`` (= plain time / redacted time), 3 significant digits."""
    return float(f"{plain_s / redacted_s:.3g}") if redacted_s > 0 else None


def _time_logs(redactor: Redactor, logs: list[Log]) -> float:
    start = time.perf_counter()
    for log in logs:
        redactor.log(log)
    return time.perf_counter() - start


def _time_ingest(redactor: Redactor, data: Path, root: Path) -> tuple[float, int]:
    from ..ingest import ingest
    from ..store import Workspace

    with Workspace.open(root) as ws:
        start = time.perf_counter()
        result = ingest(ws, [data], progress=False, redactor=redactor)
        return time.perf_counter() - start, result.ingested


def throughput(corpus: tuple[dict[str, Any], ...], n_records: int) -> dict[str, Any]:
    """Records per second through :meth:`Redactor.log` and through ingest, redaction on and off."""
    logs = make_logs(corpus, n_records)
    on, off = Redactor(RedactConfig()), Redactor(RedactConfig(enabled=False))
    on.text("warm-up: call +1 (415) 555-0132 or mail a.b@example.com")  # builds the analyzer and anonymizer
    t_on, t_off = _time_logs(on, logs), _time_logs(off, logs)
    out: dict[str, Any] = {"n_records": n_records, "threads": os.cpu_count(),
                           "records_per_s_redacted": _rate(n_records, t_on),
                           "records_per_s_plain": _rate(n_records, t_off),
                           "ratio": _ratio(t_off, t_on),
                           "seconds_redacted": round(t_on, 3), "seconds_plain": round(t_off, 6)}
    with tempfile.TemporaryDirectory(prefix="unolearn-bench-redact-") as tmp:
        data = Path(tmp) / "logs.jsonl"
        with data.open("w", encoding="utf-8") as fh:
            for log in logs:
                fh.write(json.dumps({"messages": [m.model_dump() for m in log.messages], "source": log.source,
                                     "user": log.user}, ensure_ascii=False) + "\n")
        i_on, stored_on = _time_ingest(on, data, Path(tmp) / "ws-redacted")
        i_off, stored_off = _time_ingest(off, data, Path(tmp) / "ws-plain")
    out["ingest"] = {"records_per_s_redacted": _rate(n_records, i_on), "records_per_s_plain": _rate(n_records, i_off),
                     "ratio": _ratio(i_off, i_on), "seconds_redacted": round(i_on, 3),
                     "seconds_plain": round(i_off, 3), "ingested_redacted": stored_on, "ingested_plain": stored_off}
    return out


def bench_redact(n_records: int = 2000) -> dict[str, Any]:
    """Recall per kind, clean sentences changed, and throughput with and without redaction (JSON-ready)."""
    corpus = load_corpus()
    redactor = Redactor(RedactConfig())
    redactor.text("warm-up: 192.0.2.1")
    start = time.perf_counter()
    quality = score(redactor, corpus)
    sentences_s = time.perf_counter() - start
    return {**quality, "corpus_sentences": len(corpus), "corpus_seconds": round(sentences_s, 3),
            "throughput": throughput(corpus, n_records),
            "targets": {"recall": 1.0, "clean_changed_max": 0.01, "records_per_s_redacted_min": 200,
                        "on_cores": 2}}
