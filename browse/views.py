"""The pages people open: the library, search results, an image with its neighbours, upload, status."""

from __future__ import annotations

from flask import Blueprint, render_template, request

from shared.store import Schema

from . import media, present
from .present import bounded_int
from .state import BadUpload, SearchError, get_browse

bp = Blueprint("browse", __name__, template_folder="templates", static_folder="static/browse",
               static_url_path="/static/browse")


@bp.app_context_processor
def _page_context() -> dict:
    browse = get_browse()
    return {
        "warnings": browse.warnings(),
        "search_off": browse.search.off_summary,
        "fmt_size": _fmt_size,
        "thumbnail_src": present.thumbnail_src,
        "live_poll_ms": int(browse.settings.web.live_poll_s * 1000),
        "max_page_size": browse.settings.web.max_page_size,
        "display_name": present.display_name,
        "title_name": present.title_name,
    }


@bp.get("/")
def home():
    """The library, newest first, or the results of `?q=` when there is a query."""
    query = (request.args.get("q") or "").strip()
    if query:
        return _search_page(query)
    web = get_browse().settings.web
    size = bounded_int(request.args.get("limit"), "limit", web.page_size, web.max_page_size)
    cursor = request.args.get("cursor")
    page = present.library_page(size, cursor)
    counts = None if cursor else get_browse().summary_counts()
    version = None if cursor else get_browse().catalogue().version()
    return render_template("browse/home.html", page=page, counts=counts, first=not cursor,
                           library_version=version)


def _search_page(query: str):
    web = get_browse().settings.web
    k = bounded_int(request.args.get("k"), "k", web.search_k, web.max_k)
    hits, error, status = None, None, 200
    if len(query) > 1000:
        error, status = "The query is too long (1000 characters at most).", 400
    else:
        try:
            hits = present.shown(present.search_text(query, k))
        except SearchError as exc:
            error, status = f"Search {exc.outcome}: {exc}.", exc.status
    return render_template("browse/search.html", query=query, hits=hits, error=error), status


@bp.get("/image/<int:image_id>")
def image_page(image_id: int):
    """One image: the picture, its details, and the images nearest it."""
    row, hits = present.similar_to(image_id, get_browse().settings.web.similar_k)
    newer, older = present.neighbours_in_order(image_id)
    return render_template(
        "browse/image.html", row=row, hits=None if hits is None else present.shown(hits),
        newer=newer, older=older, display_src=present.display_src(row),
        original_src=present.original_src(row), modified_at=present.modified_at(row),
    )


@bp.route("/search/image", methods=["GET", "POST"])
def upload_page():
    """Choose or drop an image; its nearest neighbours are shown."""
    web = get_browse().settings.web
    hits, error, status = None, None, 200
    if request.method == "POST":
        file = request.files.get("image")
        data = file.read(web.max_upload_bytes + 1) if file else b""
        try:
            if len(data) > web.max_upload_bytes:
                raise BadUpload("the file is too large", 413)
            hits = present.shown(present.search_upload(data, web.search_k))
        except BadUpload as exc:
            error, status = f"That file cannot be used: {exc}.", exc.status
        except SearchError as exc:
            error, status = f"Search by image {exc.outcome}: {exc}.", exc.status
    return render_template("browse/upload.html", hits=hits, error=error,
                           max_bytes=web.max_upload_bytes), status


@bp.get("/status")
def status_page():
    """How many images wait for embeddings, and whether the dimensions agree."""
    browse = get_browse()
    catalogue = browse.catalogue()
    counts, hidden = catalogue.counts(), catalogue.hidden_count()
    pgvector = Schema(browse.connection()).pgvector_version()
    return render_template("browse/status.html", counts=counts, hidden=hidden, browse=browse,
                           pgvector=pgvector, activity=browse.activity(),
                           library_version=catalogue.version())


@bp.get("/media/thumb/<path:key>")
def thumbnail(key: str):
    """A thumbnail from local storage."""
    return media.send_thumbnail(key)


@bp.get("/media/original/<filename:key>")
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
