"""A live library: the folder followed, the model fetched, and what is missing embedded, all in
the background of `loader up` (beside the web server) and of `loader watch` (on its own).

Four threads, each with its own database connection:
- sync: a pass at start, then one after each (debounced) change in the folder; files still
  being written wait for a later pass; files gone are hidden, and come back if they return.
- model: the embedder the settings name, fetched once if needed; then search turns on.
- embed: the backfill, newest first, woken by every pass that added photos.
- index: the vector index brought to what EMBEDDING_STORAGE asks for, if it is not yet
  (an upgrade): built beside the old one, which search uses until then.
A stop request ends each at its next step: leases are given back, partial downloads kept.
Failures of the database or storage are said in one line and retried, never raised.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import psycopg

from shared.embedders.base import Embedder
from shared.progress import Board, Progress, say
from shared.settings import Settings
from shared.storage import StorageError, open_storage
from shared.store import Catalogue, DatabaseError, connect

from .embed import EmbedOptions, EmbedReport, run_embed, searchable_progress
from .index import migrate_index
from .model import ModelFetch, ModelOutcome
from .sync import KnownFailures, SyncReport, decoder_pool, run_sync
from .watch import FolderWatch

RETRY_S = 5.0  # after a database or storage failure, the next try
RECHECK_S = 30.0  # the backfill looks for work this often even unasked (expired leases)
FAULTS = (psycopg.Error, DatabaseError, StorageError, OSError)


class LiveLibrary:
    """The background work of a live library (see the module's docstring)."""

    def __init__(self, settings: Settings, db_url: str, stop: threading.Event, board: Board,
                 *, table_dimensions: int | None, jobs: int = 2,
                 on_model: Callable[[ModelOutcome], None] | None = None,
                 on_percent: Callable[[int], None] | None = None) -> None:
        self.settings = settings
        self.db_url = db_url
        self.stop = stop
        self.board = board
        self.table_dimensions = table_dimensions
        self.jobs = jobs
        self.on_model = on_model
        self.on_percent = on_percent
        self.watch = FolderWatch(settings.images_dir, events=settings.live.events,
                                 poll_s=settings.live.poll_s)
        self.storage = open_storage(settings)
        self.first_sync = threading.Event()  # the first pass is over
        self._work = threading.Event()  # new rows may need embeddings
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        """Start watching, syncing, fetching the model and embedding."""
        say(self.watch.start())
        for name, target in (("sync", self._sync_loop), ("model", self._model_then_embed),
                             ("index", self._index)):
            thread = threading.Thread(target=target, name=f"live-{name}")
            thread.start()
            self._threads.append(thread)

    def join(self, timeout: float = 120.0) -> None:
        """Wait for the threads to end (after a stop request); stop watching."""
        self.stop.set()
        self.watch.stop()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(timeout=max(0.1, deadline - time.monotonic()))

    # --- sync --------------------------------------------------------------------------

    def _sync_loop(self) -> None:
        decoders = decoder_pool(self.jobs)
        failures = KnownFailures()
        conn: psycopg.Connection | None = None
        due: float | None = 0.0  # the first pass runs at once
        try:
            while not self.stop.is_set():
                timeout = None if due is None else max(0.0, due - time.monotonic())
                changed = self.watch.wait(self.stop, self.settings.live.debounce_s, timeout)
                if self.stop.is_set():
                    break
                if not changed and (due is None or time.monotonic() < due):
                    continue
                conn, report = self._sync_pass(conn, decoders, failures)
                due = self._next_pass(report)
                self.first_sync.set()
        finally:
            decoders.shutdown(wait=True, cancel_futures=True)
            if conn is not None:
                conn.close()
            self.first_sync.set()

    def _sync_pass(self, conn, decoders, failures) -> tuple[psycopg.Connection | None, SyncReport | None]:
        """One pass over the folder; a fault is one line, and the pass is tried again later."""
        live = self.settings.live
        progress = None if self.first_sync.is_set() else Progress(
            "sync", "{done} of {total} files looked at", board=self.board,
            every_s=live.progress_every_s)
        try:
            conn = conn if conn is not None and not conn.closed else connect(
                self.db_url, self.settings.database_setting)
            report = run_sync(Catalogue(conn), self.storage, self.settings.images_dir,
                              jobs=self.jobs, max_pixels=self.settings.max_image_pixels,
                              progress=progress if progress is not None else False,
                              settle_s=live.settle_s, stop=self.stop, failures=failures,
                              decoders=decoders)
        except FAULTS as exc:
            say(f"sync: {_one_line(exc)}; trying again in {RETRY_S:g} s")
            if progress is not None:
                progress.finish("failed", _one_line(exc))
            if conn is not None:
                conn.close()
            return None, None
        _say_sync(report)
        if report.new or report.changed or report.restored:
            self._work.set()
        return conn, report

    def _next_pass(self, report: SyncReport | None) -> float | None:
        """When the next pass is due without news: after a fault, or once settling files are
        old enough to be complete."""
        if report is None:
            return time.monotonic() + RETRY_S
        if report.settling:
            return time.monotonic() + max(0.05, self.settings.live.settle_s)
        return None

    # --- the vector index --------------------------------------------------------------

    def _index(self) -> None:
        """Build the index EMBEDDING_STORAGE asks for when the table lacks it; one try (a
        failure is said, and search keeps the index it has)."""
        try:
            outcome = migrate_index(self.settings, self.db_url, self.stop, board=self.board)
        except FAULTS as exc:
            say(f"index: {_one_line(exc)}; search keeps the index it has, and "
                "`loader ensure-schema` tries again")
            return
        if outcome == "done":
            say("index: the vector index is as EMBEDDING_STORAGE asks")

    # --- the model, then the backfill ----------------------------------------------------

    def _model_then_embed(self) -> None:
        """Search first (a local model's text tower is small and loads fast), then the backfill
        with the whole model, which then serves the searches too."""
        fetch = ModelFetch(self.settings, self.stop, self.board, self.on_percent)
        outcome = fetch.run(self.table_dimensions, text_only=True)
        if self.stop.is_set():
            return
        self._tell(outcome)
        if outcome.embedder is None:
            return
        say(f"search is on ({outcome.embedder.model_id})")
        if not outcome.embedder.supports_images:
            outcome = fetch.run(self.table_dimensions, text_only=False)
            if self.stop.is_set() or outcome.embedder is None:
                return
            self._tell(outcome)
        say("embedding what is missing, newest first")
        self._embed_loop(outcome.embedder)

    def _tell(self, outcome: ModelOutcome) -> None:
        if outcome.embedder is None:
            say(f"search and embedding are off: {outcome.reason}"
                if self.settings.embedder != "none" else
                "search and embedding are off (EMBEDDER=none)")
        if self.on_model is not None:
            self.on_model(outcome)

    def _embed_loop(self, embedder: Embedder) -> None:
        self.first_sync.wait()  # embed what the first pass found, not a half-synced folder
        conn: psycopg.Connection | None = None
        progress: Progress | None = None
        options = EmbedOptions(jobs=embedder.concurrency)
        try:
            while not self.stop.is_set():
                self._work.clear()
                try:
                    conn = conn if conn is not None and not conn.closed else connect(
                        self.db_url, self.settings.database_setting)
                    progress = progress or searchable_progress(
                        conn, board=self.board, every_s=self.settings.live.progress_every_s)
                    _refresh(progress, conn)
                    report = run_embed(conn, embedder, self.storage, options,
                                       progress=progress, stop=self.stop)
                except FAULTS as exc:
                    say(f"embed: {_one_line(exc)}; trying again in {RETRY_S:g} s")
                    _closed(conn)
                    conn = None
                    self.stop.wait(RETRY_S)
                    continue
                _say_embed(report)
                if report.error:
                    say(f"embed: stopped: {report.error}")
                    break
                self._wait_for_work()
        finally:
            if progress is not None:
                state = progress.state
                unfinished = state.total is not None and state.done < state.total
                progress.finish("stopped" if unfinished and self.stop.is_set() else "done")
            _closed(conn)

    def _wait_for_work(self) -> None:
        deadline = time.monotonic() + RECHECK_S
        while not self.stop.is_set() and not self._work.is_set():
            self._work.wait(timeout=min(0.5, max(0.0, deadline - time.monotonic())))
            if time.monotonic() >= deadline:
                return


def _refresh(progress: Progress, conn: psycopg.Connection) -> None:
    """Bring the searchable count up to date (new photos, hidden ones) before a round."""
    counts = Catalogue(conn).counts()
    progress.set_total(counts.images - counts.failed)
    progress.set_done(counts.embedded)


def _say_sync(report: SyncReport) -> None:
    """One line for a pass that changed something, and one per newly broken file."""
    parts = [f"{label} {value}" for label, value in (
        ("added", report.new), ("updated", report.changed), ("hidden (gone from the folder)",
         report.hidden), ("back", report.restored)) if value]
    if parts:
        say("sync: " + ", ".join(parts))
    for failure in report.failed:
        say(f"sync: cannot load {failure['file']}: {failure['error']}")


def _say_embed(report: EmbedReport) -> None:
    if report.embedded or report.shared or report.failed:
        say(f"embed: {report.embedded} embedded, {report.shared} shared with identical photos, "
            f"{len(report.failed)} failed")
    for failure in report.failed:
        say(f"embed: cannot embed {failure['file']}: {failure['error']}")


def _closed(conn: psycopg.Connection | None) -> None:
    if conn is not None:
        try:
            conn.close()
        except psycopg.Error:
            pass


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:300]
