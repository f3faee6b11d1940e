"""mlx-local: the browse pages, with query text embedded by CLIP in MLX on this machine.

It is configuration only: mlx-local/.env read into the same settings (its database
variable is DB_URL), and the browse app given MLX CLIP's text tower.
"""

from __future__ import annotations

import os
from pathlib import Path

from dotenv import load_dotenv
from flask import Flask

from browse import create_app as create_browse_app
from shared.embedders.base import Embedder
from shared.settings import Settings

APP_DIR = Path(__file__).resolve().parent.parent  # mlx-local/, where its .env lives
DATABASE_SETTING = "DB_URL"

_LOAD_CLIP = object()


def load_settings() -> Settings:
    """mlx-local/.env (the environment wins), with the database URL taken from DB_URL."""
    load_dotenv(APP_DIR / ".env", override=False)
    return Settings.from_env(os.environ, database_setting=DATABASE_SETTING)


def create_app(settings: Settings | None = None, embedder: Embedder | object = _LOAD_CLIP) -> Flask:
    """The browse app with CLIP's text tower in MLX, loaded before the first request."""
    from shared.embedders.factory import make_embedder

    settings = settings or load_settings()
    if embedder is _LOAD_CLIP:
        embedder = make_embedder(settings, backend="mlx", text_only=True)
    return create_browse_app(settings, embedder)
