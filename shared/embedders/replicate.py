"""CLIP embeddings from a model hosted on Replicate, through the `replicate` client."""

from __future__ import annotations

import io
import mimetypes
import re
import threading
import time
from email.utils import parsedate_to_datetime
from typing import Any, Callable

import httpx
import numpy as np
import replicate
from replicate.exceptions import ReplicateError

from shared.settings import DEFAULT_REPLICATE_MODEL

from .base import (
    FATAL,
    Embedder,
    EmbedderUnavailable,
    EmbeddingError,
    ImageSource,
    PartialFailure,
    unit_vectors,
)
from .replicate_models import ModelRef, Request, Schema, schema_for
from .retry import Backoff, RateLimiter, Retrier, Retryable

TERMINAL = ("succeeded", "failed", "canceled")
THROTTLE_HINT = re.compile(r"(?:in|after)\s*~?\s*(\d+(?:\.\d+)?)\s*(?:s\b|sec|second)", re.IGNORECASE)


class ReplicateEmbedder(Embedder):
    """Embeds texts and images with a CLIP model on Replicate, paced and retried.

    Images go as their public URL when they have one, otherwise their bytes are uploaded
    first. Every vector is checked against `dimensions` and scaled to unit length, once, here.
    """

    concurrency = 8  # predictions in flight: a hosted model answers many at once

    def __init__(
        self,
        api_token: str | None,
        *,
        model: str = DEFAULT_REPLICATE_MODEL,
        dimensions: int = 768,
        base_url: str | None = None,
        max_per_minute: float = 600,
        backoff: Backoff = Backoff(),
        wait_seconds: int = 30,
        timeout: float | None = None,
        poll_interval: float | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not api_token:
            raise EmbedderUnavailable("REPLICATE_API_TOKEN is not set: create a token at replicate.com and set it")
        self.model_id = model
        self.ref = ModelRef.parse(model)
        self.schema: Schema = schema_for(self.ref)
        self.batch_size = self.schema.batch_size
        self.dimensions = dimensions
        self.wait_seconds = max(1, min(60, int(wait_seconds)))
        self.retrier = Retrier(backoff, RateLimiter(max_per_minute), sleep=sleep)
        self._seen = threading.local()  # the last 429's Retry-After, per thread
        # The client gives a create request `wait_seconds` + 0.5 s itself; `timeout` covers
        # the other calls (polling, uploads).
        read = timeout if timeout is not None else self.wait_seconds + 15.0
        self.client = replicate.Client(
            api_token=api_token,
            base_url=base_url,
            timeout=httpx.Timeout(read, connect=min(10.0, read)),
            event_hooks={"response": [self._remember_retry_after]},
        )
        if poll_interval is not None:
            self.client.poll_interval = poll_interval

    def __repr__(self) -> str:
        return f"ReplicateEmbedder({self.model_id!r}, dimensions={self.dimensions})"

    # --- the protocol -------------------------------------------------------------

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        """One unit vector per text; any failure fails the call (search needs them all)."""
        vectors, errors = self._embed([(text, None) for text in texts], "text")
        if errors:
            raise next(iter(errors.values()))
        return self._stack(vectors, len(texts))

    def embed_images(self, images: list[ImageSource]) -> np.ndarray:
        """One unit vector per image; raises `PartialFailure` naming each image that failed."""
        values: list[tuple[str | None, EmbeddingError | None]] = []
        for image in images:
            try:
                values.append((image.url or self._upload(image), None))
            except FATAL:
                raise
            except EmbeddingError as exc:
                values.append((None, exc))
        vectors, errors = self._embed(values, "image")
        if errors:
            raise PartialFailure(vectors, errors)
        return self._stack(vectors, len(images))

    # --- batching -----------------------------------------------------------------

    def _embed(self, values: list[tuple[str | None, EmbeddingError | None]], kind: str):
        """Vectors and errors by item index, for items given as (value, earlier error)."""
        errors: dict[int, EmbeddingError] = {}
        keys: dict[int, str] = {}
        for index, (value, error) in enumerate(values):
            try:
                if error is not None:
                    raise error
                keys[index] = self.schema.key(value, kind)
            except EmbeddingError as exc:
                errors[index] = exc
        by_key: dict[str, np.ndarray | EmbeddingError] = {}
        for request in self.schema.requests(list(keys.values()), kind):
            by_key.update(self._run(request))
        vectors: dict[int, np.ndarray] = {}
        for index, key in keys.items():
            result = by_key[key]
            if isinstance(result, EmbeddingError):
                errors[index] = result
            else:
                vectors[index] = result
        return vectors, errors

    def _run(self, request: Request) -> dict[str, np.ndarray | EmbeddingError]:
        """One prediction; each of its items gets a unit vector or an error."""
        try:
            output = self.retrier.call(lambda: self._predict(request.input))
            found = self.schema.parse(output, request)
        except FATAL:
            raise
        except EmbeddingError as exc:
            return {key: exc for key in request.values}
        results: dict[str, np.ndarray | EmbeddingError] = {}
        for key in request.values:
            if key in found:
                results[key] = unit_vectors(found[key], self.dimensions, self.model_id)[0]
            else:
                results[key] = EmbeddingError("the model returned no embedding for this item")
        return results

    def _stack(self, vectors: dict[int, np.ndarray], count: int) -> np.ndarray:
        if count == 0:
            return np.zeros((0, self.dimensions), dtype=np.float32)
        return np.stack([vectors[i] for i in range(count)]).astype(np.float32, copy=False)

    # --- the client call ------------------------------------------------------------

    def _predict(self, input: dict[str, Any]) -> Any:
        """Create one prediction, wait for it, and return its output."""
        try:
            if self.ref.version:
                prediction = self.client.predictions.create(
                    version=self.ref.version, input=input, wait=self.wait_seconds
                )
            else:
                prediction = self.client.models.predictions.create(
                    model=(self.ref.owner, self.ref.name), input=input, wait=self.wait_seconds
                )
            if prediction.status not in TERMINAL:
                prediction.wait()
        except Exception as exc:
            raise self._translate(exc) from exc
        if prediction.status == "failed":
            raise EmbeddingError(f"the prediction failed on Replicate: {prediction.error or 'no reason given'}")
        if prediction.status == "canceled":
            raise EmbeddingError("the prediction was canceled on Replicate")
        return prediction.output

    def _upload(self, image: ImageSource) -> str:
        """Upload an image's bytes to Replicate and return the URL a model can read."""
        try:
            data = image.read()
        except Exception as exc:  # storage errors of any backend
            raise EmbeddingError(f"cannot read the image: {exc}") from exc
        name = image.key.rsplit("/", 1)[-1] or "image"
        content_type = mimetypes.guess_type(name)[0] or "application/octet-stream"

        def send() -> str:
            try:
                uploaded = self.client.files.create(io.BytesIO(data), filename=name, content_type=content_type)
                return uploaded.urls["get"]
            except Exception as exc:
                raise self._translate(exc) from exc

        return self.retrier.call(send, paced=False)

    def _remember_retry_after(self, response: httpx.Response) -> None:
        # ReplicateError keeps no headers, so the hint is kept here for _translate.
        self._seen.retry_after = response.headers.get("Retry-After") if response.status_code == 429 else None

    def _translate(self, exc: Exception) -> EmbeddingError:
        """Our error for whatever the client raised: retryable, fatal, or about this item."""
        if isinstance(exc, EmbeddingError):
            return exc
        if isinstance(exc, ReplicateError):
            return self._http_error(exc)
        if isinstance(exc, httpx.TimeoutException):
            return Retryable(f"Replicate did not answer in time ({type(exc).__name__})")
        if isinstance(exc, httpx.TransportError):
            return Retryable(f"could not reach Replicate: {type(exc).__name__}")
        if isinstance(exc, (ValueError, KeyError, TypeError)):  # bad JSON, or JSON of the wrong shape
            return Retryable(f"Replicate sent a reply that could not be read: {type(exc).__name__}")
        return EmbeddingError(f"unexpected error talking to Replicate: {type(exc).__name__}: {exc}")

    def _http_error(self, exc: ReplicateError) -> EmbeddingError:
        status = exc.status or 0
        detail = exc.detail or exc.title or "no detail"
        if status == 429:
            hint = getattr(self._seen, "retry_after", None)
            return Retryable(
                f"throttled by Replicate (HTTP 429): {detail}",
                retry_after=_retry_after(hint, detail), throttled=True,
            )
        if status in (401, 403):
            return EmbedderUnavailable(f"Replicate refused the API token (HTTP {status}): check REPLICATE_API_TOKEN")
        if status == 404:
            return EmbedderUnavailable(f"Replicate does not know the model {self.model_id} (HTTP 404)")
        if status >= 500 or status in (408, 409):
            return Retryable(f"Replicate had a problem (HTTP {status}): {detail}")
        return EmbeddingError(f"Replicate refused the request (HTTP {status}): {detail}")


def _retry_after(header: str | None, detail: str) -> float | None:
    """Seconds to wait from a Retry-After header, else from the throttle message."""
    if header:
        header = header.strip()
        try:
            return max(0.0, float(header))
        except ValueError:
            pass
        try:
            return max(0.0, parsedate_to_datetime(header).timestamp() - time.time())
        except (TypeError, ValueError):
            pass
    match = THROTTLE_HINT.search(detail or "")
    return float(match.group(1)) if match else None
