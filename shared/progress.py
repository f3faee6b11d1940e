"""Progress of long work, told where people look: the terminal and the web app's /status.

On a terminal a task shows a tqdm bar; when the output is a file or a pipe (CI logs, a
service manager's journal) it prints a plain line every `every_s` seconds and one at the end,
because a bar there is a stream of carriage returns. A `Board` keeps the latest state of every
task of a process, for the status page; the same updates feed both.
"""

from __future__ import annotations

import sys
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass, replace
from typing import TextIO

from tqdm import tqdm

RATE_WINDOW_S = 60.0  # the rate (and so the ETA) is measured over the last minute


@dataclass(frozen=True)
class TaskState:
    """One task as it stands: how far, how fast, and what it says."""

    name: str  # short and stable: "model", "sync", "embed"
    template: str  # what done and total mean, e.g. "{done} of {total} photos searchable"
    done: float = 0
    total: float | None = None
    unit: str = ""  # "B" for bytes (shown as MB, GB), else a plain count
    rate: float | None = None  # units per second, over the last minute
    state: str = "running"  # running | done | stopped | failed | waiting
    note: str = ""  # a reason or a detail, one line

    @property
    def eta_s(self) -> float | None:
        """Seconds left at the current rate, when both are known."""
        if self.state != "running" or not self.rate or self.total is None:
            return None
        return max(0.0, (self.total - self.done) / self.rate)

    @property
    def percent(self) -> int | None:
        """Whole percent done, when the total is known."""
        if not self.total:
            return None
        return min(100, int(100 * self.done / self.total))

    def line(self) -> str:
        """One line for a person, e.g. "embed: 1,240 of 5,000 photos searchable (24%), about 3 min left"."""
        text = self.template.format(done=amount(self.done, self.unit),
                                    total=amount(self.total, self.unit) if self.total else "?")
        extra = []
        if self.percent is not None and self.state == "running":
            extra.append(f"{self.percent}%")
        if self.rate and self.state == "running":
            extra.append(speed(self.rate, self.unit))
        if self.eta_s is not None and self.done < (self.total or 0):
            extra.append(f"about {duration(self.eta_s)} left")
        if self.state not in ("running", "done"):
            extra.append(self.state)
        if self.note:
            extra.append(self.note)
        return f"{self.name}: {text}" + (f" ({', '.join(extra)})" if extra else "")

    def as_dict(self) -> dict:
        """A JSON-ready copy, with the line and ETA."""
        return {**asdict(self), "percent": self.percent, "eta_s": self.eta_s, "line": self.line()}


class Board:
    """The latest state of each task of this process, safe to read from request threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tasks: dict[str, TaskState] = {}

    def put(self, task: TaskState) -> None:
        """Record a task's new state."""
        with self._lock:
            self._tasks[task.name] = task

    def get(self, name: str) -> TaskState | None:
        """A task's latest state, or None."""
        with self._lock:
            return self._tasks.get(name)

    def tasks(self) -> list[TaskState]:
        """Every task, in the order they started."""
        with self._lock:
            return list(self._tasks.values())


class Progress:
    """One task's progress, shown on `out` (a bar on a terminal, lines otherwise) and on a Board.

    `show` False keeps the terminal quiet (for --json); None shows it. Safe to update from
    several threads.
    """

    def __init__(self, name: str, template: str, *, total: float | None = None, done: float = 0,
                 unit: str = "", board: Board | None = None, show: bool | None = None,
                 every_s: float = 10.0, out: TextIO | None = None) -> None:
        self.board = board
        self.every_s = every_s
        self._out = out
        self._lock = threading.Lock()
        self._state = TaskState(name, template, done, total, unit)
        self._samples: deque[tuple[float, float]] = deque([(time.monotonic(), done)])
        self._printed = time.monotonic()
        self._closed = False
        self._bar = self._make_bar() if show is not False and _is_terminal(self.out) else None
        self._lines = show is not False and self._bar is None
        self._publish()

    @property
    def out(self) -> TextIO:
        """Where lines and bars go: `out`, else whatever sys.stderr is at the time."""
        return self._out or sys.stderr

    @property
    def state(self) -> TaskState:
        """The task as it stands."""
        return self._state

    def update(self, count: float = 1) -> None:
        """`count` more units are done."""
        self._change(done=self._state.done + count)

    def set_done(self, done: float) -> None:
        """This many units are done in all."""
        self._change(done=done)

    def set_total(self, total: float | None) -> None:
        """The total changed (more work arrived, or some can never be done)."""
        self._change(total=total)

    def note(self, note: str) -> None:
        """Say something about the task (a reason, the file being fetched) without moving it."""
        self._change(note=note)

    def finish(self, state: str = "done", note: str = "", quiet: bool = False) -> None:
        """End the task: done, stopped or failed; a line (or the bar's end) says so unless quiet."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._state = replace(self._state, state=state, note=note, rate=self._rate())
            if self._bar is not None:
                self._bar.n = self._state.done
                if quiet:
                    self._bar.leave = False
                self._bar.close()
            elif self._lines and not quiet:
                print(self._state.line(), file=self.out, flush=True)
        self._publish()

    def _change(self, **fields) -> None:
        with self._lock:
            if self._closed:
                return
            self._state = replace(self._state, **fields)
            now = time.monotonic()
            if "done" in fields:
                self._samples.append((now, self._state.done))
                while len(self._samples) > 2 and now - self._samples[0][0] > RATE_WINDOW_S:
                    self._samples.popleft()
                self._state = replace(self._state, rate=self._rate())
            if self._bar is not None:
                self._draw_bar()
            elif self._lines and now - self._printed >= self.every_s:
                self._printed = now
                print(self._state.line(), file=self.out, flush=True)
        self._publish()

    def _rate(self) -> float | None:
        (t0, d0), (t1, d1) = self._samples[0], self._samples[-1]
        return (d1 - d0) / (t1 - t0) if t1 - t0 >= 1.0 and d1 > d0 else None

    def _make_bar(self) -> tqdm:
        state = self._state
        scale = state.unit == "B"
        return tqdm(total=state.total, initial=state.done, desc=state.name, unit=state.unit or "it",
                    unit_scale=scale, unit_divisor=1024 if scale else 1000, file=self.out,
                    smoothing=0.05, dynamic_ncols=True)

    def _draw_bar(self) -> None:
        bar, state = self._bar, self._state
        if state.total != bar.total:
            bar.total = state.total
        bar.update(state.done - bar.n)
        if state.note:
            bar.set_postfix_str(state.note, refresh=False)

    def _publish(self) -> None:
        if self.board is not None:
            self.board.put(self._state)


def _is_terminal(out: TextIO) -> bool:
    try:
        return out.isatty()
    except (AttributeError, ValueError):
        return False


def amount(value: float | None, unit: str) -> str:
    """A quantity for people: bytes as kB/MB/GB, counts with thousands separators."""
    if value is None:
        return "?"
    if unit == "B":
        for name, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
            if value >= size:
                return f"{value / size:.{2 if name == 'GB' else 0}f} {name}"
        return f"{value:.0f} bytes"
    return f"{value:,.0f}"


def speed(rate: float, unit: str) -> str:
    """A rate for people: MB/s for bytes, per minute for slow counts, per second otherwise."""
    if unit == "B":
        return f"{amount(rate, 'B')}/s"
    return f"{rate * 60:,.0f}/min" if rate < 2 else f"{rate:,.1f}/s"


def duration(seconds: float) -> str:
    """A duration rounded for people: "40 s", "3 min", "1 h 20 min"."""
    if seconds < 60:
        return f"{max(1, round(seconds))} s"
    if seconds < 3600:
        return f"{round(seconds / 60)} min"
    hours, minutes = divmod(round(seconds / 60), 60)
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"


def say(message: str, out: TextIO | None = None) -> None:
    """Print one line without breaking a progress bar drawn on the same terminal."""
    tqdm.write(message, file=out or sys.stderr)
    (out or sys.stderr).flush()
