"""The browse web app: the image library, text search, similar images and search by image."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping

from flask import Flask

from shared.database import connect, database_url, pool
from shared.embedders.base import Embedder
from shared.settings import Settings, load_settings
from shared.storage import open_storage
from shared.store import ImageStore, SchemaError

from .runtime import EXTENSION, Browse

APP_DIR = Path(__file__).resolve().parent
log = logging.getLogger(__name__)

DEFAULTS: dict[str, Any] = {
    "PAGE_SIZE": 24,  # a first screen of thumbnails under 1.5 MB (docs/benchmarks.md)
    "MAX_PAGE_SIZE": 200,
    "SEARCH_K": 60,  # results of a text or image search on the pages
    "SIMILAR_K": 24,
    "MAX_K": 200,
    "HNSW_EF_SEARCH": 100,  # see docs/benchmarks.md: recall@10 >= 0.95 at p50 < 10 ms
    "EMBED_TIMEOUT_S": 20.0,
    "EMBED_WORKERS": 4,
    "MAX_UPLOAD_BYTES": 20 * 1024 * 1024,
    "DB_POOL_SIZE": 8,
    "SUMMARY_TTL_S": 10.0,  # the home page's image counts are a full scan: reuse them briefly
}

_NO_EMBEDDER = object()


def create_app(
    settings: Settings | None = None,
    embedder: Embedder | None | object = _NO_EMBEDDER,
    test_config: Mapping[str, Any] | None = None,
) -> Flask:
    """Build the browse app.

    `settings` default to browse/.env plus the environment; `embedder` defaults to what
    `make_text_embedder` finds (pass None to turn search off). `test_config` overrides
    DEFAULTS, which may also be set as BROWSE_<NAME> environment variables.
    """
    app = Flask(__name__, static_folder=None)  # the blueprint serves /static/browse/
    if settings is None:
        settings = load_settings(APP_DIR)  # loads browse/.env first, so BROWSE_* there count too
    app.config.update(DEFAULTS)
    if test_config is None:
        app.config.from_prefixed_env("BROWSE")
    else:
        app.config.update(test_config)
    if embedder is _NO_EMBEDDER:
        from shared.embedders.factory import make_text_embedder

        embedder, reason = make_text_embedder(settings)
    else:
        reason = embedder.model_id if embedder is not None else "no embedder was given to this app"
    register_browse(app, settings, embedder, reason)
    return app


def register_browse(app: Flask, settings: Settings, embedder: Embedder | None, reason: str) -> Browse:
    """Attach the browse pages and API to `app`, with this embedder (mlx-local passes its own)."""
    for name, value in DEFAULTS.items():
        app.config.setdefault(name, value)
    app.config["MAX_CONTENT_LENGTH"] = app.config["MAX_UPLOAD_BYTES"]
    url = database_url(settings)
    schema_problem, table_dim = _prepare_schema(url, settings.expected_vector_dim)
    state = Browse(
        settings=settings,
        pool=pool(url, max_size=app.config["DB_POOL_SIZE"]),
        storage=open_storage(settings),
        embedder=embedder,
        embedder_reason=reason,
        embed_timeout_s=float(app.config["EMBED_TIMEOUT_S"]),
        embed_workers=int(app.config["EMBED_WORKERS"]),
        schema_problem=schema_problem,
        summary_ttl_s=float(app.config["SUMMARY_TTL_S"]),
        table_dimensions=table_dim,
    )
    app.extensions[EXTENSION] = state

    from . import api, security, views

    app.register_blueprint(views.bp)
    app.register_blueprint(api.bp)
    security.install(app)
    return state


def _prepare_schema(url: str, dimensions: int) -> tuple[str | None, int | None]:
    """Create or upgrade the table (idempotent); a dimension conflict becomes a page warning."""
    with connect(url) as conn:
        store = ImageStore(conn)
        try:
            store.ensure_schema(dimensions)
        except SchemaError as exc:
            log.warning("schema problem: %s", exc)
            return str(exc), store.embedding_dimensions()
        return None, dimensions
