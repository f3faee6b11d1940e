"""Everything Image Browser says to Postgres, split by job; no SQL lives outside this package.

- `schema`: create, upgrade and check the `image_embeddings` table (versioned).
- `catalogue`: the images: sync's writes, the pages' and search's reads.
- `filters`: narrowing reads to a folder, days, a camera, a position (one SQL condition).
- `queue`: the embedding backfill's leases.
- `layout`, `vector_index`: how embeddings are stored and indexed (float32, half precision),
  and migrating from one choice to another; `counters`: the counts the database keeps.
- `bulk`: loading many rows at once with binary COPY.
- `connection`: connections that know pgvector's types; `pool`: the web app's pool of them.
"""

from .bulk import BulkImage, copy_images
from .catalogue import Catalogue, FolderRow, TimelineKey
from .connection import DatabaseError, connect, connection_lost, connection_problem, register_types
from .filters import NO_FILTERS, Filters
from .layout import DEFAULT_STORAGE, STORAGES, VectorLayout
from .pool import DatabaseUnavailable, Pool, PoolExhausted, open_pool
from .queue import EmbeddingQueue
from .rows import Claim, Counts, ImageRecord, ImageRow, KnownFile
from .schema import SCHEMA_VERSION, TABLE, Schema, SchemaError, SchemaReport, SchemaState
from .vector_index import Sizes, VectorIndex, memory_needed_mb

__all__ = [
    "DEFAULT_STORAGE", "SCHEMA_VERSION", "STORAGES", "TABLE", "Sizes", "VectorIndex",
    "VectorLayout", "memory_needed_mb", "BulkImage", "Catalogue", "Claim", "Counts",
    "DatabaseError",
    "DatabaseUnavailable", "EmbeddingQueue", "Filters", "FolderRow", "NO_FILTERS", "Pool",
    "PoolExhausted", "TimelineKey",
    "ImageRecord", "ImageRow", "KnownFile", "Schema", "SchemaError", "SchemaReport", "SchemaState",
    "connect", "connection_lost", "connection_problem", "copy_images", "open_pool", "register_types",
]
