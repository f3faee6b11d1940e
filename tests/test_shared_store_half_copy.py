"""Each row keeps a half-precision copy of its embedding (schema v6): every write of the
embedding keeps it, rows embedded before get it from the index migration, and an exact scan of
a filter's rows reads the copies in the rows, not the float32 vectors kept out of line."""

from __future__ import annotations

from datetime import datetime, timezone

import numpy as np
import pytest

from shared.store import (BulkImage, Catalogue, EmbeddingQueue, Filters, ImageRecord, Schema,
                          VectorIndex, connect, copy_images)
from shared.store.catalogue import EXACT_SHORTLIST

DIM = 768


def halves(conn) -> dict[str, np.ndarray | None]:
    """Each row's half-precision copy, by file name, as float32 (None: no copy)."""
    return {name: None if half is None else np.asarray(half.to_numpy(), dtype=np.float32)
            for name, half in conn.execute(
                "SELECT filename, embedding_half FROM image_embeddings").fetchall()}


def rounded(vector: np.ndarray) -> np.ndarray:
    return vector.astype(np.float16).astype(np.float32)


def bulk_library(conn, vectors: np.ndarray, cameras: list[str] | None = None) -> None:
    """Rows loaded as a big import loads them: no HNSW index meanwhile."""
    Schema(conn).drop_vector_index()
    now = datetime.now(timezone.utc)
    copy_images(conn, (BulkImage(i + 1, f"{i}.png", 4, 3, 10, f"{i:064x}", "PNG", 1, None, v,
                                 "m", now, now, camera=cameras[i] if cameras else None)
                       for i, v in enumerate(vectors)))


def test_every_write_of_an_embedding_keeps_its_half_copy(conn):
    rng = np.random.default_rng(1)
    vectors = rng.standard_normal((3, DIM)).astype(np.float32)
    bulk_library(conn, vectors[:1])  # COPY, as the benchmarks and big imports load
    Catalogue(conn).upsert_images([ImageRecord("new.png", 1, 1, 1, "b" * 64, "PNG", 0, None)])
    assert halves(conn)["new.png"] is None  # no embedding yet, no copy
    queue = EmbeddingQueue(conn, "m")
    [claim] = queue.claim("w", 5, lease_seconds=60)
    queue.save("w", [(claim.id, vectors[1])])  # the backfill
    found = halves(conn)
    assert np.array_equal(found["0.png"], rounded(vectors[0]))
    assert np.array_equal(found["new.png"], rounded(vectors[1]))
    conn.execute("UPDATE image_embeddings SET embedding = %s WHERE filename = '0.png'",
                 (vectors[2],))  # another tool writing the column
    assert np.array_equal(halves(conn)["0.png"], rounded(vectors[2]))
    # The file changed: its embedding is dropped until the backfill comes back, the copy too.
    Catalogue(conn).upsert_images([ImageRecord("new.png", 1, 1, 2, "c" * 64, "PNG", 0, None)])
    assert halves(conn)["new.png"] is None


def test_rows_embedded_before_get_their_copy_from_the_migration_with_search_right_meanwhile(conn):
    rng = np.random.default_rng(2)
    vectors = rng.standard_normal((600, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    bulk_library(conn, vectors, ["A" if i % 10 == 0 else "B" for i in range(len(vectors))])
    # As a library embedded before schema v6 is: the column added, no row copied.
    conn.execute("UPDATE image_embeddings SET embedding_half = NULL WHERE id % 3 <> 0")
    schema, index = Schema(conn), VectorIndex(conn)
    schema.build_vector_index("64MB")
    assert index.uncopied(cap=10**6) == len([i for i in range(1, 601) if i % 3 != 0])
    assert "half-precision copy" in schema.pending("halfvec-index", DIM)
    query, few = vectors[7], Filters(camera="A")
    allowed = np.arange(0, len(vectors), 10)
    truth = [int(allowed[i]) + 1 for i in np.argsort(1 - vectors[allowed] @ query)[:10]]
    catalogue = Catalogue(conn)
    assert [row.id for row, _ in catalogue.nearest(query, 10, ef_search=40, filters=few,
                                                   exact=True)] == truth
    said: list[str] = []
    schema.migrate_vector_index("halfvec-index", DIM, say=said.append)
    assert index.uncopied() == 0 and schema.pending("halfvec-index", DIM) is None
    assert any("half-precision copies" in line for line in said)
    found = halves(conn)
    assert all(np.array_equal(found[f"{i}.png"], rounded(v)) for i, v in enumerate(vectors))
    assert [row.id for row, _ in catalogue.nearest(query, 10, ef_search=40, filters=few,
                                                   exact=True)] == truth


def test_a_stopped_fill_is_finished_by_the_next_run(conn):
    vectors = np.random.default_rng(3).standard_normal((2_500, DIM)).astype(np.float32)
    bulk_library(conn, vectors)
    conn.execute("UPDATE image_embeddings SET embedding_half = NULL")
    index, asked = VectorIndex(conn), []

    def stop_after_one_batch() -> bool:
        asked.append(1)
        return len(asked) > 1

    filled = index.fill_half_copies(cancelled=stop_after_one_batch)
    assert 0 < filled < len(vectors) and index.uncopied(cap=10**6) == len(vectors) - filled
    assert index.fill_half_copies() == len(vectors) - filled and index.uncopied() == 0


def toast_blocks_read(conn, work) -> int:
    """How many blocks of the table's TOAST relation `work` read (in one transaction)."""
    fetched = """SELECT pg_stat_get_xact_blocks_fetched(reltoastrelid) FROM pg_class
                 WHERE oid = 'image_embeddings'::regclass"""
    with conn.transaction():
        before = conn.execute(fetched).fetchone()[0]
        work()
        return conn.execute(fetched).fetchone()[0] - before


@pytest.mark.parametrize("copied", [True, False])
def test_an_exact_scan_reads_the_float32_vectors_of_its_shortlist_alone(conn, copied):
    """The float32 vector (3 KB) lives out of line: reading it for every row a filter lets
    through was most of an exact scan's time. The copies in the rows rank them; the float32
    vectors of the shortlist alone are read."""
    rng = np.random.default_rng(4)
    vectors = rng.standard_normal((2_000, DIM)).astype(np.float32)
    bulk_library(conn, vectors, ["A"] * 1_000 + ["B"] * 1_000)
    if not copied:  # a library embedded before, not migrated yet: correct, but slower
        conn.execute("UPDATE image_embeddings SET embedding_half = NULL")
    catalogue = Catalogue(conn)
    read = toast_blocks_read(conn, lambda: catalogue.nearest(
        vectors[0], 10, ef_search=40, filters=Filters(camera="A"), exact=True))
    shortlist = 10 * EXACT_SHORTLIST
    if copied:
        assert read <= 4 * shortlist  # a few blocks per vector: its chunks and their index
    else:
        assert read >= 1_000
