"""The counts the database keeps (library totals, each camera's photos): true after every
kind of write, without a page counting the rows."""

from __future__ import annotations

from datetime import datetime, timezone

import numpy as np
from conftest import counts_of_rows, run_in_threads

from shared.photo_metadata import PhotoMetadata
from shared.store import (BulkImage, Catalogue, EmbeddingQueue, ImageRecord, Schema, connect,
                          copy_images)
from shared.store.counters import TRIGGERS

TAKEN = datetime(2021, 6, 1, 9, 30)


def record(name: str, sha: str, camera: str | None = None) -> ImageRecord:
    meta = PhotoMetadata(taken_at=TAKEN, taken_offset_minutes=None, taken_at_is_fallback=False,
                         camera_model=camera, latitude=None, longitude=None)
    return ImageRecord(name, 4, 3, 10, sha, "PNG", 1, None, meta)


def test_counts_stay_true_through_every_write_the_apps_make(catalogue, conn, counts_stay_true):
    catalogue.upsert_images([record(f"{i}.png", f"{i:064x}", "Cam A" if i % 2 else "Cam B")
                             for i in range(6)])
    assert counts_stay_true(conn)["waiting"] == 6
    queue = EmbeddingQueue(conn, "m")
    claims = queue.claim("w", 3, 60)
    counts_stay_true(conn)  # a lease changes nothing counted
    queue.save("w", [(c.id, np.ones(768, np.float32)) for c in claims[:2]])
    queue.record_failures("w", [(claims[2].id, "could not read", 1)])  # a failed embed
    assert counts_stay_true(conn) | {"cameras": None} == {
        "images": 6, "embedded": 2, "waiting": 3, "failed": 1, "hidden": 0, "cameras": None}
    catalogue.upsert_images([record("0.png", "f" * 64, "Cam C")])  # new content: vector dropped
    catalogue.touch_files([("1.png", 11, 2, record("1.png", "", "Cam C").metadata)])
    counts_stay_true(conn)
    assert catalogue.hide(["2.png", "3.png"]) == 2
    assert counts_stay_true(conn)["hidden"] == 2
    assert catalogue.restore(["3.png"]) == 1
    counts_stay_true(conn)
    catalogue.delete_images(["2.png", "4.png"])  # prune: a hidden row and a shown one
    kept = counts_stay_true(conn)
    assert (kept["images"], kept["hidden"]) == (4, 0)


def test_counts_stay_true_through_a_bulk_load_and_another_tools_sql(catalogue, conn, counts_stay_true):
    now = datetime.now(timezone.utc)
    copy_images(conn, (BulkImage(i + 1, f"b{i}.png", 4, 3, 10, f"{i:064x}", "PNG", 1, None,
                                 np.ones(768, np.float32) if i % 3 else None, "m", now, now,
                                 TAKEN, False, f"Cam {i % 4}") for i in range(40)))
    assert counts_stay_true(conn)["images"] == 40
    conn.execute("UPDATE image_embeddings SET camera = NULL WHERE id < 10")
    conn.execute("UPDATE image_embeddings SET missing_since = now(), last_error = 'x' WHERE id > 30")
    conn.execute("DELETE FROM image_embeddings WHERE id % 5 = 0")
    counts_stay_true(conn)
    conn.execute("TRUNCATE image_embeddings")
    assert counts_stay_true(conn)["images"] == 0


def test_a_camera_without_photos_left_leaves_the_list(catalogue, conn, counts_stay_true):
    catalogue.upsert_images([record("a.png", "a" * 64, "Gone"), record("b.png", "b" * 64, "Kept")])
    catalogue.hide(["a.png"])
    assert counts_stay_true(conn)["cameras"] == [("Kept", 1)]


def test_ensure_counts_a_table_written_while_the_triggers_were_missing(db_url, counts_stay_true):
    conn = connect(db_url)
    Schema(conn).ensure(768)
    for name in TRIGGERS:  # as a table from before the counters, or restored from a dump
        conn.execute(f"DROP TRIGGER {name} ON image_embeddings")
    Catalogue(conn).upsert_images([record(f"{i}.png", f"{i:064x}", "Cam") for i in range(3)])
    assert Catalogue(conn).counts().images == 0
    Schema(conn).ensure(768)
    assert counts_stay_true(conn)["images"] == 3


def test_writers_at_once_on_many_connections_keep_the_counts_true(db_url, conn, counts_stay_true):
    """Sync-like inserts, hides and embeds from four connections at once: no deadlock, no lost
    update (each counter row is updated in key order at each statement's end)."""
    def writer(n: int) -> None:
        with connect(db_url) as own:
            catalogue, queue = Catalogue(own), EmbeddingQueue(own, "m")
            for step in range(8):
                names = [f"w{n}/{step}-{i}.png" for i in range(4)]
                catalogue.upsert_images([record(name, f"{n}{step}{i}".ljust(64, "0"),
                                                f"Cam {i}") for i, name in enumerate(names)])
                catalogue.hide(names[:1])
                for claim in queue.claim(f"w{n}", 2, 60):
                    queue.save(f"w{n}", [(claim.id, np.ones(768, np.float32))])

    assert run_in_threads(writer, 4) == []
    assert counts_stay_true(conn)["images"] == 4 * 8 * 3
    assert counts_of_rows(conn)["hidden"] == 4 * 8
