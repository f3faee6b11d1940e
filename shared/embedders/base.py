"""The embedder protocol every backend implements, and the errors they share."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Callable

import numpy as np


class EmbeddingError(Exception):
    """An embedding could not be made; the message says why, for a user to read."""

    attempts: int = 1  # how many tries it took to give up (the retrier sets it)


class DimensionMismatch(EmbeddingError):
    """A backend's vectors are not as long as the database's."""

    def __init__(self, got: int, expected: int, model_id: str = "") -> None:
        who = f"{model_id} " if model_id else ""
        super().__init__(
            f"embedding model {who}makes {got}-dimensional vectors, "
            f"but EXPECTED_VECTOR_DIM is {expected}"
        )
        self.got = got
        self.expected = expected


class EmbedderUnavailable(EmbeddingError):
    """The backend refuses every request (credentials, unknown model): stop, don't retry."""


# Errors after which every other item would fail the same way: a backfill stops on them.
FATAL = (DimensionMismatch, EmbedderUnavailable)


class PartialFailure(EmbeddingError):
    """Some items of a batch failed; the others' vectors are still good.

    `vectors` and `errors` are keyed by the item's index in the batch, so a caller can keep
    the good ones and report each bad one on its own.
    """

    def __init__(self, vectors: dict[int, np.ndarray], errors: dict[int, EmbeddingError]) -> None:
        first = next(iter(errors.values()), None)
        super().__init__(f"{len(errors)} of {len(vectors) + len(errors)} items failed: {first}")
        self.vectors = vectors
        self.errors = errors


@dataclass(frozen=True)
class ImageSource:
    """One stored image as an embedder may need it: a public URL or its bytes."""

    key: str
    url: str | None
    read: Callable[[], bytes]


class Embedder(ABC):
    """Turns texts and images into unit-length float32 vectors of `dimensions` floats.

    A backend returns unit vectors of its `dimensions`, checked once, where it makes them;
    callers never normalise or measure them again. Capabilities are attributes.
    """

    model_id: str
    dimensions: int
    batch_size: int = 1  # images per `embed_images` call in a backfill
    concurrency: int = 1  # such calls a backfill keeps in flight at once
    supports_texts: bool = True
    supports_images: bool = True

    @abstractmethod
    def embed_texts(self, texts: list[str]) -> np.ndarray:
        """Return an (n, dimensions) float32 array, one unit vector per text."""

    @abstractmethod
    def embed_images(self, images: list[ImageSource]) -> np.ndarray:
        """Return an (n, dimensions) float32 array, one unit vector per image.

        Items that fail raise PartialFailure carrying the others' vectors.
        """


def unit_vectors(vectors: np.ndarray | list, dimensions: int, model_id: str = "") -> np.ndarray:
    """Check a remote model's raw vectors (width, finite, non-zero) and scale each to unit length."""
    array = np.asarray(vectors, dtype=np.float32)
    if array.ndim == 1:
        array = array[None, :]
    if array.ndim != 2:
        raise EmbeddingError(f"expected a batch of vectors, got an array of shape {array.shape}")
    if array.shape[1] != dimensions:
        raise DimensionMismatch(array.shape[1], dimensions, model_id)
    if not np.all(np.isfinite(array)):
        raise EmbeddingError("embedding contains NaN or infinite values")
    norms = np.linalg.norm(array, axis=1, keepdims=True)
    if np.any(norms == 0):
        raise EmbeddingError("embedding is all zeros")
    return array / norms


def width_problem(embedder: Embedder, expected: int, table: int | None) -> str | None:
    """Why this embedder's vectors cannot go in (or be compared with) the table, or None.

    The one compatibility check: the embedder's width against EXPECTED_VECTOR_DIM, and the
    table's declared width against both.
    """
    if embedder.dimensions != expected:
        return (
            f"the embedder {embedder.model_id} makes {embedder.dimensions}-dimensional vectors "
            f"but EXPECTED_VECTOR_DIM is {expected}: set EXPECTED_VECTOR_DIM={embedder.dimensions} "
            "for a new library, or use a model of that width"
        )
    if table is not None and table != expected:
        return (
            f"the database stores {table}-dimensional vectors but EXPECTED_VECTOR_DIM is "
            f"{expected}: use a model with {table} dimensions, or set EXPECTED_VECTOR_DIM={table}"
        )
    return None
