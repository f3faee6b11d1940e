"""Everything Image Browser says to Postgres, split by job; no SQL lives outside this package.

- `schema`: create, upgrade and check the `image_embeddings` table (versioned).
- `catalogue`: the images: sync's writes, the pages' and search's reads.
- `queue`: the embedding backfill's leases.
- `bulk`: loading many rows at once with binary COPY.
- `connection`: connections that know pgvector's types; `pool`: the web app's pool of them.
"""

from .bulk import BulkImage, copy_images
from .catalogue import Catalogue
from .connection import DatabaseError, connect, connection_lost, connection_problem, register_types
from .pool import DatabaseUnavailable, Pool, PoolExhausted, open_pool
from .queue import EmbeddingQueue
from .rows import Claim, Counts, ImageRecord, ImageRow, KnownFile
from .schema import SCHEMA_VERSION, TABLE, Schema, SchemaError, SchemaReport, SchemaState

__all__ = [
    "SCHEMA_VERSION", "TABLE", "BulkImage", "Catalogue", "Claim", "Counts", "DatabaseError",
    "DatabaseUnavailable", "EmbeddingQueue", "Pool", "PoolExhausted",
    "ImageRecord", "ImageRow", "KnownFile", "Schema", "SchemaError", "SchemaReport", "SchemaState",
    "connect", "connection_lost", "connection_problem", "copy_images", "open_pool", "register_types",
]
