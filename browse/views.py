"""The pages people open: the library, search results, an image with its neighbours, upload, status."""

from __future__ import annotations

from flask import Blueprint, g, render_template, request

from werkzeug.exceptions import HTTPException

from shared.store import NO_FILTERS, Filters, Schema

from . import media, present
from .filters import chips, filter_args, parse_filters
from .present import bounded_int
from .state import BadUpload, SearchError, get_browse

bp = Blueprint("browse", __name__, template_folder="templates", static_folder="static/browse",
               static_url_path="/static/browse")


@bp.app_context_processor
def _page_context() -> dict:
    browse = get_browse()
    filters = _page_filters()
    return {
        "warnings": browse.warnings(),
        "search_off": browse.search.off_summary,
        "fmt_size": _fmt_size,
        "thumbnail_src": present.thumbnail_src,
        "filters": filters,
        "fargs": filter_args(filters),
        "chips": chips(filters),
        "cameras": browse.camera_list,
        "live_poll_ms": int(browse.settings.web.live_poll_s * 1000),
        "max_page_size": browse.settings.web.max_page_size,
        "display_name": present.display_name,
        "title_name": present.title_name,
    }


def _filters() -> Filters:
    """This request's filters (query string, or the upload form's fields); 400 when malformed."""
    if "filters" not in g:
        g.filters = parse_filters(request.values)
    return g.filters


def _page_filters() -> Filters:
    """The filters for the page's chips and links; none on the page saying they are malformed."""
    try:
        return _filters()
    except HTTPException:
        return NO_FILTERS


@bp.get("/")
def home():
    """The timeline, newest taken first, or the results of `?q=`; both narrowed by the filters."""
    query = (request.args.get("q") or "").strip()
    filters = _filters()
    if query:
        return _search_page(query)
    web = get_browse().settings.web
    size = bounded_int(request.args.get("limit"), "limit", web.page_size, web.max_page_size)
    cursor = request.args.get("cursor")
    page = present.library_page(size, cursor, filters)
    first = not cursor
    counts = get_browse().summary_counts() if first and not filters else None
    albums = present.folders(filters.folder)[0] if first and filters.folder else []
    version = get_browse().catalogue().version() if first else None
    return render_template("browse/home.html", page=page, items=present.headings(page),
                           counts=counts, first=first, albums=albums, library_version=version,
                           crumbs=present.breadcrumbs(filters.folder))


def _search_page(query: str):
    web = get_browse().settings.web
    k = bounded_int(request.args.get("k"), "k", web.search_k, web.max_k)
    hits, error, status = None, None, 200
    if len(query) > 1000:
        error, status = "The query is too long (1000 characters at most).", 400
    else:
        try:
            hits = present.shown(present.search_text(query, k, _filters()))
        except SearchError as exc:
            error, status = f"Search {exc.outcome}: {exc}.", exc.status
    return render_template("browse/search.html", query=query, hits=hits, error=error), status


@bp.get("/image/<int:image_id>")
def image_page(image_id: int):
    """One image: the picture, its details, and the images nearest it (within the filters)."""
    filters = _filters()
    row, hits = present.similar_to(image_id, get_browse().settings.web.similar_k, filters)
    newer, older = present.neighbours_in_order(image_id, filters)
    return render_template(
        "browse/image.html", row=row, hits=None if hits is None else present.shown(hits),
        newer=newer, older=older, display_src=present.display_src(row),
        original_src=present.original_src(row), modified_at=present.modified_at(row),
        taken_at=present.taken_at(row), taken_text=present.taken_text(row), place=present.place(row), map_link=present.map_link(row),
        crumbs=present.breadcrumbs(row.folder),
    )


@bp.get("/folders")
def folders_page():
    """The folders of images/ (or of `?folder=`) as albums: a cover, a name, a count."""
    parent = _filters().folder
    albums, here = present.folders(parent)
    return render_template("browse/folders.html", albums=albums, here=here, parent=parent,
                           crumbs=present.breadcrumbs(parent))


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
            hits = present.shown(present.search_upload(data, web.search_k, _filters()))
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
