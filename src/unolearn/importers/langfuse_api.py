"""A pull from a Langfuse server's public API: the GENERATION observations started since the last pull, the
scores made since then, and the observations of the traces those scores name that this pull lacks (feedback
given minutes after its answer, whose answer an earlier pull took). Paged as the API pages (cursors), with
429 and 5xx answers retried after the server's ``Retry-After``. Each object is written as one line of a JSONL
file that the Langfuse importer reads, so one bad object is one rejected line.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, TextIO

import httpx

from ..errors import InputError, loads_json

OBSERVATIONS = "api/public/v2/observations"
SCORES = "api/public/v3/scores"
#: The field groups of an observation a pull asks for: ids, times, user and session, input and output, metadata.
FIELDS = "core,basic,time,io,metadata,trace_context"
PAGE = 100
RETRIES = 5
#: The longest wait a ``Retry-After`` is honoured with, in seconds.
MAX_WAIT_S = 60.0


@dataclass
class Pulled:
    """What a pull wrote, and the state the next pull starts from."""

    observations: int
    scores: int
    state: dict[str, str]


def download(base_url: str, auth: tuple[str, str], state: dict[str, str], out: TextIO, *,
             timeout: float = 60.0) -> Pulled:
    """Write every observation and score newer than ``state`` to ``out``, one JSON object per line."""
    with httpx.Client(base_url=base_url.rstrip("/") + "/", auth=auth, timeout=timeout) as client:
        seen_traces: set[str] = set()
        newest = dict(state)
        n_obs = n_scores = 0
        since = {"fromStartTime": state["observations"]} if state.get("observations") else {}
        for obs in _pages(client, OBSERVATIONS, {"type": "GENERATION", "fields": FIELDS, **since}):
            n_obs += _write(out, obs)
            seen_traces.add(str(obs.get("traceId") or ""))
            newest["observations"] = max(newest.get("observations", ""), str(obs.get("startTime") or ""))
        missing: set[str] = set()
        since = {"fromTimestamp": state["scores"]} if state.get("scores") else {}
        for score in _pages(client, SCORES, since):
            n_scores += _write(out, score)
            trace = _trace_of(score)
            if trace and trace not in seen_traces:
                missing.add(trace)
            newest["scores"] = max(newest.get("scores", ""), str(score.get("timestamp") or ""))
        for trace in sorted(missing):
            for obs in _pages(client, OBSERVATIONS, {"type": "GENERATION", "fields": FIELDS, "traceId": trace}):
                n_obs += _write(out, obs)
    return Pulled(n_obs, n_scores, newest)


def _trace_of(score: dict[str, Any]) -> str | None:
    subject = score.get("subject") if isinstance(score.get("subject"), dict) else None
    trace = score.get("traceId") or (subject or {}).get("traceId") or (
        (subject or {}).get("id") if (subject or {}).get("kind") == "trace" else None)
    return str(trace) if trace else None


def _write(out: TextIO, obj: Any) -> int:
    out.write(json.dumps(obj, ensure_ascii=False) + "\n")
    return 1


def _pages(client: httpx.Client, path: str, params: dict[str, Any]) -> Iterator[Any]:
    """Every item of every page of ``path`` (``{"data": [...], "meta": {"cursor"}}``), following the cursors."""
    cursor: str | None = None
    while True:
        body = _get(client, path, {**params, "limit": PAGE, **({"cursor": cursor} if cursor else {})})
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, list):
            raise InputError(f"Langfuse {path}: the answer is not a page (no 'data' list)")
        yield from data
        meta = body.get("meta") if isinstance(body.get("meta"), dict) else {}
        cursor = meta.get("cursor")
        if not data or not cursor:
            return


def _get(client: httpx.Client, path: str, params: dict[str, Any]) -> Any:
    for attempt in range(RETRIES + 1):
        try:
            r = client.get(path, params=params)
        except httpx.HTTPError as e:
            if attempt == RETRIES:
                raise InputError(f"Langfuse {client.base_url}: cannot be reached ({type(e).__name__})") from e
            time.sleep(min(2.0 ** attempt, MAX_WAIT_S))
            continue
        if r.status_code == 429 or r.status_code >= 500:
            if attempt == RETRIES:
                break
            time.sleep(_wait(r, attempt))
            continue
        if r.status_code in (401, 403):
            raise InputError(f"Langfuse refused the keys ({r.status_code}): check LANGFUSE_PUBLIC_KEY and "
                             "LANGFUSE_SECRET_KEY")
        if r.status_code >= 400:
            raise InputError(f"Langfuse {path}: HTTP {r.status_code}")
        try:
            return loads_json(r.content)
        except ValueError as e:
            raise InputError(f"Langfuse {path}: the answer is not JSON") from e
    raise InputError(f"Langfuse {path}: HTTP {r.status_code} after {RETRIES} retries")


def _wait(r: httpx.Response, attempt: int) -> float:
    try:
        return min(max(float(r.headers.get("Retry-After", "")), 0.0), MAX_WAIT_S)
    except ValueError:
        return min(2.0 ** attempt, MAX_WAIT_S)


def keys_from_env(env: dict[str, str]) -> tuple[str, str]:
    """The public and secret key, from ``LANGFUSE_PUBLIC_KEY`` and ``LANGFUSE_SECRET_KEY`` (as the SDK reads them)."""
    public, secret = env.get("LANGFUSE_PUBLIC_KEY"), env.get("LANGFUSE_SECRET_KEY")
    if not public or not secret:
        raise InputError("a Langfuse pull needs LANGFUSE_PUBLIC_KEY and LANGFUSE_SECRET_KEY in the environment")
    return public, secret

