"""The JSON API for scripts: list, one image, similar images, search by text or by image."""

from __future__ import annotations

from flask import Blueprint, abort, jsonify, request

from . import present
from .filters import filter_args, parse_filters
from .present import bounded_int, image_json
from .state import get_browse

bp = Blueprint("browse_api", __name__, url_prefix="/api")


@bp.get("/images")
def list_images():
    """A page of the timeline, newest taken first: `?limit=`, the filters, and the
    `next_cursor` of the last page."""
    web = get_browse().settings.web
    limit = bounded_int(request.args.get("limit"), "limit", web.page_size, web.max_page_size)
    filters = parse_filters(request.args)
    page = present.library_page(limit, request.args.get("cursor"), filters)
    return jsonify(images=[image_json(*item) for item in page.shown], next_cursor=page.next_cursor,
                   filters=filter_args(filters))


@bp.get("/images/<int:image_id>")
def one_image(image_id: int):
    """One image's details."""
    return jsonify(image=image_json(present.get_image(image_id)))


@bp.get("/images/<int:image_id>/similar")
def similar(image_id: int):
    """The nearest neighbours of an image's stored embedding (no model call)."""
    filters = parse_filters(request.args)
    row, hits = present.similar_to(image_id, _k(get_browse().settings.web.similar_k), filters)
    if hits is None:
        abort(409, f"image {image_id} has no embedding yet; run the embedding backfill first")
    return jsonify(image=image_json(row),
                   results=[image_json(*item) for item in present.shown(hits)])


@bp.get("/search")
def search():
    """Images nearest a text query: `?q=...&k=...`."""
    query = (request.args.get("q") or "").strip()
    if not query:
        abort(400, "the query is empty: pass ?q=some words")
    if len(query) > 1000:
        abort(400, "the query is too long (1000 characters at most)")
    filters = parse_filters(request.args)
    hits = present.search_text(query, _k(get_browse().settings.web.search_k), filters)
    return jsonify(query=query, model=get_browse().search.embedder.model_id,
                   filters=filter_args(filters),
                   results=[image_json(*item) for item in present.shown(hits)])


@bp.post("/search/image")
def search_by_image():
    """Images nearest an uploaded image: multipart field `image`, or the image as the body;
    filters in the query string (or as form fields)."""
    k = _k(get_browse().settings.web.search_k)
    data = _upload_bytes()
    filters = parse_filters(request.values)  # the form is parsed only for a multipart body
    hits = present.search_upload(data, k, filters)
    return jsonify(model=get_browse().search.embedder.model_id, filters=filter_args(filters),
                   results=[image_json(*item) for item in present.shown(hits)])


@bp.get("/folders")
def folders():
    """The sub-folders of `?folder=` (the top by default): counts and a cover image each."""
    parent = parse_filters(request.args).folder
    albums, here = present.folders(parent)
    return jsonify(folder=parent or "", images_here=here, folders=[
        {"name": a.name, "folder": a.path, "images": a.images,
         "cover": image_json(a.cover) if a.cover else None}
        for a in albums
    ])


@bp.get("/cameras")
def cameras():
    """Every camera with how many photos it took, most used first."""
    return jsonify(cameras=[{"camera": name, "images": count}
                            for name, count in get_browse().camera_list()])


@bp.get("/status")
def status():
    """Counts, dimensions and the embedder, for scripts and health checks."""
    browse = get_browse()
    search = browse.search
    embedder = search.embedder
    return jsonify(
        counts=browse.catalogue().counts().as_dict(),
        expected_vector_dim=browse.settings.expected_vector_dim,
        table_vector_dim=search.table_dimensions,
        embedder=None if embedder is None else {
            "model_id": embedder.model_id, "dimensions": embedder.dimensions,
            "texts": embedder.supports_texts, "images": embedder.supports_images,
        },
        search_available=search.off_reason is None,
        search_off_reason=search.off_reason,
        search_off_summary=search.off_summary,
        warnings=browse.warnings(),
        storage=browse.storage.kind,
        hidden=browse.catalogue().hidden_count(),
        library_version=browse.catalogue().version(),
        activity=[task.as_dict() for task in browse.activity()],
    )


def _k(default: int) -> int:
    return bounded_int(request.args.get("k"), "k", default, get_browse().settings.web.max_k)


def _upload_bytes() -> bytes:
    """The uploaded file's bytes; MAX_CONTENT_LENGTH turns an oversized body into a 413."""
    limit = get_browse().settings.web.max_upload_bytes
    if request.mimetype == "multipart/form-data":
        file = request.files.get("image")
        if file is None:
            abort(400, "no file: send it in the multipart field 'image'")
        data = file.read(limit + 1)
    else:
        data = request.get_data(cache=False)
    if len(data) > limit:
        abort(413, "the file is too large")
    return data
