"""The vector index brought to what EMBEDDING_STORAGE asks for: progress shown, stoppable.

`loader ensure-schema` runs this in the foreground, `loader up` and `loader watch` in the
background. Search keeps working meanwhile (the new index is built before the old one goes).
A stop request cancels the statement running in the server; the invalid index a cancelled
build leaves is dropped and built again by the next run.
"""

from __future__ import annotations

import threading
from typing import Callable

import psycopg

from shared.database import index_memory_mb
from shared.progress import Board, Progress, say
from shared.settings import Settings
from shared.store import DatabaseError, Schema, VectorIndex, VectorLayout, connect

POLL_S = 0.2  # how often a stop request and the build's progress are looked at


def migrate_index(settings: Settings, url: str, stop: threading.Event, *,
                  board: Board | None = None, show: bool = True,
                  tell: Callable[[str], None] = say) -> str:
    """Migrate the HNSW index; returns "nothing" (it was as asked), "done", or "stopped" (a
    stop request came first)."""
    wanted = VectorLayout.wanted(settings.embedding_storage, settings.expected_vector_dim)
    with connect(url, settings.database_setting) as conn:
        if not VectorIndex(conn).pending(wanted):
            return "nothing"
        failed: list[BaseException] = []

        def work() -> None:
            try:
                Schema(conn).migrate_vector_index(
                    settings.embedding_storage, settings.expected_vector_dim, say=tell,
                    cancelled=stop.is_set, index_memory_mb=index_memory_mb(settings))
            except BaseException as exc:  # noqa: BLE001 - raised again by the caller's thread
                failed.append(exc)

        # The statements run in a thread of their own: this one keeps waking up, so that a
        # signal is handled (and the build cancelled) at once, not when the build is over.
        worker = threading.Thread(target=work, name="index-build", daemon=True)
        worker.start()
        _follow(worker, conn, url, settings, stop, board, show)
        if failed and not (isinstance(failed[0], psycopg.errors.QueryCanceled) and stop.is_set()):
            raise failed[0]  # someone else's cancel (statement_timeout, an admin) included
        return "stopped" if VectorIndex(conn).pending(wanted) else "done"


def _follow(worker: threading.Thread, conn: psycopg.Connection, url: str, settings: Settings,
            stop: threading.Event, board: Board | None, show: bool) -> None:
    """Until the migration ends: cancel its statement on a stop request; show the build's rows."""
    progress: Progress | None = None
    watch: psycopg.Connection | None = None
    try:
        while worker.is_alive():
            worker.join(POLL_S)
            if stop.is_set() and worker.is_alive():
                # Again at each wake-up: a cancel that lands between two statements is lost.
                conn.cancel_safe()
            building, rows = _build_progress(watch := watch or _quiet_connect(url, settings))
            if building is None:
                continue
            if progress is None:
                progress = Progress("index", "{done} of {total} rows indexed", total=max(1, rows),
                                    board=board, show=show,
                                    every_s=settings.live.progress_every_s)
            progress.set_done(min(building, rows) if rows else building)
    finally:
        if watch is not None:
            watch.close()
        if progress is not None:
            progress.finish("stopped" if stop.is_set() else "done")


def _quiet_connect(url: str, settings: Settings) -> psycopg.Connection | None:
    try:
        return connect(url, settings.database_setting)
    except DatabaseError:
        return None  # progress is a nicety: the migration reports its own failures


def _build_progress(conn: psycopg.Connection | None) -> tuple[int | None, int]:
    """(rows indexed so far, rows in the table) while a build runs; (None, 0) otherwise."""
    if conn is None:
        return None, 0
    try:
        index = VectorIndex(conn)
        building = index.build_progress()
        return (building[1], index.row_estimate()) if building else (None, 0)
    except psycopg.Error:
        return None, 0
