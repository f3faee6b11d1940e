"""Loading many rows at once (benchmarks, imports): binary COPY, with the vector index built after."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Iterable

import numpy as np
import psycopg

from ..photo_metadata import METADATA_VERSION
from .schema import TABLE

_COLUMNS = ("id, filename, width, height, byte_size, sha256, format, mtime_ns, thumbnail_key, "
            "embedding, embedding_model, embedded_at, created_at, taken_at, "
            "taken_at_is_fallback, camera, latitude, longitude, metadata_version")
_TYPES = ["int8", "text", "int4", "int4", "int8", "text", "text", "int8", "text", "vector",
          "text", "timestamptz", "timestamptz", "timestamp", "bool", "text", "float8", "float8",
          "int2"]


@dataclass(frozen=True)
class BulkImage:
    """One row as a bulk load writes it, embedding included."""

    id: int
    filename: str
    width: int
    height: int
    byte_size: int
    sha256: str
    format: str
    mtime_ns: int
    thumbnail_key: str | None
    embedding: np.ndarray | None
    embedding_model: str | None
    embedded_at: datetime | None
    created_at: datetime
    taken_at: datetime | None = None  # naive wall-clock time; None: not read yet
    taken_at_is_fallback: bool | None = None
    camera: str | None = None
    latitude: float | None = None
    longitude: float | None = None


def copy_images(conn: psycopg.Connection, rows: Iterable[BulkImage]) -> int:
    """Append rows with binary COPY (ids given), then move the id sequence past them."""
    count, top = 0, 0
    with conn.cursor() as cur, cur.copy(
        f"COPY {TABLE} ({_COLUMNS}) FROM STDIN WITH (FORMAT BINARY)"
    ) as copy:
        copy.set_types(_TYPES)
        for r in rows:
            copy.write_row([r.id, r.filename, r.width, r.height, r.byte_size, r.sha256, r.format,
                            r.mtime_ns, r.thumbnail_key, r.embedding, r.embedding_model,
                            r.embedded_at, r.created_at, r.taken_at, r.taken_at_is_fallback,
                            r.camera, r.latitude, r.longitude,
                            METADATA_VERSION if r.taken_at is not None else 0])
            count, top = count + 1, max(top, r.id)
    if count:
        conn.execute(
            "SELECT setval(pg_get_serial_sequence(%s, 'id'), "
            "greatest(%s, (SELECT max(id) FROM image_embeddings)))",
            (TABLE, top),
        )
    return count
