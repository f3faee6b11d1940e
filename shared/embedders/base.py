"""The embedder protocol every backend implements, and the helpers they share."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol, runtime_checkable

import numpy as np


class EmbeddingError(Exception):
    """An embedding could not be made; the message says why, for a user to read."""


class DimensionMismatch(EmbeddingError):
    """A backend returned vectors of another length than the database holds."""

    def __init__(self, got: int, expected: int, model_id: str = "") -> None:
        who = f"{model_id} " if model_id else ""
        super().__init__(
            f"embedding model {who}returned {got}-dimensional vectors, "
            f"but EXPECTED_VECTOR_DIM is {expected}"
        )
        self.got = got
        self.expected = expected


class EmbedderUnavailable(EmbeddingError):
    """The backend refuses every request (credentials, unknown model): stop, don't retry."""


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


@runtime_checkable
class Embedder(Protocol):
    """Turns texts and images into L2-normalised float32 vectors of `dimensions` floats."""

    model_id: str
    dimensions: int
    supports_texts: bool
    supports_images: bool

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        """Return an (n, dimensions) float32 array, one unit vector per text."""
        ...

    def embed_images(self, images: list[ImageSource]) -> np.ndarray:
        """Return an (n, dimensions) float32 array, one unit vector per image."""
        ...


def normalise(vectors: np.ndarray | list, expected_dim: int, model_id: str = "") -> np.ndarray:
    """Check the width of a batch of vectors and scale each to unit length."""
    array = np.asarray(vectors, dtype=np.float32)
    if array.ndim == 1:
        array = array[None, :]
    if array.ndim != 2:
        raise EmbeddingError(f"expected a batch of vectors, got an array of shape {array.shape}")
    if array.shape[1] != expected_dim:
        raise DimensionMismatch(array.shape[1], expected_dim, model_id)
    if not np.all(np.isfinite(array)):
        raise EmbeddingError("embedding contains NaN or infinite values")
    norms = np.linalg.norm(array, axis=1, keepdims=True)
    if np.any(norms == 0):
        raise EmbeddingError("embedding is all zeros")
    return array / norms
