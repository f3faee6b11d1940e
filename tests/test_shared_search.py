"""Search from Python, without Flask: by text, by image, similar images, and the README's snippet."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import shutil
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest
from browse_support import WordEmbedder, build_library, png_bytes
from click.testing import CliRunner
from psycopg.conninfo import make_conninfo

from shared.imagefile import ImageProblem
from shared.search import ImageNotFound, Search, SearchUnavailable, open_search
from shared.settings import Settings
from shared.store import BulkImage, Catalogue, Filters, Schema, connect, copy_images, open_pool

from conftest import WILD, statements_sent

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def library(pg_url, tmp_path_factory):
    return build_library(pg_url, tmp_path_factory.mktemp("search"), n_fillers=5)


def filenames(hits) -> list[str]:
    return [hit.row.filename for hit in hits]


def test_by_text_by_image_and_similar_rank_by_meaning(library):
    search = open_search(library, embedder=WordEmbedder())
    hits = search.by_text("red bicycle in the snow", k=3)
    assert filenames(hits)[0] == "red-bicycle-snow.jpg"
    assert hits[0].similarity > hits[1].similarity >= hits[2].similarity
    assert filenames(search.by_image(png_bytes((20, 60, 220)), k=1)) == ["blue-sea.jpg"]
    with connect(library.database_url) as conn:
        car = Catalogue(conn).get_image_by_filename("red-car.jpg")
        waiting = Catalogue(conn).get_image_by_filename("waiting.jpg")
    similar = search.similar_to(car.id, k=2)
    assert car.id not in [h.row.id for h in similar] and filenames(similar)[0] == "red-bicycle-snow.jpg"
    assert search.similar_to(waiting.id) is None  # not embedded yet
    with pytest.raises(ImageNotFound):
        search.similar_to(10**9)


def test_what_cannot_be_searched_says_why(library):
    off = open_search(dataclasses.replace(library, embedder="none"))
    assert "EMBEDDER=none" in off.off_reason
    with pytest.raises(SearchUnavailable, match="EMBEDDER=none"):
        off.by_text("cat")
    narrow = open_search(library, embedder=WordEmbedder(dimensions=512))
    with pytest.raises(SearchUnavailable, match="512"):
        narrow.by_text("cat")
    with pytest.raises(ImageProblem):
        open_search(library, embedder=WordEmbedder()).by_image(b"not a picture")


def test_the_readme_snippet_runs_as_written(db_url, tmp_path, tiny_clip):
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    snippet = re.search(r"```python\n(from shared.search import.*?)```", readme, re.S).group(1)
    assert len(snippet.strip().splitlines()) == 3
    images = tmp_path / "images"
    shutil.copytree(WILD / "photos", images)
    env = {**os.environ, "SUPABASE_DB_URL": db_url, "IMAGES_DIR": str(images),
           "DATA_DIR": str(tmp_path / "data"), "EXPECTED_VECTOR_DIM": "24",
           "CLIP_MODEL_PATH": str(tiny_clip[0]), "REPLICATE_API_TOKEN": "", "EMBEDDER": "mlx"}
    from loader.cli import main as loader_cli

    for command in (["sync"], ["embed"]):
        result = CliRunner().invoke(loader_cli, command, env=env)
        assert result.exit_code == 0, result.output
    done = subprocess.run([sys.executable, "-c", snippet], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 5  # k=5 of the six photos
    similarities = [float(line.split()[0]) for line in lines]
    assert similarities == sorted(similarities, reverse=True)
    assert {line.split(maxsplit=1)[1] for line in lines} <= {p.relative_to(images).as_posix()
                                                              for p in images.rglob("*") if p.is_file()}


# --- filtered search on 20,000 rows (issue 10) ------------------------------------------------

ROWS, DIM_SMALL, TOPICS, K = 20_000, 32, 40, 10


@dataclasses.dataclass
class Big:
    """A 20,000-row library in a database of its own, its vectors and who is in which filter."""

    url: str
    vectors: np.ndarray
    cameras: np.ndarray
    query: np.ndarray


@pytest.fixture(scope="module")
def big(pg_url) -> Big:
    """Clustered 32-d vectors; the query is about topic 0. Cameras: "Rare" on 1 % of the rows
    and "Far" on 10 %, both only from the 20 topics least like topic 0 (what the query looks
    for is not there), "Any" on 10 % chosen at random, "Other" on the rest."""
    rng = np.random.default_rng(10)
    unit = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)  # noqa: E731
    common, centres = unit(rng.normal(size=DIM_SMALL)), unit(rng.normal(size=(TOPICS, DIM_SMALL)))
    topic = rng.integers(0, TOPICS, ROWS)
    noise = rng.normal(size=(ROWS, DIM_SMALL)) / np.sqrt(DIM_SMALL)
    vectors = unit(0.5 * common + centres[topic] + 0.3 * noise).astype(np.float32)
    far = np.flatnonzero(np.isin(topic, np.argsort(centres @ centres[0])[:20]))
    cameras = np.full(ROWS, "Other", dtype=object)
    picked = rng.choice(far, 2200, replace=False)
    cameras[picked[:200]], cameras[picked[200:]] = "Rare", "Far"
    anywhere = rng.choice(np.flatnonzero(cameras == "Other"), 2000, replace=False)
    cameras[anywhere] = "Any"
    with connect(pg_url) as conn:
        conn.execute("DROP DATABASE IF EXISTS image_browser_filtered WITH (FORCE)")
        conn.execute("CREATE DATABASE image_browser_filtered")
    url = make_conninfo(pg_url, dbname="image_browser_filtered")
    added = datetime.now(timezone.utc)
    with connect(url) as conn:
        schema = Schema(conn)
        schema.ensure(DIM_SMALL)
        schema.drop_vector_index()
        copy_images(conn, (BulkImage(i + 1, f"{i}.jpg", 1, 1, 1, f"{i:064x}", "JPEG", 0, None,
                                     vectors[i], "test", added, added, camera=cameras[i])
                           for i in range(ROWS)))
        schema.build_vector_index()
    yield Big(url, vectors, cameras, unit(0.5 * common + centres[0]).astype(np.float32))
    with connect(pg_url) as conn:
        conn.execute("DROP DATABASE IF EXISTS image_browser_filtered WITH (FORCE)")


@pytest.fixture
def searcher(big):
    """Search on the big library with its settings given: search(exact_search_rows=...)."""
    pools = []

    def make(**options) -> Search:
        pools.append(open_pool(big.url, size=2))
        return Search(pools[-1].connection, None, expected_dimensions=DIM_SMALL,
                      **{"ef_search": 40, **options})

    yield make
    for pool in pools:
        pool.close()


def exact_ids(big: Big, camera: str) -> list[int]:
    """The true K nearest rows with this camera, worked out in numpy (ids start at 1)."""
    return exact_ids_of(big, camera, K)


def exact_ids_of(big: Big, camera: str, k: int) -> list[int]:
    allowed = np.flatnonzero(big.cameras == camera)
    distances = 1.0 - big.vectors[allowed] @ big.query
    return [int(allowed[i]) + 1 for i in np.argsort(distances, kind="stable")[:k]]


def check_order(big: Big, hits) -> None:
    """Nearest first, with the distances numpy gives those rows."""
    similarities = [hit.similarity for hit in hits]
    assert similarities == sorted(similarities, reverse=True)
    expected = big.vectors[[hit.row.id - 1 for hit in hits]] @ big.query
    assert np.allclose(similarities, expected, atol=1e-5)


def test_a_filter_matching_1_percent_gives_k_rows_in_the_right_order(big, searcher):
    search = searcher()  # the default settings
    rare = Filters(camera="Rare")
    assert (big.cameras == "Rare").mean() == 0.01
    hits = search.by_vector(big.query, K, filters=rare)
    assert [hit.row.id for hit in hits] == exact_ids(big, "Rare")
    check_order(big, hits)
    assert search.method(rare) == "exact"


def test_the_index_path_keeps_scanning_until_k_rows_pass_the_filter(big, searcher):
    anything = Filters(camera="Any")
    with connect(big.url) as conn:
        catalogue = Catalogue(conn)
        # The trap: ef_search candidates, then the filter, too few left.
        assert len(catalogue.nearest(big.query, K, ef_search=40, filters=anything,
                                     iterative_scan="off")) < K
        # The index scan alone (no exact scan after it) goes on until K rows pass.
        assert len(catalogue.nearest(big.query, K, ef_search=40, filters=anything)) == K
        # It walks the HNSW index even where the camera's btree could find the rows (and
        # then sort every one of them, slow when many match): here that walk finds too few.
        assert len(catalogue.nearest(big.query, K, ef_search=40, filters=Filters(camera="Rare"),
                                     iterative_scan="off")) < K
    search = searcher(exact_search_rows=0)  # never the exact scan first
    for camera in ("Any", "Rare"):
        hits = search.by_vector(big.query, K, filters=Filters(camera=camera))
        assert len(hits) == K and {big.cameras[h.row.id - 1] for h in hits} == {camera}
        check_order(big, hits)
        assert len({h.row.id for h in hits} & set(exact_ids(big, camera))) >= 9
    # 100 rows take several rounds of the iterative scan, which returns them only roughly in
    # order (relaxed_order): they are sorted again.
    many = search.by_vector(big.query, 100, filters=anything)
    assert len(many) == 100 and {big.cameras[h.row.id - 1] for h in many} == {"Any"}
    check_order(big, many)


def test_when_the_index_scan_gives_up_the_exact_scan_finds_every_row(big, searcher):
    # "Far" rows are all unlike the query: the index walks past max_scan_tuples rows
    # without finding K of them, and stops.
    far = Filters(camera="Far")
    with connect(big.url) as conn:
        gave_up = Catalogue(conn).nearest(big.query, K, ef_search=40, filters=far,
                                          max_scan_tuples=200)
    assert len(gave_up) < K
    search = searcher(exact_search_rows=0, max_scan_tuples=200)
    hits = search.by_vector(big.query, K, filters=far)
    assert [hit.row.id for hit in hits] == exact_ids(big, "Far")
    check_order(big, hits)


def test_the_search_method_follows_exact_search_rows(big, searcher):
    search = searcher(exact_search_rows=500)
    assert search.method(Filters(camera="Rare")) == "exact"  # 200 rows
    assert search.method(Filters(camera="Any")) == "index"  # 2,000 rows
    assert search.method(None) == search.method(Filters()) == "index"
    assert searcher(exact_search_rows=2000).method(Filters(camera="Any")) == "exact"
    assert searcher(exact_search_rows=1999).method(Filters(camera="Any")) == "index"


def test_search_takes_its_filtered_search_limits_from_the_settings(big):
    settings = Settings.from_env({"BROWSE_EXACT_SEARCH_ROWS": "2000", "BROWSE_HNSW_MAX_SCAN_TUPLES": "300",
                                  "EXPECTED_VECTOR_DIM": str(DIM_SMALL)})
    pool = open_pool(big.url, size=1)
    try:
        search = Search.configured(pool.connection, None, settings, table_dimensions=DIM_SMALL)
        assert (search.exact_search_rows, search.max_scan_tuples) == (2000, 300)
        assert search.method(Filters(camera="Any")) == "exact"  # 2,000 rows match
    finally:
        pool.close()


def index_walks(conn) -> dict[str, int]:
    """How often each HNSW index of the table was walked (this backend's counts flushed)."""
    conn.execute("SELECT pg_stat_force_next_flush()")
    return dict(conn.execute(
        """SELECT indexrelname, idx_scan FROM pg_stat_user_indexes
           WHERE relname = 'image_embeddings' AND indexrelname LIKE '%%hnsw'""").fetchall())


def test_unfiltered_filtered_and_similar_searches_walk_the_half_precision_index(big):
    """Issue 11: the index holds embedding::halfvec(N); every search path's ORDER BY must be
    that expression, or the planner sorts every row instead (EXPLAIN, then the real calls)."""
    half, full = "image_embeddings_embedding_half_hnsw", "image_embeddings_embedding_hnsw"
    with connect(big.url) as conn:
        catalogue = Catalogue(conn)
        assert set(index_walks(conn)) == {half}  # the default EMBEDDING_STORAGE, alone
        for filters in (None, Filters(camera="Any")):
            plan = "\n".join(catalogue.nearest_plan(big.query, K, ef_search=40, filters=filters))
            assert f"Index Scan using {half}" in plan and "Sort" not in plan
        exact = "\n".join(catalogue.nearest_plan(big.query, K, ef_search=40, exact=True,
                                                 filters=Filters(camera="Rare")))
        assert half not in exact and full not in exact
        # On this connection: its walks are counted as soon as it asks for them.
        search = Search(lambda: contextlib.nullcontext(conn), None, expected_dimensions=DIM_SMALL,
                        ef_search=40, exact_search_rows=500)
        for run, walks in ((lambda: search.by_vector(big.query, K), 1),
                           (lambda: search.by_vector(big.query, K, filters=Filters(camera="Any")), 1),
                           (lambda: search.similar_to(5, K), 1),
                           (lambda: search.similar_to(5, K, filters=Filters(camera="Rare")), 0)):
            before = index_walks(conn)[half]
            assert len(run()) == K
            assert index_walks(conn)[half] - before == walks  # "Rare" is the exact scan's


def test_search_turns_on_at_runtime_from_another_thread(pg_url, tmp_path):
    import threading

    library = build_library(pg_url, tmp_path, n_fillers=0)
    search = open_search(dataclasses.replace(library, embedder="none"))
    search.set_off("the search model is downloading (40%)", "downloading (40%)")
    assert search.off_summary == "downloading (40%)" and "40%" in search.off_reason
    with pytest.raises(SearchUnavailable, match="downloading"):
        search.by_text("cat")
    answers: list[str] = []

    def ask_while_it_turns_on() -> None:
        for _ in range(200):
            try:
                answers.append(filenames(search.by_text("red bicycle", k=1))[0])
            except SearchUnavailable:
                answers.append("off")

    asking = threading.Thread(target=ask_while_it_turns_on)
    asking.start()
    search.turn_on(WordEmbedder())
    asking.join(timeout=60)
    assert set(answers) <= {"off", "red-bicycle-snow.jpg"}  # never a half-turned state
    assert search.off_reason is None and search.off_summary is None
    assert filenames(search.by_text("red bicycle snow", k=1)) == ["red-bicycle-snow.jpg"]


def test_a_filter_the_planner_puts_above_exact_search_rows_goes_to_the_index_uncounted(
        big, searcher):
    """Counting reads the rows it counts, about what their exact scan costs: a filter the
    planner puts above BROWSE_EXACT_SEARCH_ROWS goes to the index after one estimate."""
    search = searcher(exact_search_rows=500)
    with connect(big.url) as conn:
        catalogue = Catalogue(conn)
        wide, near = Filters(camera="Other"), Filters(camera="Any")  # 15,800 and 2,000 rows
        assert 10_000 < catalogue.estimate_matching(wide) < 25_000
        for filters in (wide, near):
            assert statements_sent(conn, lambda: search._route(catalogue, filters)) == 1
            assert search._route(catalogue, filters)[0] == "index"
    assert search.method(near) == "index"
    hits = search.by_vector(big.query, K, filters=near)
    assert len(hits) == K and all(hit.row.camera == "Any" for hit in hits)


def test_a_walk_asks_for_the_rows_its_first_round_holds_between_40_and_60(big, searcher,
                                                                        monkeypatch):
    """A filter letting many rows through: the first round of ef_search candidates holds more
    than 40 of them, already walked to; the search keeps the best k of up to 60."""
    asked = []
    walk = Catalogue.nearest

    def noting(self, vector, k, **options):
        if not options.get("exact"):
            asked.append(options.get("candidates"))
        return walk(self, vector, k, **options)

    monkeypatch.setattr(Catalogue, "nearest", noting)
    wide, some, near = Filters(camera="Other"), Filters(has_location=False), Filters(camera="Any")
    cases = [  # (filters, ef_search, rows asked for): 15,800, 20,000 and 2,000 of 20,000 rows
        (wide, 40, 40), (wide, 60, 47), (wide, 100, 60), (some, 50, 50), (near, 200, 40),
    ]
    for filters, ef_search, expected in cases:
        search = searcher(exact_search_rows=0, ef_search=ef_search)
        assert search.candidates(filters) == expected, (filters, ef_search)
        asked.clear()
        hits = search.by_vector(big.query, K, filters=filters)
        assert asked == [expected] and len(hits) == K
    unfiltered = searcher(ef_search=100)
    asked.clear()
    assert len(unfiltered.by_vector(big.query, K)) == K and unfiltered.candidates(None) == 0


def test_a_filter_estimated_under_the_limit_is_read_once_without_a_count(big, searcher):
    """Counting, then scanning, read a small filter's rows twice: one exact scan that gives up
    past BROWSE_EXACT_SEARCH_ROWS reads them once."""
    search = searcher(exact_search_rows=500)
    rare = Filters(camera="Rare")  # 200 rows
    with connect(big.url) as conn:
        catalogue = Catalogue(conn)
        assert statements_sent(conn, lambda: search._route(catalogue, rare)) == 1  # no count
        assert search._route(catalogue, rare)[0] == "few"
        found = catalogue.nearest_among_few(big.query, K, cap=200, filters=rare)
        assert [row.id for row, _ in found] == exact_ids(big, "Rare")
        assert catalogue.nearest_among_few(big.query, K, cap=199, filters=rare) is None
        first = exact_ids(big, "Rare")[0]
        rest = catalogue.nearest_among_few(big.query, K, cap=200, filters=rare, exclude_id=first)
        assert [row.id for row, _ in rest] == [i for i in exact_ids_of(big, "Rare", K + 1) if i != first]
    hits = search.by_vector(big.query, K, filters=rare)
    assert [hit.row.id for hit in hits] == exact_ids(big, "Rare")
    check_order(big, hits)
    assert search.method(rare) == "exact"


def test_a_filter_the_planner_puts_a_little_low_is_still_read_once(big, searcher, monkeypatch):
    """Combined filters are estimated up to a quarter low: a filter estimated at the limit that
    has a third more rows is still read by one exact scan, not read and then walked too."""
    monkeypatch.setattr(Catalogue, "estimate_matching", lambda self, filters: 1_500)
    walks = []
    walk = Catalogue.nearest
    monkeypatch.setattr(Catalogue, "nearest",
                        lambda self, *a, **kw: walks.append(kw) or walk(self, *a, **kw))
    search = searcher(exact_search_rows=1_500)
    anything = Filters(camera="Any")  # 2,000 rows
    hits = search.by_vector(big.query, K, filters=anything)
    assert [hit.row.id for hit in hits] == exact_ids(big, "Any") and walks == []
    check_order(big, hits)


def test_a_filter_the_planner_puts_far_too_low_still_gives_k_rows_through_the_index(
        big, searcher, monkeypatch):
    monkeypatch.setattr(Catalogue, "estimate_matching", lambda self, filters: 10)
    search = searcher(exact_search_rows=500)
    anything = Filters(camera="Any")  # 2,000 rows: the exact scan gives up after 501
    hits = search.by_vector(big.query, K, filters=anything)
    assert len(hits) == K and {big.cameras[hit.row.id - 1] for hit in hits} == {"Any"}
    check_order(big, hits)
    assert len({hit.row.id for hit in hits} & set(exact_ids(big, "Any"))) >= 9
    assert search.method(anything) == "index"
