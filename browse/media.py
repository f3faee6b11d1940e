"""Serve originals and thumbnails from local storage, never anything outside their folders."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from flask import Response, abort, send_file
from werkzeug.routing import PathConverter

from shared.imagefile import content_type
from shared.storage import LocalStorage, StorageError, thumbnail_sha256

from .present import HIDDEN
from .state import get_browse

FOREVER = 365 * 24 * 3600
ORIGINAL_MAX_AGE = 3600


class FileNameConverter(PathConverter):
    """A path that may hold any character a file name can, newlines included.

    Werkzeug's `path` stops at a newline (its '.' does not match one), so a legal name
    holding one would answer 404.
    """

    regex = r"[^/][\s\S]*?"


def send_thumbnail(key: str) -> Response:
    """A content-addressed thumbnail: its hash is its ETag and it may be cached forever."""
    storage = _local_storage()
    sha256 = thumbnail_sha256(key)
    if sha256 is None:
        abort(404)
    path = _existing_inside(storage.thumbnails_dir, storage.thumbnail_path, key)
    response = send_file(path, mimetype="image/jpeg", etag=sha256, conditional=True,
                         max_age=FOREVER)
    response.cache_control.public = True
    response.cache_control.immutable = True
    return response


def send_original(key: str) -> Response:
    """An original that the library knows, with its content hash as ETag."""
    storage = _local_storage()
    if "\x00" in key:
        abort(404)  # no file name holds a NUL, and Postgres text cannot carry one
    row = get_browse().catalogue().get_image_by_filename(key)
    if row is None:
        abort(404)
    path = _existing_inside(storage.images_dir, storage.original_path, key)
    stat = path.stat()
    # The stored hash is the file's only while the file is the one the loader read.
    unchanged = (stat.st_size, stat.st_mtime_ns) == (row.byte_size, row.mtime_ns)
    etag = row.sha256 if unchanged and row.sha256 else f"{stat.st_size}-{stat.st_mtime_ns}"
    response = send_file(path, mimetype=content_type(row.format or ""), etag=etag, conditional=True,
                         max_age=ORIGINAL_MAX_AGE, download_name=saved_name(path.name))
    response.cache_control.public = True
    return response


def saved_name(name: str) -> str:
    """The name a browser saves an original under: no control or bidi characters.

    A header cannot carry a newline, and a save dialog should not be spoofed either.
    """
    return HIDDEN.sub("_", name)


def _local_storage() -> LocalStorage:
    storage = get_browse().storage
    if not isinstance(storage, LocalStorage):
        abort(404)  # in R2 mode the pages link to IMAGE_BASE_URL instead
    return storage


def _existing_inside(root: Path, locate: Callable[[str], Path], key: str) -> Path:
    """The real file for `key` under `root`; 404 for anything leading out, hidden, or not a file."""
    if any(part.startswith(".") for part in key.split("/")):
        abort(404)
    try:
        candidate = locate(key)  # refuses '..', absolute, NUL
    except StorageError:
        abort(404)
    real_root = Path(os.path.realpath(root))
    real = Path(os.path.realpath(candidate))  # follows every link, so a link out is seen as out
    if not real.is_relative_to(real_root) or not real.is_file():
        abort(404)
    return real
