"""The pages people open: the library, search results, an image with its neighbours, upload, status."""

from __future__ import annotations

from flask import Blueprint, current_app, render_template, request

from shared.embedders.factory import HOW_TO_ENABLE

from . import library, media
from .library import bounded_int
from .runtime import BadUpload, SearchError, get_browse

bp = Blueprint("browse", __name__, template_folder="templates", static_folder="static/browse",
               static_url_path="/static/browse")


@bp.app_context_processor
def _page_context() -> dict:
    browse = get_browse()
    return {
        "warnings": browse.warnings(),
        "search_off": browse.search_off_reason(),
        "how_to_enable": HOW_TO_ENABLE,
        "fmt_size": _fmt_size,
        "thumbnail_src": library.thumbnail_src,
    }


@bp.get("/")
def home():
    """The library, newest first, or the results of `?q=` when there is a query."""
    query = (request.args.get("q") or "").strip()
    if query:
        return _search_page(query)
    size = bounded_int(request.args.get("limit"), "limit", current_app.config["PAGE_SIZE"],
                       current_app.config["MAX_PAGE_SIZE"])
    cursor = request.args.get("cursor")
    page = library.library_page(size, cursor)
    counts = None if cursor else get_browse().summary_counts()
    return render_template("browse/home.html", page=page, counts=counts, first=not cursor)


def _search_page(query: str):
    k = bounded_int(request.args.get("k"), "k", current_app.config["SEARCH_K"],
                    current_app.config["MAX_K"])
    hits, error, status = None, None, 200
    if len(query) > 1000:
        error, status = "The query is too long (1000 characters at most).", 400
    else:
        try:
            hits = library.search_text(query, k)
        except SearchError as exc:
            error, status = f"Search {exc.outcome}: {exc}.", exc.status
    return render_template("browse/search.html", query=query, hits=hits, error=error), status


@bp.get("/image/<int:image_id>")
def image_page(image_id: int):
    """One image: the picture, its details, and the images nearest it."""
    row, hits = library.similar_to(image_id, current_app.config["SIMILAR_K"])
    newer, older = library.neighbours_in_order(image_id)
    return render_template(
        "browse/image.html", row=row, hits=hits, newer=newer, older=older,
        display_src=library.display_src(row), original_src=library.original_src(row),
        modified_at=library.modified_at(row),
    )


@bp.route("/search/image", methods=["GET", "POST"])
def upload_page():
    """Choose or drop an image; its nearest neighbours are shown."""
    hits, error, status = None, None, 200
    if request.method == "POST":
        file = request.files.get("image")
        data = file.read(current_app.config["MAX_UPLOAD_BYTES"] + 1) if file else b""
        try:
            if len(data) > current_app.config["MAX_UPLOAD_BYTES"]:
                raise BadUpload("the file is too large", 413)
            hits = library.search_upload(data, current_app.config["SEARCH_K"])
        except BadUpload as exc:
            error, status = f"That file cannot be used: {exc}.", exc.status
        except SearchError as exc:
            error, status = f"Search by image {exc.outcome}: {exc}.", exc.status
    return render_template("browse/upload.html", hits=hits, error=error,
                           max_bytes=current_app.config["MAX_UPLOAD_BYTES"]), status


@bp.get("/status")
def status_page():
    """How many images wait for embeddings, and whether the dimensions agree."""
    browse = get_browse()
    with browse.store() as store:
        counts = store.counts()
        pgvector = store.pgvector_version()
    return render_template("browse/status.html", counts=counts, browse=browse, pgvector=pgvector)


@bp.get("/media/thumb/<path:key>")
def thumbnail(key: str):
    """A thumbnail from local storage."""
    return media.send_thumbnail(key)


@bp.get("/media/original/<path:key>")
def original(key: str):
    """An original from local storage."""
    return media.send_original(key)


def _fmt_size(size: int | None) -> str:
    if size is None:
        return "?"
    for unit in ("bytes", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size} bytes"
