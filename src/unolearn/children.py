"""Child processes that end with their parent.

A stage that runs in a child process (training, :func:`unolearn.train.run_in_child`) keeps running when its
parent is killed (``kill``, a scheduler's time limit, the OOM killer): a pool's worker notices its parent only
between tasks. Such an orphan holds gigabytes and, when its task ends, writes modules into a workspace that a
re-run may already be training again. The worker here watches its parent and exits as soon as it is gone.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from concurrent.futures import ProcessPoolExecutor

#: How often a child looks for its parent, in seconds.
WATCH_S = 0.5


def end_with_parent() -> None:
    """Exit this process as soon as its parent process is gone (a pool's ``initializer``; any POSIX system)."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(WATCH_S)
        os._exit(1)

    threading.Thread(target=watch, name="unolearn-parent-watch", daemon=True).start()


def child_pool() -> ProcessPoolExecutor:
    """One worker process, spawned (not forked: the parent may have threads), that ends with this process."""
    return ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"),
                               initializer=end_with_parent)
