"""Importers of the platforms where teams keep their conversations: Langfuse, LangSmith, OpenTelemetry GenAI and
OpenInference (Arize Phoenix) exports, detected by content.

Each importer turns one record of an export into turns and verdicts (:mod:`.conversation`); a spool gathers
them by conversation (an export is streamed, never held in memory), and each conversation becomes one log.
A record the importer cannot read is rejected with its file, line and reason, and its neighbours are kept;
feedback naming an answer that is not in the same file is rejected too (it cannot be attached to a log
already stored: a log is keyed by its content). Give an export's traces and their scores in one file
(``cat traces.jsonl scores.jsonl > export.jsonl``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, Protocol

from ..errors import RecordError, check_text, one_line
from ..records import Log, Rejected
from ..store.spool import Spool
from . import langfuse, langsmith, openinference, otel
from .conversation import Turn, Verdict, assemble, turn_body, verdict_body


@dataclass(frozen=True)
class Platform:
    """One importer: whether a record is its format, and the turns and verdicts of a record."""

    detect: Callable[[Any], bool]
    pieces: Callable[[Any, int], Iterator[Turn | Verdict]]


#: The importers in the order they are tried (OpenInference before OpenTelemetry GenAI: both come as OTLP).
PLATFORMS: dict[str, Platform] = {
    "langfuse": Platform(langfuse.detect, langfuse.pieces),
    "langsmith": Platform(langsmith.detect, langsmith.pieces),
    "openinference": Platform(openinference.detect, openinference.pieces),
    "otel": Platform(otel.detect, otel.pieces),
}


class RawLike(Protocol):
    """A record as :func:`unolearn.readers.iter_raw` reads it."""

    @property
    def line(self) -> int: ...
    @property
    def text(self) -> str: ...
    @property
    def offset(self) -> int: ...
    @property
    def value(self) -> Any: ...
    @property
    def error(self) -> str | None: ...


def detect(obj: Any) -> str | None:
    """The platform whose export ``obj`` is a record of, or None."""
    return next((name for name, p in PLATFORMS.items() if p.detect(obj)), None)


class Read(NamedTuple):
    """One step of reading a file: the bytes read so far, the item (None: progress only, while a platform export
    is gathered by conversation) and the line it starts on (a conversation gathered from several: its first
    turn's)."""

    offset: int
    item: Log | Rejected | None
    line: int = 0


def read_export(path: Path, platform: str, raws: Iterable[RawLike]) -> Iterator[Read]:
    """:class:`Read` steps for a platform export: None while reading (progress), a Rejected for each
    record that cannot be read, then one Log per conversation (its line: its first turn's) and a Rejected per
    feedback naming no answer here."""
    pieces = PLATFORMS[platform].pieces
    offset = 0
    with Spool() as spool:
        for raw in raws:
            offset = raw.offset
            if raw.error:
                yield Read(offset, Rejected(file=str(path), line=raw.line, reason=raw.error, raw=raw.text), raw.line)
                continue
            try:
                check_text(raw.value, "record")  # a lone surrogate: no store (the spool neither) can hold it
                found = list(pieces(raw.value, raw.line))
            except (ValueError, TypeError, KeyError, AttributeError, ArithmeticError,  # RecordError among them
                    RecursionError) as e:  # a number too large for a float; attributes nested too deep
                bad = Rejected(file=str(path), line=raw.line, reason=_reason(e, platform), raw=raw.text)
                yield Read(offset, bad, raw.line)
                continue
            for p in found:
                if isinstance(p, Turn):
                    spool.add_turn(p.conversation, p.at, p.ids, turn_body(p))
                else:
                    spool.add_verdict(p.target, verdict_body(p))
            yield Read(offset, None, raw.line)
        yield from _logs(path, spool, offset)


def _logs(path: Path, spool: Spool, offset: int) -> Iterator[Read]:
    for conversation, turns, verdicts in spool.conversations():
        line = turns[0]["line"]
        try:
            yield Read(offset, assemble(conversation, turns, verdicts, path.name), line)
        except ValueError as e:
            yield Read(offset, Rejected(file=str(path), line=line,
                                        reason=f"conversation {conversation}: {one_line(e, 200)}",
                                        raw=json.dumps(turns[0], ensure_ascii=False)[:2000]), line)
    for v in spool.orphans():
        yield Read(offset, Rejected(file=str(path), line=v["line"],
                                    reason=f"feedback for {v['target']}, an answer that is not in this file",
                                    raw=json.dumps(v, ensure_ascii=False)), v["line"])


def _reason(e: BaseException, platform: str) -> str:
    if isinstance(e, RecordError):
        return f"{platform}: {e}"
    return f"{platform}: cannot be read ({one_line(e, 200)})"
