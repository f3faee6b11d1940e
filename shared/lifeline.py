"""Worker processes that end with their parent.

A parent killed with SIGKILL cannot stop its children, and a pool's workers that inherited
both ends of its pipes never see them close: they would idle on, re-parented, for good.
"""

from __future__ import annotations

import os
import threading
import time

POLL_SECONDS = 0.5


def exit_with_parent(poll_seconds: float = POLL_SECONDS) -> None:
    """Process-pool initializer: end this process within `poll_seconds` of its parent's death."""
    parent = os.getppid()  # whoever started us (the program, or a fork server it owns)
    threading.Thread(target=_watch, args=(parent, poll_seconds), name="lifeline",
                     daemon=True).start()


def _watch(parent: int, poll_seconds: float) -> None:
    # Re-parenting (to init or a subreaper) is the one sign of a parent's death that needs
    # no cooperation from it and works the same on Linux and macOS.
    while os.getppid() == parent:
        time.sleep(poll_seconds)
    os._exit(1)
