"""Pick the text embedder a process should use, from settings, and say why when there is none."""

from __future__ import annotations

import logging

from ..settings import Settings
from .base import Embedder

log = logging.getLogger(__name__)

HOW_TO_ENABLE = (
    "set REPLICATE_API_TOKEN (Replicate's CLIP), or install the `mlx` extra and point "
    "CLIP_MODEL_PATH at local CLIP weights, then restart"
)


def make_text_embedder(settings: Settings) -> tuple[Embedder | None, str]:
    """The embedder `settings.embedder` asks for, or None and a plain reason for a person to read.

    'auto' tries Replicate (when a token is set), then MLX CLIP (when installed and its weights
    are on this machine); 'none' turns search off. Backends are imported lazily so that a
    process without them still starts.
    """
    choice = settings.embedder
    if choice == "none":
        return None, "search is turned off (EMBEDDER=none)"
    if choice == "replicate":
        return _replicate(settings)
    if choice == "mlx":
        return _mlx(settings, download=True)
    if settings.replicate_api_token:
        return _replicate(settings)
    embedder, reason = _mlx(settings, download=False)
    if embedder is not None:
        return embedder, reason
    return None, f"no REPLICATE_API_TOKEN is set, and {reason}"


def _replicate(settings: Settings) -> tuple[Embedder | None, str]:
    if not settings.replicate_api_token:
        return None, "EMBEDDER=replicate but REPLICATE_API_TOKEN is not set"
    try:
        from .replicate import ReplicateEmbedder
    except ImportError as exc:
        return None, f"the Replicate embedder is not available in this installation ({exc.name})"
    try:
        return ReplicateEmbedder.from_settings(settings), "Replicate"
    except Exception as exc:  # a backend's own configuration error; say it, never the token
        log.warning("Replicate embedder unavailable: %s", type(exc).__name__)
        return None, f"the Replicate embedder could not be set up: {exc}"


def _mlx(settings: Settings, download: bool) -> tuple[Embedder | None, str]:
    """CLIP's text tower in MLX, loaded now so errors show at start-up, not at the first query.

    'auto' never downloads (a 1.7 GB surprise); EMBEDDER=mlx may.
    """
    try:
        from ..clip.embedder import MlxClipEmbedder
    except ImportError:
        return None, "MLX CLIP is not installed (pip install 'image-browser[mlx]')"
    try:
        embedder = MlxClipEmbedder.from_settings(settings, text_only=True, download=download)
        embedder.load()
        return embedder, "MLX CLIP"
    except Exception as exc:  # missing weights and the like: the backend's message says which
        return None, str(exc)
