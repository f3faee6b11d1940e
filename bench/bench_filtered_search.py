"""Benchmark filtered search and the timeline on a 100,000-photo library (run by hand).

    PYTHONPATH=. python bench/bench_filtered_search.py [--rows 100000] [--queries 200] [--reuse]

Builds a library whose dates, folders, cameras and positions come in events (a day of phone
photos, a trip, a box of scans) and whose CLIP-like vectors are correlated with them (an event
shows a few subjects), loads it with binary COPY into an embedded Postgres under bench/out/
(or BENCH_DB_URL) and builds the HNSW index. Then, for filters matching about 1 %, 10 % and
50 % of the rows (a span of days, a folder, a camera, combinations), it times text-query-like
searches (k = 10; half about a subject the filtered photos show, half about any subject) three
ways: the exact scan of the matching rows, the HNSW index with pgvector's iterative scan asked
for FILTERED_CANDIDATES rows (relaxed order; and once without iterative scans, to show what
they save), and what the app does (`Search.by_vector`: exact when the planner puts the
matching rows at most `exact_search_rows`, else the index asked for 40-60 rows by the filter's
share, and exact again if the index gave fewer than k); recall@10 is against numpy's exact
order of the generated vectors. Last, the server time of timeline pages, the deepest included,
and of the folders and cameras lists.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT)]

from shared.database import start_embedded  # noqa: E402
from shared.search import Search  # noqa: E402
from shared.settings import Settings, WebSettings  # noqa: E402
from shared.store import (  # noqa: E402
    BulkImage, Catalogue, Filters, Schema, connect, copy_images, open_pool,
)
from shared.store.catalogue import FILTERED_CANDIDATES  # noqa: E402

OUT = ROOT / "bench" / "out"
DIM = 768
K = 10
PHONES = [(2005, "Nokia N70"), (2008, "Apple iPhone 3G"), (2011, "Apple iPhone 4S"),
          (2014, "Apple iPhone 6"), (2017, "Apple iPhone X"), (2020, "Google Pixel 5"),
          (2022, "Apple iPhone 14 Pro")]
CAMERAS = ["Canon EOS 40D", "NIKON D750", "SONY ILCE-7M3", "FUJIFILM X-T3", "Canon PowerShot G7 X"]
PLACES = [("Italy", 43.77, 11.25), ("Japan", 35.68, 139.69), ("Norway", 60.39, 5.32),
          ("Peru", -13.53, -71.97), ("Morocco", 31.63, -8.0), ("Iceland", 64.15, -21.94),
          ("Portugal", 38.72, -9.14), ("Canada", 49.28, -123.12), ("Greece", 37.98, 23.73),
          ("Kenya", -1.29, 36.82), ("Scotland", 55.95, -3.19), ("Chile", -33.45, -70.67)]
HOME = (48.85, 2.35)
# Share of the photos of each kind of event.
KINDS = {"phone": 0.50, "trip": 0.25, "family": 0.15, "scans": 0.05, "screenshots": 0.05}
START, END = datetime(2005, 1, 1), datetime(2026, 10, 31)


@dataclass
class Photo:
    """One generated photo's metadata and its subject (topic, scene)."""

    filename: str
    taken_at: datetime
    fallback: bool
    camera: str | None
    latitude: float | None
    longitude: float | None
    topic: int
    scene: int


# --- the library ---------------------------------------------------------------------------


def event_dates(count: int, rng: np.random.Generator) -> list[datetime]:
    """Event starts over 2005-2026, more of them in later years (phones took more photos)."""
    span = (END - START).total_seconds()
    where = np.sqrt(rng.uniform(size=count))  # density grows linearly with time
    return sorted(START + timedelta(seconds=float(x * span)) for x in where)


def phone_for(year: int) -> str:
    """The phone a person had that year."""
    return [name for since, name in PHONES if since <= year][-1]


def generate(n: int, rng: np.random.Generator, topics: int = 1000, scenes: int = 20) -> list[Photo]:
    """n photos in events; each event shows 1-3 subjects, bursts share one second."""
    weights = 1.0 / np.arange(1, topics + 1) ** 0.8
    weights /= weights.sum()
    photos: list[Photo] = []
    for kind, share in KINDS.items():
        budget = int(n * share) if kind != "screenshots" else n - len(photos)  # the remainder
        sizes = []
        while sum(sizes) < budget:
            sizes.append(int(np.clip(rng.lognormal(3.0, 1.1), 1, 3000)))
        sizes[-1] -= sum(sizes) - budget
        for number, (size, start) in enumerate(zip(sizes, event_dates(len(sizes), rng))):
            photos += event(kind, number, size, start, rng, weights, scenes)
    return photos


def event(kind: str, number: int, size: int, start: datetime, rng: np.random.Generator,
          weights: np.ndarray, scenes: int) -> list[Photo]:
    """The photos of one event: where they go, when, with what camera, of what."""
    subjects = rng.choice(len(weights), size=int(rng.integers(1, 4)), p=weights)
    hours = {"phone": 10, "trip": 24 * 12, "family": 5, "scans": 0.5, "screenshots": 24 * 30}[kind]
    offsets = np.sort(rng.uniform(0, hours * 3600, size=size))
    burst = rng.uniform(size=size) < 0.2  # burst shots share the second of the one before
    for i in range(1, size):
        if burst[i]:
            offsets[i] = offsets[i - 1]
    place = PLACES[number % len(PLACES)]
    camera = CAMERAS[number % len(CAMERAS)] if kind == "trip" and rng.uniform() < 0.6 else None
    out = []
    for i in range(size):
        taken = (start + timedelta(seconds=float(offsets[i]))).replace(microsecond=0)
        topic = int(rng.choice(subjects))
        folder, model, position = where_and_what(kind, number, start, taken, camera, place, rng)
        out.append(Photo(f"{folder}/IMG_{number:05d}_{i:04d}.jpg", taken,
                         kind in ("scans", "screenshots"), model, *position,
                         topic, topic * scenes + int(rng.integers(0, scenes))))
    return out


def where_and_what(kind, number, start, taken, camera, place, rng):
    """(folder, camera, (lat, lon)) of one photo of an event."""
    if kind == "scans":
        return f"Scans/box {number:03d}", None, (None, None)
    if kind == "screenshots":
        return "Screenshots", None, (None, None)
    model = camera or phone_for(taken.year)
    located = model in [p for _, p in PHONES] and rng.uniform() < 0.85
    if kind == "trip":
        day = (taken - start).days + 1
        folder = f"Trips/{start.year} {place[0]}/day {day:02d}"
        centre = place[1:]
    else:
        folder = (f"Phone/{taken.year}/{taken:%Y-%m}" if kind == "phone"
                  else f"Family/{start.year}/event {number:04d}")
        centre = HOME
    if not located:
        return folder, model, (None, None)
    return folder, model, tuple(float(c + rng.normal(0, 0.05)) for c in centre)


def vectors_for(photos: list[Photo], rng: np.random.Generator, topics: int = 1000,
                scenes: int = 20) -> tuple[np.ndarray, tuple]:
    """CLIP-like unit vectors (as bench_search.py makes them), each photo's subject its own."""
    common = _unit(rng.normal(size=DIM))
    centres = _unit(rng.normal(size=(topics, DIM)))
    scene_dirs = _unit(rng.normal(size=(topics * scenes, DIM))).astype(np.float32)
    topic = np.array([p.topic for p in photos])
    scene = np.array([p.scene for p in photos])
    noise = rng.normal(size=(len(photos), DIM)).astype(np.float32) / np.sqrt(DIM)
    vectors = 0.7 * common + 0.7 * centres[topic] + 0.55 * scene_dirs[scene] + 0.35 * noise
    return _unit(vectors).astype(np.float32), (common, centres)


def query_vector(topic: int, rng: np.random.Generator, basis) -> np.ndarray:
    """A text-query-like vector about one subject (nearer it than the shared direction)."""
    common, centres = basis
    noise = rng.normal(size=DIM) / np.sqrt(DIM)
    return _unit(0.4 * common + 0.8 * centres[topic] + 0.7 * noise).astype(np.float32)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def load(url: str, photos: list[Photo], vectors: np.ndarray) -> dict:
    """Fresh table, binary COPY of every row (in random order, as syncs add them), the index."""
    with connect(url) as conn:
        schema = Schema(conn)
        schema.drop()
        schema.ensure(DIM)
        schema.drop_vector_index()
        started = time.perf_counter()
        added = datetime.now(timezone.utc)
        copy_images(conn, (
            BulkImage(i + 1, p.filename, 4032, 3024, 3_000_000, f"{i:064x}", "JPEG", 0, None,
                      vectors[i], "bench/clustered", added, added, p.taken_at, p.fallback,
                      p.camera, p.latitude, p.longitude)
            for i, p in enumerate(photos)))
        copied = time.perf_counter() - started
        started = time.perf_counter()
        schema.build_vector_index(maintenance_work_mem="2GB")
        return {"copy_s": copied, "index_s": time.perf_counter() - started}


# --- the filters ---------------------------------------------------------------------------


def pick_filters(photos: list[Photo], rng: np.random.Generator) -> list[tuple[str, Filters]]:
    """(label, filters) matching about 1, 2, 5, 10, 20 and 50 % of the rows."""
    n = len(photos)
    days = np.sort(np.array([p.taken_at.date().toordinal() for p in photos]))
    chosen = []
    for share in (0.01, 0.02, 0.05, 0.10, 0.20, 0.50):
        want = int(n * share)
        first = int(rng.integers(0, n - want))
        span = (date.fromordinal(int(days[first])), date.fromordinal(int(days[first + want - 1])))
        chosen.append((f"days {span[0]} to {span[1]}", Filters(taken_after=span[0], taken_before=span[1])))
    folders: dict[str, int] = {}
    for p in photos:
        parts = p.filename.split("/")[:-1]
        for depth in range(1, len(parts) + 1):
            folders["/".join(parts[:depth])] = folders.get("/".join(parts[:depth]), 0) + 1
    cameras: dict[str, int] = {}
    for p in photos:
        cameras[p.camera or ""] = cameras.get(p.camera or "", 0) + 1
    for share in (0.01, 0.10, 0.50):
        folder = min(folders, key=lambda f: abs(folders[f] - share * n))
        chosen.append((f"folder {folder!r}", Filters(folder=folder)))
    camera = min((c for c in cameras if c), key=lambda c: abs(cameras[c] - 0.01 * n))
    chosen.append((f"camera {camera!r}", Filters(camera=camera)))
    phones = [name for _, name in PHONES if name in cameras]
    camera = min(phones, key=lambda c: abs(cameras[c] * 0.85 - 0.10 * n))
    chosen.append((f"camera {camera!r} with a place", Filters(camera=camera, has_location=True)))
    chosen.append(("with a place", Filters(has_location=True)))
    year = Filters(taken_after=date(2019, 1, 1), taken_before=date(2019, 12, 31), folder="Trips")
    chosen.append(("folder 'Trips' in 2019", year))
    return chosen


# --- measuring -----------------------------------------------------------------------------


def pct(values: list[float], p: int) -> float:
    return float(np.percentile(np.array(values) * 1000, p))


def timed(work, runs) -> tuple[list, list[float]]:
    """work(x) for each x, and how long each took."""
    results, times = [], []
    for x in runs:
        started = time.perf_counter()
        results.append(work(x))
        times.append(time.perf_counter() - started)
    return results, times


def numpy_nearest(vectors: np.ndarray, allowed: np.ndarray, query: np.ndarray) -> list[int]:
    """The true K nearest ids among `allowed` rows (indexes into `vectors`; ids start at 1)."""
    distances = 1.0 - vectors[allowed] @ query
    return [int(allowed[i]) + 1 for i in np.argsort(distances, kind="stable")[:K]]


def measure_filter(pool, search: Search, queries: list[np.ndarray], filters: Filters,
                   truth: list[list[int]]) -> dict:
    """Latency, recall@10 (against `truth`, worked out in numpy) and rows returned for the
    exact scan, the index and the app."""
    with pool.connection() as conn:
        catalogue = Catalogue(conn)
        matching = catalogue.count_matching(filters, 10**9)
        estimate = catalogue.estimate_matching(filters)
        exact, t_exact = timed(lambda q: catalogue.nearest(q, K, ef_search=search.ef_search,
                                                           filters=filters, exact=True,
                                                           timeout_ms=600_000), queries)
        index, t_index = timed(lambda q: catalogue.nearest(
            q, K, ef_search=search.ef_search, filters=filters,
            max_scan_tuples=search.max_scan_tuples), queries)
        asked_k, t_asked_k = timed(lambda q: catalogue.nearest(
            q, K, ef_search=search.ef_search, filters=filters,
            max_scan_tuples=search.max_scan_tuples, candidates=K), queries)
        counted, t_count = timed(
            lambda q: catalogue.count_matching(filters, search.exact_search_rows + 1), queries[:20])
        plain, _ = timed(lambda q: catalogue.nearest(
            q, K, ef_search=search.ef_search, filters=filters, iterative_scan="off"), queries)
    app, t_app = timed(lambda q: search.by_vector(q, K, filters=filters), queries)

    def recall(found, part=slice(None)) -> float:
        ids = [[item.row.id if hasattr(item, "row") else item[0].id for item in f] for f in found]
        pairs = list(zip(ids, truth))[part]
        return sum(len(set(a) & set(t)) for a, t in pairs) / max(1, sum(len(t) for _, t in pairs))

    def rows(found) -> int:
        return min(len(f) for f in found)

    return {
        "matching": matching, "estimate": estimate, "method": search.method(filters),
        "candidates": search.candidates(filters),
        "exact": {"p50": pct(t_exact, 50), "p95": pct(t_exact, 95), "recall": recall(exact),
                  "min_rows": rows(exact)},
        "index": {"p50": pct(t_index, 50), "p95": pct(t_index, 95), "recall": recall(index),
                  "recall_inside": recall(index, slice(0, None, 2)),
                  "recall_outside": recall(index, slice(1, None, 2)), "min_rows": rows(index)},
        "index_asked_k": {"p50": pct(t_asked_k, 50), "recall": recall(asked_k)},
        "count": {"p50": pct(t_count, 50)},
        "no_iterative": {"recall": recall(plain), "min_rows": rows(plain)},
        "app": {"p50": pct(t_app, 50), "p95": pct(t_app, 95), "recall": recall(app), "min_rows": rows(app)},
    }


def queries_for(photos, filters: Filters, rng, basis, count: int) -> list[np.ndarray]:
    """Half about a subject the filtered photos show, half about any subject at all."""
    inside = [p.topic for p in photos if matches(p, filters)]
    topics = [int(rng.choice(inside)) if i % 2 == 0 and inside else int(rng.integers(0, 1000))
              for i in range(count)]
    return [query_vector(t, rng, basis) for t in topics]


def matches(p: Photo, f: Filters) -> bool:
    """Whether a generated photo passes the filters (the same rules as the SQL)."""
    day = p.taken_at.date()
    return ((f.folder is None or p.filename.startswith(f.folder + "/"))
            and (f.taken_after is None or day >= f.taken_after)
            and (f.taken_before is None or day <= f.taken_before)
            and (f.camera is None or p.camera == f.camera)
            and (f.has_location is None or (p.latitude is not None) == f.has_location))


def page_times(settings: Settings, filters_list: list[tuple[str, dict]], runs: int = 40) -> dict:
    """Server time of timeline pages (first and deepest), folders and cameras (test client)."""
    from browse import create_app

    app = create_app(settings, embedder=None)
    client = app.test_client()
    out = {}
    try:
        for label, args in filters_list:
            cursor, pages, started = None, 0, time.perf_counter()
            while True:  # walk to the last page by cursor, as infinite scroll would
                query = {**args, "limit": 200, **({"cursor": cursor} if cursor else {})}
                body = client.get("/api/images", query_string=query).get_json()
                pages += 1
                if body["next_cursor"] is None:
                    break
                deepest, cursor = cursor, body["next_cursor"]
            walked = time.perf_counter() - started
            for name, query in ((f"{label}: first page `/`", args),
                                (f"{label}: deepest page (`/?cursor=`, after {pages - 1} × 200 rows)",
                                 {**args, "cursor": deepest})):
                _, times = timed(lambda _: client.get("/", query_string=query), range(runs))
                out[name] = {"p50": pct(times, 50), "p95": pct(times, 95)}
            out[f"{label}: walking all {pages} API pages of 200"] = {"total_s": walked}
        recount = create_app(dataclasses.replace(
            settings, web=dataclasses.replace(settings.web, summary_ttl_s=0)), embedder=None)
        for name, url in (("folders page `/folders`", "/folders"),
                          ("`/api/folders?folder=Trips`", "/api/folders?folder=Trips"),
                          ("`/api/cameras`", "/api/cameras")):
            for how, each in (("counted again (BROWSE_SUMMARY_TTL_S=0)", recount.test_client()),
                              ("cached (the default: at most 10 s old)", client)):
                _, times = timed(lambda _: each.get(url), range(runs))
                out[f"{name}, {how}"] = {"p50": pct(times, 50), "p95": pct(times, 95)}
        recount.extensions["image_browser"].close()
    finally:
        app.extensions["image_browser"].close()
    return out


def exact_sweep(pool, photos, rng, basis, runs: int = 60) -> dict[int, dict]:
    """The exact scan's time against how many rows the filter lets through (spans of days)."""
    order = sorted(range(len(photos)), key=lambda i: photos[i].taken_at)
    out = {}
    # The larger spans draw from a generator of their own: the filters picked after the sweep
    # stay those of earlier runs (docs/benchmarks.md compares them).
    more = np.random.default_rng(99)
    with pool.connection() as conn:
        catalogue = Catalogue(conn)
        for want in (1000, 2000, 3000, 4000, 5000, 7500, 10000, 15000, 20000):
            draw = rng if want <= 10000 else more
            start = int(draw.integers(0, len(photos) - want))
            first, last = photos[order[start]].taken_at.date(), photos[order[start + want]].taken_at.date()
            filters = Filters(taken_after=first, taken_before=last)
            queries = queries_for(photos, filters, draw, basis, runs)
            _, times = timed(lambda q: catalogue.nearest(q, K, ef_search=100, filters=filters,
                                                         exact=True), queries)
            out[catalogue.count_matching(filters, 10**9)] = {"p50": pct(times, 50), "p95": pct(times, 95)}
    return out


@contextmanager
def load_average():
    """uptime's 1-minute load average before and after the block, for the report."""
    before = os.getloadavg()[0]
    seen = {}
    yield seen
    seen["load"] = (before, os.getloadavg()[0])


def cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        return next(line.split(":", 1)[1].strip() for line in out.splitlines()
                    if line.startswith("Model name"))
    except (OSError, subprocess.CalledProcessError, StopIteration):
        return platform.processor() or "unknown CPU"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--reuse", action="store_true", help="keep the table of the last run")
    parser.add_argument("--ef-search", type=int, default=None,
                        help="hnsw.ef_search (default: BROWSE_HNSW_EF_SEARCH's default)")
    args = parser.parse_args()
    rng = np.random.default_rng(2026)
    OUT.mkdir(parents=True, exist_ok=True)
    url = os.environ.get("BENCH_DB_URL") or start_embedded(OUT / "postgres")
    photos = generate(args.rows, rng)
    vectors, basis = vectors_for(photos, rng)
    timings_file = OUT / f"filtered-load-{args.rows}.json"
    if args.reuse and timings_file.exists():
        load_t = json.loads(timings_file.read_text())
        with connect(url) as conn:  # an index of an older version is rebuilt, as ensure-schema does
            Schema(conn).migrate_vector_index("halfvec-index", DIM, index_memory_mb=2048,
                                              say=lambda line: print(line, flush=True))
    else:
        load_t = load(url, photos, vectors)
        timings_file.write_text(json.dumps(load_t))
    print(f"CPU: {cpu_name()}; {os.cpu_count()} cores; loaded {args.rows:,} rows: {load_t}", flush=True)
    web = WebSettings()
    pool = open_pool(url, size=2)
    search = Search(pool.connection, None, expected_dimensions=DIM,
                    ef_search=args.ef_search or web.hnsw_ef_search,
                    exact_search_rows=web.exact_search_rows, max_scan_tuples=web.hnsw_max_scan_tuples)
    with load_average() as sweeping:
        sweep = exact_sweep(pool, photos, rng, basis)
    for matching, t in sweep.items():
        print(f"exact scan of {matching:,} rows: {json.dumps(t)}", flush=True)
    results = {}
    with load_average() as searches:
        for label, filters in pick_filters(photos, rng):
            queries = queries_for(photos, filters, rng, basis, args.queries)
            allowed = np.array([i for i, p in enumerate(photos) if matches(p, filters)])
            truth = [numpy_nearest(vectors, allowed, q) for q in queries]
            results[label] = measure_filter(pool, search, queries, filters, truth)
            print(f"{label}: {json.dumps(results[label])}", flush=True)
    pool.close()
    settings = Settings(images_dir=OUT / "images", data_dir=OUT / "data", database_url=url)
    with load_average() as pages:
        times = page_times(settings, [("timeline", {}), ("folder 'Trips'", {"folder": "Trips"})])
    for label, t in times.items():
        print(f"{label}: {json.dumps(t)}", flush=True)
    print(json.dumps({"sweep_load": sweeping["load"], "sweep": sweep,
                      "search_load": searches["load"], "pages_load": pages["load"],
                      "cpu": cpu_name(), "results": results, "pages": times}), flush=True)
    print(markdown(args.rows, results, times), flush=True)


def markdown(rows: int, results: dict, pages: dict) -> str:
    """The tables for docs/benchmarks.md."""
    lines = ["| filter | matching rows (planner's estimate) | app's method (rows a walk asks for) | exact p50 / p95 (recall@10) | index p50 / p95 | index recall@10 (subject inside / outside) | no iterative scan: recall, fewest rows | app p50 / p95 | app recall@10 | app fewest rows |",
             "| --- | ---: | --- | --- | --- | --- | --- | --- | --- | ---: |"]
    for label, r in results.items():
        e, i, n, a = r["exact"], r["index"], r["no_iterative"], r["app"]
        method = r["method"]
        if method == "index":
            method += f" ({r.get('candidates', FILTERED_CANDIDATES)})"
        lines.append(
            f"| {label} | {r['matching']:,} ({r['matching'] / rows:.1%}; {r['estimate']:,}) | "
            f"{method} | "
            f"{e['p50']:.1f} / {e['p95']:.1f} ms ({e['recall']:.3f}) | "
            f"{i['p50']:.1f} / {i['p95']:.1f} ms | "
            f"{i['recall']:.3f} ({i['recall_inside']:.3f} / {i['recall_outside']:.3f}) | "
            f"{n['recall']:.3f}, {n['min_rows']} | {a['p50']:.1f} / {a['p95']:.1f} ms | "
            f"{a['recall']:.3f} | {a['min_rows']} |")
    lines += ["", "| filter | index asked for k = 10 rows: p50, recall@10 | index asked for "
              f"{FILTERED_CANDIDATES} (the least the app asks for): p50, recall@10 | counting (the cap): p50 |",
              "| --- | --- | --- | --- |"]
    for label, r in results.items():
        k, i = r["index_asked_k"], r["index"]
        lines.append(f"| {label} | {k['p50']:.1f} ms, {k['recall']:.3f} | {i['p50']:.1f} ms, "
                     f"{i['recall']:.3f} | {r['count']['p50']:.1f} ms |")
    lines += ["", "| request | p50 | p95 |", "| --- | --- | --- |"]
    for label, t in pages.items():
        if "total_s" in t:
            lines.append(f"| {label} | {t['total_s']:.2f} s in all | |")
        else:
            lines.append(f"| {label} | {t['p50']:.1f} ms | {t['p95']:.1f} ms |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
