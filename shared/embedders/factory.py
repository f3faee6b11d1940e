"""The one place that builds an embedder: which backend the settings ask for, and why none can run.

`loader embed`, `loader up`, the web app and mlx-local all call `make_embedder`. Adding a backend
means one builder function here and one entry in BACKENDS. Backends are imported lazily, so a
process without one of them installed still starts.
"""

from __future__ import annotations

from typing import Callable

from ..settings import Settings
from .base import Embedder, EmbeddingError

# Called with a shared.clip.download.DownloadProgress while weights download; raising stops it.
OnProgress = Callable[[object], None]


class NoEmbedder(EmbeddingError):
    """No embedder can be built with these settings; the message says why, for a person."""


def make_embedder(
    settings: Settings,
    *,
    backend: str | None = None,
    text_only: bool = False,
    waiting: bool = True,
    on_progress: OnProgress | None = None,
) -> Embedder:
    """The embedder `backend` (default: the EMBEDDER setting) names, ready to use.

    'auto' is Replicate when REPLICATE_API_TOKEN is set, else CLIP in MLX; 'none' turns
    embedding off. `text_only` loads only a local model's text tower. `waiting` says whether
    the caller can wait for a download (see `may_download`), told to `on_progress`.
    Raises NoEmbedder.
    """
    choice = backend or settings.embedder
    if choice not in BACKENDS:
        raise NoEmbedder(f"unknown embedder {choice!r}: use one of {', '.join(BACKENDS)}")
    return BACKENDS[choice](settings, text_only, may_download(choice, waiting), on_progress)


def may_download(backend: str, waiting: bool = True) -> bool:
    """Whether missing model weights may be fetched: THE one place that decides.

    Every backend that runs CLIP on this machine ('mlx', and 'auto' without a Replicate token)
    fetches the weights once, with progress, resumably, when its caller can wait for them:
    `loader embed`, `loader up`'s background work, mlx-local before it serves. A web server
    answering requests cannot (`waiting=False`): it uses what is already here.
    """
    return waiting and backend in ("auto", "mlx")


def _none(settings: Settings, text_only: bool, download: bool, on_progress) -> Embedder:
    raise NoEmbedder("embedding and search are turned off (EMBEDDER=none)")


def _replicate(settings: Settings, text_only: bool, download: bool, on_progress=None) -> Embedder:
    if not settings.replicate_api_token:
        raise NoEmbedder("REPLICATE_API_TOKEN is not set (create a token at replicate.com)")
    try:
        from .replicate import ReplicateEmbedder
    except ImportError as exc:
        raise NoEmbedder(f"the Replicate client is not installed ({exc.name})") from None
    try:
        return ReplicateEmbedder(
            settings.replicate_api_token,
            model=settings.replicate_model,
            dimensions=settings.expected_vector_dim,
            base_url=settings.replicate_base_url,
            max_per_minute=settings.replicate_max_per_minute,
            poll_interval=settings.replicate_poll_interval,
        )
    except EmbeddingError as exc:
        raise NoEmbedder(f"the Replicate embedder cannot be set up: {exc}") from None


def _mlx(settings: Settings, text_only: bool, download: bool, on_progress=None) -> Embedder:
    """CLIP in MLX, loaded now so that a missing checkpoint is said at start, not at first use."""
    try:
        from ..clip.embedder import MlxClipEmbedder
    except ImportError:
        raise NoEmbedder("MLX is not installed (pip install 'image-browser[mlx]')") from None
    embedder = MlxClipEmbedder(
        model=settings.clip_model,
        model_path=settings.clip_model_path,
        text_only=text_only,
        expected_dim=settings.expected_vector_dim,
        download=download,
        on_progress=on_progress,
    )
    try:
        embedder.load()
    except EmbeddingError as exc:
        raise NoEmbedder(str(exc)) from None
    return embedder


def _auto(settings: Settings, text_only: bool, download: bool, on_progress=None) -> Embedder:
    if settings.replicate_api_token:
        return _replicate(settings, text_only, download)
    try:
        return _mlx(settings, text_only, download, on_progress)
    except NoEmbedder as exc:
        raise NoEmbedder(f"REPLICATE_API_TOKEN is not set, and {exc}") from None


BACKENDS: dict[str, Callable[..., Embedder]] = {
    "auto": _auto,
    "replicate": _replicate,
    "mlx": _mlx,
    "none": _none,
}
