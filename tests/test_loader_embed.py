"""`loader embed`: the leased backfill, on a real Postgres, against a local Replicate."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
from click.testing import CliRunner
from fake_replicate import TOKEN, FakeReplicate, fake_vector, unit

from loader.cli import main
from loader.embed import EmbedOptions, run_embed

from shared.embedders.replicate import ReplicateEmbedder
from shared.embedders.retry import Backoff
from shared.storage import LocalStorage, R2Storage
from shared.settings import R2Settings
from shared.store import Catalogue, EmbeddingQueue, ImageRecord, connect

ROOT = Path(__file__).resolve().parent.parent
MODEL = "krthr/clip-embeddings:1c0371070cb827ec3c7f2f28adcdde54b50dcd239aa6faea0bc98b174ef03fb4"


def make_embedder(server: FakeReplicate, **kwargs) -> ReplicateEmbedder:
    values = dict(base_url=server.url, backoff=Backoff(3, 0.01, 0.05), max_per_minute=60_000, poll_interval=0.01)
    return ReplicateEmbedder(TOKEN, **{**values, **kwargs})


def seed(conn, images_dir: Path, contents: dict[str, bytes]) -> dict[str, bytes]:
    """Write files and their rows, as `loader sync` would."""
    records = []
    for name, data in contents.items():
        (images_dir / name).parent.mkdir(parents=True, exist_ok=True)
        (images_dir / name).write_bytes(data)
        records.append(ImageRecord(name, 1, 1, len(data), hashlib.sha256(data).hexdigest(), "JPEG", 0, None))
    Catalogue(conn).upsert_images(records)
    return contents


def counts(conn) -> dict[str, int]:
    return Catalogue(conn).counts().as_dict()


def rows(conn) -> dict[str, dict]:
    result = conn.execute(
        """SELECT filename, embedding, embedding_model, embedded_at, last_error, attempts, claimed_by
           FROM image_embeddings"""
    ).fetchall()
    keys = ("embedding", "model", "embedded_at", "last_error", "attempts", "claimed_by")
    found = {r[0]: dict(zip(keys, r[1:])) for r in result}
    for row in found.values():
        if row["embedding"] is not None:
            row["embedding"] = row["embedding"].to_numpy()
    return found


def storage_for(settings) -> LocalStorage:
    return LocalStorage(settings.images_dir, settings.thumbnails_dir)


def many(n: int, duplicates_every: int = 0) -> dict[str, bytes]:
    return {f"img{i:04d}.jpg": f"pixels {i % duplicates_every if duplicates_every else i}".encode() for i in range(n)}


def test_full_backfill_embeds_every_row_once_and_shares_duplicates(conn, settings, server):
    contents = seed(conn, settings.images_dir, {**many(12), "copy/of-img0003.jpg": b"pixels 3"})
    report = run_embed(conn, make_embedder(server), storage_for(settings), EmbedOptions(jobs=4), progress=False)
    assert (report.embedded, report.shared, report.failed, report.error) == (12, 1, [], None)
    assert report.db_seconds > 0
    assert set(server.predicted.values()) == {1} and len(server.predicted) == 12
    for name, row in rows(conn).items():
        expected = unit(fake_vector(server.file_key(contents[name])))
        np.testing.assert_allclose(row["embedding"], expected, rtol=1e-5)
        assert row["model"] == MODEL and row["embedded_at"] is not None and row["claimed_by"] is None
    again = run_embed(conn, make_embedder(server), storage_for(settings), progress=False)
    assert (again.embedded, again.shared) == (0, 0)
    assert counts(conn) == {"images": 13, "embedded": 13, "waiting": 0, "failed": 0}


def test_new_copy_of_an_embedded_image_gets_its_vector_without_a_prediction(conn, settings, server):
    seed(conn, settings.images_dir, {"a.jpg": b"same"})
    run_embed(conn, make_embedder(server), storage_for(settings), progress=False)
    seed(conn, settings.images_dir, {"b.jpg": b"same"})
    report = run_embed(conn, make_embedder(server), storage_for(settings), progress=False)
    assert (report.embedded, report.shared) == (0, 1) and server.stats["creates"] == 1
    r = rows(conn)
    np.testing.assert_array_equal(r["a.jpg"]["embedding"], r["b.jpg"]["embedding"])


def test_public_urls_are_sent_when_storage_is_r2(conn, settings, server, s3_endpoint):
    seed(conn, settings.images_dir, {"trip/beach 1.jpg": b"sand"})
    r2 = R2Storage(R2Settings("acct", "key", "secret", "bucket", "photos/", s3_endpoint), "https://img.example")
    run_embed(conn, make_embedder(server), r2, progress=False)
    url = "https://img.example/photos/trip/beach%201.jpg"
    assert server.predicted == {url: 1} and server.stats["uploads"] == 0
    np.testing.assert_allclose(rows(conn)["trip/beach 1.jpg"]["embedding"], unit(fake_vector(url)), rtol=1e-5)


def test_transient_faults_are_survived(conn, settings, server):
    seed(conn, settings.images_dir, many(6))
    faults = ("throttle", "error500", "malformed", "throttle")
    for fault in faults:
        server.queue(fault)
    # Which file meets which fault depends on the two workers' timing: one may meet all of
    # them, so each file gets one try more than there are faults (CI once saw a file meet 3).
    embedder = make_embedder(server, backoff=Backoff(len(faults) + 1, 0.01, 0.05))
    report = run_embed(conn, embedder, storage_for(settings), EmbedOptions(jobs=2), progress=False)
    assert (report.embedded, report.failed) == (6, [])
    assert server.stats["throttled"] == 2 and counts(conn)["embedded"] == 6


def test_a_failing_image_is_recorded_and_its_neighbours_are_not_held_up(
        conn, settings, server, counts_stay_true):
    contents = seed(conn, settings.images_dir, many(5))
    server.fail_when = (server.file_key(contents["img0002.jpg"]),)
    report = run_embed(conn, make_embedder(server), storage_for(settings), progress=False)
    assert report.embedded == 4 and [f["file"] for f in report.failed] == ["img0002.jpg"]
    bad = rows(conn)["img0002.jpg"]
    assert bad["embedding"] is None and "could not read" in bad["last_error"] and bad["attempts"] == 1
    assert counts_stay_true(conn)["failed"] == 1 and counts(conn)["embedded"] == 4

    assert run_embed(conn, make_embedder(server), storage_for(settings), progress=False).failed == []
    server.fail_when = ()
    retried = run_embed(conn, make_embedder(server), storage_for(settings),
                        EmbedOptions(retry_failed=True), progress=False)
    assert retried.embedded == 1 and rows(conn)["img0002.jpg"]["last_error"] is None
    assert counts_stay_true(conn)["embedded"] == 5


def test_gives_up_after_n_attempts_and_says_why(conn, settings, server):
    seed(conn, settings.images_dir, {"a.jpg": b"a"})
    server.queue("error500", times=3)
    report = run_embed(conn, make_embedder(server), storage_for(settings), progress=False)
    row = rows(conn)["a.jpg"]
    assert len(report.failed) == 1 and row["attempts"] == 3
    assert row["last_error"].startswith("gave up after 3 attempts") and "HTTP 500" in row["last_error"]


def test_dimension_mismatch_stores_nothing_and_says_why(conn, settings, server):
    seed(conn, settings.images_dir, many(8))
    server.dim = 512
    report = run_embed(conn, make_embedder(server), storage_for(settings), EmbedOptions(jobs=2), progress=False)
    assert "512" in report.error and "768" in report.error and report.embedded == 0
    assert all(r["embedding"] is None and r["last_error"] is None and r["claimed_by"] is None
               and r["attempts"] == 0 for r in rows(conn).values())


def test_reembed_and_limit(conn, settings, server):
    seed(conn, settings.images_dir, many(6))
    conn.execute(
        "UPDATE image_embeddings SET embedding = %s, embedding_model = 'old/model' WHERE filename < 'img0003'",
        (np.ones(768, dtype=np.float32),),
    )
    limited = run_embed(conn, make_embedder(server), storage_for(settings), EmbedOptions(limit=2), progress=False)
    assert limited.embedded == 2
    plain = run_embed(conn, make_embedder(server), storage_for(settings), progress=False)
    assert plain.embedded == 1 and {r["model"] for r in rows(conn).values()} == {"old/model", MODEL}
    redone = run_embed(conn, make_embedder(server), storage_for(settings), EmbedOptions(reembed=True), progress=False)
    assert redone.embedded == 3 and {r["model"] for r in rows(conn).values()} == {MODEL}


def test_two_workers_in_parallel_embed_each_content_once(db_url, conn, settings, server):
    contents = seed(conn, settings.images_dir, many(80, duplicates_every=50))
    server.latency = 0.02
    reports = []

    def worker() -> None:
        own = connect(db_url)
        try:
            reports.append(run_embed(own, make_embedder(server), storage_for(settings),
                                     EmbedOptions(jobs=3), progress=False))
        finally:
            own.close()

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a worker did not finish in 120 s"
    assert all(r.embedded > 0 and r.failed == [] for r in reports)
    assert sum(r.embedded for r in reports) == 50 and sum(r.shared for r in reports) == 30
    assert len(server.predicted) == 50 and set(server.predicted.values()) == {1}
    for name, row in rows(conn).items():
        np.testing.assert_allclose(row["embedding"], unit(fake_vector(server.file_key(contents[name]))), rtol=1e-5)


def loader_env(settings, server: FakeReplicate) -> dict[str, str]:
    return {
        **os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'mlx-local'}",
        "SUPABASE_DB_URL": settings.database_url, "IMAGES_DIR": str(settings.images_dir),
        "DATA_DIR": str(settings.data_dir), "REPLICATE_API_TOKEN": TOKEN,
        "REPLICATE_BASE_URL": server.url, "REPLICATE_POLL_INTERVAL": "0.02", "REPLICATE_MAX_PER_MINUTE": "60000",
    }


def test_a_killed_workers_rows_are_finished_by_the_next_run_at_once(conn, settings, server):
    seed(conn, settings.images_dir, many(12))
    server.latency = 0.4
    process = subprocess.Popen(
        [sys.executable, "-m", "loader", "embed", "--jobs", "2", "--lease", "2", "--json"],
        env={**loader_env(settings, server), "PGAPPNAME": "killed-worker"},
        cwd=settings.data_dir.parent, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 30
    while counts(conn)["embedded"] < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=10)
    # A statement sent just before the kill still runs (and commits) on the server; the
    # snapshot below is only stable once the dead worker's backend has gone.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and conn.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'killed-worker'"
    ).fetchone()[0]:
        time.sleep(0.05)
    before = rows(conn)
    done_before = {name: r["embedded_at"] for name, r in before.items() if r["embedding"] is not None}
    held = {name for name, r in before.items() if r["claimed_by"] is not None}
    assert len(done_before) >= 3 and held, "the worker should die holding claims"

    # The dead worker ran on this machine: its process is gone, so its leases are given back
    # at once instead of holding those images until they expire.
    at_once = run_embed(conn, make_embedder(server), storage_for(settings), progress=False)
    assert at_once.embedded == 12 - len(done_before) and at_once.failed == []
    assert at_once.leased_elsewhere == 0

    after = rows(conn)
    assert all(r["embedding"] is not None and r["claimed_by"] is None for r in after.values())
    assert {name: after[name]["embedded_at"] for name in done_before} == done_before
    embedded_keys = {server.file_key(f"pixels {int(name[3:7])}".encode()) for name in done_before}
    assert all(server.predicted[key] == 1 for key in embedded_keys)


def test_cli_json_summary_and_exit_codes(settings, server, conn):
    contents = seed(conn, settings.images_dir, many(3))
    server.fail_when = (server.file_key(contents["img0001.jpg"]),)
    env = {k: v for k, v in loader_env(settings, server).items() if k != "PYTHONPATH"}
    result = CliRunner().invoke(main, ["embed", "--json"], env=env)
    assert result.exit_code == 1, result.output
    summary = json.loads(result.stdout)
    assert summary["embedded"] == 2 and summary["failed"][0]["file"] == "img0001.jpg"

    result = CliRunner().invoke(main, ["embed"], env={**env, "REPLICATE_API_TOKEN": ""})
    assert result.exit_code == 1 and "REPLICATE_API_TOKEN is not set" in result.output


def test_another_machines_leases_hold_until_they_expire(conn, settings, server):
    seed(conn, settings.images_dir, many(4))
    queue = EmbeddingQueue(conn, make_embedder(server).model_id)
    held = queue.claim(f"elsewhere:{os.getpid()}:abc", 2, lease_seconds=1.5)  # a live pid, too
    first = run_embed(conn, make_embedder(server), storage_for(settings), progress=False)
    assert first.embedded == 2 and first.leased_elsewhere == 2 and first.leases_end
    time.sleep(1.6)
    later = run_embed(conn, make_embedder(server), storage_for(settings), progress=False)
    assert later.embedded == 2 and sorted(later_names(conn)) == sorted(c.filename for c in held)


def later_names(conn) -> list[str]:
    return [name for (name,) in conn.execute(
        "SELECT filename FROM image_embeddings ORDER BY embedded_at DESC LIMIT 2").fetchall()]


def test_cli_says_which_images_wait_for_another_workers_leases(settings, server, conn):
    seed(conn, settings.images_dir, many(4))
    EmbeddingQueue(conn, make_embedder(server).model_id).claim("someone-else", 2, lease_seconds=600)
    env = {k: v for k, v in loader_env(settings, server).items() if k != "PYTHONPATH"}
    result = CliRunner().invoke(main, ["embed"], env=env)
    assert result.exit_code == 0, result.output
    assert "embedded 2 with" in result.output
    assert "2 images are leased by another worker (or one that was stopped)" in result.output
    assert "run embed again after " in result.output


def test_leases_of_dead_workers_on_this_machine_are_given_back(conn):
    import socket

    from loader.embed import release_dead_workers

    Catalogue(conn).upsert_images([ImageRecord(f"{n}.png", 1, 1, 1, n * 64, "PNG", 0, None)
                                   for n in "abc"])
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    host = socket.gethostname()
    queue = EmbeddingQueue(conn, "m")
    queue.claim(f"{host}:{gone}:dead01", 1, lease_seconds=600)  # a process that has exited
    queue.claim(f"{host}:{os.getpid()}:alive1", 1, lease_seconds=600)  # this one, alive
    queue.claim(f"elsewhere:{gone}:remote", 1, lease_seconds=600)  # another machine's
    assert release_dead_workers(queue) == 1
    assert sorted(queue.holders()) == sorted([f"{host}:{os.getpid()}:alive1", f"elsewhere:{gone}:remote"])


def test_a_stop_finishes_the_images_in_hand_and_gives_the_rest_back(conn, settings, server):
    seed(conn, settings.images_dir, many(30))
    server.latency = 0.3
    stop = threading.Event()
    done: dict = {}

    def work() -> None:
        done["report"] = run_embed(conn, make_embedder(server), storage_for(settings),
                                   EmbedOptions(jobs=4), progress=False, stop=stop)

    thread = threading.Thread(target=work)
    thread.start()
    deadline = time.monotonic() + 30
    while server.stats["creates"] < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    stop.set()
    thread.join(timeout=30)
    report = done["report"]
    assert report.stopped and 0 < report.embedded < 30
    found = rows(conn)
    assert all(row["claimed_by"] is None for row in found.values())  # leases given back
    assert sum(row["embedding"] is not None for row in found.values()) == report.embedded
    # Every prediction that was paid for was saved: none will be made again.
    assert len(server.predicted) == report.embedded and set(server.predicted.values()) == {1}


def test_auto_backend_fetches_the_model_once_saying_its_size_first(db_url, tmp_path, fake_hub):
    from fake_hub import client_env
    from PIL import Image

    from shared.store import Schema

    images = tmp_path / "images"
    images.mkdir()
    for i in range(3):
        Image.new("RGB", (40, 30), (80 * i, 40, 40)).save(images / f"p{i}.jpg")
    with connect(db_url) as own:
        Schema(own).ensure(24)
    env = client_env(fake_hub.url, tmp_path / "hf", SUPABASE_DB_URL=db_url, IMAGES_DIR=str(images),
                     DATA_DIR=str(tmp_path / "data"), EXPECTED_VECTOR_DIM="24",
                     PROGRESS_EVERY_S="0.1", REPLICATE_API_TOKEN="", EMBEDDER="auto")
    subprocess.run([sys.executable, "-m", "loader", "sync", "--json"], env=env, cwd=ROOT,
                   check=True, capture_output=True, timeout=120)
    fetched = subprocess.run([sys.executable, "-m", "loader", "embed", "--backend", "auto"],
                             env=env, cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert fetched.returncode == 0, fetched.stderr
    said = fetched.stderr.splitlines()
    assert said[0].startswith("fetching openai/clip-vit-large-patch14 (") and "MB)" in said[0]
    assert any(line.startswith("model: ") and "downloaded" in line for line in said)
    assert "\r" not in fetched.stderr  # plain lines, not a bar, when the output is a pipe
    assert "embedded 3 with mlx:openai/clip-vit-large-patch14" in fetched.stdout
    fake_hub.reset_counters()
    again = subprocess.run([sys.executable, "-m", "loader", "embed"], env=env, cwd=ROOT,
                           capture_output=True, text=True, timeout=180)
    assert again.returncode == 0 and "fetching" not in again.stderr
    assert not [key for key in fake_hub.requests if "/resolve/" in key]


def test_sigterm_stops_loader_embed_with_what_is_in_hand_saved(conn, settings, server):
    seed(conn, settings.images_dir, many(40))
    server.latency = 0.3
    process = subprocess.Popen([sys.executable, "-m", "loader", "embed", "--jobs", "2"],
                               env=loader_env(settings, server), cwd=settings.data_dir.parent,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while counts(conn)["embedded"] < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    assert "stopped before the end" in err and "Traceback" not in err and "\r" not in err
    found = rows(conn)
    done = sum(row["embedding"] is not None for row in found.values())
    assert 2 <= done < 40 and all(row["claimed_by"] is None for row in found.values())
    assert f"embedded {done} with" in out


def test_a_prediction_slower_than_the_lease_is_paid_for_once(db_url, conn, settings, server):
    """The lease is renewed every lease/3 while a prediction runs, so a second worker started
    after the first lease would have ended finds nothing to take."""
    contents = seed(conn, settings.images_dir, {"slow.jpg": b"a slow one"})
    server.latency = 3.0  # 2.5 leases
    options = EmbedOptions(jobs=1, lease_seconds=1.2)
    reports = []

    def first_worker() -> None:
        own = connect(db_url)
        try:
            reports.append(run_embed(own, make_embedder(server), storage_for(settings), options,
                                     progress=False))
        finally:
            own.close()

    first = threading.Thread(target=first_worker)
    first.start()
    time.sleep(2.0)  # the first lease (1.2 s) would be long over without renewals
    second = run_embed(conn, make_embedder(server), storage_for(settings), options, progress=False)
    first.join(timeout=30)
    assert not first.is_alive() and len(reports) == 1
    assert server.predicted[server.file_key(contents["slow.jpg"])] == 1
    assert (reports[0].embedded, second.embedded) == (1, 0)
    assert second.leased_elsewhere == 1  # it saw the first worker's live lease, and said so
