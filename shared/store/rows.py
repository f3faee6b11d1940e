"""The shapes rows take on their way in and out of the database."""

from __future__ import annotations

import posixpath
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple

from ..photo_metadata import PhotoMetadata


@dataclass(frozen=True)
class ImageRow:
    """One image as the pages, the API and search show it."""

    id: int
    filename: str
    width: int | None
    height: int | None
    byte_size: int | None
    sha256: str | None
    format: str | None
    mtime_ns: int | None
    thumbnail_key: str | None
    created_at: datetime
    embedded: bool
    embedding_model: str | None
    # What the photo says about itself; taken_at is None until sync has read it.
    taken_at: datetime | None = None  # naive wall-clock time where it was taken
    taken_offset_minutes: int | None = None
    taken_at_is_fallback: bool | None = None  # the file's modification time stands in
    camera: str | None = None
    latitude: float | None = None
    longitude: float | None = None

    @property
    def folder(self) -> str:
        """The folder of images/ the file is in ("" for the top), by its POSIX file name."""
        return posixpath.dirname(self.filename)


# The SELECT list that fills an ImageRow, in its field order.
IMAGE_COLUMNS = (
    "id, filename, width, height, byte_size, sha256, format, mtime_ns, thumbnail_key, "
    "created_at, embedding IS NOT NULL AS embedded, embedding_model, taken_at, "
    "taken_offset_minutes, taken_at_is_fallback, camera, latitude, longitude"
)


@dataclass(frozen=True)
class ImageRecord:
    """One image's row as `loader sync` writes it."""

    filename: str
    width: int
    height: int
    byte_size: int
    sha256: str
    format: str
    mtime_ns: int
    thumbnail_key: str | None
    metadata: PhotoMetadata | None = None  # None keeps what the row has


class KnownFile(NamedTuple):
    """What the database remembers of a file, to tell whether it changed (a named tuple: sync
    reads one per row, a million at a time)."""

    filename: str
    byte_size: int | None
    mtime_ns: int | None
    sha256: str | None
    has_thumbnail: bool
    has_metadata: bool = True  # read with the current METADATA_VERSION
    missing: bool = False  # hidden: the file was gone at the last sync


@dataclass(frozen=True)
class Counts:
    """How many images there are, and where they stand with embeddings."""

    images: int
    embedded: int
    waiting: int
    failed: int

    def as_dict(self) -> dict[str, int]:
        """A JSON-ready copy."""
        return {"images": self.images, "embedded": self.embedded, "waiting": self.waiting,
                "failed": self.failed}


@dataclass(frozen=True)
class Claim:
    """A row claimed for embedding: `lead` rows are embedded, the others share their vector."""

    id: int
    filename: str
    sha256: str | None
    lead: bool
