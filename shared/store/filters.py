"""Narrowing the library: a folder's subtree, a span of days, a camera, having a position.

The same `Filters` narrow the timeline, text search, search by image and similar images; this
module turns them into one SQL condition with its values as parameters.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import date, datetime, time, timedelta
from typing import Any


@dataclass(frozen=True)
class Filters:
    """What a page or a search is narrowed to; None everywhere means the whole library."""

    folder: str | None = None  # a subtree: "Italy" holds Italy/a.jpg and Italy/Rome/b.jpg
    taken_after: date | None = None  # taken on this day or later
    taken_before: date | None = None  # taken on this day or earlier
    camera: str | None = None  # as shown, e.g. "NIKON COOLPIX P6000"
    has_location: bool | None = None  # True: with a GPS position; False: without one

    def __post_init__(self) -> None:
        folder = (self.folder or "").strip("/") or None
        object.__setattr__(self, "folder", folder)  # "Italy/" and "/Italy" are "Italy"

    def __bool__(self) -> bool:
        return any(getattr(self, f.name) is not None for f in fields(self))

    def without(self, name: str) -> Filters:
        """The same filters less one (a chip's remove link)."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values[name] = None
        return Filters(**values)


NO_FILTERS = Filters()


def filter_condition(filters: Filters | None) -> tuple[str, dict[str, Any]]:
    """A SQL condition that passes the rows these filters let through (every shown row when
    unfiltered) and its named parameters, all prefixed `f_`.

    Every part can use an index: the subtree is a range of file names in byte order (the
    `filename COLLATE "C"` index), days are a range of `taken_at`, the camera an equality.
    """
    filters = filters or NO_FILTERS
    # Hidden rows (their files are gone from the folder, issue 12) are never read.
    parts, params = ["missing_since IS NULL"], {}
    if filters.folder is not None:
        parts.append('(filename COLLATE "C") >= %(f_lo)s AND (filename COLLATE "C") < %(f_hi)s')
        params.update(f_lo=filters.folder + "/", f_hi=filters.folder + "0")  # "0" follows "/"
    if filters.taken_after is not None:
        parts.append("taken_at >= %(f_after)s")
        params["f_after"] = datetime.combine(filters.taken_after, time())
    if filters.taken_before is not None and filters.taken_before < date.max:
        parts.append("taken_at < %(f_before)s")  # before the next day begins
        params["f_before"] = datetime.combine(filters.taken_before + timedelta(days=1), time())
    elif filters.taken_before is not None:
        parts.append("taken_at IS NOT NULL")
    if filters.camera is not None:
        parts.append("camera = %(f_camera)s")
        params["f_camera"] = filters.camera
    if filters.has_location is True:
        parts.append("latitude IS NOT NULL")
    elif filters.has_location is False:
        parts.append("latitude IS NULL")
    return " AND ".join(parts), params
