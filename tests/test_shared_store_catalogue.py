"""The catalogue: sync's writes and the reads of pages and search."""

from datetime import date, datetime, timedelta

import numpy as np
import pytest

from shared.photo_metadata import PhotoMetadata
from shared.store import Catalogue, Filters, ImageRecord
from shared.store.layout import HALF_INDEX


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


# --- the timeline, folders, cameras (issue 10) --------------------------------------------


def dated(taken: datetime | None, camera: str | None = None, place: bool = False):
    """Metadata as sync reads it (None: a row sync has not dated yet)."""
    if taken is None:
        return None
    return PhotoMetadata(taken_at=taken, taken_offset_minutes=None, taken_at_is_fallback=False,
                         camera_model=camera, latitude=1.0 if place else None,
                         longitude=2.0 if place else None)


def timeline_rows(catalogue) -> list:
    """Rows with many sharing one instant, some a microsecond apart, and some undated;
    inserted in random order so that ids and dates disagree."""
    same = datetime(2020, 5, 5, 12, 0)
    when = [same] * 30 + [same + timedelta(microseconds=i + 1) for i in range(5)]
    when += [same - timedelta(days=i + 1) for i in range(5)] + [None] * 7
    order = np.random.default_rng(3).permutation(len(when))
    catalogue.upsert_images([
        record(f"p{i:02d}.jpg", sha=f"{i:064x}", metadata=dated(when[i], "Cam" if i % 3 else None))
        for i in order
    ])
    rows = {r.filename: r for r in catalogue.get_images(list(range(1, len(when) + 1)))}
    # The expected order: newest taken first, ties by id (newest row first), undated last.
    return sorted(rows.values(), key=lambda r: (r.taken_at is None, r.taken_at and -r.taken_at.timestamp(), -r.id))


def walk(catalogue, size: int, filters=None) -> list:
    seen, key = [], None
    while True:
        page = catalogue.list_images(size, key, filters)
        seen += page
        if len(page) < size:
            return seen
        key = (page[-1].taken_at, page[-1].id)


@pytest.mark.parametrize("size", [1, 4, 7, 30, 100])
def test_timeline_pages_never_skip_or_repeat_a_photo_when_many_share_a_timestamp(catalogue, size):
    expected = [r.id for r in timeline_rows(catalogue)]
    assert [r.id for r in walk(catalogue, size)] == expected
    cams = [r.id for r in walk(catalogue, size, Filters(camera="Cam"))]
    assert cams == [i for i in expected if catalogue.get_image(i).camera == "Cam"]


def test_neighbours_follow_the_timeline_across_ties_and_undated_rows(catalogue):
    order = [r.id for r in timeline_rows(catalogue)]
    for i, image_id in enumerate(order):
        newer = order[i - 1] if i > 0 else None
        older = order[i + 1] if i + 1 < len(order) else None
        assert catalogue.neighbours_in_order(image_id) == (newer, older), i
    cams = [i for i in order if catalogue.get_image(i).camera == "Cam"]
    assert catalogue.neighbours_in_order(cams[1], Filters(camera="Cam")) == (cams[0], cams[2])
    assert catalogue.neighbours_in_order(10**9) == (None, None)


def test_folders_count_their_subtree_and_take_the_newest_photo_with_a_thumbnail(catalogue):
    t = datetime(2021, 1, 1)
    catalogue.upsert_images([
        record("top.jpg", sha="1" * 64, thumbnail_key="t", metadata=dated(t)),
        record("Été 2019/a.jpg", sha="2" * 64, thumbnail_key="t", metadata=dated(t)),
        record("Été 2019/jour 2/b.jpg", sha="3" * 64, thumbnail_key="t", metadata=dated(t + timedelta(days=1))),
        record("Été 2019/jour 2/c.jpg", sha="4" * 64, metadata=dated(t + timedelta(days=2))),  # no thumbnail
        record("Été 20190/d.jpg", sha="5" * 64, thumbnail_key="t", metadata=dated(t)),
    ])
    ids = {r.filename: r.id for r in catalogue.list_images(10)}
    top = {f.name: (f.images, f.cover_id) for f in catalogue.folders(None)}
    assert top == {"Été 2019": (3, ids["Été 2019/jour 2/b.jpg"]), "Été 20190": (1, ids["Été 20190/d.jpg"]),
                   None: (1, None)}  # the files directly in the folder: no cover
    inner = {f.name: f.images for f in catalogue.folders("Été 2019")}
    assert inner == {"jour 2": 2, None: 1}
    assert [(f.name, f.images) for f in catalogue.folders("Été 2019/jour 2")] == [(None, 2)]
    assert catalogue.folders("nowhere") == []


def test_cameras_most_used_first_and_counts_stop_at_the_cap(catalogue, conn):
    timeline_rows(catalogue)
    assert catalogue.cameras() == [("Cam", 26)]  # i % 3 != 0, among the 40 dated rows
    conn.execute("UPDATE image_embeddings SET embedding = %s", (np.ones(768, np.float32),))
    assert catalogue.count_matching(Filters(camera="Cam"), 1000) == 26
    assert catalogue.count_matching(Filters(camera="Cam"), 10) == 10
    assert catalogue.count_matching(None, 5) == 5


def test_metadata_is_kept_by_a_record_without_it_and_replaced_by_a_touch(catalogue):
    taken = dated(datetime(2001, 2, 3), "Cam", place=True)
    catalogue.upsert_images([record("a.jpg", metadata=taken)])
    assert catalogue.known_files()["a.jpg"].has_metadata
    catalogue.upsert_images([record("a.jpg", width=9)])  # e.g. a benchmark's own upsert
    row = catalogue.get_image_by_filename("a.jpg")
    assert (row.width, row.taken_at, row.camera, row.latitude) == (9, datetime(2001, 2, 3), "Cam", 1.0)
    later = dated(datetime(2002, 2, 3))
    catalogue.touch_files([("a.jpg", 10, 5, later)])
    row = catalogue.get_image_by_filename("a.jpg")
    assert (row.taken_at, row.camera, row.latitude, row.mtime_ns) == (datetime(2002, 2, 3), None, None, 5)
    catalogue.upsert_images([record("new.jpg")])
    assert not catalogue.known_files()["new.jpg"].has_metadata


def scans(conn) -> dict[str, int]:
    """How often the table was read sequentially ("seq") and through each of its indexes
    (this backend's counts flushed first)."""
    conn.execute("SELECT pg_stat_force_next_flush()")
    counts = dict(conn.execute(
        "SELECT indexrelname, idx_scan FROM pg_stat_user_indexes WHERE relname = 'image_embeddings'"
    ).fetchall())
    counts["seq"] = conn.execute(
        "SELECT seq_scan FROM pg_stat_user_tables WHERE relname = 'image_embeddings'").fetchone()[0]
    return counts


@pytest.mark.parametrize("read, index", [
    (lambda c: c.list_images(5), "image_embeddings_taken_idx"),
    (lambda c: c.list_images(5, (datetime(2020, 5, 5, 12), 20)), "image_embeddings_taken_idx"),
    (lambda c: c.list_images(5, (None, 20)), None),  # None: the planner's pick of indexes
    (lambda c: c.list_images(5, None, Filters(camera="Cam")), "image_embeddings_camera_idx"),
    (lambda c: c.list_images(5, None, Filters(has_location=True)), "image_embeddings_located_idx"),
    (lambda c: c.list_images(5, None, Filters(folder="p")), "image_embeddings_shown_names_idx"),
    (lambda c: c.folders("p"), "image_embeddings_shown_names_idx"),
    (lambda c: c.count_matching(Filters(taken_after=date(2020, 5, 5)), 10), None),
    (lambda c: c.neighbours_in_order(3), "image_embeddings_taken_idx"),
    (lambda c: c.nearest(np.ones(768, np.float32), 3, ef_search=40, filters=Filters(camera="Cam")),
     "image_embeddings_embedding_half_hnsw"),
])
def test_each_read_can_be_served_by_its_index(catalogue, conn, read, index):
    """For issue 11's million rows: with sequential scans ruled out, each read walks its index."""
    timeline_rows(catalogue)
    catalogue.upsert_images([record("p/x.jpg", sha="e" * 64, metadata=dated(datetime(2020, 1, 1)))])
    conn.execute("UPDATE image_embeddings SET embedding = %s, "
                 "latitude = CASE WHEN id %% 2 = 0 THEN 1 END, longitude = 1", (np.ones(768, np.float32),))
    conn.execute("ANALYZE image_embeddings")
    conn.execute("SET enable_seqscan = off")
    before = scans(conn)
    read(catalogue)
    after = scans(conn)
    assert after["seq"] == before["seq"]  # enable_seqscan=off still scans when nothing else can
    assert index is None or after[index] > before[index]


def test_filtered_reads_are_never_prepared(catalogue, conn):
    """A prepared statement gets a generic plan after a few runs, blind to the filter's values
    (70-100 ms instead of 1 ms for a rare camera in the benchmark)."""
    timeline_rows(catalogue)
    conn.execute("UPDATE image_embeddings SET embedding = %s", (np.ones(768, np.float32),))
    cam = Filters(camera="Cam")
    for _ in range(12):  # psycopg prepares a statement on its sixth run
        catalogue.list_images(3, None, cam)
        catalogue.list_images(3, (datetime(2020, 5, 5, 12), 20), cam)
        catalogue.count_matching(cam, 10)
        catalogue.nearest(np.ones(768, np.float32), 3, ef_search=40, filters=cam)
        catalogue.nearest(np.ones(768, np.float32), 3, ef_search=40, filters=cam, exact=True)
        catalogue.folders("p")
    prepared = conn.execute("SELECT statement FROM pg_prepared_statements").fetchall()
    reads = [s for (s,) in prepared if s.lstrip().upper().startswith(("SELECT", "WITH"))]
    assert [s for s in reads if "image_embeddings" in s] == []


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
    """Whether the planner walks the HNSW index for the query `nearest` runs."""
    plan = Catalogue(conn).nearest_plan(query, 10, ef_search=ef_search)
    return any(HALF_INDEX in line for line in plan)


def test_search_keeps_its_recall_where_the_planner_takes_the_hnsw_index(catalogue, conn):
    """1,000 random vectors: the planner takes the index for a small ef_search, and through it
    recall@10 is ~0.45 at ef_search 10 (k) against ~1.0 at 100 (the default is 200)."""
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


def test_hidden_rows_are_skipped_by_the_timeline_folders_cameras_and_filtered_search(catalogue, conn):
    taken = datetime(2020, 1, 1)
    catalogue.upsert_images([
        record(f"Trip/{i}.jpg", sha=f"{i:064x}", thumbnail_key="t", metadata=dated(taken, "Cam"))
        for i in range(3)
    ])
    conn.execute("UPDATE image_embeddings SET embedding = %s", (np.ones(768, np.float32),))
    catalogue.hide(["Trip/1.jpg"])
    shown = {r.id for r in catalogue.list_images(10)}
    hidden = catalogue.conn.execute(
        "SELECT id FROM image_embeddings WHERE filename = 'Trip/1.jpg'").fetchone()[0]
    assert hidden not in shown and len(shown) == 2
    trip = Filters(folder="Trip", camera="Cam")
    assert {r.id for r in catalogue.list_images(10, None, trip)} == shown
    assert {r.id for r in catalogue.list_images(10, (taken, hidden + 1), trip)} <= shown
    assert [(f.name, f.images) for f in catalogue.folders(None)] == [("Trip", 2)]
    assert catalogue.cameras() == [("Cam", 2)]
    assert catalogue.count_matching(trip, 10) == 2
    for exact in (True, False):
        found = catalogue.nearest(np.ones(768, np.float32), 5, ef_search=40, filters=trip, exact=exact)
        assert {r.id for r, _ in found} == shown, exact
    newer, older = catalogue.neighbours_in_order(max(shown), trip)
    assert hidden not in (newer, older)
