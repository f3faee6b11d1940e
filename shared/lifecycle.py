"""Stopping on Ctrl-C and SIGTERM: one request to stop that every part of a program watches.

Python turns SIGINT into KeyboardInterrupt but leaves SIGTERM to kill the process at once,
skipping `finally` blocks and `atexit` (so the embedded Postgres stays up with a stale handle,
and leases stay taken). `StopSignals` handles both the same way: the first one sets an event
that loops check between steps, and, where the main thread sits in a blocking call that only
an exception leaves (waitress's loop), raises KeyboardInterrupt there. A second signal means
"now": it raises KeyboardInterrupt even where the first did not.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopSignals:
    """While active (a `with` block in the main thread), SIGINT and SIGTERM request a stop.

    `interrupt` makes the first signal also raise KeyboardInterrupt in the main thread.
    A SIGINT that the process was started ignoring (a background job of a shell) stays ignored.
    """

    def __init__(self, interrupt: bool = False, event: threading.Event | None = None) -> None:
        self.event = event or threading.Event()
        self.interrupt = interrupt
        self.received: str | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> StopSignals:
        for number in SIGNALS:
            current = signal.getsignal(number)
            if number == signal.SIGINT and current == signal.SIG_IGN:
                continue
            self._previous[number] = current
            signal.signal(number, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        self._previous.clear()

    @property
    def stopping(self) -> bool:
        """Whether a stop was requested."""
        return self.event.is_set()

    def request(self) -> None:
        """Ask everything to stop, as a signal would (for tests and for errors that end a run)."""
        self.event.set()

    def _handle(self, number: int, _frame: FrameType | None) -> None:
        first = not self.event.is_set()
        self.received = signal.Signals(number).name
        self.event.set()
        if self.interrupt or not first:
            raise KeyboardInterrupt
