"""A pool of connections for request threads that never waits on a database that is down.

Connections are opened on demand in the thread that asks, so while the database is down each
request learns it at once (a refused connection fails in milliseconds), and the first request
after it returns gets a fresh connection: no background reconnection schedule to wait out.
Idle connections the server has closed (a restart, an idle timeout) are noticed without a
round trip and replaced.
"""

from __future__ import annotations

import math
import select
import threading
import time
from contextlib import contextmanager
from typing import Iterator

import psycopg
from psycopg.pq import TransactionStatus

from .connection import DatabaseError, connection_problem, register_types

# libpq rounds connect_timeout below 2 s up to 2 s.
MIN_CONNECT_TIMEOUT_S = 2


class DatabaseUnavailable(DatabaseError):
    """No connection could be had: the database refused or did not answer (the message says)."""


class PoolExhausted(DatabaseUnavailable):
    """Every connection stayed lent out for longer than the wait allowed."""


class Pool:
    """At most `size` autocommit connections that know pgvector's types, lent one at a time."""

    def __init__(self, url: str, size: int, *, wait_s: float = 10.0,
                 setting: str = "the database URL") -> None:
        self.url, self.size, self.wait_s, self.setting = url, size, wait_s, setting
        self._idle: list[psycopg.Connection] = []
        self._out = 0  # lent, or being opened for a borrower
        self._closed = False
        self._cond = threading.Condition()

    def getconn(self, timeout: float | None = None) -> psycopg.Connection:
        """A working connection, or DatabaseUnavailable (PoolExhausted) within `timeout`."""
        deadline = time.monotonic() + (self.wait_s if timeout is None else timeout)
        stale: list[psycopg.Connection] = []
        try:
            with self._cond:
                while True:
                    if self._closed:
                        raise DatabaseUnavailable("the connection pool is closed")
                    conn = self._take_idle(stale)
                    if conn is not None or self._out < self.size:
                        self._out += 1
                        break
                    left = deadline - time.monotonic()
                    if left <= 0 or not self._cond.wait(left):
                        raise PoolExhausted(
                            f"all {self.size} database connections stayed busy for "
                            f"{self.wait_s if timeout is None else timeout:g} s")
        finally:
            _close_all(stale)
        if conn is not None:
            return conn
        try:
            return self._connect(max(deadline - time.monotonic(), 0))
        except BaseException:
            self._released()
            raise

    def putconn(self, conn: psycopg.Connection) -> None:
        """Take a connection back; one that is broken or mid-transaction is closed instead."""
        keep = not self._closed and _reusable(conn)
        if not keep:
            _close_all([conn])
        self._released(conn if keep else None)

    @contextmanager
    def connection(self, timeout: float | None = None) -> Iterator[psycopg.Connection]:
        """Lend a connection for the length of a `with` block."""
        conn = self.getconn(timeout)
        try:
            yield conn
        finally:
            self.putconn(conn)

    def stats(self) -> dict[str, int]:
        """How many connections are lent out and how many wait idle."""
        with self._cond:
            return {"size": self.size, "lent": self._out, "idle": len(self._idle)}

    def close(self) -> None:
        """Close the idle connections now and every lent one when it comes back."""
        with self._cond:
            self._closed = True
            idle, self._idle = self._idle, []
            self._cond.notify_all()
        _close_all(idle)

    def _take_idle(self, stale: list[psycopg.Connection]) -> psycopg.Connection | None:
        # The most recently used first: the least likely to have been dropped by the server.
        while self._idle:
            conn = self._idle.pop()
            if _reusable(conn) and not _server_has_spoken(conn):
                return conn
            stale.append(conn)
        return None

    def _connect(self, left_s: float) -> psycopg.Connection:
        timeout = max(MIN_CONNECT_TIMEOUT_S, math.ceil(left_s))
        try:
            conn = psycopg.connect(self.url, autocommit=True, connect_timeout=timeout)
        except psycopg.Error as exc:
            raise DatabaseUnavailable(connection_problem(self.url, self.setting, exc)) from None
        try:
            register_types(conn)
        except psycopg.Error as exc:
            conn.close()
            raise DatabaseUnavailable(connection_problem(self.url, self.setting, exc)) from None
        return conn

    def _released(self, conn: psycopg.Connection | None = None) -> None:
        with self._cond:
            self._out -= 1
            if conn is not None:
                self._idle.append(conn)
            self._cond.notify()


def open_pool(url: str, size: int, *, wait_s: float = 10.0,
              setting: str = "the database URL") -> Pool:
    """A pool of at most `size` connections; a borrower waits at most `wait_s` for one."""
    return Pool(url, size, wait_s=wait_s, setting=setting)


def _reusable(conn: psycopg.Connection) -> bool:
    return not conn.closed and conn.info.transaction_status == TransactionStatus.IDLE


def _server_has_spoken(conn: psycopg.Connection) -> bool:
    """True when an idle connection's socket has something to read: the server said goodbye.

    An idle connection expects nothing; a server that shuts down or drops it sends an error
    and closes, which makes the socket readable. Checking costs no round trip.
    """
    try:
        poller = select.poll()
        poller.register(conn.fileno(), select.POLLIN)
        return bool(poller.poll(0))
    except (OSError, ValueError, psycopg.Error):
        return True


def _close_all(conns: list[psycopg.Connection]) -> None:
    for conn in conns:
        try:
            conn.close()
        except Exception:  # closing a dead connection may complain; it is gone either way
            pass
