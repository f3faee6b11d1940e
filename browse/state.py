"""What the browse app keeps between requests: the pool, storage, search, and the calls that can fail."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Callable, TypeVar
from urllib.parse import urlsplit

import psycopg
from flask import current_app, g
from psycopg_pool import ConnectionPool

from shared.embedders.base import EmbeddingError
from shared.imagefile import ImageProblem
from shared.progress import Board, TaskState
from shared.redact import scrub
from shared.search import Search, SearchUnavailable
from shared.settings import Settings
from shared.storage import Storage
from shared.store import Catalogue, Counts

EXTENSION = "image_browser"
T = TypeVar("T")
# What each kind of bad upload answers (see shared.imagefile.ImageProblem).
UPLOAD_STATUS = {"empty": 400, "not_image": 415, "unreadable": 400, "too_large": 413, "format": 415}


class SearchError(Exception):
    """A search could not be answered: its HTTP status, JSON code and what happened."""

    def __init__(self, message: str, status: int = 503, code: str = "search_failed",
                 outcome: str = "failed") -> None:
        super().__init__(message)
        self.status, self.code, self.outcome = status, code, outcome


class BadUpload(Exception):
    """An uploaded file is empty, not an image, or too large."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Browse:
    """The state one browse app shares between requests (kept in `app.extensions`)."""

    settings: Settings
    pool: ConnectionPool
    storage: Storage
    search: Search
    board: Board | None = None  # the background work of this process (loader up), if any
    _summary: tuple[float, Counts] | None = field(default=None, init=False, repr=False)
    executor: ThreadPoolExecutor = field(init=False)

    def __post_init__(self) -> None:
        # Embedder calls run here so that a hung backend costs a worker, not a request thread.
        self.executor = ThreadPoolExecutor(max_workers=self.settings.web.embed_workers,
                                           thread_name_prefix="embed")

    # --- the database, one connection per request -------------------------------------

    def connection(self) -> psycopg.Connection:
        """This request's connection: taken from the pool on first use, given back at teardown."""
        if "db" not in g:
            g.db = self.pool.getconn()
        return g.db

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
        """Image counts for page headers, at most `summary_ttl_s` old (the status page asks fresh)."""
        now = time.monotonic()
        if self._summary is None or now - self._summary[0] > self.settings.web.summary_ttl_s:
            self._summary = (now, self.catalogue().counts())
        return self._summary[1]

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

    def query_vector(self, embed: Callable[[T], object], value: T):
        """Run one of `Search.embed_*` within the time limit; SearchError or BadUpload otherwise."""
        future = self.executor.submit(embed, value)
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
