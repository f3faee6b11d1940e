"""The JSON API for scripts: list, one image, similar images, search by text or by image."""

from __future__ import annotations

from flask import Blueprint, abort, current_app, jsonify, request

from . import library
from .library import bounded_int, image_json
from .runtime import get_browse

bp = Blueprint("browse_api", __name__, url_prefix="/api")


@bp.get("/images")
def list_images():
    """A page of the library, newest first: `?limit=` and the `next_cursor` of the last page."""
    limit = bounded_int(request.args.get("limit"), "limit", current_app.config["PAGE_SIZE"],
                        current_app.config["MAX_PAGE_SIZE"])
    page = library.library_page(limit, request.args.get("cursor"))
    return jsonify(images=[image_json(h) for h in page.hits], next_cursor=page.next_cursor)


@bp.get("/images/<int:image_id>")
def one_image(image_id: int):
    """One image's details."""
    return jsonify(image=image_json(library.Hit(library.get_image(image_id))))


@bp.get("/images/<int:image_id>/similar")
def similar(image_id: int):
    """The nearest neighbours of an image's stored embedding (no model call)."""
    k = _k("SIMILAR_K")
    row, hits = library.similar_to(image_id, k)
    if hits is None:
        abort(409, f"image {image_id} has no embedding yet; run the embedding backfill first")
    return jsonify(image=image_json(library.Hit(row)), results=[image_json(h) for h in hits])


@bp.get("/search")
def search():
    """Images nearest a text query: `?q=...&k=...`."""
    query = (request.args.get("q") or "").strip()
    if not query:
        abort(400, "the query is empty: pass ?q=some words")
    if len(query) > 1000:
        abort(400, "the query is too long (1000 characters at most)")
    k = _k("SEARCH_K")
    hits = library.search_text(query, k)
    return jsonify(query=query, model=get_browse().embedder.model_id,
                   results=[image_json(h) for h in hits])


@bp.post("/search/image")
def search_by_image():
    """Images nearest an uploaded image: multipart field `image`, or the image as the body."""
    k = _k("SEARCH_K")
    data = _upload_bytes()
    hits = library.search_upload(data, k)
    return jsonify(model=get_browse().embedder.model_id, results=[image_json(h) for h in hits])


@bp.get("/status")
def status():
    """Counts, dimensions and the embedder, for scripts and health checks."""
    browse = get_browse()
    with browse.store() as store:
        counts = store.counts()
    embedder = browse.embedder
    return jsonify(
        counts=counts,
        expected_vector_dim=browse.settings.expected_vector_dim,
        table_vector_dim=browse.table_dimensions,
        embedder=None if embedder is None else {
            "model_id": embedder.model_id, "dimensions": embedder.dimensions,
            "texts": embedder.supports_texts, "images": embedder.supports_images,
        },
        search_available=browse.search_off_reason() is None,
        search_off_reason=browse.search_off_reason(),
        warnings=browse.warnings(),
        storage=browse.storage.kind,
    )


def _k(default_name: str) -> int:
    return bounded_int(request.args.get("k"), "k", current_app.config[default_name],
                       current_app.config["MAX_K"])


def _upload_bytes() -> bytes:
    """The uploaded file's bytes; MAX_CONTENT_LENGTH turns an oversized body into a 413."""
    if request.mimetype == "multipart/form-data":
        file = request.files.get("image")
        if file is None:
            abort(400, "no file: send it in the multipart field 'image'")
        data = file.read(current_app.config["MAX_UPLOAD_BYTES"] + 1)
    else:
        data = request.get_data(cache=False)
    if len(data) > current_app.config["MAX_UPLOAD_BYTES"]:
        abort(413, "the file is too large")
    return data
