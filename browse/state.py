"""What the browse app keeps between requests: the pool, storage, search, and the calls that can fail."""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import TypeVar
from urllib.parse import urlsplit

import numpy as np
import psycopg
from flask import current_app, g

from shared.embedders.base import EmbeddingError
from shared.imagefile import ImageProblem
from shared.progress import Board, TaskState
from shared.redact import scrub, url_secrets
from shared.search import Search, SearchUnavailable
from shared.settings import Settings
from shared.storage import Storage
from shared.store import Catalogue, Counts, DatabaseUnavailable, FolderRow, Pool, PoolExhausted

EXTENSION = "image_browser"
MAX_CACHED_FOLDERS = 256
T = TypeVar("T")
# How long an image search waits for a free upload slot before it is told to come back.
UPLOAD_WAIT_S = 1.0
log = logging.getLogger(__name__)
# What each kind of bad upload answers (see shared.imagefile.ImageProblem).
UPLOAD_STATUS = {"empty": 400, "not_image": 415, "unreadable": 400, "too_large": 413, "format": 415}


class SearchError(Exception):
    """A search could not be answered: its HTTP status, JSON code and what happened."""

    def __init__(self, message: str, status: int = 503, code: str = "search_failed",
                 outcome: str = "failed") -> None:
        super().__init__(message)
        self.status, self.code, self.outcome = status, code, outcome


class DatabaseDown(Exception):
    """The database cannot answer this request now (the details went to the log)."""


class BadUpload(Exception):
    """An uploaded file is empty, not an image, or too large."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Browse:
    """The state one browse app shares between requests (kept in `app.extensions`)."""

    settings: Settings
    pool: Pool
    storage: Storage
    search: Search
    board: Board | None = None  # the background work of this process (loader up), if any
    _folders: dict[str | None, tuple[float, list[FolderRow]]] = field(
        default_factory=dict, init=False, repr=False)
    executor: ThreadPoolExecutor = field(init=False)
    _upload_slots: threading.BoundedSemaphore = field(init=False, repr=False)
    _database_down: bool = field(default=False, init=False, repr=False)

    def __post_init__(self) -> None:
        # Embedder calls run here so that a hung backend costs a worker, not a request thread.
        self.executor = ThreadPoolExecutor(max_workers=self.settings.web.embed_workers,
                                           thread_name_prefix="embed")
        # Each image search decodes the upload: a few at once bound the memory they take.
        self._upload_slots = threading.BoundedSemaphore(self.settings.web.upload_slots)

    # --- the database, one connection per request -------------------------------------

    def connection(self) -> psycopg.Connection:
        """This request's connection: taken from the pool on first use, given back at teardown.

        DatabaseDown when the database cannot be reached: the page answers 503 at once.
        """
        if "db" not in g:
            try:
                g.db = self.pool.getconn()
            except DatabaseUnavailable as exc:
                self.database_failed(exc)
                raise DatabaseDown("every database connection is busy" if isinstance(
                    exc, PoolExhausted) else "the database is not answering") from None
            self._database_back()
        return g.db

    def database_failed(self, exc: BaseException) -> None:
        """Log the first failure of an outage, once and without secrets (the page says less)."""
        if not self._database_down:
            self._database_down = True
            detail = scrub(" ".join(str(exc).split()), *url_secrets(self.pool.url))
            log.warning("the database is unavailable: %s", detail)

    def _database_back(self) -> None:
        if self._database_down:
            self._database_down = False
            log.warning("the database answers again")

    def catalogue(self) -> Catalogue:
        """The catalogue on this request's connection."""
        return Catalogue(self.connection())

    def lend_connection(self) -> nullcontext[psycopg.Connection]:
        """This request's connection, as `Search` borrows it."""
        return nullcontext(self.connection())

    def teardown(self, _exc: BaseException | None = None) -> None:
        """Give this request's connection back to the pool."""
        conn = g.pop("db", None)
        if conn is not None:
            self.pool.putconn(conn)

    def summary_counts(self) -> Counts:
        """Image counts for page headers (the database keeps them: one row read)."""
        return self.catalogue().counts()

    def camera_list(self) -> list[tuple[str, int]]:
        """Cameras and their photo counts for the filter form (kept by the database too)."""
        return self.catalogue().cameras()

    def folder_list(self, parent: str | None) -> list[FolderRow]:
        """The sub-folders of `parent`, at most `summary_ttl_s` old: counting them reads every
        file name below `parent` (docs/benchmarks.md)."""
        now = time.monotonic()
        cached = self._folders.get(parent)
        if cached is None or now - cached[0] > self.settings.web.summary_ttl_s:
            if len(self._folders) >= MAX_CACHED_FOLDERS:
                self._folders.clear()  # crafted ?folder= values must not grow this forever
            cached = self._folders[parent] = (now, self.catalogue().folders(parent))
        return cached[1]

    def close(self) -> None:
        """Stop the embedder workers and close the pool (when the app stops)."""
        self.executor.shutdown(wait=False, cancel_futures=True)
        self.pool.close()

    # --- what the pages warn about, and what the process is doing ----------------------

    def activity(self) -> list[TaskState]:
        """The background work of this process (download, sync, embedding), for /status."""
        return self.board.tasks() if self.board is not None else []

    def warnings(self) -> list[str]:
        """Everything a page should show in its warning banner."""
        warning = self.search.width_warning
        return [warning] if warning else []

    # --- model calls, bounded in time ---------------------------------------------------

    def text_vector(self, text: str) -> np.ndarray:
        """A query text's vector within the time limit; SearchError otherwise."""
        return self._within_limit(self.executor.submit(self.search.embed_text, text))

    def image_vector(self, data: bytes) -> np.ndarray:
        """An uploaded image's vector; SearchError (503) when every upload slot stays busy.

        The slot is held until the embedding call ends, even after the request gave up on it,
        so no more than `upload_slots` uploads are ever decoded at once.
        """
        if not self._upload_slots.acquire(timeout=UPLOAD_WAIT_S):
            raise SearchError("the server is busy with other image searches; try again in a moment",
                              503, "busy", "is busy")
        try:
            future = self.executor.submit(self.search.embed_image, data)
        except BaseException:
            self._upload_slots.release()
            raise
        future.add_done_callback(lambda _: self._upload_slots.release())
        return self._within_limit(future)

    def _within_limit(self, future: Future[T]) -> T:
        """The future's result within the time limit; failures as SearchError or BadUpload."""
        limit = self.settings.web.embed_timeout_s
        try:
            return future.result(timeout=limit)
        except FutureTimeout:
            future.cancel()
            raise SearchError(f"the embedder did not answer within {limit:g} s; try again",
                              504, "embedder_timeout", "timed out") from None
        except SearchUnavailable as exc:
            raise SearchError(str(exc), 503, "search_unavailable", "is off") from None
        except ImageProblem as exc:
            raise BadUpload(str(exc), UPLOAD_STATUS.get(exc.kind, 400)) from None
        except EmbeddingError as exc:
            raise SearchError(self._redact(f"the embedder failed: {exc}"), 503,
                              "embedder_failed") from None
        except Exception as exc:  # a backend's failure of any kind is one state for the page
            raise SearchError(self._redact(f"the embedder failed: {exc}"), 503,
                              "embedder_failed") from None

    def _redact(self, message: str) -> str:
        return scrub(message, self.settings.replicate_api_token)

    # --- small helpers the views share -----------------------------------------------

    def image_origin(self) -> str | None:
        """The scheme://host of IMAGE_BASE_URL when images come from there (for the CSP)."""
        if self.storage.kind == "local" or not self.settings.image_base_url:
            return None
        parts = urlsplit(self.settings.image_base_url)
        return f"{parts.scheme}://{parts.netloc}"


def get_browse() -> Browse:
    """The current app's browse state."""
    return current_app.extensions[EXTENSION]
