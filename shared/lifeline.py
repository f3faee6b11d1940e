"""Worker processes that end with their parent.

A parent killed with SIGKILL cannot stop its children, and a pool's workers that inherited
both ends of its pipes never see them close: they would idle on, re-parented, for good.
"""

from __future__ import annotations

import os
import threading
import time

POLL_SECONDS = 0.5


def exit_with_parent(poll_seconds: float = POLL_SECONDS, program: int | None = None) -> None:
    """Process-pool initializer: end this process within `poll_seconds` of its parent's death.

    `program`: the pid to outlive instead, for workers started by a fork server (their parent
    is the server, which may outlive the program that owns the pool).
    """
    parent = os.getppid()  # whoever started us (the program, or a fork server it owns)
    threading.Thread(target=_watch, args=(parent, poll_seconds, program), name="lifeline",
                     daemon=True).start()


def _watch(parent: int, poll_seconds: float, program: int | None) -> None:
    # Re-parenting (to init or a subreaper) is the one sign of a parent's death that needs
    # no cooperation from it and works the same on Linux and macOS.
    while os.getppid() == parent and (program is None or process_alive(program)):
        time.sleep(poll_seconds)
    os._exit(1)


def process_alive(pid: int) -> bool:
    """Whether a process with this id exists on this machine (signal 0 probes without harm)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, it is just not ours
    return True
