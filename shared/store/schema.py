"""The `image_embeddings` table: created and upgraded by `loader ensure-schema`, checked by the web app.

Each migration step is idempotent, so a half-upgraded table (a killed run, an older release) is
finished by running them all again. The version reached is written down and read back: a
database upgraded by a newer Image Browser is refused by name, never silently downgraded.
The HNSW index of a table with rows is migrated by `vector_index.py`, outside
the transaction of the other steps: on a large table that takes minutes, with search working.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import psycopg

from .connection import register_types
from .counters import install_counters
from .layout import DEFAULT_STORAGE, GRAPH, VectorLayout
from .vector_index import UNCOPIED, VectorIndex, memory_needed_mb, vector_width

TABLE = "image_embeddings"
SCHEMA_VERSION = 6
SCHEMA_LOCK_KEY = 7_210_001  # advisory lock: one ensure-schema at a time
DEFAULT_INDEX_MEMORY_MB = 1024

# v4: what a photo says about itself (shared/photo_metadata.py), read by sync. Columns are added
# without defaults and never back-filled here: no row is rewritten, so the HNSW index is not
# rebuilt; rows keep taken_at NULL (and metadata_version 0) until the next sync reads them.
METADATA_STEPS = (
    "ALTER TABLE image_embeddings ADD COLUMN IF NOT EXISTS taken_at timestamp",
    "ALTER TABLE image_embeddings ADD COLUMN IF NOT EXISTS taken_offset_minutes smallint",
    "ALTER TABLE image_embeddings ADD COLUMN IF NOT EXISTS taken_at_is_fallback boolean",
    "ALTER TABLE image_embeddings ADD COLUMN IF NOT EXISTS camera_make text",
    "ALTER TABLE image_embeddings ADD COLUMN IF NOT EXISTS camera_model text",
    "ALTER TABLE image_embeddings ADD COLUMN IF NOT EXISTS camera text",
    "ALTER TABLE image_embeddings ADD COLUMN IF NOT EXISTS latitude double precision",
    "ALTER TABLE image_embeddings ADD COLUMN IF NOT EXISTS longitude double precision",
    "ALTER TABLE image_embeddings ADD COLUMN IF NOT EXISTS metadata_version smallint NOT NULL DEFAULT 0",
    # The timeline: newest taken first, undated rows last, keyset pages on (taken_at, id).
    """CREATE INDEX IF NOT EXISTS image_embeddings_taken_idx
        ON image_embeddings (taken_at DESC NULLS LAST, id DESC)""",
    # A camera's photos in timeline order; its distinct values for the filter's list.
    """CREATE INDEX IF NOT EXISTS image_embeddings_camera_idx
        ON image_embeddings (camera, taken_at DESC NULLS LAST, id DESC)""",
    """CREATE INDEX IF NOT EXISTS image_embeddings_located_idx
        ON image_embeddings (taken_at DESC NULLS LAST, id DESC) WHERE latitude IS NOT NULL""",
    # A folder's subtree is a range of file names in byte order ("Italy/" <= name < "Italy0").
    # Only shown rows are ever read by it (v6: was the whole table, image_embeddings_filename_c_idx):
    # the folder counts then read the names from the index alone (an index-only scan, once VACUUM
    # has marked the pages), not from rows 1.8 kB longer since the half-precision copy.
    """CREATE INDEX IF NOT EXISTS image_embeddings_shown_names_idx
        ON image_embeddings ((filename COLLATE "C")) WHERE missing_since IS NULL""",
    "DROP INDEX IF EXISTS image_embeddings_filename_c_idx",
)

# v6: a half-precision copy of each embedding kept in the row itself (STORAGE MAIN: never moved
# to TOAST while the row fits a page), for exact scans of the rows a filter lets through. The
# float32 column is 3 KB, so Postgres keeps it out of line: reading it cost 5-7 µs a row, most
# of an exact scan (docs/benchmarks.md, "Filtered search"). A trigger keeps the copy, so every
# write of `embedding` (sync, the backfill, COPY, other tools) fills it. Adding the column
# rewrites nothing; rows embedded before get their copy from the index migration
# (vector_index.py, `fill_half_copies`), and exact scans read the float32 column for a row
# without one meanwhile.
HALF_COPY_STEPS = (
    "ALTER TABLE image_embeddings ADD COLUMN IF NOT EXISTS embedding_half halfvec({dim})",
    "ALTER TABLE image_embeddings ALTER COLUMN embedding_half SET STORAGE MAIN",
    """CREATE OR REPLACE FUNCTION image_browser_copy_half() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            NEW.embedding_half := NEW.embedding::halfvec;
            RETURN NEW;
        END $$""",
    """CREATE OR REPLACE TRIGGER image_embeddings_copy_half
        BEFORE INSERT OR UPDATE OF embedding ON image_embeddings
        FOR EACH ROW EXECUTE FUNCTION image_browser_copy_half()""",
    # The rows still without a copy, found without reading the others (empty once filled).
    f"""CREATE INDEX IF NOT EXISTS image_embeddings_uncopied_idx ON image_embeddings (id)
        WHERE {UNCOPIED}""",
)

# `{dim}` is the only thing formatted in.
MIGRATIONS = (
    "CREATE EXTENSION IF NOT EXISTS vector",
    """CREATE TABLE IF NOT EXISTS image_embeddings (
        filename text NOT NULL,
        embedding vector({dim})
    )""",
    "ALTER TABLE image_embeddings ADD COLUMN IF NOT EXISTS id bigint GENERATED BY DEFAULT AS IDENTITY",
    "ALTER TABLE image_embeddings ADD COLUMN IF NOT EXISTS width integer",
    "ALTER TABLE image_embeddings ADD COLUMN IF NOT EXISTS height integer",
    "ALTER TABLE image_embeddings ADD COLUMN IF NOT EXISTS byte_size bigint",
    "ALTER TABLE image_embeddings ADD COLUMN IF NOT EXISTS sha256 text",
    "ALTER TABLE image_embeddings ADD COLUMN IF NOT EXISTS format text",
    "ALTER TABLE image_embeddings ADD COLUMN IF NOT EXISTS mtime_ns bigint",
    "ALTER TABLE image_embeddings ADD COLUMN IF NOT EXISTS thumbnail_key text",
    "ALTER TABLE image_embeddings ADD COLUMN IF NOT EXISTS embedding_model text",
    "ALTER TABLE image_embeddings ADD COLUMN IF NOT EXISTS embedded_at timestamptz",
    "ALTER TABLE image_embeddings ADD COLUMN IF NOT EXISTS last_error text",
    "ALTER TABLE image_embeddings ADD COLUMN IF NOT EXISTS attempts integer NOT NULL DEFAULT 0",
    "ALTER TABLE image_embeddings ADD COLUMN IF NOT EXISTS claimed_by text",
    "ALTER TABLE image_embeddings ADD COLUMN IF NOT EXISTS claim_expires_at timestamptz",
    "ALTER TABLE image_embeddings ADD COLUMN IF NOT EXISTS created_at timestamptz NOT NULL DEFAULT now()",
    "ALTER TABLE image_embeddings ADD COLUMN IF NOT EXISTS updated_at timestamptz NOT NULL DEFAULT now()",
    "CREATE UNIQUE INDEX IF NOT EXISTS image_embeddings_filename_key ON image_embeddings (filename)",
    "CREATE INDEX IF NOT EXISTS image_embeddings_sha256_idx ON image_embeddings (sha256)",
    "CREATE INDEX IF NOT EXISTS image_embeddings_created_idx ON image_embeddings (created_at DESC, id DESC)",
    # (v1-v4 created the float32 HNSW index here; vector_index.py now builds the one chosen.)
    # v2: the embedding backfill looks rows up by id, and finds work without scanning embedded rows.
    "CREATE UNIQUE INDEX IF NOT EXISTS image_embeddings_id_key ON image_embeddings (id)",
    "CREATE INDEX IF NOT EXISTS image_embeddings_unembedded_idx ON image_embeddings (id) WHERE embedding IS NULL",
    # v3: a file gone from the folder is hidden, not forgotten (its row and embedding come back
    # when it reappears); the pages' live updates ask for the latest change.
    "ALTER TABLE image_embeddings ADD COLUMN IF NOT EXISTS missing_since timestamptz",
    "CREATE INDEX IF NOT EXISTS image_embeddings_updated_idx ON image_embeddings (updated_at)",
    *METADATA_STEPS,
    # v5: the backfill finds who holds leases without reading every row, and claims the newest
    # rows waiting for an embedding without walking past the embedded ones (a million rows).
    """CREATE INDEX IF NOT EXISTS image_embeddings_claimed_idx ON image_embeddings (claimed_by)
        WHERE claimed_by IS NOT NULL""",
    """CREATE INDEX IF NOT EXISTS image_embeddings_waiting_idx
        ON image_embeddings (created_at DESC, id DESC) WHERE embedding IS NULL""",
    *HALF_COPY_STEPS,
    """CREATE TABLE IF NOT EXISTS image_browser_schema (
        singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
        version integer NOT NULL,
        dimensions integer NOT NULL,
        updated_at timestamptz NOT NULL DEFAULT now()
    )""",
)


class SchemaError(Exception):
    """The table cannot be used as it is; nothing was changed. The message says what to do."""


@dataclass(frozen=True)
class SchemaReport:
    """What `ensure` found and did."""

    pgvector_version: str
    dimensions: int
    created: bool
    schema_version: int
    storage: str | None = DEFAULT_STORAGE  # the EMBEDDING_STORAGE the index is at now
    layout: str = ""  # the same in words: column and index
    pending: str | None = None  # what is left to reach the setting, and how to finish it


@dataclass(frozen=True)
class SchemaState:
    """What the web app finds at start: usable or not, and the width of the stored vectors."""

    problem: str | None  # why the table cannot be used: missing, older or newer than this code
    dimensions: int | None  # the embedding column's declared width, when there is a table


class Schema:
    """Creates, upgrades and inspects the table on one connection."""

    def __init__(self, conn: psycopg.Connection) -> None:
        self.conn = conn

    def ensure(
        self, dimensions: int, storage: str = DEFAULT_STORAGE, *, build_index: bool = True,
        index_memory_mb: int = DEFAULT_INDEX_MEMORY_MB, say: Callable[[str], None] = lambda _: None,
    ) -> SchemaReport:
        """Create or upgrade the table; refuse, changing nothing, on a width or version conflict.

        An empty table gets the HNSW index `storage` asks for at once. On one with rows, that
        index is built (concurrently, search going on) only with `build_index`; else what is
        left is said in the report's `pending`. `index_memory_mb` caps the build's memory.
        """
        wanted = VectorLayout.wanted(storage, dimensions)
        with self.conn.transaction():
            self.conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK_KEY,))
            self._refuse_newer()
            existing = self.embedding_dimensions()
            if existing is not None and existing != dimensions:
                raise SchemaError(
                    f"the table {TABLE} stores {existing}-dimensional embeddings but "
                    f"EXPECTED_VECTOR_DIM is {dimensions}; nothing was changed. Use a model "
                    f"with {existing} dimensions, or set EXPECTED_VECTOR_DIM={existing}"
                )
            created = not self.table_exists()
            for step in MIGRATIONS:
                self.conn.execute(step.format(dim=int(dimensions)))
            register_types(self.conn)  # the extension exists now
            install_counters(self.conn)
            if self._empty():  # nothing to index: the wanted index at once, the others gone
                VectorIndex(self.conn).drop_all(keep=wanted.index_name)
                self.conn.execute(wanted.index_sql(concurrently=False))
            self.conn.execute(
                """INSERT INTO image_browser_schema (version, dimensions) VALUES (%s, %s)
                   ON CONFLICT (singleton) DO UPDATE
                   SET version = EXCLUDED.version, dimensions = EXCLUDED.dimensions,
                       updated_at = now()""",
                (SCHEMA_VERSION, dimensions),
            )
        if build_index:
            self.migrate_vector_index(storage, dimensions, index_memory_mb=index_memory_mb,
                                      say=say)
        layout = VectorIndex(self.conn).layout() or wanted
        return SchemaReport(self.pgvector_version() or "?", dimensions, created, SCHEMA_VERSION,
                            layout.storage, layout.describe(), self.pending(storage, dimensions))

    def migrate_vector_index(
        self, storage: str, dimensions: int, *, index_memory_mb: int = DEFAULT_INDEX_MEMORY_MB,
        say: Callable[[str], None] = lambda _: None, cancelled: Callable[[], bool] = lambda: False,
    ) -> None:
        """Bring the HNSW index to what `storage` asks for, search working meanwhile; nothing
        to do returns at once. `cancelled` is asked between steps; a statement cancelled in
        the server (Ctrl-C, or `cancel_safe` from another thread) raises QueryCanceled, and
        the next call finishes the work."""
        wanted = VectorLayout.wanted(storage, dimensions)
        index = VectorIndex(self.conn)
        if not index.pending(wanted):
            return
        rows = index.row_estimate()
        need = memory_needed_mb(wanted, rows)
        if need > index_memory_mb:
            say(f"the index graph of {rows:,} rows needs about {need:,} MB of "
                f"maintenance_work_mem to be built quickly; {index_memory_mb:,} MB are allowed "
                f"(INDEX_BUILD_MEMORY_MB), so it will be slower: allow {need:,} if the "
                "database server has the memory")
        index.migrate(wanted, min(need, index_memory_mb), say=say, cancelled=cancelled)

    def pending(self, storage: str, dimensions: int) -> str | None:
        """What is left before the index is the one `storage` asks for, and how to finish it;
        None when nothing is."""
        wanted = VectorLayout.wanted(storage, dimensions)
        index = VectorIndex(self.conn)
        state = index.state()
        if not state.pending(wanted):
            if index.uncopied():
                return ("rows embedded before this version have no half-precision copy yet "
                        "(filtered searches read them slower): `loader ensure-schema` (or "
                        "`loader up`) fills them while search goes on")
            return None
        built = state.graphs.get(wanted.index_name)
        if built is not None and built != GRAPH:
            return (f"the vector index was built with {built.describe()}; this version builds "
                    f"a better-connected graph ({GRAPH.describe()}): `loader ensure-schema` (or "
                    "`loader up`) rebuilds it while search goes on")
        return (f"the vector index is not yet the one EMBEDDING_STORAGE={storage} asks for: "
                "`loader ensure-schema` (or `loader up`) builds it while search goes on")

    def _empty(self) -> bool:
        return self.conn.execute(f"SELECT NOT EXISTS (SELECT 1 FROM {TABLE})").fetchone()[0]

    def drop_vector_index(self) -> None:
        """Drop the HNSW index (before a bulk load: building it afterwards is much faster)."""
        VectorIndex(self.conn).drop_all()

    def build_vector_index(self, maintenance_work_mem: str = "1GB",
                           storage: str = DEFAULT_STORAGE) -> None:
        """Build the HNSW index `storage` asks for if it is missing, then refresh the planner's
        statistics. Writes wait meanwhile; reads go on.

        The graph should fit in `maintenance_work_mem`, or the build slows down a lot.
        """
        dimensions = self.embedding_dimensions()
        if dimensions is None:
            raise SchemaError(f"there is no {TABLE} table to index")
        VectorIndex(self.conn).build(VectorLayout.wanted(storage, dimensions),
                                     _megabytes(maintenance_work_mem))

    def drop(self) -> None:
        """Remove the table and its version record (tests and benchmarks start from nothing)."""
        self.conn.execute(
            f"DROP TABLE IF EXISTS {TABLE}, image_browser_schema, image_browser_counts CASCADE")

    def check(self) -> SchemaState:
        """Whether this code can use the table as it is, without changing anything."""
        if not self.table_exists():
            return SchemaState(
                f"the database has no {TABLE} table yet: run `loader ensure-schema` "
                "(or `mise run up`)", None)
        dimensions = self.embedding_dimensions()
        version = self.version()
        if version is None or version < SCHEMA_VERSION:
            return SchemaState(
                f"the {TABLE} table is at schema version {version or 1}, older than this "
                f"Image Browser's ({SCHEMA_VERSION}): run `loader ensure-schema` to upgrade it",
                dimensions)
        if version > SCHEMA_VERSION:
            return SchemaState(self._newer_message(version), dimensions)
        return SchemaState(None, dimensions)

    def version(self) -> int | None:
        """The schema version written by the last ensure, or None when none was written."""
        if not self._exists("image_browser_schema"):
            return None
        row = self.conn.execute("SELECT version FROM image_browser_schema").fetchone()
        return row[0] if row else None

    def embedding_dimensions(self) -> int | None:
        """The declared width of the embedding column, or None when there is no table yet."""
        row = self.conn.execute(
            """SELECT format_type(a.atttypid, a.atttypmod) FROM pg_attribute a
               WHERE a.attrelid = to_regclass(%s) AND a.attname = 'embedding'
                 AND NOT a.attisdropped""",
            (TABLE,),
        ).fetchone()
        if row is None:
            return None
        try:
            return vector_width(row[0])
        except ValueError as exc:
            raise SchemaError(str(exc)) from None

    def pgvector_version(self) -> str | None:
        """The installed pgvector version, or None before `CREATE EXTENSION`."""
        row = self.conn.execute(
            "SELECT extversion FROM pg_extension WHERE extname = 'vector'"
        ).fetchone()
        return row[0] if row else None

    def table_exists(self) -> bool:
        """Whether `image_embeddings` exists at all."""
        return self._exists(TABLE)

    def _exists(self, table: str) -> bool:
        return self.conn.execute("SELECT to_regclass(%s) IS NOT NULL", (table,)).fetchone()[0]

    def _refuse_newer(self) -> None:
        version = self.version()
        if version is not None and version > SCHEMA_VERSION:
            raise SchemaError(self._newer_message(version))

    @staticmethod
    def _newer_message(version: int) -> str:
        return (
            f"the {TABLE} table is at schema version {version}, newer than this Image Browser "
            f"understands ({SCHEMA_VERSION}); nothing was changed. Update Image Browser "
            "(git pull, then scripts/setup) before using this database"
        )


def _megabytes(size: str) -> int:
    """Postgres's memory size ("256MB", "2GB") in MB."""
    units = {"MB": 1, "GB": 1024, "TB": 1024 * 1024}
    number, unit = size[:-2], size[-2:].upper()
    if unit not in units or not number.isdigit():
        raise ValueError(f"a memory size like 256MB or 2GB, not {size!r}")
    return int(number) * units[unit]
