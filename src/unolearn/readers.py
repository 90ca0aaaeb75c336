"""Log readers: stream records out of JSONL or JSON-array files and normalise them into :class:`Log`.

Input contract:
- A file is either JSONL (one JSON object per line) or one JSON array of objects; a truncated array
  still yields every complete element before the cut. Files are streamed, never read whole.
- ``openai``: ``{"messages": [{"role", "content"}...], "actions"?, "rating"?, "lang"?, "source"?,
  "timestamp"? (ISO-8601), "user"?, "metadata"?, "id"?}``; a finite ``rating``.
- ``memorybench``: ``{"test_idx", "dataset_name", "lang", "input_prompt" | "input_chat_messages",
  "dialog", "implicit_feedback", "info"}``; ``dialog``/``implicit_feedback`` may be JSON or
  Python-literal strings, as in the published dataset.
- ``sharegpt``: ``{"id", "conversations": [{"from": "human"|"gpt"|"system", "value"}]}``.
- Every format takes an optional ``user`` (a string or an integer id: who asked; several logs of one
  user count once when rules are supported), as the OpenAI API's ``user`` parameter, and an optional
  ``tenant`` (also read from ``metadata.tenant``): the team whose logs these are (:mod:`unolearn.tenants`).
- ``langfuse``, ``langsmith``, ``otel``, ``openinference``: a platform's export (:mod:`unolearn.importers`),
  one log per conversation.
Each yielded item is either a :class:`Log` or a :class:`Rejected` naming the file, line and reason.
"""

from __future__ import annotations

import ast
import codecs
import itertools
import json
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, cast

from pydantic import ValidationError

from . import importers
from .errors import InputError, RecordError, check_text, one_line
from .importers import Read
from .records import Action, Log, Message, Rejected, Role, is_timestamp
from .tenants import DEFAULT_TENANT, check_tenant

FORMATS = ("auto", "openai", "memorybench", "sharegpt", *importers.PLATFORMS)
_CHUNK = 1 << 16


@dataclass(frozen=True)
class RawRecord:
    """One JSON value read from a file, with the line it starts on and the bytes read so far."""

    line: int
    text: str
    offset: int
    value: Any = None
    error: str | None = None


# -- reading JSON values ---------------------------------------------------------------------


def iter_raw(fh: BinaryIO) -> Iterator[RawRecord]:
    """Yield every top-level record of a JSONL file or a JSON array, streaming.

    ``fh`` must be seekable (a regular file opened in binary mode).
    """
    head = fh.read(_CHUNK).lstrip(b"\xef\xbb\xbf \t\r\n")
    fh.seek(0)
    if head.startswith(b"["):
        yield from _iter_array(fh)
    else:
        yield from _iter_lines(fh)


def _iter_lines(fh: BinaryIO) -> Iterator[RawRecord]:
    offset = 0
    for line, raw in enumerate(fh, 1):
        offset += len(raw)
        text = raw.decode("utf-8", errors="replace").strip().lstrip("\ufeff")
        if not text:
            continue
        try:
            yield RawRecord(line, text, offset, value=json.loads(text))
        except (ValueError, RecursionError) as e:  # JSONDecodeError is a ValueError
            yield RawRecord(line, text, offset, error=json_error(e))


def json_error(e: BaseException) -> str:
    """The one-line reason a JSON value could not be read."""
    if isinstance(e, json.JSONDecodeError):
        return f"not valid JSON ({e.msg} at column {e.colno})"
    if isinstance(e, RecursionError):
        return "not readable: JSON nested deeper than the reader allows"
    return f"not readable: {one_line(e, 200)}"


def _iter_array(fh: BinaryIO) -> Iterator[RawRecord]:
    """Decode the elements of one JSON array incrementally with ``raw_decode``."""
    decoder = json.JSONDecoder()
    utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
    data = utf8.decode(fh.read(_CHUNK)).lstrip("\ufeff")
    line, pos, eof = 1, data.index("[") + 1, False

    def refill() -> bool:
        nonlocal data, eof
        chunk = fh.read(_CHUNK)
        eof = not chunk
        data += utf8.decode(chunk, final=eof)
        return not eof

    while True:
        pos = _skip(data, pos)
        if pos >= len(data):
            if refill():
                continue
            yield RawRecord(line + data.count("\n", 0, pos), "", fh.tell(),
                            error="truncated JSON array: no closing ']'")
            return
        if data[pos] == "]":
            return
        try:
            value, end = decoder.raw_decode(data, pos)
        except json.JSONDecodeError as e:
            if not eof and refill():
                continue
            # The whole file is read and the array never closed: the file was cut in this record.
            where = line + data.count("\n", 0, pos)
            yield RawRecord(where, data[pos:pos + 2000], fh.tell(),
                            error=f"truncated JSON array: the last record is incomplete ({e.msg})")
            return
        except (RecursionError, ValueError) as e:  # nested too deep, a number too long: stepped over
            end = _value_end(data, pos)
            if end < 0 and not eof and refill():
                continue
            where = line + data.count("\n", 0, pos)
            yield RawRecord(where, data[pos:pos + 2000], fh.tell(), error=json_error(e))
            if end < 0:
                return
            line = where + data.count("\n", pos, end)
            data, pos = data[end:], 0
            continue
        where = line + data.count("\n", 0, pos)
        yield RawRecord(where, data[pos:end], fh.tell(), value=value)
        line = where + data.count("\n", pos, end)
        data, pos = data[end:], 0


def _value_end(data: str, pos: int) -> int:
    """The end of the JSON value that starts at ``pos`` (brackets counted outside strings), or -1 when ``data``
    ends first: how a value the decoder cannot take (nested too deep, a number too long) is stepped over."""
    depth, in_string, i = 0, False, pos
    while i < len(data):
        ch = data[i]
        if in_string:
            i += 2 if ch == "\\" else 1
            in_string = in_string and ch != '"'
            continue
        if ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        elif depth == 0 and ch in ",\n":
            return i
        if depth == 0 and ch in "]}":
            return i + 1
        i += 1
    return -1


def _skip(data: str, pos: int) -> int:
    """Skip whitespace and the commas between array elements."""
    while pos < len(data) and (data[pos].isspace() or data[pos] == ","):
        pos += 1
    return pos


# -- normalising records ---------------------------------------------------------------------


def detect_format(obj: Any) -> str:
    """Guess a record's format from its keys."""
    if not isinstance(obj, dict):
        raise RecordError(f"expected a JSON object, got {type(obj).__name__}")
    if "conversations" in obj:
        return "sharegpt"
    if "messages" in obj:
        return "openai"
    if {"input_prompt", "input_chat_messages", "dialog"} & obj.keys():
        return "memorybench"
    raise RecordError("unknown record format: expected 'messages' (openai), 'conversations' "
                      "(sharegpt) or 'input_prompt'/'dialog' (memorybench)")


def _literal(value: Any, field: str) -> Any:
    """Decode a field that may hold JSON or a Python literal as a string."""
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        pass
    try:
        return ast.literal_eval(value)
    except (ValueError, SyntaxError) as e:
        raise RecordError(f"{field}: neither JSON nor a Python literal") from e


def _content(value: Any, field: str) -> str:
    """Message content as text; OpenAI content-part lists are joined."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(p, dict) for p in value):
        return "".join(str(p["text"]) for p in value if p.get("type", "text") == "text" and p.get("text") is not None)
    raise RecordError(f"{field}: expected a string, got {type(value).__name__}")


_ROLE_ALIASES = {"developer": "system", "human": "user", "gpt": "assistant", "bot": "assistant",
                 "chatgpt": "assistant", "model": "assistant"}


def _messages(items: Any, field: str, role_key: str = "role", text_key: str = "content") -> list[Message]:
    if not isinstance(items, list):
        raise RecordError(f"{field}: expected a list of messages, got {type(items).__name__}")
    out = []
    for i, m in enumerate(items):
        where = f"{field}[{i}]"
        if not isinstance(m, dict):
            raise RecordError(f"{where}: expected an object, got {type(m).__name__}")
        role = m.get(role_key)
        if not isinstance(role, str):
            raise RecordError(f"{where}.{role_key}: missing or not a string")
        role = _ROLE_ALIASES.get(role.lower(), role.lower())
        if role not in ("system", "user", "assistant"):
            raise RecordError(f"{where}.{role_key}: unknown role {m.get(role_key)!r}")
        if text_key not in m:
            raise RecordError(f"{where}.{text_key}: missing")
        out.append(Message(role=cast(Role, role), content=_content(m[text_key], f"{where}.{text_key}")))
    return out


_ACTION_ALIASES = {"thumbs_up": "like", "thumbs_down": "dislike", "upvote": "like",
                   "downvote": "dislike", "retry": "regenerate"}


def _actions(value: Any, field: str) -> list[Action]:
    """Implicit actions: a list of names or objects, or a mapping ``{name: true|count}``."""
    value = _literal(value, field)
    if value in (None, "", [], {}):
        return []
    if isinstance(value, dict):
        value = [k for k, v in value.items() if v]
    if not isinstance(value, list):
        raise RecordError(f"{field}: expected a list or an object, got {type(value).__name__}")
    out = []
    for i, a in enumerate(value):
        if isinstance(a, str):
            a = {"kind": a}
        if not isinstance(a, dict):
            raise RecordError(f"{field}[{i}]: expected a string or an object")
        kind = a.get("kind", a.get("type", a.get("action")))
        kind = _ACTION_ALIASES.get(str(kind).lower(), str(kind).lower())
        turn = a.get("turn", a.get("round"))
        edited = a.get("edited", a.get("content"))
        try:
            out.append(Action.model_validate({"kind": kind, "turn": turn, "edited": edited}))  # checks the kind
        except ValidationError as e:
            raise RecordError(f"{field}[{i}]: {_first_error(e)}") from e
    return out


def _first_error(e: ValidationError) -> str:
    err = e.errors()[0]
    loc = ".".join(str(p) for p in err["loc"])
    return f"{loc}: {err['msg']}" if loc else err["msg"]


def _common(obj: dict, source: str) -> dict[str, Any]:
    rating = obj.get("rating")
    if rating is not None and not isinstance(rating, (int, float)):
        raise RecordError(f"rating: expected a number, got {type(rating).__name__}")
    if rating is not None and not _finite(rating):
        raise RecordError(f"rating: expected a finite number, got {str(rating)[:20]}")
    lang = obj.get("lang")
    return {"rating": rating, "lang": lang if lang in ("en", "zh") else None,
            "source": str(obj.get("source") or source), "timestamp": _timestamp(obj.get("timestamp")),
            "user": _user(obj.get("user")), "tenant": _tenant(obj),
            "actions": tuple(_actions(obj.get("actions"), "actions"))}


def _finite(number: float) -> bool:
    """Whether ``number`` is a float's finite value (not NaN, ±Infinity, ``1e999`` or an integer too large)."""
    try:
        return math.isfinite(number)
    except OverflowError:
        return False


def _timestamp(value: Any) -> str | None:
    """A record's ``timestamp``: an ISO-8601 date or time (text), or None; anything else is a RecordError (free
    text there would be stored beside the log's redacted texts as written)."""
    if value is None or is_timestamp(value):
        return value
    shown = type(value).__name__ if not isinstance(value, str) else "text that is not one"
    raise RecordError(f"timestamp: expected an ISO-8601 date or time (e.g. 2026-01-31T10:00:00Z), got {shown}")


def _tenant(obj: dict) -> str | None:
    """A record's ``tenant``: its own field, else its metadata's ``tenant`` key, else None (the default tenant)."""
    metadata = obj.get("metadata")
    value = obj.get("tenant", metadata.get("tenant") if isinstance(metadata, dict) else None)
    if value is None:
        return None
    try:
        return check_tenant(value)
    except ValueError as e:
        raise RecordError(str(e)) from None


def _user(value: Any) -> str | None:
    """A record's ``user``: a non-empty string or an integer id (kept as text), or None."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)) or not str(value).strip():
        raise RecordError(f"user: expected a non-empty string or an integer, got {json.dumps(value)[:40]}")
    return str(value)


def from_openai(obj: dict, source: str) -> Log:
    """An OpenAI-messages record → :class:`Log`."""
    fields = _common(obj, source)
    metadata = obj.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise RecordError("metadata: expected an object")
    if "id" in obj:
        metadata = {**metadata, "id": obj["id"]}
    if isinstance(obj.get("feedback"), list):  # explicit feedback turns appended after the answer
        obj = {**obj, "messages": [*obj["messages"], *({"role": "user", "content": f}
                                                        for f in obj["feedback"])]}
    return Log.from_messages(_messages(obj.get("messages"), "messages"), metadata=metadata, **fields)


def from_sharegpt(obj: dict, source: str) -> Log:
    """A ShareGPT record → :class:`Log`."""
    fields = _common(obj, source)
    metadata = {"id": obj["id"]} if "id" in obj else {}
    msgs = _messages(obj.get("conversations"), "conversations", role_key="from", text_key="value")
    return Log.from_messages(msgs, metadata=metadata, **fields)


def from_memorybench(obj: dict, source: str) -> Log:
    """A MemoryBench record → :class:`Log` (dialog if present, else the input prompt alone)."""
    dialog = _literal(obj.get("dialog"), "dialog")
    if dialog:
        msgs = _messages(dialog, "dialog")
    elif obj.get("input_chat_messages") is not None:
        msgs = _messages(_literal(obj["input_chat_messages"], "input_chat_messages"), "input_chat_messages")
    elif isinstance(obj.get("input_prompt"), str):
        msgs = [Message(role="user", content=obj["input_prompt"])]
    else:
        raise RecordError("input_prompt: missing or not a string (and no dialog)")
    info = _literal(obj.get("info"), "info")
    metadata = {k: obj[k] for k in ("test_idx", "id", "split", "category", "domain") if k in obj}
    if info:
        metadata["info"] = info
    fields = _common({**obj, "source": obj.get("dataset_name")}, source)
    fields["actions"] = tuple(_actions(obj.get("implicit_feedback"), "implicit_feedback"))
    return Log.from_messages(msgs, metadata=metadata, **fields)


CONVERTERS: dict[str, Callable[[dict, str], Log]] = {
    "openai": from_openai, "memorybench": from_memorybench, "sharegpt": from_sharegpt}


def to_log(obj: Any, fmt: str, source: str) -> Log:
    """Normalise one decoded record; raises :class:`RecordError` naming the field at fault."""
    fmt = detect_format(obj) if fmt == "auto" else fmt
    if not isinstance(obj, dict):
        raise RecordError(f"expected a JSON object, got {type(obj).__name__}")
    try:
        return CONVERTERS[fmt](obj, source)
    except ValidationError as e:
        raise RecordError(_first_error(e)) from e
    except ValueError as e:
        if isinstance(e, RecordError):
            raise
        raise RecordError(str(e)) from e


def read_logs(path: Path, fmt: str = "auto", tenant: str | None = None) -> Iterator[Read]:
    """Yield a :class:`Read` for every record of ``path``, streaming.

    A platform's export (:mod:`unolearn.importers`) is told by its first record under ``auto``. With ``tenant``
    (the operator's: these logs are that tenant's), a log naming no tenant gets it, and a log naming another one
    is rejected; the default tenant's logs name none."""
    if fmt not in FORMATS:
        raise InputError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    try:
        fh = path.open("rb")
    except OSError as e:
        raise InputError(f"cannot read: {e.strerror or e}", file=str(path)) from e
    with fh:
        raws = iter_raw(fh)
        unread = _until_readable(raws)
        first = unread[-1] if unread and unread[-1].error is None else None
        raws = itertools.chain(unread, raws)
        platform = fmt if fmt in importers.PLATFORMS else (
            importers.detect(first.value) if fmt == "auto" and first else None)
        if platform is None:
            yield from _records(path, fmt, raws, tenant)
            return
        for offset, item, line in importers.read_export(path, platform, raws):
            yield Read(offset, _checked(item, tenant, path, line), line)


def _until_readable(raws: Iterator[RawRecord], most: int = 1000) -> list[RawRecord]:
    """The records up to the first readable one (what a format is told by), at most ``most``."""
    unread = []
    for raw in raws:
        unread.append(raw)
        if raw.error is None or len(unread) >= most:
            break
    return unread


def _records(path: Path, fmt: str, raws: Iterator[RawRecord],
             tenant: str | None) -> Iterator[Read]:
    """Each record of a file of records (openai, memorybench, sharegpt) as a Log or a Rejected."""
    for raw in raws:
        if raw.error:
            yield Read(raw.offset, Rejected(file=str(path), line=raw.line, reason=raw.error, raw=raw.text), raw.line)
            continue
        try:
            check_text(raw.value, "record")
            yield Read(raw.offset, with_tenant(to_log(raw.value, fmt, path.name), tenant), raw.line)
        except (ValueError, TypeError, RecursionError) as e:  # RecordError and pydantic's errors among them
            reason = str(e) if isinstance(e, RecordError) else f"cannot be read as a log: {one_line(e, 200)}"
            yield Read(raw.offset, Rejected(file=str(path), line=raw.line, reason=reason, raw=raw.text), raw.line)


def _checked(item: Log | Rejected | None, tenant: str | None, path: Path, line: int) -> Log | Rejected | None:
    """A platform export's log under the operator's tenant, with valid Unicode; else rejected (its conversation
    named: a log gathers several lines)."""
    if not isinstance(item, Log):
        return item
    try:
        check_text(item.model_dump(mode="json"), "log")
        if item.tenant is not None:
            check_tenant(item.tenant)
        return with_tenant(item, tenant)
    except ValueError as e:  # RecordError among them
        return Rejected(file=str(path), line=line, reason=f"conversation {item.metadata.get('conversation')}: {e}",
                        raw="")


def with_tenant(log: Log, tenant: str | None) -> Log:
    """``log`` under the operator's ``tenant`` (None or ``default``: the tenant it names); a RecordError when
    it names another. The default tenant's logs name none, so their keys are those they had before tenants."""
    given = None if tenant == DEFAULT_TENANT else tenant
    named = None if log.tenant == DEFAULT_TENANT else log.tenant
    if given is not None and named is not None and named != given:
        raise RecordError(f"tenant: the record names tenant {named!r}, this ingest is for tenant {given!r}")
    effective = named or given
    return log if log.tenant == effective else log.model_copy(update={"tenant": effective})
