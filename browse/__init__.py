"""The browse web app: the image library, text search, similar images and search by image."""

from __future__ import annotations

import logging
from pathlib import Path

from flask import Flask

from shared.database import database_url
from shared.embedders.base import Embedder, EmbeddingError
from shared.progress import Board
from shared.search import Search
from shared.settings import Settings, load_settings
from shared.storage import open_storage
from shared.store import Schema, SchemaError, SchemaState, connect, open_pool

from .state import EXTENSION, Browse

APP_DIR = Path(__file__).resolve().parent
log = logging.getLogger(__name__)

_FROM_SETTINGS = object()
# A reason longer than this is summed up in the pages' one-line banner; /status has it whole.
BANNER_REASON_CHARS = 90


def create_app(
    settings: Settings | None = None, embedder: Embedder | None | object = _FROM_SETTINGS,
    board: Board | None = None,
) -> Flask:
    """Build the browse app.

    `settings` default to browse/.env plus the environment. `embedder` defaults to what
    the embedder factory builds from them with the weights already here (pass None to turn
    search off; mlx-local passes its own; `loader up` turns it on later, from its background
    work, whose progress `board` shows on /status). The table must exist at the current schema
    version: SchemaError says to run `loader ensure-schema` otherwise; the app never changes
    the schema itself.
    """
    if settings is None:
        settings = load_settings(APP_DIR)
    url = database_url(settings)
    state = check_schema(url, settings.database_setting)
    reason = "no embedder was given to this app"
    if embedder is _FROM_SETTINGS:
        embedder, reason = _embedder_from(settings)
    app = Flask(__name__, static_folder=None)  # the blueprint serves /static/browse/
    app.config["MAX_CONTENT_LENGTH"] = settings.web.max_upload_bytes
    where = settings.database_setting if settings.database_url else "the embedded Postgres"
    pool = open_pool(url, size=settings.web.db_pool_size, wait_s=settings.web.db_wait_s,
                     setting=where)
    browse = Browse(
        settings=settings,
        pool=pool,
        storage=open_storage(settings),
        search=Search.configured(lambda: browse.lend_connection(), embedder, settings,
                                 table_dimensions=state.dimensions, no_embedder_reason=reason),
        board=board,
    )
    if len(reason) > BANNER_REASON_CHARS:
        browse.search.no_embedder_summary = "no search model is set up here yet"
    app.extensions[EXTENSION] = browse
    app.teardown_appcontext(browse.teardown)

    from . import api, media, security, views

    app.url_map.converters["filename"] = media.FileNameConverter
    app.register_blueprint(views.bp)
    app.register_blueprint(api.bp)
    security.install(app)
    return app


def check_schema(url: str, setting: str) -> SchemaState:
    """The table's state, read without changing anything; SchemaError when it cannot be used."""
    with connect(url, setting) as conn:
        state = Schema(conn).check()
    if state.problem:
        raise SchemaError(state.problem)
    return state


def _embedder_from(settings: Settings) -> tuple[Embedder | None, str]:
    from shared.embedders.factory import make_embedder

    try:
        # A server cannot wait for a download: it uses weights already on this machine.
        return make_embedder(settings, text_only=True, waiting=False), ""
    except EmbeddingError as exc:
        log.info("search is off: %s", exc)
        return None, str(exc)
