"""The queries pages and API share: a page of the library, text search, similar images, uploads."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

from flask import abort, current_app, url_for

from shared.store import ImageRow

from .runtime import check_upload, decode_cursor, encode_cursor, get_browse

# Formats every current browser shows; others (HEIC, TIFF, ...) are shown by their thumbnail.
BROWSER_FORMATS = frozenset({"JPEG", "MPO", "PNG", "GIF", "WEBP", "AVIF", "BMP"})


@dataclass(frozen=True)
class Hit:
    """One image in a list, with its similarity to the query when there was one."""

    row: ImageRow
    similarity: float | None = None


@dataclass(frozen=True)
class Page:
    """A page of the library and the cursor of the next one (None at the end)."""

    hits: list[Hit]
    next_cursor: str | None


def bounded_int(raw: str | None, name: str, default: int, maximum: int) -> int:
    """A query parameter between 1 and `maximum`; a 400 with the reason otherwise."""
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        abort(400, f"{name} must be a whole number, got {raw[:20]!r}")
    if not 1 <= value <= maximum:
        abort(400, f"{name} must be between 1 and {maximum}, got {value}")
    return value


def library_page(limit: int, cursor: str | None) -> Page:
    """`limit` images, newest first, after the cursor."""
    try:
        before = decode_cursor(cursor) if cursor else None
    except ValueError as exc:
        abort(400, str(exc))
    with get_browse().store() as store:
        rows = store.list_images(limit + 1, before)
    more = len(rows) > limit
    rows = rows[:limit]
    return Page([Hit(r) for r in rows], encode_cursor(rows[-1]) if more and rows else None)


def get_image(image_id: int) -> ImageRow:
    """One image, or 404."""
    with get_browse().store() as store:
        row = store.get_image(image_id)
    if row is None:
        abort(404, f"there is no image with id {image_id}")
    return row


def search_text(query: str, k: int) -> list[Hit]:
    """The k images nearest the query's embedding (raises the embedder errors)."""
    browse = get_browse()
    vector = browse.embed_text(query)
    return _nearest(vector, k)


def search_upload(data: bytes, k: int) -> list[Hit]:
    """The k images nearest an uploaded image, after checking it is one."""
    browse = get_browse()
    check_upload(data, browse.settings.max_image_pixels)
    return _nearest(browse.embed_image(data), k)


def similar_to(image_id: int, k: int) -> tuple[ImageRow, list[Hit] | None]:
    """An image and its nearest neighbours by stored embedding (None when it has no embedding)."""
    browse = get_browse()
    with browse.store() as store:
        row = store.get_image(image_id)
        if row is None:
            abort(404, f"there is no image with id {image_id}")
        vector = store.embedding_of(image_id)
        if vector is None:
            return row, None
        found = store.nearest(vector, k, ef_search=_ef(), exclude_id=image_id)
    return row, [Hit(r, 1.0 - d) for r, d in found]


def neighbours_in_order(image_id: int) -> tuple[int | None, int | None]:
    """The newer and older image ids, for keyboard navigation."""
    with get_browse().store() as store:
        return store.neighbours_in_order(image_id)


def _nearest(vector, k: int) -> list[Hit]:
    with get_browse().store() as store:
        found = store.nearest(vector, k, ef_search=_ef())
    return [Hit(r, 1.0 - d) for r, d in found]


def _ef() -> int:
    return int(current_app.config["HNSW_EF_SEARCH"])


# --- how an image is addressed and described -------------------------------------------


def thumbnail_src(row: ImageRow) -> str | None:
    """Where the grid loads this image's thumbnail from (never the original)."""
    key = row["thumbnail_key"]
    if not key:
        return None
    return get_browse().storage.thumbnail_url(key) or url_for("browse.thumbnail", key=key)


def original_src(row: ImageRow) -> str:
    """Where the full image is."""
    return get_browse().storage.original_url(row["filename"]) or url_for(
        "browse.original", key=row["filename"]
    )


def display_src(row: ImageRow) -> str | None:
    """What the image page shows: the original when browsers can show it, else the thumbnail."""
    if (row["format"] or "").upper() in BROWSER_FORMATS:
        return original_src(row)
    return thumbnail_src(row)


def image_json(hit: Hit) -> dict:
    """An image as the JSON API describes it."""
    row = hit.row
    out = {
        "id": row["id"],
        "filename": row["filename"],
        "width": row["width"],
        "height": row["height"],
        "byte_size": row["byte_size"],
        "format": row["format"],
        "sha256": row["sha256"],
        "modified_at": modified_at(row),
        "created_at": row["created_at"].isoformat(),
        "embedded": row["embedded"],
        "embedding_model": row["embedding_model"],
        "thumbnail_url": _absolute(thumbnail_src(row)),
        "original_url": _absolute(original_src(row)),
        "page_url": url_for("browse.image_page", image_id=row["id"], _external=True),
    }
    if hit.similarity is not None:
        out["similarity"] = round(hit.similarity, 6)
    return out


def modified_at(row: ImageRow) -> str | None:
    """The file's modification time as ISO 8601, when known."""
    if row["mtime_ns"] is None:
        return None
    return datetime.fromtimestamp(row["mtime_ns"] / 1e9, tz=timezone.utc).isoformat(timespec="seconds")


def _absolute(url: str | None) -> str | None:
    if url is None or url.startswith(("http://", "https://")):
        return url
    from flask import request

    return request.host_url.rstrip("/") + url
