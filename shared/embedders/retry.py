"""Pacing and retrying calls to a remote embedding service, in one place for every backend.

`RateLimiter` spaces calls evenly across threads so a rate ceiling is approached but not
crossed; `Retrier` runs one call, trying again on `Retryable` failures with jittered
exponential backoff, or exactly as long as the server asked when it said how long.
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass
from typing import Callable, TypeVar

from .base import EmbeddingError

T = TypeVar("T")


class Retryable(EmbeddingError):
    """A failure worth another try: throttled, a server error, a timeout, a garbled reply."""

    def __init__(self, message: str, *, retry_after: float | None = None, throttled: bool = False) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.throttled = throttled


class GaveUp(EmbeddingError):
    """Every attempt failed with a retryable error; the message carries the last one."""

    def __init__(self, last: Retryable, attempts: int) -> None:
        super().__init__(f"gave up after {attempts} attempts: {last}")
        self.last = last
        self.attempts = attempts


class RateLimiter:
    """Lets at most `per_minute` calls start per minute, evenly spaced, across all threads."""

    def __init__(
        self,
        per_minute: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if per_minute <= 0:
            raise ValueError("per_minute must be positive")
        self.interval = 60.0 / per_minute
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._next = clock()

    def acquire(self) -> float:
        """Wait for this caller's slot; return how long it waited."""
        with self._lock:
            now = self._clock()
            slot = max(now, self._next)
            self._next = slot + self.interval
        wait = slot - now
        if wait > 0:
            self._sleep(wait)
        return wait

    def hold_off(self, seconds: float) -> None:
        """Start no call for `seconds` from now (the server said it is throttling us)."""
        with self._lock:
            self._next = max(self._next, self._clock() + seconds)


@dataclass(frozen=True)
class Backoff:
    """How many times to try and how long to wait between tries."""

    max_attempts: int = 5
    base_seconds: float = 1.0
    max_seconds: float = 60.0
    max_retry_after: float = 600.0  # beyond this a server's Retry-After is taken as garbage

    def delay(self, attempt: int, retry_after: float | None, rng: random.Random) -> float:
        """Seconds to wait after failed attempt number `attempt` (1-based)."""
        if retry_after is not None:
            # The server's word (not our own cap) plus a little spread, so waiting threads
            # don't all return at once.
            return min(self.max_retry_after, retry_after) * (1 + 0.1 * rng.random())
        ceiling = min(self.max_seconds, self.base_seconds * 2 ** (attempt - 1))
        return ceiling / 2 + rng.uniform(0, ceiling / 2)


class Retrier:
    """Runs calls under a rate limit, retrying `Retryable` failures with backoff."""

    def __init__(
        self,
        backoff: Backoff = Backoff(),
        limiter: RateLimiter | None = None,
        *,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self.backoff = backoff
        self.limiter = limiter
        self._sleep = sleep
        self._rng = rng or random.Random()

    def call(self, fn: Callable[[], T], *, paced: bool = True) -> T:
        """Return `fn()`; raise `GaveUp` after the last retryable failure.

        A permanent `EmbeddingError` is raised at once, with `attempts` set on it.
        `paced` calls wait for a rate-limiter slot before every attempt.
        """
        for attempt in range(1, self.backoff.max_attempts + 1):
            if paced and self.limiter is not None:
                self.limiter.acquire()
            try:
                return fn()
            except Retryable as exc:
                if attempt == self.backoff.max_attempts:
                    raise GaveUp(exc, attempt) from exc
                wait = self.backoff.delay(attempt, exc.retry_after, self._rng)
                if exc.throttled and paced and self.limiter is not None:
                    self.limiter.hold_off(wait)  # every thread waits, not just this one
                else:
                    self._sleep(wait)
            except EmbeddingError as exc:
                exc.attempts = attempt
                raise
        raise AssertionError("unreachable")
