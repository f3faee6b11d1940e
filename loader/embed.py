"""`loader embed`: fill in missing embeddings, safely beside any number of other workers.

Work is leased from the database a little at a time (see `shared.store.queue`), run on
`jobs` threads through the `Embedder` protocol, and written back as each batch finishes,
so a worker killed at any moment loses only its unfinished leases, which expire (at once for
a killed worker of this machine: the next run sees that its process is gone). A stop request
finishes the batches being embedded, saves them and gives the other leases back.
"""

from __future__ import annotations

import os
import secrets
import socket
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from functools import partial

import numpy as np
import psycopg

from shared.embedders.base import FATAL, Embedder, EmbeddingError, ImageSource, PartialFailure
from shared.lifeline import process_alive
from shared.progress import Progress
from shared.storage import Storage
from shared.store import Catalogue, Claim, EmbeddingQueue

LEASE_SECONDS = 300.0
# Results are written in groups; a killed worker loses (and a later one redoes) at most these.
FLUSH_ROWS = 64
FLUSH_SECONDS = 1.0


def worker_name() -> str:
    """An id for this process's leases, unique across machines and restarts."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


def release_dead_workers(queue: EmbeddingQueue) -> int:
    """Give back the leases of this machine's workers whose processes are gone (killed).

    Their leases would otherwise hold those images until they expire. A worker id is
    host:pid:token; a pid in use again by another process is left alone (its leases expire).
    """
    host = socket.gethostname()
    released = 0
    for holder in queue.holders():
        name, _, rest = holder.rpartition(":")[0].partition(":")
        if name == host and rest.isdigit() and not process_alive(int(rest)):
            released += queue.release(holder)
    return released



@dataclass
class EmbedReport:
    """What one `loader embed` run did, for people and for `--json`."""

    model: str
    worker: str
    embedded: int = 0  # rows that got a vector from the model
    shared: int = 0  # rows that got the vector of an identical image
    failed: list[dict[str, str]] = field(default_factory=list)
    error: str | None = None  # why the run stopped early, if it did
    stopped: bool = False  # a stop was requested before the queue was empty
    leased_elsewhere: int = 0  # rows left to other workers' live leases (or a killed one's)
    leases_end: str | None = None  # when the last of those leases runs out (ISO 8601)
    seconds: float = 0.0
    db_seconds: float = 0.0

    @property
    def per_minute(self) -> float:
        """Images embedded by the model per minute of this run."""
        return self.embedded * 60.0 / self.seconds if self.seconds else 0.0

    def as_dict(self) -> dict:
        """A JSON-ready copy."""
        return {**asdict(self), "per_minute": round(self.per_minute, 1)}


@dataclass(frozen=True)
class EmbedOptions:
    """How a backfill runs."""

    jobs: int = 8
    limit: int | None = None
    reembed: bool = False
    retry_failed: bool = False
    lease_seconds: float = LEASE_SECONDS


def run_embed(
    conn: psycopg.Connection,
    embedder: Embedder,
    storage: Storage,
    options: EmbedOptions = EmbedOptions(),
    *,
    worker_id: str | None = None,
    progress: bool | Progress | None = None,
    stop: threading.Event | None = None,
) -> EmbedReport:
    """Embed every row that needs it (up to `limit` contents) and say what happened.

    `progress` is a Progress to report to, or whether to show one; `stop` ends the run early.
    """
    started = time.perf_counter()
    report = EmbedReport(model=embedder.model_id, worker=worker_id or worker_name())
    queue = EmbeddingQueue(conn, embedder.model_id, reembed=options.reembed,
                           retry_failed=options.retry_failed)
    release_dead_workers(queue)
    backfill = _Backfill(queue, embedder, storage, options, report, stop)
    backfill.bar = progress if isinstance(progress, Progress) else searchable_progress(
        conn, show=progress is not False and queue.count_waiting() > 0)
    try:
        backfill.run()
    finally:
        if not isinstance(progress, Progress):
            backfill.bar.finish("stopped" if report.stopped else "done")
    count, until = queue.leased_elsewhere(report.worker)
    report.leased_elsewhere, report.leases_end = count, until.isoformat() if until else None
    report.seconds = round(time.perf_counter() - started, 3)
    report.db_seconds = round(report.db_seconds, 3)
    return report


def searchable_progress(conn: psycopg.Connection, **kwargs) -> Progress:
    """The "1,240 of 5,000 photos searchable" progress of a library, for a live embedding loop."""
    counts = Catalogue(conn).counts()
    return Progress("embed", "{done} of {total} photos searchable", done=counts.embedded,
                    total=counts.images - counts.failed, unit="photos", **kwargs)


class _Backfill:
    """The loop of one worker: lease, embed on a thread pool, write back, renew leases."""

    def __init__(self, queue: EmbeddingQueue, embedder: Embedder, storage: Storage,
                 options: EmbedOptions, report: EmbedReport,
                 stop: threading.Event | None = None) -> None:
        self.queue, self.embedder, self.storage = queue, embedder, storage
        self.options, self.report = options, report
        self.stop = stop
        self.batch_size = max(1, embedder.batch_size)
        self.pending: dict[Future, list[Claim]] = {}
        self.to_save: list[tuple[Claim, np.ndarray]] = []
        self.to_fail: list[tuple[Claim, EmbeddingError]] = []
        self.flushed = time.monotonic()
        self.claimed = 0
        self.exhausted = False
        self.renew_every = max(0.2, options.lease_seconds / 3)
        self.renewed = time.monotonic()
        self.bar: Progress | None = None

    def run(self) -> None:
        """Work until nothing is left to claim or a fatal error stops the run."""
        filled = self._db(self.queue.fill_shared)
        self.report.shared += len(filled)
        self._advance(len(filled))
        pool = ThreadPoolExecutor(max_workers=self.options.jobs, thread_name_prefix="embed")
        try:
            while True:
                if self.stop is not None and self.stop.is_set() and not self.report.stopped:
                    self.report.stopped = True
                    self._cancel_waiting()
                self._top_up(pool)
                if not self.pending:
                    break
                timeout = min(self.renew_every, FLUSH_SECONDS)
                done, _ = wait(self.pending, timeout=timeout, return_when=FIRST_COMPLETED)
                for future in done:
                    self._finish(future, self.pending.pop(future))
                self._flush()
                self._renew_if_due()
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
            self._flush(force=True)
            self._db(self.queue.release, self.report.worker)  # whatever was not finished

    def _top_up(self, pool: ThreadPoolExecutor) -> None:
        """Once no more than one batch per job is left, lease enough for two per job.

        Leasing in steps of `jobs` batches keeps the database calls few, and the leases
        short-lived enough that none sits long unworked.
        """
        if (self.exhausted or self.report.error or self.report.stopped
                or len(self.pending) > self.options.jobs):
            return
        room = 2 * self.options.jobs - len(self.pending)
        want = room * self.batch_size
        if self.options.limit is not None:
            want = min(want, self.options.limit - self.claimed)
        claims = self._db(self.queue.claim, self.report.worker, want,
                          self.options.lease_seconds) if want > 0 else []
        leads = [c for c in claims if c.lead]
        self.claimed += len(leads)
        if not leads or (self.options.limit is not None and self.claimed >= self.options.limit):
            self.exhausted = True
        for i in range(0, len(leads), self.batch_size):
            batch = leads[i : i + self.batch_size]
            self.pending[pool.submit(_embed_batch, self.embedder, self.storage, batch)] = batch

    def _finish(self, future: Future, batch: list[Claim]) -> None:
        """Queue one finished batch's vectors and per-image errors, or stop on a fatal error."""
        try:
            vectors, errors = future.result()
        except FATAL as exc:
            self._stop(str(exc))
            return
        self.to_save.extend((batch[i], v) for i, v in vectors.items())
        self.to_fail.extend((batch[i], e) for i, e in errors.items())

    def _flush(self, force: bool = False) -> None:
        """Write queued results in one statement each, once enough have gathered or waited."""
        waited = time.monotonic() - self.flushed
        if not force and len(self.to_save) + len(self.to_fail) < FLUSH_ROWS and waited < FLUSH_SECONDS:
            return
        if self.to_save:
            saved = self._db(self.queue.save, self.report.worker,
                             [(c.id, v) for c, v in self.to_save])
            leads = {c.filename for c, _ in self.to_save}
            self.report.embedded += sum(name in leads for name in saved)
            self.report.shared += sum(name not in leads for name in saved)
            self._advance(len(saved))
        if self.to_fail:
            failed = self._db(self.queue.record_failures, self.report.worker,
                              [(c.id, str(e), e.attempts) for c, e in self.to_fail])
            self.report.failed.extend({"file": name, "error": error} for name, error in failed)
            if self.bar is not None and self.bar.state.total:
                self.bar.set_total(self.bar.state.total - len(failed))  # never searchable
        self.to_save, self.to_fail, self.flushed = [], [], time.monotonic()

    def _stop(self, why: str) -> None:
        """Claim nothing more and drop batches not yet started; running ones still finish."""
        if self.report.error is None:
            self.report.error = why
        self._cancel_waiting()

    def _cancel_waiting(self) -> None:
        """Drop the batches not started yet (their leases are given back at the end)."""
        for future in [f for f in self.pending if f.cancel()]:
            self.pending.pop(future)

    def _renew_if_due(self) -> None:
        if time.monotonic() - self.renewed >= self.renew_every:
            self._db(self.queue.extend, self.report.worker, self.options.lease_seconds)
            self.renewed = time.monotonic()

    def _advance(self, rows: int) -> None:
        if self.bar is not None:
            self.bar.update(rows)

    def _db(self, method, *args, **kwargs):
        """Call a store method, adding its time to the report's database time."""
        started = time.perf_counter()
        try:
            return method(*args, **kwargs)
        finally:
            self.report.db_seconds += time.perf_counter() - started


def _embed_batch(embedder: Embedder, storage: Storage, leads: list[Claim]):
    """Embed one batch on a worker thread: (vectors by index, errors by index)."""
    sources = [
        ImageSource(c.filename, storage.original_url(c.filename), partial(storage.read_original, c.filename))
        for c in leads
    ]
    try:
        return dict(enumerate(embedder.embed_images(sources))), {}
    except PartialFailure as exc:
        return exc.vectors, exc.errors
    except FATAL:
        raise
    except EmbeddingError as exc:
        return {}, {i: exc for i in range(len(leads))}
    except Exception as exc:  # a backend's unexpected error fails this batch, not the run
        return {}, {i: EmbeddingError(f"{type(exc).__name__}: {exc}") for i in range(len(leads))}

