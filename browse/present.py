"""The HTTP side of the library: parameters and cursors in, pages of images and JSON out."""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from flask import abort, url_for

from shared.search import Hit, ImageNotFound
from shared.store import Filters, FolderRow, ImageRow, TimelineKey

from .state import get_browse

# Formats every current browser shows; others (HEIC, TIFF, ...) are shown by their thumbnail.
BROWSER_FORMATS = frozenset({"JPEG", "MPO", "PNG", "GIF", "WEBP", "AVIF", "BMP"})
_NAIVE_EPOCH = datetime(1970, 1, 1)
MAX_ID = 2**63 - 1  # ids are Postgres bigints
UNDATED = "u"  # a cursor's place for rows sync has not dated yet
# A cursor's parts as ASCII digits (Python's int() also takes other scripts' digits).
_CURSOR = re.compile(r"(-?[0-9]{1,19}|u)\.([0-9]{1,19})")
# Microseconds from the epoch to the first and last instants both Python and Postgres know.
_MICROS = tuple((datetime(*end) - _NAIVE_EPOCH) // timedelta(microseconds=1)
                for end in ((1, 1, 2), (9999, 12, 30)))
OSM = "https://www.openstreetmap.org/?mlat={lat:.6f}&mlon={lon:.6f}#map=15/{lat:.5f}/{lon:.5f}"

# Control characters, and the marks, embeddings, overrides and isolates of the bidi algorithm.
HIDDEN = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")

# One image in a grid: its row, and its similarity when it was found by a search.
Shown = tuple[ImageRow, float | None]


@dataclass(frozen=True)
class Page:
    """A page of the library and the cursor of the next one (None at the end)."""

    shown: list[Shown]
    next_cursor: str | None
    after: TimelineKey | None = None  # where the page starts (None: at the top)


@dataclass(frozen=True)
class Heading:
    """A month of the timeline: its title and the filters that show only that month."""

    title: str
    key: str  # "2019-07", or "undated"
    month: dict[str, str]  # taken_after / taken_before of the month (empty when undated)


@dataclass(frozen=True)
class Folder:
    """A sub-folder as the albums list shows it."""

    name: str
    path: str
    images: int
    cover: ImageRow | None


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


def shown(hits: list[Hit]) -> list[Shown]:
    """Search hits as grid items."""
    return [(hit.row, hit.similarity) for hit in hits]


# --- reads ---------------------------------------------------------------------------


def library_page(limit: int, cursor: str | None, filters: Filters | None = None) -> Page:
    """`limit` images, newest taken first, after the cursor."""
    try:
        after = decode_cursor(cursor) if cursor else None
    except ValueError as exc:
        abort(400, str(exc))
    rows = get_browse().catalogue().list_images(limit + 1, after, filters)
    more = len(rows) > limit
    rows = rows[:limit]
    return Page([(r, None) for r in rows], encode_cursor(rows[-1]) if more and rows else None,
                after)


def headings(page: Page) -> list[tuple[Heading | None, Shown]]:
    """The page's images, each with the heading of a month that begins at it (or None).

    A page that continues a month from the page before it does not repeat its heading.
    """
    previous = month_of(page.after[0]) if page.after else None
    out = []
    for row, similarity in page.shown:
        heading = month_of(row.taken_at)
        out.append((heading if heading.key != (previous and previous.key) else None, (row, similarity)))
        previous = heading
    return out


def month_of(taken_at: datetime | None) -> Heading:
    """The month heading a photo taken at `taken_at` goes under."""
    if taken_at is None:
        return Heading("Not dated yet (run loader sync)", "undated", {})
    last = calendar.monthrange(taken_at.year, taken_at.month)[1]
    first = taken_at.date().replace(day=1)
    return Heading(f"{calendar.month_name[taken_at.month]} {taken_at.year}", f"{first:%Y-%m}",
                   {"taken_after": first.isoformat(),
                    "taken_before": first.replace(day=last).isoformat()})


def get_image(image_id: int) -> ImageRow:
    """One image, or 404."""
    row = get_browse().catalogue().get_image(image_id)
    if row is None:
        abort(404, f"there is no image with id {image_id}")
    return row


def search_text(query: str, k: int, filters: Filters | None = None) -> list[Hit]:
    """The k images nearest a description (SearchError when it cannot be answered)."""
    browse = get_browse()
    return browse.search.by_vector(browse.text_vector(query), k, filters=filters)


def search_upload(data: bytes, k: int, filters: Filters | None = None) -> list[Hit]:
    """The k images nearest an uploaded image (BadUpload when it is not a usable image)."""
    browse = get_browse()
    return browse.search.by_vector(browse.image_vector(data), k, filters=filters)


def similar_to(image_id: int, k: int,
               filters: Filters | None = None) -> tuple[ImageRow, list[Hit] | None]:
    """An image and its nearest neighbours by stored embedding (None when it has no embedding)."""
    try:
        hits = get_browse().search.similar_to(image_id, k, filters)
    except ImageNotFound as exc:
        abort(404, str(exc))
    return get_image(image_id), hits


def neighbours_in_order(image_id: int,
                        filters: Filters | None = None) -> tuple[int | None, int | None]:
    """The newer and older image ids in the (filtered) timeline, for keyboard navigation."""
    return get_browse().catalogue().neighbours_in_order(image_id, filters)


def folders(parent: str | None) -> tuple[list[Folder], int]:
    """The sub-folders of `parent` with counts and covers, and how many files lie directly in it."""
    browse = get_browse()
    found: list[FolderRow] = browse.folder_list(parent)
    covers = {row.id: row for row in browse.catalogue().get_images(
        [f.cover_id for f in found if f.cover_id is not None])}
    prefix = f"{parent}/" if parent else ""
    albums = [Folder(f.name, prefix + f.name, f.images, covers.get(f.cover_id))
              for f in found if f.name is not None]
    return albums, sum(f.images for f in found if f.name is None)


def breadcrumbs(folder: str | None) -> list[tuple[str, str]]:
    """(name, path) of each folder from the top down to `folder`."""
    parts = (folder or "").split("/") if folder else []
    return [(name, "/".join(parts[: i + 1])) for i, name in enumerate(parts)]


# --- cursors -------------------------------------------------------------------------


def encode_cursor(row: ImageRow) -> str:
    """An exact keyset cursor: the row's taken_at in microseconds since 1970 (its wall-clock
    time, or "u" while undated) and its id."""
    if row.taken_at is None:
        return f"{UNDATED}.{row.id}"
    micros = (row.taken_at - _NAIVE_EPOCH) // timedelta(microseconds=1)
    return f"{micros}.{row.id}"


def decode_cursor(value: str) -> TimelineKey:
    """The (taken_at, id) a cursor names; ValueError when it is not one of ours.

    Both numbers are checked against what datetime and a bigint can hold, so a crafted
    cursor is a 400, never an overflow.
    """
    match = _CURSOR.fullmatch(value)
    image_id = int(match[2]) if match else 0
    if not match or not 0 < image_id <= MAX_ID:
        raise ValueError(f"not a page cursor: {value[:40]!r}")
    if match[1] == UNDATED:
        return None, image_id
    micros = int(match[1])
    if not _MICROS[0] <= micros <= _MICROS[1]:
        raise ValueError(f"not a page cursor: {value[:40]!r}")
    return _NAIVE_EPOCH + timedelta(microseconds=micros), image_id


# --- how an image is addressed and described -------------------------------------------


def thumbnail_src(row: ImageRow) -> str | None:
    """Where the grid loads this image's thumbnail from (never the original)."""
    if not row.thumbnail_key:
        return None
    return get_browse().storage.thumbnail_url(row.thumbnail_key) or url_for(
        "browse.thumbnail", key=row.thumbnail_key)


def original_src(row: ImageRow) -> str:
    """Where the full image is."""
    return get_browse().storage.original_url(row.filename) or url_for(
        "browse.original", key=row.filename)


def display_src(row: ImageRow) -> str | None:
    """What the image page shows: the original when browsers can show it, else the thumbnail."""
    if (row.format or "").upper() in BROWSER_FORMATS:
        return original_src(row)
    return thumbnail_src(row)


def image_json(row: ImageRow, similarity: float | None = None) -> dict:
    """An image as the JSON API describes it."""
    out = {
        "id": row.id,
        "filename": row.filename,
        "width": row.width,
        "height": row.height,
        "byte_size": row.byte_size,
        "format": row.format,
        "sha256": row.sha256,
        "modified_at": modified_at(row),
        "created_at": row.created_at.isoformat(),
        "embedded": row.embedded,
        "embedding_model": row.embedding_model,
        "taken_at": taken_at(row),
        "taken_at_is_fallback": row.taken_at_is_fallback,
        "camera": row.camera,
        "latitude": row.latitude,
        "longitude": row.longitude,
        "folder": row.folder,
        "thumbnail_url": _public(thumbnail_src(row)),
        "original_url": _public(original_src(row)),
        "page_url": _public(url_for("browse.image_page", image_id=row.id)),
    }
    if similarity is not None:
        out["similarity"] = round(similarity, 6)
    return out


def taken_at(row: ImageRow) -> str | None:
    """When the photo was taken, ISO 8601: wall-clock time, with its UTC offset when known."""
    if row.taken_at is None:
        return None
    if row.taken_offset_minutes is None:
        return row.taken_at.isoformat()
    zone = timezone(timedelta(minutes=row.taken_offset_minutes))
    return row.taken_at.replace(tzinfo=zone).isoformat()


def taken_text(row: ImageRow) -> str | None:
    """When the photo was taken, for people: "2008-10-22 16:28:39", "… (UTC+02:00)"."""
    if row.taken_at is None:
        return None
    text = row.taken_at.strftime("%Y-%m-%d %H:%M:%S")
    if row.taken_offset_minutes is None:
        return text
    sign = "-" if row.taken_offset_minutes < 0 else "+"
    hours, minutes = divmod(abs(row.taken_offset_minutes), 60)
    return f"{text} (UTC{sign}{hours:02d}:{minutes:02d})"


def map_link(row: ImageRow) -> str | None:
    """OpenStreetMap centred on where the photo was taken (a link: no map is loaded here)."""
    if row.latitude is None or row.longitude is None:
        return None
    return OSM.format(lat=row.latitude, lon=row.longitude)


def place(row: ImageRow) -> str | None:
    """The position for people: "43.46745° N, 11.88513° E"."""
    if row.latitude is None or row.longitude is None:
        return None
    lat = f"{abs(row.latitude):.5f}° {'N' if row.latitude >= 0 else 'S'}"
    return f"{lat}, {abs(row.longitude):.5f}° {'E' if row.longitude >= 0 else 'W'}"


def display_name(name: str) -> str:
    """A file name as pages show it: characters that reorder or hide text made visible.

    A right-to-left override (U+202E) would make "x" + U+202E + "ABC.jpg" read "xgpj.CBA", and
    control characters (a newline) would vanish; each is shown as its code point instead.
    The JSON API and links keep the real name.
    """
    return HIDDEN.sub(lambda m: f"[U+{ord(m[0]):04X}]", name)


def title_name(name: str) -> str:
    """display_name() isolated for plain text (a page title): no direction leaks past it."""
    return f"\u2068{display_name(name)}\u2069"  # FIRST STRONG ISOLATE ... POP DIRECTIONAL ISOLATE


def modified_at(row: ImageRow) -> str | None:
    """The file's modification time as ISO 8601, when known."""
    if row.mtime_ns is None:
        return None
    return datetime.fromtimestamp(row.mtime_ns / 1e9, tz=timezone.utc).isoformat(timespec="seconds")


def _public(url: str | None) -> str | None:
    """A URL as the JSON gives it: under BROWSE_PUBLIC_URL when set, else relative to this server.

    Never built from the request's Host header, which the client chooses.
    """
    base = get_browse().settings.web.public_url
    if url is None or base is None or url.startswith(("http://", "https://")):
        return url
    return base + url
