"""The catalogue of images: what `loader sync` writes, and what the pages and search read."""

from __future__ import annotations

from datetime import datetime
from typing import Callable, Iterable, Sequence

import numpy as np
import psycopg
from psycopg.rows import class_row

from .rows import IMAGE_COLUMNS, Counts, ImageRecord, ImageRow, KnownFile


PGVECTOR_MAX_EF_SEARCH = 1000  # pgvector refuses more


class Catalogue:
    """Reads and writes image rows on one connection, a method per query."""

    def __init__(self, conn: psycopg.Connection) -> None:
        self.conn = conn

    # --- sync's writes ------------------------------------------------------------

    def known_files(self) -> dict[str, KnownFile]:
        """Every row's change markers, keyed by filename."""
        with self.conn.cursor(row_factory=class_row(KnownFile)) as cur:
            cur.execute(
                """SELECT filename, byte_size, mtime_ns, sha256,
                          thumbnail_key IS NOT NULL AS has_thumbnail,
                          missing_since IS NOT NULL AS missing
                   FROM image_embeddings"""
            )
            return {row.filename: row for row in cur}

    def upsert_images(self, records: Iterable[ImageRecord]) -> None:
        """Insert or update rows; a row whose content changed loses its stale embedding."""
        params = [
            (r.filename, r.width, r.height, r.byte_size, r.sha256, r.format, r.mtime_ns,
             r.thumbnail_key)
            for r in records
        ]
        if not params:
            return
        changed = "image_embeddings.sha256 IS DISTINCT FROM EXCLUDED.sha256"
        with self.conn.transaction(), self.conn.cursor() as cur:
            cur.executemany(
                f"""INSERT INTO image_embeddings
                       (filename, width, height, byte_size, sha256, format, mtime_ns, thumbnail_key)
                   VALUES (%s, %s, %s, %s, %s, %s, %s, %s)
                   ON CONFLICT (filename) DO UPDATE SET
                       width = EXCLUDED.width, height = EXCLUDED.height,
                       byte_size = EXCLUDED.byte_size, format = EXCLUDED.format,
                       mtime_ns = EXCLUDED.mtime_ns, thumbnail_key = EXCLUDED.thumbnail_key,
                       sha256 = EXCLUDED.sha256, missing_since = NULL,
                       embedding = CASE WHEN {changed} THEN NULL
                                        ELSE image_embeddings.embedding END,
                       embedding_model = CASE WHEN {changed} THEN NULL
                                              ELSE image_embeddings.embedding_model END,
                       embedded_at = CASE WHEN {changed} THEN NULL
                                          ELSE image_embeddings.embedded_at END,
                       last_error = CASE WHEN {changed} THEN NULL
                                         ELSE image_embeddings.last_error END,
                       attempts = CASE WHEN {changed} THEN 0 ELSE image_embeddings.attempts END,
                       updated_at = now()""",
                params,
            )

    def touch_files(self, changes: Iterable[tuple[str, int, int]]) -> None:
        """Record a new (size, mtime) for files, given as (name, size, mtime), whose hash held."""
        params = [(mtime, size, name) for name, size, mtime in changes]
        if params:
            with self.conn.transaction(), self.conn.cursor() as cur:
                cur.executemany(
                    "UPDATE image_embeddings SET mtime_ns = %s, byte_size = %s WHERE filename = %s",
                    params,
                )

    def hide(self, filenames: list[str]) -> int:
        """Hide the rows of files gone from the folder, keeping them (and their embeddings) for
        when the files come back; return how many were newly hidden."""
        if not filenames:
            return 0
        return self.conn.execute(
            """UPDATE image_embeddings SET missing_since = now(), updated_at = now()
               WHERE filename = ANY(%s) AND missing_since IS NULL""",
            (filenames,),
        ).rowcount

    def restore(self, filenames: list[str]) -> int:
        """Show again the hidden rows of files that are back; return how many were hidden."""
        if not filenames:
            return 0
        return self.conn.execute(
            """UPDATE image_embeddings SET missing_since = NULL, updated_at = now()
               WHERE filename = ANY(%s) AND missing_since IS NOT NULL""",
            (filenames,),
        ).rowcount

    def delete_images(self, filenames: list[str]) -> list[str]:
        """Delete rows; return the thumbnail keys no remaining row refers to."""
        if not filenames:
            return []
        with self.conn.transaction():
            gone = self.conn.execute(
                "DELETE FROM image_embeddings WHERE filename = ANY(%s) RETURNING thumbnail_key",
                (filenames,),
            ).fetchall()
            keys = sorted({key for (key,) in gone if key})
            still_used = {
                key
                for (key,) in self.conn.execute(
                    "SELECT DISTINCT thumbnail_key FROM image_embeddings WHERE thumbnail_key = ANY(%s)",
                    (keys,),
                ).fetchall()
            }
        return [key for key in keys if key not in still_used]

    # --- reads --------------------------------------------------------------------

    def counts(self) -> Counts:
        """How many images there are, embedded, waiting, and failed."""
        with self.conn.cursor(row_factory=class_row(Counts)) as cur:
            return cur.execute(
                """SELECT count(*) AS images,
                          count(embedding) AS embedded,
                          count(*) FILTER (WHERE embedding IS NULL AND last_error IS NULL) AS waiting,
                          count(*) FILTER (WHERE embedding IS NULL AND last_error IS NOT NULL)
                              AS failed
                   FROM image_embeddings WHERE missing_since IS NULL"""
            ).fetchone()

    def hidden_count(self) -> int:
        """How many rows are hidden because their files are gone from the folder."""
        return self.conn.execute(
            "SELECT count(*) FROM image_embeddings WHERE missing_since IS NOT NULL"
        ).fetchone()[0]

    def version(self) -> str:
        """A marker that changes whenever the visible library changes (rows added, changed,
        embedded, hidden, restored or deleted): the pages compare it to update themselves."""
        count, changed = self.conn.execute(
            "SELECT count(*) FILTER (WHERE missing_since IS NULL), max(updated_at) FROM image_embeddings"
        ).fetchone()
        return f"{count}:{changed.timestamp() if changed else 0:.6f}"

    def list_images(self, limit: int, before: tuple[datetime, int] | None = None) -> list[ImageRow]:
        """A page of the library, newest first; `before` is the (created_at, id) of the last row seen."""
        with self._rows() as cur:
            if before is None:
                cur.execute(
                    f"""SELECT {IMAGE_COLUMNS} FROM image_embeddings WHERE missing_since IS NULL
                        ORDER BY created_at DESC, id DESC LIMIT %s""",
                    (limit,),
                )
            else:
                # A row comparison walks the (created_at DESC, id DESC) index: no OFFSET, no skips.
                cur.execute(
                    f"""SELECT {IMAGE_COLUMNS} FROM image_embeddings
                        WHERE (created_at, id) < (%s, %s) AND missing_since IS NULL
                        ORDER BY created_at DESC, id DESC LIMIT %s""",
                    (before[0], before[1], limit),
                )
            return cur.fetchall()

    def get_image(self, image_id: int) -> ImageRow | None:
        """One row by id, or None."""
        with self._rows() as cur:
            return cur.execute(
                f"SELECT {IMAGE_COLUMNS} FROM image_embeddings WHERE id = %s AND missing_since IS NULL",
                (image_id,),
            ).fetchone()

    def get_image_by_filename(self, filename: str) -> ImageRow | None:
        """One row by its file name (the storage key), or None."""
        with self._rows() as cur:
            return cur.execute(
                f"""SELECT {IMAGE_COLUMNS} FROM image_embeddings
                    WHERE filename = %s AND missing_since IS NULL""",
                (filename,),
            ).fetchone()

    def neighbours_in_order(self, image_id: int) -> tuple[int | None, int | None]:
        """The ids just newer and just older than this image in library order."""
        row = self.conn.execute(
            """SELECT
                 (SELECT n.id FROM image_embeddings n WHERE (n.created_at, n.id) > (i.created_at, i.id)
                    AND n.missing_since IS NULL
                  ORDER BY n.created_at, n.id LIMIT 1),
                 (SELECT o.id FROM image_embeddings o WHERE (o.created_at, o.id) < (i.created_at, i.id)
                    AND o.missing_since IS NULL
                  ORDER BY o.created_at DESC, o.id DESC LIMIT 1)
               FROM image_embeddings i WHERE i.id = %s""",
            (image_id,),
        ).fetchone()
        return (row[0], row[1]) if row else (None, None)

    def embedding_of(self, image_id: int) -> np.ndarray | None:
        """The stored embedding of one image, or None when it has none (yet)."""
        row = self.conn.execute(
            "SELECT embedding FROM image_embeddings WHERE id = %s", (image_id,)
        ).fetchone()
        if row is None or row[0] is None:
            return None
        return np.asarray(row[0].to_numpy(), dtype=np.float32)

    def nearest(
        self, vector: np.ndarray, k: int, *, ef_search: int, exclude_id: int | None = None,
        exact: bool = False, timeout_ms: int = 10_000,
    ) -> list[tuple[ImageRow, float]]:
        """The `k` rows closest to `vector` by cosine distance, with their distances.

        The HNSW index is searched with `hnsw.ef_search` (at least k); `exact` scans every
        row instead, for measuring recall.
        """
        want = k + (1 if exclude_id is not None else 0)
        with self.conn.transaction():
            self.conn.execute(
                "SELECT set_config('hnsw.ef_search', %s, true), "
                "set_config('statement_timeout', %s, true)",
                (str(min(PGVECTOR_MAX_EF_SEARCH, max(ef_search, want))), str(int(timeout_ms))),
            )
            if exact:
                self.conn.execute("SELECT set_config('enable_indexscan', 'off', true)")
            with self.conn.cursor(row_factory=_row_and_distance) as cur:
                found = cur.execute(
                    f"""SELECT {IMAGE_COLUMNS}, embedding <=> %s AS distance
                        FROM image_embeddings WHERE embedding IS NOT NULL AND missing_since IS NULL
                        ORDER BY embedding <=> %s LIMIT %s""",
                    (vector, vector, want),
                ).fetchall()
        return [(row, distance) for row, distance in found if row.id != exclude_id][:k]

    def _rows(self) -> psycopg.Cursor[ImageRow]:
        return self.conn.cursor(row_factory=class_row(ImageRow))


def _row_and_distance(cursor: psycopg.Cursor) -> Callable[[Sequence], tuple[ImageRow, float]]:
    """Row factory: an ImageRow from every column but the last, and the last as a distance."""
    names = [column.name for column in cursor.description or ()][:-1]

    def make(values: Sequence) -> tuple[ImageRow, float]:
        return ImageRow(**dict(zip(names, values[:-1]))), float(values[-1])

    return make
