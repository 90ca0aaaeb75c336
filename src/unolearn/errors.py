"""One hierarchy of typed errors.

The CLI turns an :class:`UnolearnError` into a one-line message and its ``exit_code``;
the proxy turns it into an HTTP response with its ``http_status``. Anything else is a bug.
"""

from __future__ import annotations

import json
from typing import Any


def one_line(e: BaseException, limit: int | None = None) -> str:
    """An exception's message on one line (at most ``limit`` characters), or its type's name when it has none."""
    return " ".join(str(e).split())[:limit] or type(e).__name__


def loads_json(data: str | bytes) -> Any:
    """``json.loads(data)``, with JSON nested too deeply for Python's parser raised as the
    :class:`json.JSONDecodeError` any other unreadable JSON is: the parser raises RecursionError there, which
    a caller catching ValueError misses (a model's answer or a server's body of a few thousand ``[`` did)."""
    try:
        return json.loads(data)
    except RecursionError:
        raise json.JSONDecodeError("nested too deeply", "", 0) from None


class UnolearnError(Exception):
    """Base class of every error unolearn reports to a user."""

    exit_code = 1
    http_status = 500


class InputError(UnolearnError):
    """Bad user input: a file, a record, a flag or a request body."""

    exit_code = 2
    http_status = 400

    def __init__(self, message: str, *, file: str | None = None, line: int | None = None,
                 field: str | None = None) -> None:
        self.file, self.line, self.field = file, line, field
        where = ":".join(str(p) for p in (file, line) if p is not None)
        if field:
            message = f"{field}: {message}"
        super().__init__(f"{where}: {message}" if where else message)


class ConfigError(UnolearnError):
    """An invalid configuration value (a config file, an environment variable or a flag)."""

    exit_code = 2
    http_status = 500


class NotFoundError(UnolearnError):
    """A named object (log, cluster, module, file) does not exist."""

    exit_code = 2
    http_status = 404


class WorkspaceError(UnolearnError):
    """The workspace cannot be opened, migrated or written."""

    exit_code = 3
    http_status = 500


class BackendError(UnolearnError):
    """A model backend failed (server unreachable, bad answer, exhausted retries)."""

    exit_code = 4
    http_status = 502


class BackendHTTPError(BackendError):
    """The model server answered with an HTTP error status."""

    def __init__(self, message: str, *, status: int, retryable: bool) -> None:
        self.status, self.retryable = status, retryable
        super().__init__(message)


class SchemaError(BackendError):
    """The model did not produce output valid under the requested JSON schema."""


class StoreBusyError(WorkspaceError):
    """The store's write lock was not free within its timeout: another writer held it."""


class ClusteringChangedError(WorkspaceError):
    """The logs were re-clustered while a stage worked on the previous clustering: its result is not stored."""


class StoreUnavailableError(WorkspaceError):
    """The store's database server cannot be reached (down, restarting, refusing connections)."""


class RecordError(ValueError):
    """A record that cannot become a :class:`~unolearn.records.Log`; the message names the field."""


def check_text(value: Any, field: str) -> None:
    """A RecordError naming the field of the first string in ``value`` that is not valid Unicode (a lone
    surrogate, which JSON's ``\\ud800`` escapes can make and no store can hold)."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as e:
            raise RecordError(f"{field}: invalid Unicode (a lone surrogate at character {e.start})") from None
    elif isinstance(value, dict):
        for k, v in value.items():
            check_text(k, field)
            check_text(v, f"{field}.{k}" if field != "record" else str(k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            check_text(v, f"{field}[{i}]")

