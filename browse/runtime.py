"""What the browse pages need at run time: the pool, storage, embedder, and the calls that can fail."""

from __future__ import annotations

import io
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Iterator
from urllib.parse import urlsplit

import numpy as np
from flask import current_app
from PIL import Image, UnidentifiedImageError
from psycopg_pool import ConnectionPool

from shared.embedders.base import DimensionMismatch, Embedder, ImageSource, normalise
from shared.imagefile import prepare_decoders
from shared.settings import Settings
from shared.storage import Storage
from shared.store import ImageStore

EXTENSION = "image_browser"
# Formats a browser or an embedder can reasonably take from an upload (checked by content).
UPLOAD_FORMATS = frozenset({"JPEG", "MPO", "PNG", "WEBP", "GIF", "BMP", "TIFF", "HEIF", "AVIF"})
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


class SearchError(Exception):
    """A search could not be answered: its HTTP status, JSON code and what happened."""

    status = 503
    code = "search_failed"
    outcome = "failed"


class SearchUnavailable(SearchError):
    """Search cannot run at all (no embedder, wrong dimensions); the message says why and how."""

    code = "search_unavailable"
    outcome = "is off"


class EmbedTimeout(SearchError):
    """The embedder did not answer in time."""

    status = 504
    code = "embedder_timeout"
    outcome = "timed out"


class EmbedFailed(SearchError):
    """The embedder answered with an error."""

    code = "embedder_failed"


class BadUpload(Exception):
    """An uploaded file is empty, not an image, or too large in pixels."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Browse:
    """The state one browse app shares between requests (kept in `app.extensions`)."""

    settings: Settings
    pool: ConnectionPool
    storage: Storage
    embedder: Embedder | None
    embedder_reason: str
    embed_timeout_s: float = 20.0
    embed_workers: int = 4
    schema_problem: str | None = None
    table_dimensions: int | None = None
    seen_mismatch: str | None = None
    summary_ttl_s: float = 10.0
    _summary: tuple[float, dict[str, int]] | None = field(default=None, init=False, repr=False)
    executor: ThreadPoolExecutor = field(init=False)

    def __post_init__(self) -> None:
        # Embedder calls run here so that a hung backend costs a worker, not a request thread forever.
        self.executor = ThreadPoolExecutor(max_workers=self.embed_workers, thread_name_prefix="embed")

    @contextmanager
    def store(self) -> Iterator[ImageStore]:
        """A store on a pooled connection for the length of a `with` block."""
        with self.pool.connection(timeout=10) as conn:
            yield ImageStore(conn)

    def summary_counts(self) -> dict[str, int]:
        """Image counts for page headers, at most `summary_ttl_s` old (the status page asks fresh)."""
        now = time.monotonic()
        if self._summary is None or now - self._summary[0] > self.summary_ttl_s:
            with self.store() as store:
                self._summary = (now, store.counts())
        return self._summary[1]

    def close(self) -> None:
        """Stop the embedder workers and close the pool."""
        self.executor.shutdown(wait=False, cancel_futures=True)
        self.pool.close()

    # --- what the pages warn about ---------------------------------------------------

    def search_off_reason(self) -> str | None:
        """Why text search cannot run now, or None when it can."""
        if self.schema_problem:
            return self.schema_problem
        if self.embedder is None:
            return self.embedder_reason
        if not self.embedder.supports_texts:
            return f"the embedder {self.embedder.model_id} cannot embed text"
        if self.embedder.dimensions != self.settings.expected_vector_dim:
            return self.dimension_warning()
        return None

    def dimension_warning(self) -> str | None:
        """A warning when the embedder's vectors and the database's differ in length."""
        if self.seen_mismatch:
            return self.seen_mismatch
        expected = self.settings.expected_vector_dim
        if self.embedder is not None and self.embedder.dimensions != expected:
            return (
                f"the embedder {self.embedder.model_id} makes {self.embedder.dimensions}-dimensional "
                f"vectors but EXPECTED_VECTOR_DIM is {expected}: search is off until they agree"
            )
        return None

    def warnings(self) -> list[str]:
        """Everything a page should show in its warning banner."""
        found = [w for w in (self.schema_problem, self.dimension_warning()) if w]
        return list(dict.fromkeys(found))

    # --- embedder calls, bounded in time ------------------------------------------------

    def embed_text(self, text: str) -> np.ndarray:
        """One query's unit vector; raises SearchUnavailable, EmbedTimeout or EmbedFailed."""
        reason = self.search_off_reason()
        if reason:
            raise SearchUnavailable(reason)
        return self._call(lambda: self.embedder.embed_texts([text]))

    def embed_image(self, data: bytes) -> np.ndarray:
        """An uploaded image's unit vector; same errors as `embed_text`."""
        reason = self.search_off_reason()
        if reason:
            raise SearchUnavailable(reason)
        if not self.embedder.supports_images:
            raise SearchUnavailable(
                f"the embedder {self.embedder.model_id} embeds only text here, so search by image is off"
            )
        source = ImageSource(key="upload", url=None, read=lambda: data)
        return self._call(lambda: self.embedder.embed_images([source]))

    def _call(self, work) -> np.ndarray:
        future = self.executor.submit(work)
        try:
            vectors = future.result(timeout=self.embed_timeout_s)
        except FutureTimeout:
            future.cancel()
            raise EmbedTimeout(
                f"the embedder did not answer within {self.embed_timeout_s:g} s; try again"
            ) from None
        except DimensionMismatch as exc:
            self.seen_mismatch = str(exc)
            raise SearchUnavailable(str(exc)) from None
        except Exception as exc:  # a backend's failure of any kind is one state for the page
            raise EmbedFailed(self._redact(f"the embedder failed: {exc}")) from None
        try:
            return normalise(vectors, self.settings.expected_vector_dim, self.embedder.model_id)[0]
        except DimensionMismatch as exc:
            self.seen_mismatch = str(exc)
            raise SearchUnavailable(str(exc)) from None

    def _redact(self, message: str) -> str:
        token = self.settings.replicate_api_token
        return message.replace(token, "[redacted]") if token else message

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


def encode_cursor(row: dict) -> str:
    """An opaque-looking, exact keyset cursor: microseconds since the epoch and the id."""
    micros = (row["created_at"] - _EPOCH) // timedelta(microseconds=1)
    return f"{micros}.{row['id']}"


def decode_cursor(value: str) -> tuple[datetime, int]:
    """The (created_at, id) a cursor names; ValueError when it is not one of ours."""
    micros, _, image_id = value.partition(".")
    if not (micros.lstrip("-").isdigit() and image_id.isdigit()) or len(value) > 40:
        raise ValueError(f"not a page cursor: {value[:40]!r}")
    return _EPOCH + timedelta(microseconds=int(micros)), int(image_id)


def check_upload(data: bytes, max_pixels: int) -> str:
    """The format of an uploaded image, checked by decoding it; raises BadUpload."""
    if not data:
        raise BadUpload("the upload is empty: choose an image file", 400)
    prepare_decoders(max_pixels)
    try:
        with Image.open(io.BytesIO(data)) as image:
            image_format = image.format or ""
            if image.width * image.height > max_pixels:
                raise BadUpload(f"the image is too large ({image.width}x{image.height} pixels)", 413)
            if image_format not in UPLOAD_FORMATS:
                raise BadUpload(f"{image_format or 'this'} images are not accepted", 415)
            image.load()
    except BadUpload:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise BadUpload("the image has too many pixels", 413) from None
    except UnidentifiedImageError:
        raise BadUpload("the upload is not an image (its content was checked, not its name)", 415) from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise BadUpload(f"the image cannot be decoded: {exc}", 400) from None
    return image_format
