"""The ingest stage: read log files into the workspace, batch by batch."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from tqdm import tqdm

from .errors import InputError, UnolearnError
from .importers import langfuse_api
from .raw_users import users_in_text
from .readers import FORMATS, read_logs
from .records import Log, Rejected
from .redact import Redactor
from .store import Workspace
from .tenants import TenantWorkspaces


@dataclass
class IngestResult:
    """What an ingest did: new logs, logs already stored, and records rejected."""

    ingested: int = 0
    duplicates: int = 0
    rejected: int = 0

    def as_dict(self) -> dict[str, int]:
        """The summary as a plain dict (what ``--json`` prints)."""
        return asdict(self)


def check_paths(paths: Sequence[Path]) -> None:
    """Fail before storing anything when a path is missing, a folder, or unreadable."""
    if not paths:
        raise InputError("no input file given")
    for p in paths:
        if not p.is_file():
            raise InputError("no such file" if not p.exists() else "not a regular file", file=str(p))
        try:
            with p.open("rb"):
                pass
        except OSError as e:
            raise InputError(f"cannot read: {e.strerror or e}", file=str(p)) from e


def ingest(ws: Workspace, paths: Sequence[Path], fmt: str = "auto", *, batch_size: int = 1000,
           on_reject: Callable[[Rejected], None] | None = None, progress: bool | None = None,
           redactor: Redactor | None = None, tenant: str | None = None, label: str | None = None) -> IngestResult:
    """Store every valid record of ``paths`` in its tenant's store; keep the invalid ones in ``rejected``.

    ``ws`` is the workspace (its default tenant). A log goes to the tenant it names (:mod:`unolearn.tenants`);
    ``tenant`` (the operator's) is the tenant of every log that names none, and a log naming another one is
    rejected. Every record, valid or not, is redacted by ``redactor`` (default: :class:`Redactor` with the
    default :class:`~unolearn.redact.RedactConfig`) before it is stored: the raw text never reaches the store.

    Each batch is committed in one transaction, so an interrupted ingest leaves the workspace
    consistent and a re-run completes it (records already stored count as duplicates).
    ``progress=None`` shows a progress bar only on a terminal. ``label`` names the input in rejected records
    instead of the file (a pull's scratch file).
    """
    if fmt not in FORMATS:
        raise InputError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    check_paths(paths)
    redactor = redactor or Redactor()
    result = IngestResult()
    tenants = TenantWorkspaces(ws)
    target = tenants(tenant)  # the rejected records, and the logs without a tenant
    total = sum(p.stat().st_size for p in paths)
    disable = None if progress is None else not progress
    try:
        with tqdm(total=total, unit="B", unit_scale=True, desc="ingest", disable=disable) as bar:
            for path in paths:
                _ingest_file(path, fmt, batch_size, redactor, tenant, tenants, target, result, on_reject, bar,
                             label)
    finally:
        tenants.close()
    return result


def _ingest_file(path: Path, fmt: str, batch_size: int, redactor: Redactor, tenant: str | None,
                 tenants: TenantWorkspaces, target: Workspace, result: IngestResult,
                 on_reject: Callable[[Rejected], None] | None, bar: tqdm, label: str | None = None) -> None:
    """Store one file's records, batch by batch, each log in its tenant's store."""
    done = 0
    file = label or str(path)
    logs: dict[str | None, list[Log]] = {}
    lines: dict[str, int] = {}  # a log's id → its line, should the store refuse it
    bad: list[Rejected] = []

    def flush() -> None:
        for name, batch in logs.items():
            _flush(tenants(name), batch, [], result, on_reject, (file, lines))
        if bad:
            _flush(target, [], bad, result, on_reject, (file, lines))
        logs.clear()
        lines.clear()

    for offset, item, line in read_logs(path, fmt, tenant):
        if item is None:  # a platform export being gathered: progress only
            bar.update(offset - done)
            done = offset
            continue
        if label and isinstance(item, Rejected):
            item = item.model_copy(update={"file": label})
        item = _redacted(redactor, item, file, line)
        if isinstance(item, Rejected):
            bad.append(item)
            if on_reject:
                on_reject(item)
        else:
            logs.setdefault(item.tenant, []).append(item)
            lines[item.id] = line
        if sum(map(len, logs.values())) + len(bad) >= batch_size:
            flush()
        bar.update(offset - done)
        done = offset
    flush()
    bar.update(path.stat().st_size - done)


def _redacted(redactor: Redactor, item: Log | Rejected, file: str, line: int) -> Log | Rejected:
    """``item`` (read at ``line``) redacted; a log the redactor fails on is rejected (its text is not kept), named
    by its line and, when an export gathered it from several, its conversation. A rejected record's users are
    found first (redaction may hide them: an e-mail address as a user id), so ``forget`` finds it."""
    try:
        if isinstance(item, Rejected):
            return redactor.rejected(item if item.users is not None else
                                     item.model_copy(update={"users": users_in_text(item.raw)}))
        return redactor.log(item)
    except Exception as e:  # noqa: BLE001 — one record's failure is that record's error
        reason = f"cannot be redacted ({type(e).__name__}); not stored"
        return Rejected(file=file, line=line, reason=_conversation(redactor, item) + reason, raw="")


def _conversation(redactor: Redactor, item: Log | Rejected) -> str:
    """``conversation <id>: `` for a log an export gathered from several lines, its id redacted (a session id may
    be an e-mail address); empty for another item, or when the id cannot be redacted."""
    conversation = item.metadata.get("conversation") if isinstance(item, Log) else None
    try:
        return f"conversation {redactor.text(str(conversation))}: " if conversation else ""
    except Exception:  # noqa: BLE001 — the redactor failed on this log already: say less
        return ""


def _flush(ws: Workspace, logs: list[Log], bad: list[Rejected], result: IngestResult,
           on_reject: Callable[[Rejected], None] | None, where: tuple[str, dict[str, int]]) -> None:
    """Store a batch in one transaction; when the store refuses it, record by record, so one record the store
    cannot take is rejected alone (named by ``where``: the file, and each log's line by its id) and its
    neighbours are stored."""
    try:
        added, dups = ws.add_logs(logs, bad)
    except UnolearnError:
        raise
    except Exception:  # noqa: BLE001 — a driver's error on one row: find it
        added, dups = _one_by_one(ws, logs, bad, on_reject, where)
    result.ingested += added
    result.duplicates += dups
    result.rejected += len(bad)
    logs.clear()
    bad.clear()


def _one_by_one(ws: Workspace, logs: list[Log], bad: list[Rejected],
                on_reject: Callable[[Rejected], None] | None, where: tuple[str, dict[str, int]]) -> tuple[int, int]:
    """Store each record alone; a log the store refuses joins ``bad`` (kept without its text); a rejected record
    the store cannot keep is still counted and reported."""
    added = dups = 0
    for log in logs:
        try:
            a, d = ws.add_logs([log])
        except UnolearnError:
            raise
        except Exception as e:  # noqa: BLE001 — this record's error
            bad.append(Rejected(file=where[0], line=where[1][log.id], raw="",
                                reason=f"the store refused log {log.id[:12]}: {type(e).__name__}"))
            if on_reject:
                on_reject(bad[-1])
            continue
        added, dups = added + a, dups + d
    for r in bad:
        try:
            ws.add_logs([], [r])
        except UnolearnError:
            raise
        except Exception:  # noqa: BLE001 — a rejected record the store cannot keep is only reported
            pass
    return added, dups


#: The scheme of a Langfuse server to pull from: ``langfuse+https://HOST`` (or ``langfuse+http://``).
LANGFUSE_SCHEME = "langfuse+"


def is_source(arg: str) -> bool:
    """Whether an ingest argument names a server to pull from rather than a file."""
    return arg.startswith(LANGFUSE_SCHEME + "http")


def pull(ws: Workspace, source: str, *, on_reject: Callable[[Rejected], None] | None = None,
         progress: bool | None = None, redactor: Redactor | None = None, tenant: str | None = None) -> IngestResult:
    """Pull what a Langfuse server (``langfuse+https://HOST``) holds since the last pull, and ingest it.

    Keys come from ``LANGFUSE_PUBLIC_KEY`` / ``LANGFUSE_SECRET_KEY``. The objects are written to a scratch
    file (removed afterwards) and ingested as a Langfuse export; where the pull stopped is recorded only once
    they are stored, so an interrupted pull is repeated from the same point (what was stored counts as
    duplicates) — resumable."""
    if not is_source(source):
        raise InputError(f"not a source to pull from: {source!r} (expected langfuse+https://HOST)")
    if "@" in urlsplit(source.removeprefix(LANGFUSE_SCHEME)).netloc:
        raise InputError("put the Langfuse keys in LANGFUSE_PUBLIC_KEY and LANGFUSE_SECRET_KEY, not in the URL")
    auth = langfuse_api.keys_from_env(dict(os.environ))
    state = ws.pull_state(source)
    with tempfile.TemporaryDirectory(prefix="unolearn-pull-") as tmp:
        path = Path(tmp) / "langfuse-pull.jsonl"
        with path.open("w", encoding="utf-8") as out:
            pulled = langfuse_api.download(source.removeprefix(LANGFUSE_SCHEME), auth, state, out)
        result = ingest(ws, [path], "langfuse", on_reject=on_reject, progress=progress, redactor=redactor,
                        tenant=tenant, label=source)
    ws.set_pull_state(source, pulled.state)
    return result


def ingest_args(ws: Workspace, args: Sequence[str], fmt: str = "auto", **kw: Any) -> IngestResult:
    """Ingest the files among ``args`` (all checked before anything is stored), then pull from each source
    among them (``langfuse+https://HOST``); ``kw`` as :func:`ingest` takes them. The counts are summed."""
    files = [Path(a) for a in args if not is_source(a)]
    sources = [a for a in args if is_source(a)]
    if files:
        check_paths(files)
    total = ingest(ws, files, fmt, **kw) if files else IngestResult()
    for source in sources:
        part = pull(ws, source, **kw)
        total.ingested, total.duplicates, total.rejected = (total.ingested + part.ingested,
                                                            total.duplicates + part.duplicates,
                                                            total.rejected + part.rejected)
    return total
