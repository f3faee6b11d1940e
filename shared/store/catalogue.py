"""The catalogue of images: what `loader sync` writes, and what the pages and search read."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Callable, Iterable, Sequence

import numpy as np
import psycopg
from psycopg.rows import class_row

from ..photo_metadata import METADATA_VERSION, PhotoMetadata
from .filters import Filters, filter_condition
from .layout import VectorLayout
from .rows import IMAGE_COLUMNS, Counts, ImageRecord, ImageRow, KnownFile
from .vector_index import VectorIndex

# A place in the timeline: (taken_at, id) of a row; taken_at is None for rows not dated yet.
TimelineKey = tuple[datetime | None, int]
# Queries narrowed by filters are never prepared: their best plan depends on the values (a
# generic plan for `camera = $1`, which Postgres picks after a few runs of a prepared
# statement, took 70-100 ms where the value's own plan takes 1 ms, docs/benchmarks.md).
# The timeline's order (newest taken first, undated last) and its reverse; the
# image_embeddings_taken_idx index is walked in one direction or the other.
OLDER = "taken_at DESC NULLS LAST, id DESC"
NEWER = "taken_at ASC NULLS FIRST, id ASC"
METADATA_COLUMNS = ("taken_at", "taken_offset_minutes", "taken_at_is_fallback", "camera_make",
                    "camera_model", "camera", "latitude", "longitude", "metadata_version")
_METADATA_TYPES = ("timestamp", "smallint", "boolean", "text", "text", "text", "float8", "float8",
                   "smallint")
# upsert_images's columns as arrays, one parameter each (unnest turns them back into rows).
_ARRAYS = ", ".join(f"%s::{t}[]" for t in ("text", "integer", "integer", "bigint", "text", "text",
                                             "bigint", "text", *_METADATA_TYPES))


@dataclass(frozen=True)
class FolderRow:
    """One sub-folder (or, with name None, the files directly in the folder asked about)."""

    name: str | None
    images: int
    cover_id: int | None


PGVECTOR_MAX_EF_SEARCH = 1000  # pgvector refuses more
# A filtered walk of the graph (iterative scan) stops as soon as enough rows pass the filter,
# so the first ones it meets win even when nearer ones lie a step further. Asking it for this
# many and keeping the best k raised filtered recall@10 by 0.01-0.15 (to 0.85-0.97) on the
# 100,000-photo benchmark, for 1.2-3.2x the time (docs/benchmarks.md, issue 10's re-run).
# The least a search asks for: it asks for more when the filter lets many rows through
# (shared/search.py, FILTERED_CANDIDATES_MOST).
FILTERED_CANDIDATES = 40
# An exact scan ranks the rows by their half-precision copies (about 3 significant digits),
# then this many times the rows asked for by their float32 distances: only rows whose rough
# distances lie within rounding of the k-th can change places, and they are all in.
EXACT_SHORTLIST = 3


class Catalogue:
    """Reads and writes image rows on one connection, a method per query."""

    def __init__(self, conn: psycopg.Connection) -> None:
        self.conn = conn

    # --- sync's writes ------------------------------------------------------------

    def known_files(self) -> dict[str, KnownFile]:
        """Every row's change markers, keyed by filename."""
        rows = self.conn.execute(
            """SELECT filename, byte_size, mtime_ns, sha256,
                      thumbnail_key IS NOT NULL AS has_thumbnail,
                      metadata_version >= %s AS has_metadata,
                      missing_since IS NOT NULL AS missing
               FROM image_embeddings""",
            (METADATA_VERSION,), binary=True,  # binary: a million rows parse faster
        ).fetchall()
        # Plain tuples, then positional arguments: a row factory costs twice as much per row.
        return {row[0]: KnownFile(*row) for row in rows}

    def upsert_images(self, records: Iterable[ImageRecord]) -> None:
        """Insert or update rows; a row whose content changed loses its stale embedding.

        A record without metadata keeps the row's (a new row then waits for sync to read it).
        One statement for the whole batch (the database's counters are then updated once,
        at its end; counters.py says why that matters).
        """
        latest = {r.filename: r for r in records}  # one row may be changed once per statement
        if not latest:
            return
        rows = [(r.filename, r.width, r.height, r.byte_size, r.sha256, r.format, r.mtime_ns,
                 r.thumbnail_key, *_metadata_values(r.metadata)) for r in latest.values()]
        changed = "image_embeddings.sha256 IS DISTINCT FROM EXCLUDED.sha256"
        read = "EXCLUDED.metadata_version > 0"
        keep_or_take = ", ".join(
            f"{c} = CASE WHEN {read} THEN EXCLUDED.{c} ELSE image_embeddings.{c} END"
            for c in METADATA_COLUMNS
        )
        self.conn.execute(
            f"""INSERT INTO image_embeddings
                   (filename, width, height, byte_size, sha256, format, mtime_ns, thumbnail_key,
                    {", ".join(METADATA_COLUMNS)})
               SELECT * FROM unnest({_ARRAYS})
               ON CONFLICT (filename) DO UPDATE SET
                   width = EXCLUDED.width, height = EXCLUDED.height,
                   byte_size = EXCLUDED.byte_size, format = EXCLUDED.format,
                   mtime_ns = EXCLUDED.mtime_ns, thumbnail_key = EXCLUDED.thumbnail_key,
                   sha256 = EXCLUDED.sha256, missing_since = NULL, {keep_or_take},
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
            [list(column) for column in zip(*rows)],
        )

    def touch_files(self, changes: Iterable[tuple[str, int, int, PhotoMetadata]]) -> None:
        """Record a new (size, mtime) and the metadata just read of files whose hash held.

        Nothing else changes: not the thumbnail, not the embedding. updated_at moves, so that
        live pages show a date just read. One statement for the whole batch.
        """
        rows = [(name, mtime, size, *_metadata_values(meta))
                for name, size, mtime, meta in changes]
        if not rows:
            return
        types = ["text", "bigint", "bigint", *_METADATA_TYPES]
        names = ["filename", "mtime_ns", "byte_size", *METADATA_COLUMNS]
        self.conn.execute(
            f"""UPDATE image_embeddings t SET mtime_ns = v.mtime_ns, byte_size = v.byte_size,
                    updated_at = now(), {", ".join(f"{c} = v.{c}" for c in METADATA_COLUMNS)}
                FROM unnest({", ".join(f"%s::{t}[]" for t in types)}) AS v({", ".join(names)})
                WHERE t.filename = v.filename""",
            [list(column) for column in zip(*rows)],
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
        """How many images there are, embedded, waiting, and failed (kept by the database's
        counters, shared/store/counters.py: no rows are counted here)."""
        with self.conn.cursor(row_factory=class_row(Counts)) as cur:
            found = cur.execute(
                """SELECT images, embedded, waiting, failed FROM image_browser_counts
                   WHERE scope = 'library' AND key = ''"""
            ).fetchone()
        return found or Counts(0, 0, 0, 0)

    def hidden_count(self) -> int:
        """How many rows are hidden because their files are gone from the folder."""
        row = self.conn.execute(
            "SELECT hidden FROM image_browser_counts WHERE scope = 'library' AND key = ''"
        ).fetchone()
        return row[0] if row else 0

    def version(self) -> str:
        """A marker that changes whenever the visible library changes (rows added, changed,
        embedded, hidden, restored or deleted): the pages compare it to update themselves.
        Two index reads: the shown count (a deletion moves it) and the latest change."""
        count, changed = self.conn.execute(
            """SELECT (SELECT images FROM image_browser_counts
                       WHERE scope = 'library' AND key = ''),
                      (SELECT max(updated_at) FROM image_embeddings)"""
        ).fetchone()
        return f"{count or 0}:{changed.timestamp() if changed else 0:.6f}"

    def list_images(
        self, limit: int, before: TimelineKey | None = None, filters: Filters | None = None
    ) -> list[ImageRow]:
        """A page of the timeline, newest taken first; `before` is the key of the last row seen."""
        return self._walk(limit, before, filters, older=True)

    def _walk(self, limit: int, key: TimelineKey | None, filters: Filters | None,
              older: bool) -> list[ImageRow]:
        """Up to `limit` rows from `key` on, in timeline order (older) or its reverse.

        Each branch is a range of the timeline index; UNION ALL joins the dated rows and the
        undated ones after them, so a page that straddles the two never skips or repeats.
        """
        where, params = filter_condition(filters)
        order = OLDER if older else NEWER
        params.update(limit=limit, t=key[0] if key else None, i=key[1] if key else None)
        branches = [
            f"""SELECT {IMAGE_COLUMNS} FROM image_embeddings WHERE {where} AND {after}
                ORDER BY {order} LIMIT %(limit)s"""
            for after in _keyset(key, older)
        ]
        query = branches[0] if len(branches) == 1 else (
            f"SELECT * FROM ({' UNION ALL '.join(f'({b})' for b in branches)}) AS page "
            f"ORDER BY {order} LIMIT %(limit)s")
        with self._rows() as cur:
            return cur.execute(query, params, prepare=False).fetchall()

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

    def neighbours_in_order(
        self, image_id: int, filters: Filters | None = None
    ) -> tuple[int | None, int | None]:
        """The ids just newer and just older than this image in the (filtered) timeline."""
        row = self.get_image(image_id)
        if row is None:
            return None, None
        key = (row.taken_at, row.id)
        newer = self._walk(1, key, filters, older=False)
        older = self._walk(1, key, filters, older=True)
        return (newer[0].id if newer else None), (older[0].id if older else None)

    def get_images(self, ids: list[int]) -> list[ImageRow]:
        """The rows with these ids (in no particular order)."""
        with self._rows() as cur:
            return cur.execute(
                f"""SELECT {IMAGE_COLUMNS} FROM image_embeddings
                    WHERE id = ANY(%s) AND missing_since IS NULL""", (ids,)
            ).fetchall()

    def folders(self, parent: str | None = None) -> list[FolderRow]:
        """The sub-folders of `parent` (None: the top), each with its subtree's image count
        and a cover (its newest photo with a thumbnail); name None counts the files directly
        in `parent`. One pass over the subtree's file names, then one short index walk per
        sub-folder for its cover."""
        where, params = filter_condition(Filters(folder=parent))
        prefix = params.get("f_lo", "")
        params["skip"] = len(prefix) + 1  # substr() counts from 1
        counts = self.conn.execute(
            f"""SELECT CASE WHEN strpos(rest, '/') > 0 THEN split_part(rest, '/', 1) END, count(*)
                FROM (SELECT substr(filename, %(skip)s) AS rest FROM image_embeddings
                      WHERE {where}) AS below
                GROUP BY 1""",
            params, prepare=False,
        ).fetchall()
        names = sorted(name for name, _ in counts if name is not None)
        covers = dict(self.conn.execute(
            f"""SELECT sub.name, cover.id FROM unnest(%(names)s::text[]) AS sub(name)
                CROSS JOIN LATERAL (
                    SELECT id FROM image_embeddings
                    WHERE (filename COLLATE "C") >= %(prefix)s || sub.name || '/'
                      AND (filename COLLATE "C") < %(prefix)s || sub.name || '0'
                      AND thumbnail_key IS NOT NULL AND missing_since IS NULL
                    ORDER BY {OLDER} LIMIT 1) AS cover""",
            {"names": names, "prefix": prefix}, prepare=False,
        ).fetchall())
        rows = [FolderRow(name, images, covers.get(name)) for name, images in counts]
        return sorted(rows, key=lambda f: (f.name is None, f.name or ""))

    def cameras(self) -> list[tuple[str, int]]:
        """Every camera that took a photo here, with how many, most used first."""
        return [(camera, count) for camera, count in self.conn.execute(
            """SELECT key, images FROM image_browser_counts
               WHERE scope = 'camera' AND images > 0 ORDER BY images DESC, key"""
        ).fetchall()]

    def count_matching(self, filters: Filters | None, cap: int) -> int:
        """How many embedded rows the filters let through, counting no further than `cap`
        (so that asking costs at most `cap` rows, however many match)."""
        where, params = filter_condition(filters)
        params["cap"] = cap
        return self.conn.execute(
            f"""SELECT count(*) FROM (SELECT 1 FROM image_embeddings
                WHERE embedding IS NOT NULL AND {where} LIMIT %(cap)s) s""",
            params, prepare=False,
        ).fetchone()[0]

    def estimate_matching(self, filters: Filters | None) -> int:
        """The planner's estimate of how many embedded rows the filters let through: no row
        is read, and it may be off by a factor (more for combined filters)."""
        where, params = filter_condition(filters)
        plan = self.conn.execute(
            f"""EXPLAIN (FORMAT JSON) SELECT 1 FROM image_embeddings
                WHERE embedding IS NOT NULL AND {where}""",
            params, prepare=False,
        ).fetchone()[0]
        return int(plan[0]["Plan"]["Plan Rows"])

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
        filters: Filters | None = None, exact: bool = False, max_scan_tuples: int = 20_000,
        iterative_scan: str = "relaxed_order", timeout_ms: int = 10_000,
        layout: VectorLayout | None = None, candidates: int = FILTERED_CANDIDATES,
    ) -> list[tuple[ImageRow, float]]:
        """The `k` rows closest to `vector` by cosine distance among those the filters let
        through, with their distances, nearest first.

        The HNSW index is searched with `hnsw.ef_search` (at least k) and pgvector's iterative
        scan, which goes on past ef_search candidates until k rows pass the filters or
        `max_scan_tuples` were looked at; it may then return fewer than k. `exact` computes the
        distance of every row the filters let through instead (fast when they are few; also
        the reference recall is measured against). `iterative_scan` is pgvector's mode:
        relaxed_order (re-sorted here), strict_order, or off (for measuring what it saves).
        `layout` says which index there is to walk (read from the catalog when not given);
        the distances returned are at the column's precision, whatever the index holds. A
        filtered walk of the index is asked for `candidates` rows, the best k kept.
        """
        want = k + (1 if exclude_id is not None else 0)
        if filters and not exact:
            want = max(want, candidates)
        query, params = self._nearest_query(vector, want, filters, exact, layout)
        with self.conn.transaction():
            self._search_settings(ef_search, want, iterative_scan, max_scan_tuples, exact,
                                  timeout_ms)
            with self.conn.cursor(row_factory=_row_and_distance) as cur:
                rows = cur.execute(query, params, prepare=False).fetchall()
        return _best(rows, k, exclude_id)

    def nearest_among_few(
        self, vector: np.ndarray, k: int, *, cap: int, exclude_id: int | None = None,
        filters: Filters | None = None, timeout_ms: int = 10_000,
    ) -> list[tuple[ImageRow, float]] | None:
        """`nearest(exact=True)` when at most `cap` embedded rows pass the filters, reading
        them once (no count first); None when more do, found after reading `cap` + 1 of them."""
        want = k + (1 if exclude_id is not None else 0)
        query, params = self._nearest_query(vector, want, filters, True, None, cap=cap)
        with self.conn.transaction():
            self._search_settings(want, want, "relaxed_order", 20_000, True, timeout_ms)
            with self.conn.cursor(row_factory=_row_scanned_and_distance) as cur:
                rows = cur.execute(query, params, prepare=False).fetchall()
        if rows and rows[0][1] > cap:
            return None
        return _best([(row, distance) for row, _, distance in rows], k, exclude_id)

    def nearest_plan(
        self, vector: np.ndarray, k: int, *, ef_search: int, filters: Filters | None = None,
        exact: bool = False, layout: VectorLayout | None = None,
    ) -> list[str]:
        """The plan Postgres makes for `nearest` with these arguments (EXPLAIN's lines)."""
        want = max(k, FILTERED_CANDIDATES) if filters and not exact else k
        query, params = self._nearest_query(vector, want, filters, exact, layout)
        with self.conn.transaction():
            self._search_settings(ef_search, want, "relaxed_order", 20_000, exact, 10_000)
            return [line for (line,) in self.conn.execute(
                f"EXPLAIN {query}", params, prepare=False).fetchall()]

    def _nearest_query(self, vector: np.ndarray, want: int, filters: Filters | None,
                       exact: bool, layout: VectorLayout | None,
                       cap: int | None = None) -> tuple[str, dict]:
        """The SQL of `nearest`: its ORDER BY is the index's own expression (`layout.key`).
        An exact scan with a `cap` reads at most `cap` + 1 rows and says how many it read
        (a column before the distance)."""
        where, params = filter_condition(filters)
        params.update(q=vector, want=want)
        distance = "embedding <=> %(q)s"  # at the column's precision, whatever the index holds
        if exact:
            # Every row's distance from its half-precision copy (read in the row; a row
            # embedded before schema v6 and not yet filled reads the float32 column), then the
            # float32 distances of the shortlist's rows alone. No index holds that COALESCE, so
            # the planner reads the filter's rows and keeps the nearest in a top-N sort.
            rough = "COALESCE(embedding_half, embedding::halfvec) <=> %(q)s::halfvec"
            params["shortlist"] = want * EXACT_SHORTLIST
            if cap is None:
                shortlist = f"""SELECT id FROM image_embeddings
                                WHERE embedding IS NOT NULL AND {where}
                                ORDER BY {rough}, id LIMIT %(shortlist)s"""
            else:  # reads at most cap + 1 rows, and says how many it read
                params["over"] = cap + 1
                shortlist = f"""SELECT id, count(*) OVER () AS scanned
                                FROM (SELECT id, {rough} AS rough FROM image_embeddings
                                      WHERE embedding IS NOT NULL AND {where}
                                      LIMIT %(over)s) AS capped
                                ORDER BY rough, id LIMIT %(shortlist)s"""
            return f"""SELECT {IMAGE_COLUMNS}{"" if cap is None else ", shortlist.scanned"},
                              {distance} AS distance
                       FROM ({shortlist}) AS shortlist JOIN image_embeddings USING (id)""", params
        # Only a walk of the index needs to know which one there is. Without a table the query
        # fails as any other read would (UndefinedTable).
        layout = layout or VectorIndex(self.conn).layout() or VectorLayout(None, 0)
        return f"""SELECT {IMAGE_COLUMNS}, {distance} AS distance
                   FROM image_embeddings WHERE embedding IS NOT NULL AND {where}
                   ORDER BY {layout.order_by("%(q)s")} LIMIT %(want)s""", params

    def _search_settings(self, ef_search: int, want: int, iterative_scan: str,
                         max_scan_tuples: int, exact: bool, timeout_ms: int) -> None:
        """pgvector's and the planner's settings for one search, for this transaction only."""
        if iterative_scan not in ("relaxed_order", "strict_order", "off"):
            raise ValueError(f"unknown hnsw.iterative_scan mode {iterative_scan!r}")
        self.conn.execute(
            "SELECT set_config('hnsw.ef_search', %s, true), "
            "set_config('hnsw.iterative_scan', %s, true), "
            "set_config('hnsw.max_scan_tuples', %s, true), "
            "set_config('enable_sort', %s, true), "
            "set_config('statement_timeout', %s, true)",
            (str(min(PGVECTOR_MAX_EF_SEARCH, max(ef_search, want))), iterative_scan,
             str(int(max_scan_tuples)),
             # Every plan but the HNSW walk sorts. The planner would pick a filter's btree
             # and sort all its rows, slow when many match (and exact=False means many
             # do), unless sorting is its last resort.
             "on" if exact else "off", str(int(timeout_ms))),
        )

    def _rows(self) -> psycopg.Cursor[ImageRow]:
        return self.conn.cursor(row_factory=class_row(ImageRow))


def _best(rows: list[tuple[ImageRow, float]], k: int,
          exclude_id: int | None) -> list[tuple[ImageRow, float]]:
    """The k nearest of `rows`, in order, without `exclude_id`: a relaxed_order walk gives
    neighbours only roughly in order, a half-precision index only nearly in the column's
    order; the exact scan's join in none."""
    rows = sorted(rows, key=lambda found: (found[1], found[0].id))
    return [(row, distance) for row, distance in rows if row.id != exclude_id][:k]


def _row_and_distance(cursor: psycopg.Cursor) -> Callable[[Sequence], tuple[ImageRow, float]]:
    """Row factory: an ImageRow from every column but the last, and the last as a distance."""
    names = [column.name for column in cursor.description or ()][:-1]

    def make(values: Sequence) -> tuple[ImageRow, float]:
        return ImageRow(**dict(zip(names, values[:-1]))), float(values[-1])

    return make


def _row_scanned_and_distance(cursor: psycopg.Cursor) -> Callable[[Sequence], tuple]:
    """Row factory: (ImageRow, rows scanned, distance) from a capped exact scan's columns."""
    names = [column.name for column in cursor.description or ()][:-2]

    def make(values: Sequence) -> tuple[ImageRow, int, float]:
        return ImageRow(**dict(zip(names, values[:-2]))), int(values[-2]), float(values[-1])

    return make


def _keyset(key: TimelineKey | None, older: bool) -> list[str]:
    """The conditions (one per index range) for rows after `key` in timeline order (older)
    or before it (not older); row comparisons walk the (taken_at, id) index, no OFFSET."""
    if key is None:
        return ["TRUE"]
    dated = key[0] is not None
    if older:
        if dated:
            return ["(taken_at, id) < (%(t)s, %(i)s)", "taken_at IS NULL"]
        return ["taken_at IS NULL AND id < %(i)s"]
    if dated:
        return ["(taken_at, id) > (%(t)s, %(i)s)"]
    return ["taken_at IS NULL AND id > %(i)s", "taken_at IS NOT NULL"]


def _metadata_values(meta: PhotoMetadata | None) -> tuple:
    """The METADATA_COLUMNS values of a photo's metadata (all None, version 0, when unread)."""
    if meta is None:
        return (None,) * (len(METADATA_COLUMNS) - 1) + (0,)
    return (meta.taken_at, meta.taken_offset_minutes, meta.taken_at_is_fallback,
            meta.camera_make, meta.camera_model, meta.camera, meta.latitude, meta.longitude,
            METADATA_VERSION)
