"""Noticing changes in the images folder: filesystem events, or polling where there are none.

Events come from watchdog (inotify on Linux, FSEvents on macOS). Where they cannot be had (too
many folders for the system's inotify limit, some network drives) or WATCH_EVENTS=off, the
folder is rescanned every WATCH_POLL_S instead: a sync pass is itself a cheap comparison of
sizes and times. Either way the caller hears of a change only once the folder has been quiet
for the debounce time, so a burst of files (a copy of a whole folder) makes one pass.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

# What says a file's content or presence changed; opening and reading (sync's own) do not.
CHANGES = {"created", "modified", "deleted", "moved", "closed"}


class FolderWatch:
    """Tells a sync loop when `root` changed (see the module's docstring)."""

    def __init__(self, root: Path, *, events: str = "auto", poll_s: float = 2.0) -> None:
        self.root = root.absolute()
        self.use_events = events == "auto"
        self.poll_s = poll_s
        self.polling = True
        self._changed = threading.Event()
        self._last_change = 0.0
        self._observer = None

    def start(self) -> str:
        """Start watching; return how, in words (events, or polling and why)."""
        if not self.use_events:
            return f"watching {self.root} by rescanning every {self.poll_s:g} s (WATCH_EVENTS=off)"
        try:
            self._observer = self._start_observer()
        except (OSError, ImportError) as exc:
            why = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
            return (f"watching {self.root} by rescanning every {self.poll_s:g} s "
                    f"(filesystem events unavailable: {why})")
        self.polling = False
        return f"watching {self.root} for changes"

    def _start_observer(self):
        from watchdog.events import FileSystemEventHandler
        from watchdog.observers import Observer

        watch = self

        class Handler(FileSystemEventHandler):
            def on_any_event(self, event) -> None:
                if event.event_type in CHANGES and not watch._hidden(event):
                    watch.mark_changed()

        observer = Observer()
        observer.daemon = True  # never keeps the process alive on its own
        observer.schedule(Handler(), str(self.root), recursive=True)
        observer.start()
        return observer

    def _hidden(self, event) -> bool:
        """Whether every path of the event lies under a hidden name (sync skips those)."""
        paths = [event.src_path, getattr(event, "dest_path", "") or ""]
        return all(_is_hidden(self.root, p) for p in paths if p)

    def mark_changed(self) -> None:
        """Note a change now (the observer calls this; so may a caller that knows better)."""
        self._last_change = time.monotonic()
        self._changed.set()

    def wait(self, stop: threading.Event, debounce_s: float, timeout: float | None) -> bool:
        """Wait for a change followed by `debounce_s` of quiet (True), at most `timeout` seconds
        (False), or until `stop`. When polling, `poll_s` without news also answers True."""
        limit = timeout
        if self.polling:
            limit = self.poll_s if timeout is None else min(self.poll_s, timeout)
        deadline = None if limit is None else time.monotonic() + limit
        while not stop.is_set():
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return self.polling
            if self._changed.wait(0.5 if left is None else min(left, 0.5)):
                return self._settle(stop, debounce_s)
        return False

    def _settle(self, stop: threading.Event, debounce_s: float) -> bool:
        """After a change, wait until no event came for `debounce_s`."""
        while not stop.is_set():
            quiet = time.monotonic() - self._last_change
            if quiet >= debounce_s:
                self._changed.clear()
                return True
            stop.wait(debounce_s - quiet)
        return False

    def stop(self) -> None:
        """Stop the observer (a no-op when polling)."""
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=5)
            self._observer = None


def _is_hidden(root: Path, path: str) -> bool:
    try:
        parts = Path(path).relative_to(root).parts
    except ValueError:
        return True  # outside the folder (a move away lists its old path too)
    return any(part.startswith(".") for part in parts)
