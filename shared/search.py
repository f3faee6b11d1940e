"""Search a library by meaning: by text, by an image, or for images like one already in it.

From a Python shell, without the web app:

    >>> from shared.search import open_search
    >>> search = open_search()  # settings from the environment; the embedded Postgres by default
    >>> [(round(h.similarity, 3), h.row.filename) for h in search.by_text("a red bicycle", k=5)]

The web app adds only HTTP around this: time limits, status codes, templates.
"""

from __future__ import annotations

import os
import threading
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Callable

import numpy as np
import psycopg

from .embedders.base import DimensionMismatch, Embedder, EmbeddingError, ImageSource, width_problem
from .imagefile import check_upload
from .settings import Settings
from .store import Catalogue, Filters, ImageRow
from .store.catalogue import FILTERED_CANDIDATES

Connections = Callable[[], AbstractContextManager[psycopg.Connection]]
# The planner's estimate of a filter's rows picks the exact scan (at most
# BROWSE_EXACT_SEARCH_ROWS) or the index; the exact scan goes on to this many times that
# before it gives up for the index, so that an estimate a little low (combined filters: up to
# 27% on the benchmark's library) does not cost both ways.
EXACT_SCAN_SLACK = 1.5
# A filtered walk of the index is asked for the rows its first round of `ef_search` candidates
# is expected to hold (the filter's estimated share of them): that round's graph work is done
# before its first row comes out, so reading more of its rows costs only their heap reads. At
# least FILTERED_CANDIDATES (a narrow filter's walk goes on for more rounds until that many
# pass) and at most this many: at a 20% filter 60 raised recall@10 from 0.950 to 0.963 (300
# queries, 100,000 photos); at 50%, 100 or 150 cost 3-7 ms for 0.003-0.012 (docs/benchmarks.md).
FILTERED_CANDIDATES_MOST = 60


class SearchUnavailable(Exception):
    """Search cannot run at all (no embedder, no text support, vector widths differ)."""


class ImageNotFound(LookupError):
    """No image has this id."""


@dataclass(frozen=True)
class Hit:
    """One image found, with its cosine similarity to what was searched for."""

    row: ImageRow
    similarity: float


class Search:
    """Nearest images by meaning over one library's stored embeddings.

    `connections()` lends a database connection for the length of a `with` block (a pool's
    `connection`, or the web request's own). `embedder` makes query vectors; without one,
    only `similar_to` and `by_vector` work, and `off_reason` says why. A long-running app may
    turn search on later (`turn_on`, once a model has loaded) from another thread.
    """

    def __init__(
        self,
        connections: Connections,
        embedder: Embedder | None,
        *,
        expected_dimensions: int,
        table_dimensions: int | None = None,
        ef_search: int = 100,
        exact_search_rows: int = 6_000,
        max_scan_tuples: int = 20_000,
        max_image_pixels: int = 178_956_970,
        max_upload_pixels: int = 50_000_000,
        no_embedder_reason: str = "no embedder is configured",
    ) -> None:
        self.connections = connections
        self.embedder = embedder
        self.expected_dimensions = expected_dimensions
        self.table_dimensions = table_dimensions
        self.ef_search = ef_search
        self.exact_search_rows = exact_search_rows
        self.max_scan_tuples = max_scan_tuples
        self.max_image_pixels = max_image_pixels
        self.max_upload_pixels = max_upload_pixels
        self.no_embedder_reason = no_embedder_reason
        self.no_embedder_summary: str | None = None  # a few words for a banner; None: the reason
        self._mismatch: str | None = None  # a width the embedder showed only when first used
        self._lock = threading.Lock()

    @classmethod
    def configured(
        cls, connections: Connections, embedder: Embedder | None, settings: Settings, *,
        table_dimensions: int | None, no_embedder_reason: str = "no embedder is configured",
    ) -> Search:
        """A Search with the widths, ef_search and upload limit the settings give."""
        return cls(
            connections,
            embedder,
            expected_dimensions=settings.expected_vector_dim,
            table_dimensions=table_dimensions,
            ef_search=settings.web.hnsw_ef_search,
            exact_search_rows=settings.web.exact_search_rows,
            max_scan_tuples=settings.web.hnsw_max_scan_tuples,
            max_image_pixels=settings.max_image_pixels,
            max_upload_pixels=settings.web.max_upload_pixels,
            no_embedder_reason=no_embedder_reason or "no embedder is configured",
        )

    # --- turning search on and off while running ---------------------------------------

    def turn_on(self, embedder: Embedder) -> None:
        """Search with `embedder` from now on (it is ready: its model is loaded)."""
        with self._lock:
            self.embedder = embedder
            self._mismatch = None

    def set_off(self, reason: str, summary: str | None = None) -> None:
        """Search is off for `reason` (the details); `summary` is a few words for a banner."""
        with self._lock:
            self.embedder = None
            self.no_embedder_reason, self.no_embedder_summary = reason, summary

    @property
    def off_reason(self) -> str | None:
        """Why searching by text cannot run now, or None when it can."""
        return self._snapshot()[1]

    def _snapshot(self) -> tuple[Embedder | None, str | None]:
        """The embedder and why search is off, read together (another thread may change them)."""
        with self._lock:
            embedder, reason, mismatch = self.embedder, self.no_embedder_reason, self._mismatch
        if embedder is None:
            return None, reason
        if not embedder.supports_texts:
            return embedder, f"the embedder {embedder.model_id} cannot embed text"
        return embedder, mismatch or width_problem(
            embedder, self.expected_dimensions, self.table_dimensions)

    @property
    def off_summary(self) -> str | None:
        """A few words on why search is off, for a one-line banner; None when it is on."""
        reason = self.off_reason
        if reason is None:
            return None
        with self._lock:
            summary = self.no_embedder_summary if self.embedder is None else None
        return summary or reason

    @property
    def width_warning(self) -> str | None:
        """Why the embedder's vectors and the library's cannot be compared, or None."""
        with self._lock:
            embedder, mismatch = self.embedder, self._mismatch
        if embedder is None:
            return None
        return mismatch or width_problem(embedder, self.expected_dimensions, self.table_dimensions)

    # --- query vectors (slow: a model call) --------------------------------------------

    def embed_text(self, text: str) -> np.ndarray:
        """A text's unit vector; SearchUnavailable when search is off, EmbeddingError on failure."""
        embedder = self._ready()
        return self._embed(lambda: embedder.embed_texts([text]))

    def embed_image(self, data: bytes) -> np.ndarray:
        """An image file's unit vector, after checking it is one (ImageProblem says why not).

        The check decodes it (at reduced size where the format allows) within
        `max_upload_pixels`; the embedder is then given the file as it came.
        """
        embedder = self._ready()
        if not embedder.supports_images:
            raise SearchUnavailable(
                f"the embedder {embedder.model_id} embeds only text here, so search by image is off")
        check_upload(data, self.max_image_pixels, self.max_upload_pixels)
        source = ImageSource(key="upload", url=None, read=lambda: data)
        return self._embed(lambda: embedder.embed_images([source]))

    # --- searches -------------------------------------------------------------------

    def by_text(self, text: str, k: int = 10, filters: Filters | None = None) -> list[Hit]:
        """The k images nearest a description (among those the filters let through)."""
        return self.by_vector(self.embed_text(text), k, filters=filters)

    def by_image(self, data: bytes, k: int = 10, filters: Filters | None = None) -> list[Hit]:
        """The k images nearest an image file's content (among those the filters let through)."""
        return self.by_vector(self.embed_image(data), k, filters=filters)

    def by_vector(
        self, vector: np.ndarray, k: int = 10, exclude_id: int | None = None,
        filters: Filters | None = None,
    ) -> list[Hit]:
        """The k images whose stored embeddings are nearest `vector` (a unit vector).

        Whenever at least k embedded images pass the filters, k come back, at any selectivity.
        """
        with self.connections() as conn:
            found = self._nearest(Catalogue(conn), vector, k, exclude_id, filters)
        return [Hit(row, 1.0 - distance) for row, distance in found]

    def similar_to(self, image_id: int, k: int = 10, filters: Filters | None = None) -> list[Hit] | None:
        """The k images nearest one in the library (no model call); None while it has no embedding."""
        with self.connections() as conn:
            catalogue = Catalogue(conn)
            if catalogue.get_image(image_id) is None:
                raise ImageNotFound(f"there is no image with id {image_id}")
            vector = catalogue.embedding_of(image_id)
        if vector is None:
            return None
        return self.by_vector(vector, k, exclude_id=image_id, filters=filters)

    def method(self, filters: Filters | None) -> str:
        """How a search with these filters runs: "exact" (every matching row's distance) or
        "index" (HNSW): see `_route`."""
        with self.connections() as conn:
            catalogue = Catalogue(conn)
            if self._route(catalogue, filters)[0] == "few":  # decided by the scan: counted to tell
                cap = self._exact_cap
                return "exact" if catalogue.count_matching(filters, cap + 1) <= cap else "index"
            return "index"

    @property
    def _exact_cap(self) -> int:
        """How many rows an exact scan chosen by the estimate reads before it gives up."""
        return int(self.exact_search_rows * EXACT_SCAN_SLACK)

    def _route(self, catalogue: Catalogue, filters: Filters | None) -> tuple[str, int | None]:
        """The route and the planner's estimate it came from (None unfiltered). "few" when the
        planner puts the rows the filters let through at no more than `exact_search_rows`: one
        exact scan reads them, and gives up (to the index) past `EXACT_SCAN_SLACK` times that
        many. Else "index". Nothing is counted first: a count reads the rows it counts, about
        what their exact scan costs now that each row holds a half-precision copy of its vector
        (docs/benchmarks.md, issue 10)."""
        if not filters:
            return "index", None
        estimate = catalogue.estimate_matching(filters)
        return ("few" if estimate <= self.exact_search_rows else "index"), estimate

    def candidates(self, filters: Filters | None) -> int:
        """How many rows a walk of the index with these filters is asked for (the best k kept):
        see FILTERED_CANDIDATES_MOST. Unfiltered, none beyond k."""
        with self.connections() as conn:
            catalogue = Catalogue(conn)
            return self._candidates(catalogue, self._route(catalogue, filters)[1])

    def _candidates(self, catalogue: Catalogue, estimate: int | None) -> int:
        """From the route's estimate of the filter's rows (None: unfiltered)."""
        if estimate is None:
            return 0
        share = estimate / max(1, catalogue.estimate_matching(None))
        return min(FILTERED_CANDIDATES_MOST,
                   max(FILTERED_CANDIDATES, round(share * self.ef_search)))

    def _nearest(self, catalogue: Catalogue, vector: np.ndarray, k: int, exclude_id: int | None,
                 filters: Filters | None) -> list[tuple[ImageRow, float]]:
        route, estimate = self._route(catalogue, filters)
        if route == "few":
            found = catalogue.nearest_among_few(vector, k, cap=self._exact_cap,
                                                exclude_id=exclude_id, filters=filters)
            if found is not None:
                return found
            # more than the planner thought: the index
        options = dict(ef_search=self.ef_search, exclude_id=exclude_id, filters=filters,
                       max_scan_tuples=self.max_scan_tuples)
        found = catalogue.nearest(vector, k, **options,
                                  candidates=self._candidates(catalogue, estimate))
        if len(found) < k:
            # The index scan gave up (max_scan_tuples) before k rows passed the filters: the
            # exact scan finds every one there is.
            found = catalogue.nearest(vector, k, exact=True, **options)
        return found

    def _ready(self) -> Embedder:
        embedder, reason = self._snapshot()
        if reason or embedder is None:
            raise SearchUnavailable(reason or "no embedder is configured")
        return embedder

    def _embed(self, work: Callable[[], np.ndarray]) -> np.ndarray:
        try:
            return work()[0]
        except DimensionMismatch as exc:
            with self._lock:
                self._mismatch = str(exc)  # search stays off until the settings agree
            raise SearchUnavailable(str(exc)) from None


def open_search(settings: Settings | None = None, embedder: Embedder | None = None) -> Search:
    """A Search over the configured library; SchemaError when its table is missing or old.

    Without a usable embedder, `similar_to` still works and `off_reason` says why the rest
    does not.
    """
    from .database import database_url
    from .embedders.factory import NoEmbedder, make_embedder
    from .store import Schema, SchemaError, connect, open_pool

    settings = settings or Settings.from_env(os.environ)
    reason = ""
    if embedder is None:
        try:
            embedder = make_embedder(settings)
        except NoEmbedder as exc:
            reason = str(exc)
    url = database_url(settings)
    # One plain connection first: its failure is one line with the password masked, where a
    # pool would retry in the background and log libpq's raw messages.
    with connect(url, settings.database_setting) as conn:
        state = Schema(conn).check()
    if state.problem:
        raise SchemaError(state.problem)
    pool = open_pool(url, size=2, setting=settings.database_setting)
    return Search.configured(pool.connection, embedder, settings,
                             table_dimensions=state.dimensions, no_embedder_reason=reason)


__all__ = ["EmbeddingError", "Filters", "Hit", "ImageNotFound", "Search", "SearchUnavailable", "open_search"]
