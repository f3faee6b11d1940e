"""mlx-local: the browse pages, with query text embedded by CLIP in MLX on this machine."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping

from flask import Flask

from browse import create_app as create_browse_app
from shared.embedders.base import Embedder
from shared.settings import Settings, load_settings

APP_DIR = Path(__file__).resolve().parent.parent  # mlx-local/, where its .env lives
log = logging.getLogger(__name__)

_LOAD_CLIP = object()


def create_app(
    settings: Settings | None = None,
    embedder: Embedder | None | object = _LOAD_CLIP,
    test_config: Mapping[str, Any] | None = None,
) -> Flask:
    """The browse app with a local MLX CLIP text embedder, loaded before the first request.

    Settings come from mlx-local/.env (database as DB_URL) plus the environment.
    """
    if settings is None:
        settings = load_settings(APP_DIR, db_url_var="DB_URL")
    if embedder is _LOAD_CLIP:
        embedder = load_text_embedder(settings)
    return create_browse_app(settings=settings, embedder=embedder, test_config=test_config)


def load_text_embedder(settings: Settings) -> Embedder:
    """CLIP's text tower only, loaded now so that the first query does not pay for it."""
    from shared.clip.embedder import MlxClipEmbedder

    embedder = MlxClipEmbedder.from_settings(settings, text_only=True)
    embedder.load()
    return embedder
