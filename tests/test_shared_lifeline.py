"""Pool workers end soon after their parent is killed with SIGKILL."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import running

ROOT = Path(__file__).resolve().parents[1]
PARENT = """
import os, time
from concurrent.futures import ProcessPoolExecutor
from shared.lifeline import exit_with_parent

def pid_after_a_while(_):
    time.sleep(0.3)  # long enough that both workers take a task
    return os.getpid()

with ProcessPoolExecutor(2, initializer=exit_with_parent, initargs=(0.1,)) as pool:
    print(*set(pool.map(pid_after_a_while, range(2))), flush=True)
    time.sleep(600)
"""


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc (Linux)")
def test_workers_end_after_their_parent_is_killed():
    parent = subprocess.Popen([sys.executable, "-c", PARENT], cwd=ROOT, stdout=subprocess.PIPE,
                              text=True, start_new_session=True)
    workers: list[int] = []
    try:
        ready, _, _ = select.select([parent.stdout], [], [], 60)
        assert ready, "the pool did not start within 60 s"
        workers = [int(pid) for pid in parent.stdout.readline().split()]
        assert len(workers) == 2 and all(running(pid) for pid in workers)
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=10)
        deadline = time.monotonic() + 10
        while any(running(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(running(pid) for pid in workers), "workers outlived their parent"
    finally:
        for pid in workers:
            if running(pid):
                os.kill(pid, signal.SIGKILL)
        if parent.poll() is None:
            parent.kill()
            parent.wait(timeout=10)
