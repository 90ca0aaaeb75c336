"""A child process that its killed parent leaves behind exits (training's child: unolearn.children)."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads process states from /proc")

# A parent that starts the pool training uses, gives its worker a long task and is then killed.
PARENT = """
import os, time
from unolearn.children import child_pool
pool = child_pool()
print(pool.submit(os.getpid).result(), flush=True)
pool.submit(time.sleep, 300)
time.sleep(300)
"""


def running(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie (an orphan's new parent may not reap it at once)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_the_child_of_a_killed_parent_exits_instead_of_working_on():
    # Without the watch, the worker goes on with its task (a training: gigabytes, then modules written into a
    # workspace that a re-run may be training again) until the task ends.
    parent = subprocess.Popen([sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True)
    child = int(parent.stdout.readline())
    try:
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        deadline = time.monotonic() + 15
        while running(child) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not running(child)
    finally:
        if running(child):
            os.kill(child, signal.SIGKILL)
