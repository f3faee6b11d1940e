"""The catalogue: sync's writes and the reads of pages and search."""

import numpy as np

from shared.store import ImageRecord


def record(name: str, sha: str = "a" * 64, **kw) -> ImageRecord:
    values = dict(width=4, height=3, byte_size=10, sha256=sha, format="PNG", mtime_ns=1, thumbnail_key=None)
    values.update(kw)
    return ImageRecord(filename=name, **values)


def test_changed_content_drops_the_stale_embedding(catalogue, conn):
    catalogue.upsert_images([record("a.png", sha="1" * 64)])
    conn.execute(
        "UPDATE image_embeddings SET embedding = %s, embedding_model = 'm'", (np.ones(768, np.float32),)
    )
    catalogue.upsert_images([record("a.png", sha="1" * 64, mtime_ns=2)])  # same content: kept
    assert catalogue.counts().embedded == 1
    catalogue.upsert_images([record("a.png", sha="2" * 64, width=8)])  # new content: dropped
    assert catalogue.counts().as_dict() == {"images": 1, "embedded": 0, "waiting": 1, "failed": 0}
    row = catalogue.get_image_by_filename("a.png")
    assert (row.width, row.embedding_model, row.embedded) == (8, None, False)


def test_delete_returns_only_thumbnails_nobody_uses(catalogue):
    catalogue.upsert_images([
        record("a.png", sha="1" * 64, thumbnail_key="t1"),
        record("copy of a.png", sha="1" * 64, thumbnail_key="t1"),
        record("b.png", sha="2" * 64, thumbnail_key="t2"),
    ])
    assert catalogue.delete_images(["a.png", "b.png"]) == ["t2"]
    assert list(catalogue.known_files()) == ["copy of a.png"]


def test_rows_come_back_typed(catalogue):
    catalogue.upsert_images([record("x.png", thumbnail_key="ab/cd.jpg")])
    known = catalogue.known_files()["x.png"]
    assert (known.byte_size, known.mtime_ns, known.has_thumbnail) == (10, 1, True)
    (row,) = catalogue.list_images(5)
    assert row.filename == "x.png" and row.embedded is False and row.created_at.tzinfo is not None


def test_nearest_orders_by_cosine_and_leaves_out_the_query_image(catalogue, conn):
    catalogue.upsert_images([record(f"{i}.png", sha=str(i) * 64) for i in range(3)])
    axes = np.eye(768, dtype=np.float32)
    for i, vector in enumerate([axes[0], axes[0] + axes[1] * 0.5, axes[1]]):
        conn.execute("UPDATE image_embeddings SET embedding = %s WHERE filename = %s",
                     (vector, f"{i}.png"))
    found = catalogue.nearest(axes[0], 3, ef_search=40)
    assert [row.filename for row, _ in found] == ["0.png", "1.png", "2.png"]
    assert abs(found[0][1]) < 1e-6 and abs(found[2][1] - 1.0) < 1e-6
    first = catalogue.get_image_by_filename("0.png")
    assert [r.filename for r, _ in catalogue.nearest(axes[0], 2, ef_search=40, exclude_id=first.id)] \
        == ["1.png", "2.png"]


def test_hidden_rows_are_skipped_by_every_read_and_come_back_whole(catalogue, conn):
    catalogue.upsert_images([record(f"{i}.png", sha=str(i) * 64) for i in range(3)])
    axes = np.eye(768, dtype=np.float32)
    for i in range(3):
        conn.execute("UPDATE image_embeddings SET embedding = %s WHERE filename = %s",
                     (axes[0] + axes[1] * i * 0.1, f"{i}.png"))
    ids = {row.filename: row.id for row in catalogue.list_images(10)}
    version = catalogue.version()
    assert catalogue.hide(["1.png"]) == 1 and catalogue.hide(["1.png"]) == 0  # once
    assert catalogue.version() != version  # the open pages notice
    assert [r.filename for r in catalogue.list_images(10)] == ["2.png", "0.png"]
    assert catalogue.get_image(ids["1.png"]) is None
    assert catalogue.get_image_by_filename("1.png") is None
    assert catalogue.counts().images == 2 and catalogue.hidden_count() == 1
    assert catalogue.neighbours_in_order(ids["2.png"]) == (None, ids["0.png"])
    assert [r.filename for r, _ in catalogue.nearest(axes[0], 3, ef_search=40)] == ["0.png", "2.png"]
    assert catalogue.known_files()["1.png"].missing  # sync still knows it

    assert catalogue.restore(["1.png", "0.png"]) == 1
    assert len(catalogue.list_images(10)) == 3 and catalogue.hidden_count() == 0
    assert catalogue.get_image(ids["1.png"]).embedded  # with its embedding


def test_a_file_written_again_is_shown_again(catalogue):
    catalogue.upsert_images([record("a.png")])
    catalogue.hide(["a.png"])
    catalogue.upsert_images([record("a.png", sha="b" * 64)])  # back, with new content
    assert [r.filename for r in catalogue.list_images(5)] == ["a.png"]


def library_of_random_vectors(conn, count: int, seed: int = 11) -> np.ndarray:
    """`count` embedded rows of random unit vectors, loaded and indexed the way a large library is."""
    from datetime import datetime, timezone

    from shared.store import BulkImage, Schema, copy_images

    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((count, 768)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    now = datetime.now(timezone.utc)
    schema = Schema(conn)
    schema.drop_vector_index()
    copy_images(conn, (BulkImage(i + 1, f"v{i}.png", 4, 3, 10, f"{i:064x}", "PNG", 1, None, v, "m",
                                 now, now) for i, v in enumerate(vectors)))
    schema.build_vector_index(maintenance_work_mem="256MB")
    return vectors


def planner_takes_the_index(conn, query: np.ndarray, ef_search: int) -> bool:
    with conn.transaction():
        conn.execute("SELECT set_config('hnsw.ef_search', %s, true)", (str(ef_search),))
        plan = conn.execute(
            """EXPLAIN SELECT id FROM image_embeddings WHERE embedding IS NOT NULL
               ORDER BY embedding <=> %s LIMIT 10""", (query,)).fetchall()
    return any("image_embeddings_embedding_hnsw" in line for (line,) in plan)


def test_search_keeps_its_recall_where_the_planner_takes_the_hnsw_index(catalogue, conn):
    """1,000 random vectors: the planner takes the index for a small ef_search, and through it
    recall@10 is ~0.45 at ef_search 10 (k) against ~1.0 at the configured 100."""
    library_of_random_vectors(conn, 1000)
    queries = np.random.default_rng(5).standard_normal((12, 768)).astype(np.float32)
    assert planner_takes_the_index(conn, queries[0], 10), "too small a library to test recall"
    found = 0
    for query in queries:
        hits = {row.id for row, _ in catalogue.nearest(query, 10, ef_search=100)}
        truth = {row.id for row, _ in catalogue.nearest(query, 10, ef_search=100, exact=True)}
        found += len(hits & truth)
    assert found / (10 * len(queries)) >= 0.8


def test_the_largest_similar_search_stays_within_pgvector_limits(catalogue, conn):
    library_of_random_vectors(conn, 5)
    hits = catalogue.nearest(np.ones(768, np.float32), 1000, ef_search=1000, exclude_id=1)
    assert sorted(row.id for row, _ in hits) == [2, 3, 4, 5]
