"""The recorder: served answers and feedback written off the request path, in order."""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ..errors import WorkspaceError
from ..store import Workspace


log = logging.getLogger(__name__)


class Recorder:
    """Writes served rows and feedback off the request path: one queue, one writer task, one thread.

    A served row is queued (and its id kept in ``pending`` until committed); a feedback is queued
    behind it and awaited until committed, so it never refers to a row not yet written.
    """

    def __init__(self, ws_dir: Path, batch: int, linger_s: float = 0.0, *, store: str | None = None) -> None:
        self.ws_dir, self.store, self.batch, self.linger_s = ws_dir, store, batch, linger_s
        self.pending: set[str] = set()
        self.queue: asyncio.Queue | None = None
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        """Open the writer's and the reader's connections and start the writer task."""
        self._writer = Workspace.open(self.ws_dir, self.store)
        self._reader = Workspace.open(self.ws_dir, self.store)
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="unolearn-writer")
        self.queue = asyncio.Queue()
        self._task = asyncio.create_task(self._run())

    def served(self, row: tuple) -> None:
        """Queue one served row ``(response_id, messages, answer, route, model, created_at, user)``."""
        self.pending.add(row[0])
        self.queue.put_nowait(("served", row, None))

    async def feedback(self, row: tuple) -> None:
        """Queue one feedback row ``(response_id, text, action, edited, created_at)``; wait for its commit."""
        done = asyncio.get_running_loop().create_future()
        self.queue.put_nowait(("feedback", row, done))
        await done

    def known(self, response_id: str) -> bool:
        """True when ``response_id`` was served (committed or still queued)."""
        if response_id in self.pending:
            return True
        return self._reader.is_served(response_id)

    async def _run(self) -> None:
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
        served = [row for kind, row, _ in items if kind == "served"]
        feedback = [row for kind, row, _ in items if kind == "feedback"]
        waiting = [f for _, _, f in items if f is not None]
        try:
            await asyncio.get_running_loop().run_in_executor(self._pool, self._commit, served, feedback)
        except Exception as e:  # noqa: BLE001 — reported to waiting feedback, logged for served rows
            log.error("could not store %d served rows and %d feedbacks: %s", len(served), len(feedback), e)
            for f in waiting:
                f.done() or f.set_exception(WorkspaceError(f"feedback not stored: {e}"))
        else:
            for f in waiting:
                f.done() or f.set_result(None)
        finally:
            self.pending.difference_update(row[0] for row in served)

    def _commit(self, served: list[tuple], feedback: list[tuple]) -> None:
        self._writer.record_served(served, feedback)

    async def close(self) -> None:
        """Write everything queued, then close the connections."""
        if self._task is not None:
            self.queue.put_nowait(None)
            await self._task
            self._pool.shutdown()
            self._writer.close()
            self._reader.close()
            self._task = None
