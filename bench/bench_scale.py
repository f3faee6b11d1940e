"""Benchmark a library of a million photos on one machine (run by hand; issue 11).

    .venv/bin/python bench/bench_scale.py [--rows 1000000] [--reuse] [--write-docs]

In an embedded Postgres under bench/out/scale/ (or BENCH_DB_URL), measures:
  1. binary COPY of `--rows` rows of bench_search's clustered 768-d vectors (1% still waiting
     for an embedding), then the HNSW index built after the load, half-precision and float32:
     build time and size, and the sizing table (table, index, total for each choice; the
     `halfvec` column's table size measured on a copy);
  2. search through `Catalogue.nearest` with each index: recall@10 against an exact scan
     (numpy, float32) and p50/p95 at 1 and 4 threads;
  3. the backfill's claim query with 1% of rows waiting, a keyset page deep in the timeline,
     the home page, `/status` and `/api/status` server time (Flask test client), `loader status`;
  4. RSS of this process and of the Postgres processes;
  5. the no-op re-sync of `--sync-files` files (a database of its own).
`--reuse` keeps the loaded table, the built indexes and the files of the last run with the
same `--rows`, and measures again. Results go to bench/out/scale/results-<rows>.json, and with
`--write-docs` into docs/benchmarks.md ("A million photos").
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "mlx-local"), str(ROOT / "bench")]

from bench_search import (  # noqa: E402
    DIM, FixedEmbedder, cluster_basis, query_vectors, sample_clustered, write_docs,
)

from shared.database import start_embedded  # noqa: E402
from shared.settings import Settings  # noqa: E402
from shared.storage import thumbnail_key  # noqa: E402
from shared.store import (  # noqa: E402
    BulkImage, Catalogue, EmbeddingQueue, Schema, VectorIndex, VectorLayout, connect, copy_images,
    memory_needed_mb, open_pool,
)
from shared.store.layout import GRAPH  # noqa: E402

OUT = ROOT / "bench" / "out" / "scale"
CHUNK = 50_000
EF_CHOICES = (40, 100, 200, 300, 400, 1000)
LAYOUTS = {"halfvec-index": VectorLayout("halfvec", DIM), "float32": VectorLayout("float32", DIM)}
CAMERAS = ("Apple iPhone 13", "Google Pixel 7", "Canon EOS R6", "Sony A7 III", "Fujifilm X-T4")
START = datetime(2010, 1, 1)


def waiting(i: int) -> bool:
    """1% of the rows have no embedding yet: the backfill's work."""
    return i % 100 == 50


# --- data ---------------------------------------------------------------------------------


def vector_chunks(rows: int, seed: int = 2026):
    """(first row index, vectors) chunk by chunk: the same vectors on every run."""
    rng = np.random.default_rng(seed)
    basis = cluster_basis(rng)
    for start in range(0, rows, CHUNK):
        yield start, sample_clustered(min(CHUNK, rows - start), rng, basis)


def queries(n: int) -> np.ndarray:
    """Text-query-like vectors on the same basis as the library's."""
    rng = np.random.default_rng(2026)
    common, centres, *_ = cluster_basis(rng)
    return query_vectors(n, np.random.default_rng(7), (common, centres))


def load(url: str, rows: int) -> dict:
    """Fresh table, binary COPY of every row, no HNSW index yet; returns the COPY's time."""
    with connect(url) as conn:
        schema = Schema(conn)
        schema.drop()
        schema.ensure(DIM)
        schema.drop_vector_index()
        now = datetime.now(timezone.utc)
        started = time.perf_counter()
        for first, vectors in vector_chunks(rows):
            copy_images(conn, (_row(first + j, v, now) for j, v in enumerate(vectors)))
        copied = time.perf_counter() - started
        conn.execute("VACUUM ANALYZE image_embeddings")  # bench-only: settles sizes and stats
    return {"copy_s": copied}


def _row(i: int, vector: np.ndarray, now: datetime) -> BulkImage:
    sha = f"{i:064x}"
    taken = START + timedelta(seconds=i * 317)  # newer rows were taken later: ids follow time
    embedded = not waiting(i)
    return BulkImage(i + 1, f"photos/{i // 1000:04d}/IMG_{i:07d}.jpg", 4032, 3024, 3_000_000 + i,
                     sha, "JPEG", 0, thumbnail_key(sha), vector if embedded else None,
                     "bench/clustered" if embedded else None, now if embedded else None, now,
                     taken, False, CAMERAS[i % len(CAMERAS)])


def truth(rows: int, qs: np.ndarray, k: int = 10) -> list[list[int]]:
    """The exact k nearest ids of each query (float32 cosine, embedded rows only)."""
    scores, ids = [np.full((len(qs), 0), -2, np.float32)], [np.zeros((len(qs), 0), np.int64)]
    for first, vectors in vector_chunks(rows):
        sims = qs @ vectors.T
        chunk_ids = np.arange(first + 1, first + 1 + len(vectors))
        sims[:, np.array([waiting(i - 1) for i in chunk_ids])] = -2
        top = np.argpartition(-sims, k, axis=1)[:, :k]
        scores.append(np.take_along_axis(sims, top, 1))
        ids.append(chunk_ids[top])
        s, d = np.concatenate(scores, 1), np.concatenate(ids, 1)
        keep = np.argsort(-s, axis=1)[:, :k]
        scores, ids = [np.take_along_axis(s, keep, 1)], [np.take_along_axis(d, keep, 1)]
    return [list(row) for row in ids[0]]


# --- the index ----------------------------------------------------------------------------


def build(url: str, name: str, rows: int) -> dict:
    """Build one HNSW index (the other kept: each search names the one it walks)."""
    layout = LAYOUTS[name]
    memory = memory_needed_mb(layout, rows)
    with connect(url) as conn:
        index = VectorIndex(conn)
        if index.state().finished(layout) == layout.index_name:
            return {}
        index.drop_all(keep=LAYOUTS[other(name)].index_name)  # one built with another graph
        started = time.perf_counter()
        index.build(layout, memory)
        took = time.perf_counter() - started
        size = conn.execute("SELECT pg_relation_size(%s)", (layout.index_name,)).fetchone()[0]
    return {f"{name}_build_s": took, f"{name}_index_bytes": size, f"{name}_memory_mb": memory,
            f"{name}_graph": GRAPH.describe()}


def other(name: str) -> str:
    return "float32" if name == "halfvec-index" else "halfvec-index"


def sizing(url: str) -> dict:
    """Table, indexes and, on a copy, the table's size with a halfvec column (bench-only SQL)."""
    with connect(url) as conn:
        sizes = VectorIndex(conn).sizes()
        conn.execute("DROP TABLE IF EXISTS bench_halfvec_column")
        conn.execute(f"""CREATE TABLE bench_halfvec_column AS
                         SELECT *, embedding::halfvec({DIM}) AS half FROM image_embeddings""")
        conn.execute("ALTER TABLE bench_halfvec_column DROP COLUMN embedding")
        conn.execute("VACUUM FULL bench_halfvec_column")
        half_table = conn.execute("SELECT pg_table_size('bench_halfvec_column')").fetchone()[0]
        conn.execute("DROP TABLE bench_halfvec_column")
    return {"table_bytes": sizes.table, "other_index_bytes": sizes.other_indexes,
            "halfvec_column_table_bytes": half_table}


# --- search -------------------------------------------------------------------------------


def recall(url: str, name: str, qs: np.ndarray, exact: list[list[int]], ef: int) -> float:
    """Mean share of the true 10 nearest that `nearest` returns through one index."""
    with connect(url) as conn:
        catalogue = Catalogue(conn)
        hits = [len({r.id for r, _ in catalogue.nearest(q, 10, ef_search=ef, layout=LAYOUTS[name])}
                    & set(t)) for q, t in zip(qs, exact)]
    return sum(hits) / (10 * len(qs))


def latency(url: str, name: str, qs: np.ndarray, ef: int, threads: int) -> dict:
    """p50/p95 of `Catalogue.nearest` (k = 10) on `threads` threads sharing a pool."""
    return timed(url, threads, qs, lambda conn, q: Catalogue(conn).nearest(
        q, 10, ef_search=ef, layout=LAYOUTS[name]))


def timed(url: str, threads: int, items, work) -> dict:
    """p50/p95 (ms) of `work(conn, item)` over `items`, after a warm-up of 20."""
    db = open_pool(url, size=threads)
    times: list[float] = []
    lock = threading.Lock()

    def one(item) -> None:
        with db.connection() as conn:
            started = time.perf_counter()
            work(conn, item)
            took = time.perf_counter() - started
        with lock:
            times.append(took)

    for item in items[:20]:
        one(item)
    times.clear()
    with ThreadPoolExecutor(threads) as workers:
        list(workers.map(one, items))
    db.close()
    return pct(times)


def pct(times: list[float]) -> dict:
    ms = np.array(times) * 1000
    return {"p50_ms": float(np.percentile(ms, 50)), "p95_ms": float(np.percentile(ms, 95))}


# --- the rest of the library ----------------------------------------------------------------


def claim_times(url: str, runs: int = 50) -> dict:
    """The backfill's claim of 16 rows with 1% of rows waiting, each claim given back."""
    times = []
    with connect(url) as conn:
        queue = EmbeddingQueue(conn, "bench/clustered")
        for _ in range(runs):
            started = time.perf_counter()
            claimed = queue.claim("bench", 16, 60)
            times.append(time.perf_counter() - started)
            assert len(claimed) == 16
            queue.release("bench")
    return pct(times)


def page_times(url: str, rows: int, qs: np.ndarray, runs: int = 60) -> dict:
    """Server time (WSGI, no network) of the pages whose cost grows with the library."""
    from browse import create_app
    from browse.present import encode_cursor

    settings = Settings(images_dir=OUT / "images", data_dir=OUT / "data", database_url=url)
    settings.images_dir.mkdir(parents=True, exist_ok=True)
    with connect(url) as conn:
        deep = encode_cursor(Catalogue(conn).get_image(rows // 20))  # 95% of the way down
    app = create_app(settings, embedder=FixedEmbedder(qs[0]))
    client = app.test_client()
    out = {}
    try:
        for label, path in (("home page `/`", "/"), ("`/status`", "/status"),
                            ("`/api/status`", "/api/status"),
                            ("keyset page 95% deep `/api/images?limit=60&cursor=`",
                             f"/api/images?limit=60&cursor={deep}"),
                            ("a camera's page `/?camera=`", "/?camera=Canon+EOS+R6"),
                            ("search page `/?q=`", "/?q=anything")):
            for _ in range(5):
                assert client.get(path).status_code == 200, path
            times = []
            for _ in range(runs):
                started = time.perf_counter()
                response = client.get(path)
                times.append(time.perf_counter() - started)
                assert response.status_code == 200, path
            out[label] = pct(times)
    finally:
        app.extensions["image_browser"].close()
    return out


def loader_status_s(url: str) -> float:
    """Wall time of `loader status --json` (a fresh process: Python's start included)."""
    env = dict(os.environ, SUPABASE_DB_URL=url, IMAGES_DIR=str(OUT / "images"),
               DATA_DIR=str(OUT / "data"))
    started = time.perf_counter()
    subprocess.run([str(Path(sys.executable).parent / "loader"), "status", "--json"], env=env, cwd=OUT,
                   check=True, capture_output=True, timeout=120)
    return time.perf_counter() - started


def rss() -> dict:
    """Resident memory (MB) of this process (the web app ran in it) and of Postgres's."""
    pg = [p for p in psutil.process_iter(["name", "memory_info"]) if p.info["name"] == "postgres"]
    return {"bench_process_mb": psutil.Process().memory_info().rss / 2**20,
            "postgres_processes": len(pg),
            "postgres_largest_mb": max((p.info["memory_info"].rss for p in pg), default=0) / 2**20}


# --- no-op re-sync ----------------------------------------------------------------------------


def resync(files: int, reuse: bool) -> dict:
    """A no-op `run_sync` over `files` files the database already knows (own database)."""
    from loader.sync import run_sync
    from shared.storage import LocalStorage

    folder, pg = OUT / f"sync-{files}", OUT / f"sync-pg-{files}"
    url = start_embedded(pg)
    with connect(url) as conn:
        if not (reuse and Schema(conn).table_exists()
                and Catalogue(conn).counts().images == files):
            _make_files(folder / "images", files)
            Schema(conn).drop()
            Schema(conn).ensure(DIM)
            now = datetime.now(timezone.utc)
            copy_images(conn, (_known(folder / "images", i, now) for i in range(files)))
        catalogue = Catalogue(conn)
        storage = LocalStorage(folder / "images", folder / "thumbs")
        times = []
        for _ in range(3):
            report = run_sync(catalogue, storage, folder / "images", jobs=os.cpu_count() or 2,
                              max_pixels=178_956_970, progress=False)
            assert report.unchanged == files and not report.new and not report.changed, report
            times.append(report.seconds)
    return {"resync_files": files, "resync_s": min(times), "resync_runs_s": times}


def _name(i: int) -> str:
    return f"{i // 1000:03d}/IMG_{i:06d}.jpg"


def _make_files(images: Path, files: int) -> None:
    for i in range(files):
        path = images / _name(i)
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"\xff\xd8" + i.to_bytes(8, "big"))


def _known(images: Path, i: int, now: datetime) -> BulkImage:
    st = (images / _name(i)).stat()
    sha = f"{i:064x}"
    return BulkImage(i + 1, _name(i), 4032, 3024, st.st_size, sha, "JPEG", st.st_mtime_ns,
                     thumbnail_key(sha), None, None, None, now, START, False, None)


# --- report -------------------------------------------------------------------------------


def machine() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in
                subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines()
                if line.startswith("Model name")), platform.processor())
    return {"cpu": cpu, "cores": os.cpu_count(), "load": os.getloadavg(),
            "date": f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC"}


def mb(value: float) -> str:
    return f"{value / 1e6:,.0f} MB"


def report(r: dict) -> str:
    """The results as docs/benchmarks.md's section."""
    rows, m0, m1 = r["rows"], r["machine_start"], r["machine_end"]
    lines = [
        "## A million photos (issue 11)", "",
        f"`.venv/bin/python bench/bench_scale.py --rows {rows}` ({m1['date']}): {m0['cpu']}, "
        f"{m0['cores']} cores, shared with other engineers' work: load average "
        f"{m0['load'][0]:.1f} at the start, {m1['load'][0]:.1f} at the end. Embedded PostgreSQL "
        "18 with pgvector 0.8.5, default settings but `maintenance_work_mem` as `ensure-schema` "
        "sets it. Rows: bench_search's clustered 768-d vectors; 1% of the rows wait for an "
        "embedding (spread through the library); dates follow the ids; 5 cameras.", "",
        f"Binary COPY of {rows:,} rows (50,000 per COPY, counters kept by the triggers): "
        f"{r['copy_s']:.0f} s.", "",
        "| index | graph | build | maintenance_work_mem | index size |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name in LAYOUTS:
        if f"{name}_build_s" in r:
            lines.append(f"| {name} | {r.get(f'{name}_graph', 'm 16, ef_construction 64')} | "
                         f"{r[f'{name}_build_s'] / 60:.1f} min | "
                         f"{r[f'{name}_memory_mb']:,} MB | {mb(r[f'{name}_index_bytes'])} |")
    lines += ["", "Search through `Catalogue.nearest` (k = 10, 200 text-query-like vectors, "
              "recall@10 against an exact float32 scan in numpy):", "",
              "| index | hnsw.ef_search | recall@10 | p50 / p95, 1 thread | p50 / p95, 4 threads |",
              "| --- | --- | --- | --- | --- |"]
    for name in LAYOUTS:
        for ef in EF_CHOICES:
            if (found := r.get(f"{name}_ef{ef}")):
                t1, t4 = found["t1"], found["t4"]
                lines.append(f"| {name} | {ef} | {found['recall']:.3f} | {t1['p50_ms']:.1f} / "
                             f"{t1['p95_ms']:.1f} ms | {t4['p50_ms']:.1f} / {t4['p95_ms']:.1f} ms |")
    lines += ["", "Server time of the pages (Flask test client, no network, 60 runs each):", "",
              "| request | p50 | p95 |", "| --- | --- | --- |"]
    for label, t in r.get("pages", {}).items():
        lines.append(f"| {label} | {t['p50_ms']:.1f} ms | {t['p95_ms']:.1f} ms |")
    claim, rss = r["claim"], r["rss"]
    lines += [
        f"| the backfill's claim of 16 rows (1% waiting) | {claim['p50_ms']:.1f} ms | "
        f"{claim['p95_ms']:.1f} ms |", "",
        f"`loader status --json`, a fresh process, Python's start included: "
        f"{r.get('loader_status_s', float('nan')):.2f} s. RSS: this process (the web app ran "
        f"in it) {rss['bench_process_mb']:.0f} MB; the largest of {rss['postgres_processes']} "
        f"Postgres processes {rss['postgres_largest_mb']:.0f} MB.", "",
    ]
    if "resync_s" in r:
        lines += [f"No-op re-sync of {r['resync_files']:,} files (a database of its own; best "
                  f"of 3, runs: {', '.join(f'{t:.2f}' for t in r['resync_runs_s'])} s): "
                  f"**{r['resync_s']:.2f} s**.", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--sync-files", type=int, default=200_000)
    parser.add_argument("--reuse", action="store_true", help="Keep what the last run loaded and built.")
    parser.add_argument("--skip", default="", help="Comma-separated parts to leave out: "
                        "float32, sizing, pages, resync.")
    parser.add_argument("--write-docs", action="store_true")
    parser.add_argument("--report", action="store_true", help="Print the last run's section.")
    args = parser.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    OUT.mkdir(parents=True, exist_ok=True)
    results_path = OUT / f"results-{args.rows}.json"
    if args.report:
        print(report(json.loads(results_path.read_text())))
        return
    results = json.loads(results_path.read_text()) if args.reuse and results_path.exists() else {}

    def save(**found) -> None:
        results.update(found)
        results_path.write_text(json.dumps(results, indent=1, default=str))
        print(json.dumps(found, default=str), flush=True)

    save(machine_start=machine(), rows=args.rows)
    url = os.environ.get("BENCH_DB_URL") or start_embedded(OUT / f"postgres-{args.rows}")
    with connect(url) as conn:
        loaded = (args.reuse and Schema(conn).table_exists()
                  and Catalogue(conn).counts().images == args.rows)
    if not loaded:
        save(**load(url, args.rows))
    else:  # a table loaded by older code gets what this code's schema adds
        with connect(url) as conn:
            Schema(conn).ensure(DIM, build_index=False)
    for name in ("halfvec-index", "float32"):
        if name not in skip:
            save(**build(url, name, args.rows), **{f"load_after_{name}": os.getloadavg()})
    if "sizing" not in skip:
        save(**sizing(url))
    qs = queries(args.queries)
    exact = truth(args.rows, qs)
    for name in LAYOUTS:
        if name in skip:
            continue
        for ef in EF_CHOICES:
            save(**{f"{name}_ef{ef}": {"recall": recall(url, name, qs, exact, ef),
                                       "t1": latency(url, name, qs, ef, 1),
                                       "t4": latency(url, name, qs, ef, 4)}})
    save(claim=claim_times(url))
    if "pages" not in skip:
        save(pages=page_times(url, args.rows, qs), loader_status_s=loader_status_s(url))
    save(rss=rss())
    if "resync" not in skip:
        save(**resync(args.sync_files, args.reuse))
    save(machine_end=machine())
    if args.write_docs:
        write_docs(report(results))


if __name__ == "__main__":
    main()
