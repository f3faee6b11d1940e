"""MlxClipEmbedder: the embedder protocol on top of the MLX CLIP model."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from shared.clip.loading import default_dtype, load_model
from shared.clip.model import ClipModel
from shared.clip.preprocess import PreprocessConfig, preprocess_bytes
from shared.clip.tokenizer import ClipTokenizer
from shared.clip.weights import resolve_checkpoint
from shared.embedders.base import (
    DimensionMismatch,
    Embedder,
    EmbeddingError,
    ImageSource,
    PartialFailure,
)
from shared.settings import DEFAULT_CLIP_MODEL

log = logging.getLogger(__name__)


class ImageDecodeError(EmbeddingError):
    """One image could not be read or decoded; `key` names it."""

    def __init__(self, key: str, cause: BaseException) -> None:
        super().__init__(f"could not decode image {key}: {type(cause).__name__}: {cause}")
        self.key = key


class Turns:
    """One forward pass at a time, and a waiting text query goes before the next image batch.

    A web server and a backfill share one model (`loader up`): a search should wait for the
    images being embedded now, not for the whole queue behind them.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.busy = False
        self.texts_waiting = 0

    def may_start(self, text: bool) -> bool:
        """Whether a pass of this kind may start now."""
        return not self.busy and (text or not self.texts_waiting)

    @contextmanager
    def turn(self, text: bool) -> Iterator[None]:
        """Hold the model for one pass."""
        with self._cond:
            self.texts_waiting += text
            try:
                self._cond.wait_for(lambda: self.may_start(text))
            finally:
                self.texts_waiting -= text
            self.busy = True
        try:
            yield
        finally:
            with self._cond:
                self.busy = False
                self._cond.notify_all()


@dataclass(frozen=True)
class _Loaded:
    model: ClipModel
    tokenizer: ClipTokenizer
    preprocess: PreprocessConfig


class MlxClipEmbedder(Embedder):
    """CLIP in MLX behind the Embedder protocol; loads its weights once, on first use.

    The model returns unit vectors; their width is checked once, against the checkpoint's
    projection size, when the weights load.
    """

    # Batches a backfill should keep in flight: one decoding while the other runs the model.
    concurrency = 2

    def __init__(
        self,
        model: str = DEFAULT_CLIP_MODEL,
        model_path: Path | None = None,
        dtype: str | None = None,
        text_only: bool = False,
        expected_dim: int | None = None,
        batch_size: int = 8,
        decode_workers: int | None = None,
        download: bool = True,
        on_progress=None,
    ) -> None:
        self.model_name = model
        self.model_path = model_path
        self.dtype = dtype
        self.text_only = text_only
        self.expected_dim = expected_dim
        self.batch_size = batch_size
        self.download = download
        self.on_progress = on_progress  # told of a download's progress (DownloadProgress)
        # The model names the vectors; a local path is only where that model's files live.
        self.model_id = f"mlx:{model}"
        self.supports_images = not text_only
        self._decode_workers = decode_workers or min(4, os.cpu_count() or 1)
        self._lock = threading.Lock()
        # One forward pass at a time: a web server's threads share one model, and on a CPU
        # parallel passes only fight over the same cores. Text queries go first.
        self._turns = Turns()
        self._loaded: _Loaded | None = None
        self._pool: ThreadPoolExecutor | None = None

    @property
    def dimensions(self) -> int:
        """Width of the vectors: the checkpoint's projection_dim (loads the model if needed)."""
        return self.load().model.config.projection_dim

    def load(self) -> _Loaded:
        """Load weights, tokenizer and preprocessing once (thread-safe); call at startup to warm up."""
        if self._loaded is None:
            with self._lock:
                if self._loaded is None:
                    self._loaded = self._load()
        return self._loaded

    def _load(self) -> _Loaded:
        folder = resolve_checkpoint(self.model_name, self.model_path, download=self.download,
                                    on_progress=self.on_progress)
        model = load_model(folder, dtype=self.dtype or default_dtype(), text_only=self.text_only)
        config = model.config
        if self.expected_dim is not None and config.projection_dim != self.expected_dim:
            raise DimensionMismatch(config.projection_dim, self.expected_dim, self.model_id)
        log.info("loaded %s from %s (%s)", self.model_id, folder, model.dtype)
        return _Loaded(
            model=model,
            tokenizer=ClipTokenizer.from_folder(folder, config.text.max_position_embeddings),
            preprocess=PreprocessConfig.for_checkpoint(folder, config.vision.image_size),
        )

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        """Return an (n, dimensions) float32 array, one unit vector per text."""
        loaded = self.load()
        if not texts:
            return np.empty((0, self.dimensions), dtype=np.float32)
        chunks = []
        for start in range(0, len(texts), 64):
            token_ids = loaded.tokenizer.encode(texts[start : start + 64])
            with self._turns.turn(text=True):
                chunks.append(loaded.model.encode_text(token_ids))
        return np.concatenate(chunks)

    def embed_images(self, images: list[ImageSource]) -> np.ndarray:
        """Return an (n, dimensions) float32 array, one unit vector per image.

        Images that cannot be decoded raise PartialFailure carrying the others' vectors.
        """
        if not images:
            return np.empty((0, self.dimensions), dtype=np.float32)
        size = self.batch_size
        batches = (images[start : start + size] for start in range(0, len(images), size))
        vectors: dict[int, np.ndarray] = {}
        errors: dict[int, EmbeddingError] = {}
        offset = 0
        for batch_vectors, batch_errors, count in self._embed_batches(batches):
            vectors.update({offset + i: v for i, v in batch_vectors.items()})
            errors.update({offset + i: e for i, e in batch_errors.items()})
            offset += count
        if errors:
            raise PartialFailure(vectors, errors)
        return np.stack([vectors[i] for i in range(len(images))])

    def _embed_batches(self, batches: Iterable[list[ImageSource]]):
        """Embed batch after batch, decoding the next batch on threads while the model runs."""
        loaded = self.load()
        if self.text_only:
            raise EmbeddingError(f"{self.model_id} was loaded text-only; it cannot embed images")
        pending: list[Future] | None = None
        for batch in batches:
            started = [self._decoder().submit(self._prepare, source, loaded) for source in batch]
            if pending is not None:
                yield self._run_images(pending, loaded)
            pending = started
        if pending is not None:
            yield self._run_images(pending, loaded)

    def _decoder(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self._decode_workers, "clip-decode")
            return self._pool

    @staticmethod
    def _prepare(source: ImageSource, loaded: _Loaded) -> np.ndarray:
        try:
            return preprocess_bytes(source.read(), loaded.preprocess)
        except Exception as exc:  # Pillow raises many kinds; the caller needs to know which image
            raise ImageDecodeError(source.key, exc) from exc

    def _run_images(self, futures: list[Future], loaded: _Loaded):
        """(vectors by position, decode errors by position, batch size) for one batch."""
        good: dict[int, np.ndarray] = {}
        errors: dict[int, EmbeddingError] = {}
        for i, future in enumerate(futures):
            try:
                good[i] = future.result()
            except ImageDecodeError as exc:
                errors[i] = exc
        if not good:
            return {}, errors, len(futures)
        positions = sorted(good)
        pixels = np.stack([good[i] for i in positions])
        # On a CPU each core takes one image: holding the model for a core's worth at a time
        # keeps every core busy and lets a search in after at most one image's time.
        step = (os.cpu_count() or 1) if loaded.model.cpu_path else len(pixels)
        vectors = []
        for start in range(0, len(pixels), step):
            with self._turns.turn(text=False):
                vectors.append(loaded.model.encode_images(pixels[start : start + step]))
        return dict(zip(positions, np.concatenate(vectors))), errors, len(futures)
