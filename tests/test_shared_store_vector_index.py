"""The HNSW index migrated on a library in use: new index first, an interrupted build finished
by the next run, one migration at a time, and what it takes on disk and in memory."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timezone

import numpy as np
import psycopg
import pytest
from conftest import run_in_threads

from shared.store import (BulkImage, Catalogue, Schema, VectorIndex, VectorLayout, connect,
                          copy_images, memory_needed_mb)
from shared.store.layout import FLOAT32_INDEX, GRAPH, HALF_INDEX, REBUILD_SUFFIX, GraphOptions

HALF = VectorLayout.wanted("halfvec-index", 768)


def library(db_url: str, rows: int, storage: str) -> psycopg.Connection:
    """A library of `rows` random embeddings with no HNSW index."""
    conn = connect(db_url)
    schema = Schema(conn)
    schema.ensure(768, storage)
    schema.drop_vector_index()
    vectors = np.random.default_rng(4).standard_normal((rows, 768)).astype(np.float32)
    now = datetime.now(timezone.utc)
    copy_images(conn, (BulkImage(i + 1, f"{i}.png", 4, 3, 10, f"{i:064x}", "PNG", 1, None, v, "m",
                                 now, now) for i, v in enumerate(vectors)))
    return conn


def float32_library(db_url: str, rows: int) -> psycopg.Connection:
    """A library as Image Browser left it before issue 11: a float32 HNSW index."""
    conn = library(db_url, rows, "float32")
    Schema(conn).build_vector_index("64MB", storage="float32")
    return conn


def default_graph_library(db_url: str, rows: int) -> psycopg.Connection:
    """A library as the first half-precision version left it: pgvector's default graph."""
    conn = library(db_url, rows, "halfvec-index")
    conn.execute(HALF.index_sql(False, graph=GraphOptions()))
    return conn


def graph_of(conn: psycopg.Connection, name: str = HALF_INDEX) -> GraphOptions | None:
    return VectorIndex(conn).state().graphs.get(name)


def migrate_while_searching(conn: psycopg.Connection, db_url: str) -> tuple[list, list]:
    """Migrate to the half-precision index while a user searches all along: (the first word
    of each line it says with the valid indexes at that moment, each search's row count)."""
    watcher, seen, searches = connect(db_url), [], []
    done = threading.Event()

    def say(line: str) -> None:
        seen.append((line.split()[0], VectorIndex(watcher).state().valid))

    def search() -> None:
        with connect(db_url) as own:
            while not done.is_set():
                searches.append(len(Catalogue(own).nearest(np.ones(768, np.float32), 5,
                                                           ef_search=40)))

    thread = threading.Thread(target=search)
    thread.start()
    try:
        Schema(conn).migrate_vector_index("halfvec-index", 768, say=say)
    finally:
        done.set()
        thread.join(timeout=30)
        watcher.close()
    return seen, searches


def test_an_empty_table_gets_the_chosen_index_at_once(db_url):
    conn = connect(db_url)
    report = Schema(conn).ensure(768)
    assert VectorIndex(conn).state().valid == (HALF_INDEX,) and report.pending is None
    assert report.storage == "halfvec-index" and "half-precision" in report.layout
    Schema(conn).ensure(768, "float32")  # still empty: switched at once
    assert VectorIndex(conn).state().valid == (FLOAT32_INDEX,)


def test_a_table_with_rows_keeps_its_index_until_the_new_one_is_built(db_url):
    conn = float32_library(db_url, 300)
    report = Schema(conn).ensure(768, build_index=False)  # what sync, embed and up do
    assert report.storage == "float32" and "ensure-schema" in report.pending
    seen, searches = migrate_while_searching(conn, db_url)
    assert seen == [("building", (FLOAT32_INDEX,)), ("dropping", (HALF_INDEX, FLOAT32_INDEX))]
    assert VectorIndex(conn).state().valid == (HALF_INDEX,)
    assert searches and set(searches) == {5}
    assert Schema(conn).ensure(768, build_index=False).pending is None


def cancel_the_build(db_url: str, found: list) -> None:
    """Wait for an index build to show in Postgres's progress view past its first phase (a
    concurrent build's catalog entry is committed by then: a cancel while it initialises leaves
    nothing behind), then cancel it there."""
    with connect(db_url) as conn:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            row = conn.execute("""SELECT pid FROM pg_stat_progress_create_index
                                  WHERE phase <> 'initializing'""").fetchone()
            if row:
                found.append(conn.execute("SELECT pg_cancel_backend(%s)", row).fetchone()[0])
                return
            time.sleep(0.005)


def test_an_interrupted_build_leaves_search_on_the_old_index_and_the_next_run_finishes(db_url):
    conn = float32_library(db_url, 2000)
    cancelled: list = []
    canceller = threading.Thread(target=cancel_the_build, args=(db_url, cancelled))
    canceller.start()
    with pytest.raises(psycopg.errors.QueryCanceled):
        Schema(conn).migrate_vector_index("halfvec-index", 768)
    canceller.join(timeout=60)
    assert cancelled == [True]
    state = VectorIndex(conn).state()
    assert state.invalid == (HALF_INDEX,) and state.valid == (FLOAT32_INDEX,)
    assert VectorIndex(conn).layout().index == "float32"  # search goes on with the old index
    said: list[str] = []
    Schema(conn).migrate_vector_index("halfvec-index", 768, say=said.append)
    assert said[0].startswith(f"dropping {HALF_INDEX}, left unfinished")
    state = VectorIndex(conn).state()
    assert state.valid == (HALF_INDEX,) and state.invalid == ()


def test_two_migrations_at_once_build_the_index_once(db_url):
    float32_library(db_url, 300)
    said: list[list[str]] = [[], []]

    def migrate(n: int) -> None:
        with connect(db_url) as own:
            Schema(own).migrate_vector_index("halfvec-index", 768, say=said[n].append)

    assert run_in_threads(migrate, 2) == []
    assert sum(line.startswith("building") for lines in said for line in lines) == 1
    with connect(db_url) as conn:
        assert VectorIndex(conn).state().valid == (HALF_INDEX,)


def test_a_build_short_of_memory_says_what_to_allow(db_url):
    conn = float32_library(db_url, 300)
    conn.execute("ANALYZE image_embeddings")
    said: list[str] = []
    Schema(conn).migrate_vector_index("halfvec-index", 768, index_memory_mb=1, say=said.append)
    assert "INDEX_BUILD_MEMORY_MB" in said[0] and "maintenance_work_mem" in said[0]
    assert VectorIndex(conn).state().valid == (HALF_INDEX,)


def test_memory_and_sizes_follow_the_rows_and_the_precision(db_url):
    full = VectorLayout.wanted("float32", 768)
    assert memory_needed_mb(HALF, 1_000_000) < memory_needed_mb(full, 1_000_000)
    assert 2000 < memory_needed_mb(HALF, 1_000_000) < 3000  # docs/benchmarks.md: what the build took
    conn = float32_library(db_url, 300)
    before = VectorIndex(conn).sizes()
    Schema(conn).migrate_vector_index("halfvec-index", 768)
    after = VectorIndex(conn).sizes()
    assert after.rows == before.rows == 300 and after.table == before.table
    assert 0 < after.vector_index < before.vector_index  # half precision: a smaller graph
    assert after.total == after.table + after.vector_index + after.other_indexes


def test_an_index_built_with_the_default_graph_is_rebuilt_with_search_going_on(db_url):
    conn = default_graph_library(db_url, 300)
    assert graph_of(conn) == GraphOptions(16, 64) != GRAPH
    pending = Schema(conn).ensure(768, build_index=False).pending
    assert "built with m 16, ef_construction 64" in pending and "rebuilds it" in pending
    seen, searches = migrate_while_searching(conn, db_url)
    rebuilt = HALF_INDEX + REBUILD_SUFFIX
    assert seen == [("rebuilding", (HALF_INDEX,)), ("dropping", (HALF_INDEX, rebuilt))]
    assert VectorIndex(conn).state().valid == (HALF_INDEX,) and graph_of(conn) == GRAPH
    assert searches and set(searches) == {5}
    assert Schema(conn).ensure(768, build_index=False).pending is None


@pytest.mark.parametrize("stopped_after", ["the build", "the drop"])
def test_a_rebuild_stopped_between_its_steps_is_finished_without_building_again(db_url,
                                                                                 stopped_after):
    conn = default_graph_library(db_url, 300)
    conn.execute(HALF.index_sql(False, rebuild=True))  # the new graph, under the rebuild name
    if stopped_after == "the drop":
        conn.execute(f"DROP INDEX {HALF_INDEX}")
    assert VectorIndex(conn).layout().index == "halfvec"  # search goes on meanwhile
    said: list[str] = []
    Schema(conn).migrate_vector_index("halfvec-index", 768, say=said.append)
    assert not any(line.startswith(("building", "rebuilding")) for line in said)
    assert VectorIndex(conn).state().valid == (HALF_INDEX,) and graph_of(conn) == GRAPH


def test_a_cancelled_rebuild_leaves_the_old_graph_in_use_and_the_next_run_finishes(db_url):
    conn = default_graph_library(db_url, 2000)
    cancelled: list = []
    canceller = threading.Thread(target=cancel_the_build, args=(db_url, cancelled))
    canceller.start()
    with pytest.raises(psycopg.errors.QueryCanceled):
        Schema(conn).migrate_vector_index("halfvec-index", 768)
    canceller.join(timeout=60)
    assert cancelled == [True]
    state = VectorIndex(conn).state()
    assert state.valid == (HALF_INDEX,) and state.invalid == (HALF_INDEX + REBUILD_SUFFIX,)
    Schema(conn).migrate_vector_index("halfvec-index", 768)
    state = VectorIndex(conn).state()
    assert state.valid == (HALF_INDEX,) and state.invalid == () and graph_of(conn) == GRAPH


def test_an_empty_table_gets_the_new_graph_at_once(db_url):
    conn = connect(db_url)
    Schema(conn).ensure(768)
    conn.execute(f"DROP INDEX {HALF_INDEX}")
    conn.execute(HALF.index_sql(False, graph=GraphOptions()))
    assert graph_of(conn) == GraphOptions()
    assert Schema(conn).ensure(768, build_index=False).pending is None
    assert graph_of(conn) == GRAPH
