"""The recorder: served answers and feedback written off the request path, in order.

Nothing a client was answered for is dropped lightly: a batch the store refuses is stored again row by
row, so one bad row cannot sink the others' answers and feedback; a batch that meets a lost connection
or a busy write lock is retried on a new connection, with backoff, for up to ``retry_s`` seconds. Both
retries are safe: an answer is stored once per response id, a feedback once per the uid given here.

Personal data is redacted here, before a row reaches the store (:mod:`unolearn.redact`): in a process of its own,
which the writer's thread waits for, so that the detector's CPU never holds this process's interpreter lock
and the proxy answers no slower (in a thread of the proxy it added 9 ms to the p50 at 64 concurrent requests);
the client and the upstream saw the original text. Until that process has loaded the detector (seconds), should
it die, or while it lags (a batch not back within ``REDACT_WAIT_S``: on a machine whose CPU other work holds, a
process that yields it may not run for minutes), the writer redacts in its own thread: no row waits for it long,
and none is stored unredacted.
"""

from __future__ import annotations

import asyncio
import json
import logging
import multiprocessing
import os
import time
import uuid
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

from ..errors import WorkspaceError, one_line
from ..redact import RedactConfig, Redactor
from ..store import Workspace, now
from ..tenants import DEFAULT_TENANT

log = logging.getLogger(__name__)

#: First and longest pause between retries of a batch that met a transient store error (seconds).
RETRY_DELAYS = (0.05, 5.0)
#: How long the writer waits for the redaction process's answer before it redacts a batch itself: this many
#: seconds, plus a row's share per row (the detector takes about 3 ms a row here: ``bench serve``), so that a large
#: batch under load is still the process's work.
REDACT_WAIT_S, REDACT_ROW_S = 0.5, 0.01


def served_row(rid: str, messages: Any, text: str, route: str, model: str, user: str | None,
               at: str | None = None) -> tuple:
    """The row of one served answer as :meth:`Recorder.served` takes it (a NUL left out of the stored texts: no
    store keeps it in text)."""
    return (rid, json.dumps(messages, ensure_ascii=False).replace("\\u0000", ""), text.replace("\x00", ""), route,
            model, at or now(), user)


class Recorder:
    """Writes served rows and feedback off the request path: one queue, one writer task, one thread.

    A served row is queued (and its id kept in ``pending`` until committed); a feedback is queued
    behind it and awaited until committed, so it never refers to a row not yet written. Lookups of
    served ids run on a thread of their own, off the event loop. Each row goes to its tenant's store
    (``places``: tenant → workspace folder and store URL); a tenant sees only its own answers.
    """

    def __init__(self, ws_dir: Path, batch: int, linger_s: float = 0.0, *, store: str | None = None,
                 retry_s: float = 60.0, redactor: Redactor | None = None,
                 places: dict[str, tuple[Path, str | None]] | None = None) -> None:
        self.ws_dir, self.store, self.batch, self.linger_s, self.retry_s = ws_dir, store, batch, linger_s, retry_s
        self.places = places or {DEFAULT_TENANT: (ws_dir, store)}
        self.redactor = redactor or Redactor()
        self.pending: dict[str, tuple[str, str | None]] = {}  #: response id → its tenant and user, until committed
        self.queued_feedback: dict[str, int] = {}  #: response id → feedbacks queued, not yet committed
        self.queue: asyncio.Queue | None = None
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        """Open the writer's and the reader's connections and start the writer task."""
        self._writers = {name: Workspace.open(*where) for name, where in self.places.items()}
        self._readers = {name: Workspace.open(*where) for name, where in self.places.items()}
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="unolearn-writer")
        self._redact_pool, self._warm = None, None
        self._lagging: Future | None = None  #: the redaction process's answer that came too late, until it comes
        if self.redactor.cfg.enabled:  # spawned, not forked: this process has threads
            self._redact_pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"),
                                                    initializer=_lower_priority)
            warm = [("feedback", ("", "warm-up 1.2.3.4", None, None, "", ""))]
            self._warm = self._redact_pool.submit(redact_rows, self.redactor.cfg, warm)  # seconds: meanwhile, the
            # writer redacts in its own thread, so no row waits for the process to start
        self._read_pool = ThreadPoolExecutor(1, thread_name_prefix="unolearn-reader")
        self.queue = asyncio.Queue()
        self._task = asyncio.create_task(self._run())

    @property
    def redaction(self) -> str:
        """Where rows are redacted now: ``process``, ``thread`` (the process still loading, or gone) or ``off``."""
        if not self.redactor.cfg.enabled:
            return "off"
        ready = self._warm is not None and self._warm.done() and self._warm.exception() is None
        return "process" if ready else "thread"

    def served(self, row: tuple, tenant: str = DEFAULT_TENANT) -> None:
        """Queue one served row ``(response_id, messages, answer, route, model, created_at, user)`` of ``tenant``."""
        assert self.queue is not None, "Recorder.start() makes the queue"
        self.pending[row[0]] = (tenant, row[6])
        self.queue.put_nowait(("served", row, None, tenant))

    async def feedback(self, row: tuple, tenant: str = DEFAULT_TENANT) -> None:
        """Queue one feedback row ``(response_id, text, action, edited, created_at)`` of ``tenant``; wait for its
        commit.

        The row is given a uid here, so however often its write is retried it is stored once.
        """
        assert self.queue is not None, "Recorder.start() makes the queue"
        done = asyncio.get_running_loop().create_future()
        self.queued_feedback[row[0]] = self.queued_feedback.get(row[0], 0) + 1
        self.queue.put_nowait(("feedback", (*row, uuid.uuid4().hex), done, tenant))
        try:
            await done
        finally:
            left = self.queued_feedback.pop(row[0], 1) - 1
            if left:
                self.queued_feedback[row[0]] = left

    async def known(self, response_id: str, tenant: str = DEFAULT_TENANT) -> bool:
        """True when ``response_id`` was served to ``tenant`` (committed or still queued)."""
        return await self.served_info(response_id, tenant) is not None

    async def served_info(self, response_id: str, tenant: str = DEFAULT_TENANT) -> tuple[str | None, int] | None:
        """``(user, feedbacks so far)`` of an answer served to ``tenant`` (committed or still queued); None: not
        served, or served to another tenant."""
        if response_id in self.pending:
            owner, user = self.pending[response_id]
            return (user, self.queued_feedback.get(response_id, 0)) if owner == tenant else None
        found = await asyncio.get_running_loop().run_in_executor(self._read_pool, self._lookup, response_id, tenant)
        return None if found is None else (found[0], found[1] + self.queued_feedback.get(response_id, 0))

    def _lookup(self, response_id: str, tenant: str) -> tuple[str | None, int] | None:
        """The store's answer, asked again once on a new connection when the first meets a broken one."""
        reader = self._readers[tenant]
        try:
            return reader.served_owner(response_id)
        except Exception as e:  # noqa: BLE001 — a driver error: retried once when transient, else reported
            if reader.conn.transient(e):
                try:
                    return reader.served_owner(response_id)
                except Exception as again:  # noqa: BLE001
                    e = again
            raise WorkspaceError(f"cannot look up response {response_id!r}: {one_line(e)}") from e

    async def _run(self) -> None:
        assert self.queue is not None, "Recorder.start() makes the queue"
        while True:
            batch = [await self.queue.get()]
            if batch[0] is not None and self.linger_s:
                await asyncio.sleep(self.linger_s)  # let more rows join this transaction
            while len(batch) < self.batch and not self.queue.empty():
                batch.append(self.queue.get_nowait())
            items = [b for b in batch if b is not None]
            if items:
                await self._write(items)
            if len(items) < len(batch):
                return

    async def _write(self, items: list[tuple]) -> None:
        """Store ``items`` on the writer's thread; tell each waiting feedback whether it was stored."""
        try:
            errors = await asyncio.get_running_loop().run_in_executor(self._pool, self._commit, items)
        finally:
            for kind, row, _, _ in items:
                if kind == "served":
                    self.pending.pop(row[0], None)
        for (_, _, done, _), error in zip(items, errors):
            if done is not None and not done.done():
                if error is None:
                    done.set_result(None)
                else:
                    done.set_exception(WorkspaceError(f"feedback not stored: {one_line(error)}"))

    def _commit(self, items: list[tuple]) -> list[Exception | None]:
        """Redact ``items``, then store each tenant's in one transaction of its store; the error of each item
        (None: stored)."""
        items = self._redacted(items)
        errors: dict[int, Exception | None] = {}
        for tenant in dict.fromkeys(item[3] for item in items):
            at = [i for i, item in enumerate(items) if item[3] == tenant]
            errors.update(zip(at, self._commit_tenant(tenant, [items[i] for i in at])))
        return [errors[i] for i in range(len(items))]

    def _commit_tenant(self, tenant: str, items: list[tuple]) -> list[Exception | None]:
        """Store one tenant's ``items`` in one transaction or, when its store refuses the batch, one by one."""
        try:
            self._store(tenant, items)
            return [None] * len(items)
        except Exception as e:  # noqa: BLE001 — reported per item
            if len(items) == 1 or self._writers[tenant].conn.transient(e):  # one row, or the store stayed away
                log.error("could not store %d rows: %s", len(items), one_line(e))
                return [e] * len(items)
            log.warning("the store refused a batch of %d rows (%s); storing them one by one", len(items),
                        one_line(e))
        return [self._store_one(tenant, item) for item in items]

    def _redacted(self, items: list[tuple]) -> list[tuple]:
        """The queued items with their texts redacted: by the redaction process, or here if it is gone or lags."""
        rows = [(kind, row) for kind, row, _, _ in items]
        done = self._redacted_in_process(rows)
        rows = redact_rows(self.redactor.cfg, rows) if done is None else done
        return [(kind, row, *rest) for (kind, row), (_, _, *rest) in zip(rows, items)]

    def _redacted_in_process(self, rows: list[tuple[str, tuple]]) -> list[tuple[str, tuple]] | None:
        """``rows`` redacted by the redaction process; None when it is loading, gone or lagging (its answer not
        back within the wait: until that answer comes, later batches are not sent to it either)."""
        if self.redaction != "process" or (self._lagging is not None and not self._lagging.done()):
            return None
        assert self._redact_pool is not None  # its warm-up ran there
        answer = self._redact_pool.submit(redact_rows, self.redactor.cfg, rows)
        try:
            return answer.result(timeout=REDACT_WAIT_S + REDACT_ROW_S * len(rows))
        except TimeoutError:
            self._lagging = answer
            log.warning("the redaction process is not keeping up (busy CPU); redacting in the writer's thread")
        except BrokenProcessPool:
            pass
        return None

    def _store_one(self, tenant: str, item: tuple) -> Exception | None:
        """Store one item alone; its error, logged (None: stored)."""
        try:
            self._store(tenant, [item])
        except Exception as e:  # noqa: BLE001 — reported to the caller
            log.error("could not store the %s row of %s: %s", item[0], item[1][0], one_line(e))
            return e
        return None

    def _store(self, tenant: str, items: list[tuple]) -> None:
        """One transaction of ``items`` in ``tenant``'s store, retried with backoff while its error is transient
        (a lost connection, a busy write lock), for up to ``retry_s`` seconds."""
        served = [row for kind, row, _, _ in items if kind == "served"]
        feedback = [row for kind, row, _, _ in items if kind == "feedback"]
        writer = self._writers[tenant]
        delay, deadline = RETRY_DELAYS[0], time.monotonic() + self.retry_s
        while True:
            try:
                writer.record_served(served, feedback)
                return
            except Exception as e:
                if not writer.conn.transient(e) or time.monotonic() + delay > deadline:
                    raise
                log.warning("storing %d rows failed (%s); retrying in %.2f s", len(items), one_line(e), delay)
            time.sleep(delay)
            delay = min(delay * 2, RETRY_DELAYS[1])

    async def close(self) -> None:
        """Write everything queued, then close the connections."""
        if self._task is not None:
            assert self.queue is not None  # made with the task
            self.queue.put_nowait(None)
            await self._task
            self._pool.shutdown()
            self._read_pool.shutdown()
            if self._redact_pool is not None:
                self._redact_pool.shutdown()
            for ws in (*self._writers.values(), *self._readers.values()):
                ws.close()
            self._task = None


def _lower_priority() -> None:
    """The redaction process yields the CPU to the proxy: under load its rows wait, requests do not."""
    try:
        os.nice(10)
    except OSError:  # not permitted here: same priority
        pass


def redact_rows(cfg: RedactConfig, rows: list[tuple[str, tuple]]) -> list[tuple[str, tuple]]:
    """``(kind, row)`` pairs (``served`` or ``feedback`` rows) with their texts redacted under ``cfg`` (a
    :class:`Redactor` is cheap to make: its detector is built once per process and set of kinds)."""
    redactor = Redactor(cfg)
    return [(kind, _redact_row(redactor, kind, row)) for kind, row in rows]


def _redact_row(redactor: Redactor, kind: str, row: tuple) -> tuple:
    """One row redacted; one the redactor fails on keeps no text (it is still recorded, nothing personal in it)."""
    try:
        return redactor.served_row(row) if kind == "served" else redactor.feedback_row(row)
    except Exception:  # noqa: BLE001 — this row's failure: its text is dropped, the others are redacted
        log.exception("could not redact the %s row of %s: stored without its text", kind, row[0])
        return (row[0], "[]", "", *row[3:]) if kind == "served" else (row[0], None, row[2], None, *row[4:])


