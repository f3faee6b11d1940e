"""`loader up` as a user runs it: a real process, a fresh data folder and Hugging Face cache,
the real huggingface_hub against tests/fake_hub.py, the embedded Postgres, real signals.

The hub serves a tiny random-weight CLIP under the default model's name (24 dimensions, so
EXPECTED_VECTOR_DIM=24); its rate is throttled where a test needs the download to take a while.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from fake_hub import client_env
from fake_replicate import TOKEN
from PIL import Image

from shared.clip.weights import WEIGHTS_FILE
from shared.settings import DEFAULT_CLIP_MODEL as REPO

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS_KEY = f"{REPO}/{WEIGHTS_FILE}"
COLOURS = [(200, 30, 30), (30, 160, 60), (30, 60, 200), (220, 200, 40), (90, 90, 90)]
# Settings of the developer's environment that would point `up` elsewhere.
FOREIGN = ("SUPABASE_DB_URL", "DB_URL", "IMAGES_DIR", "DATA_DIR", "EMBEDDER", "CLIP_MODEL",
           "CLIP_MODEL_PATH", "REPLICATE_API_TOKEN", "REPLICATE_BASE_URL", "EXPECTED_VECTOR_DIM")


def wait_for(condition, timeout: float, what: str):
    """Poll `condition` until it returns something true; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := condition():
            return result
        time.sleep(0.05)
    pytest.fail(f"timed out after {timeout} s waiting for {what}")


def size_or_zero(path: Path) -> int:
    """The size of a file that the hub client may rename at any moment (small files finish
    and move between the listing and the stat)."""
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


RUNNING: list[subprocess.Popen] = []


def kill_running() -> None:
    """A failed test must not leave a `loader up` running into the next ones."""
    while RUNNING:
        process = RUNNING.pop()
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)


@pytest.fixture(autouse=True)
def no_process_left():
    yield
    kill_running()


class Up:
    """One `loader up` process: its URL, its output, and ways to stop it."""

    def __init__(self, env: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "loader", "up", "--port", "0", "--jobs", "1"],
            env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            start_new_session=True)  # its own process group: what it started can be found
        RUNNING.append(self.process)
        self.err: list[str] = []
        threading.Thread(target=self._read_err, daemon=True).start()
        ready, _, _ = select.select([self.process.stdout], [], [], 60)
        line = self.process.stdout.readline() if ready else ""
        if not line.startswith("Image Browser on "):
            self.process.kill()
            pytest.fail(f"no URL from loader up: {line!r} {self.output()}")
        self.url = line.split()[3].rstrip("/")

    def _read_err(self) -> None:
        for line in self.process.stderr:
            self.err.append(line.rstrip("\n"))

    def output(self) -> str:
        return "\n".join(self.err)

    def get(self, path: str) -> tuple[int, dict | str]:
        try:
            with urllib.request.urlopen(self.url + path, timeout=20) as answer:
                body = answer.read().decode()
                status = answer.status
        except urllib.error.HTTPError as error:
            body, status = error.read().decode(), error.code
        kind = "json" if path.startswith("/api/") else "html"
        return status, json.loads(body) if kind == "json" else body

    def status(self) -> dict:
        return self.get("/api/status")[1]

    def group(self) -> list[int]:
        """The processes left in its process group (decoders, their server)."""
        found = subprocess.run(["ps", "-eo", "pid=,pgid="], capture_output=True, text=True,
                               check=True).stdout.split()
        pairs = zip(found[::2], found[1::2])
        return [int(pid) for pid, pgid in pairs if int(pgid) == self.process.pid]

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        self.process.send_signal(sig)
        try:
            return self.process.wait(timeout=timeout)
        finally:
            self.process.stdout.close()


def fully_embedded(up: Up) -> bool:
    counts = up.status()["counts"]
    return counts["images"] > 0 and counts["embedded"] == counts["images"]


def postgres_running(pgdata: Path) -> bool:
    pid_file = pgdata / "postmaster.pid"
    if not pid_file.exists():
        return False
    try:
        os.kill(int(pid_file.read_text().split()[0]), 0)
    except (ProcessLookupError, ValueError):
        return False
    return True


def stop_postgres(pgdata: Path) -> None:
    """After a failed test: stop a server left running (Postgres's fast shutdown)."""
    if postgres_running(pgdata):
        os.kill(int((pgdata / "postmaster.pid").read_text().split()[0]), signal.SIGINT)
        wait_for(lambda: not postgres_running(pgdata), 20, "Postgres to stop")


@pytest.fixture
def home():
    """A fresh data folder (outside pytest's root: see conftest's pg_url), images and HF cache."""
    folder = Path(tempfile.mkdtemp(prefix="image-browser-up-"))
    (folder / "images").mkdir()
    for i, colour in enumerate(COLOURS):
        Image.new("RGB", (96 + 8 * i, 64), colour).save(folder / "images" / f"photo-{i}.jpg")
    yield folder
    kill_running()
    stop_postgres(folder / "data" / "postgres")
    shutil.rmtree(folder, ignore_errors=True)


def up_env(home: Path, hub_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in client_env(hub_url, home / "hf").items() if k not in FOREIGN}
    return {**env, "IMAGES_DIR": str(home / "images"), "DATA_DIR": str(home / "data"),
            "EXPECTED_VECTOR_DIM": "24", "WATCH_SETTLE_S": "0.2", "WATCH_DEBOUNCE_S": "0.1",
            "PROGRESS_EVERY_S": "0.5", **extra}


def resolve_gets(hub) -> list[str]:
    return [key for key in hub.requests if key.startswith("GET ") and "/resolve/" in key]


def test_first_run_serves_at_once_then_search_works_and_a_second_run_downloads_nothing(
        fake_hub, home):
    fake_hub.rate = 4_000_000  # the tiny weights (~6.5 MB) take a couple of seconds
    up = Up(up_env(home, fake_hub.url))
    # The page answers while the model is still on its way: nothing can be embedded yet.
    status_code, page = up.get("/")
    early = up.status()
    assert status_code == 200 and "Image Browser" in page
    assert early["search_available"] is False and early["counts"]["embedded"] == 0
    assert "search model" in early["search_off_summary"]
    wait_for(lambda: fully_embedded(up), 120, "every photo to be embedded")
    code, found = up.get("/api/search?q=" + urllib.parse.quote("a red photo"))
    assert code == 200 and found["model"] == f"mlx:{REPO}"
    similarities = [hit["similarity"] for hit in found["results"]]
    assert len(similarities) == len(COLOURS) and similarities == sorted(similarities, reverse=True)
    log = up.output()
    assert "MB) from the Hugging Face hub" in log  # the size is said before the download
    assert "downloaded" in log and "Error" not in log and "Traceback" not in log
    assert up.stop() == 0
    pgdata = home / "data" / "postgres"
    wait_for(lambda: not postgres_running(pgdata), 20, "the embedded Postgres to stop")
    assert json.loads((pgdata / ".handle_pids.json").read_text()) == []

    fake_hub.reset_counters()
    again = Up(up_env(home, fake_hub.url))
    wait_for(lambda: again.status()["search_available"], 60, "search to be on again")
    assert again.get("/api/search?q=sofa")[0] == 200
    assert again.stop(signal.SIGINT) == 0
    assert resolve_gets(fake_hub) == [] and "MB) from the Hugging Face hub" not in again.output()


def test_sigterm_during_the_download_keeps_it_and_the_next_run_resumes(fake_hub, home):
    fake_hub.rate = 1_000_000  # ~7 s for the weights
    up = Up(up_env(home, fake_hub.url))
    blobs = home / "hf" / "hub" / f"models--{REPO.replace('/', '--')}" / "blobs"
    wait_for(lambda: [p for p in blobs.glob("*.incomplete") if size_or_zero(p) > 2**20], 60,
             "part of the weights on disk")
    started = time.monotonic()
    assert up.stop() == 0
    assert time.monotonic() - started < 20  # the download stopped; it was not waited for
    assert "stopped" in up.output() and "Traceback" not in up.output()
    wait_for(lambda: not postgres_running(home / "data" / "postgres"), 20, "Postgres to stop")
    [partial] = blobs.glob("*.incomplete")
    kept = partial.stat().st_size

    fake_hub.wait_idle()
    fake_hub.rate = None
    fake_hub.reset_counters()
    again = Up(up_env(home, fake_hub.url))
    wait_for(lambda: fully_embedded(again), 120, "every photo to be embedded")
    assert again.stop() == 0
    weights_ranges = [r for key, r in fake_hub.ranges if key == WEIGHTS_KEY]
    assert weights_ranges and int(weights_ranges[0].split("=")[1].rstrip("-")) >= kept


def heavy_photos(folder: Path, count: int) -> None:
    """`count` distinct files that each take a while to decode: one noisy 1024x768 JPEG,
    each copy made unique by bytes after its end (decoders ignore them)."""
    pixels = np.random.default_rng(3).integers(0, 255, (768, 1024, 3), dtype=np.uint8)
    first = folder / "noise-000.jpg"
    Image.fromarray(pixels).save(first, quality=90)
    data = first.read_bytes()
    for i in range(1, count):
        (folder / f"noise-{i:03d}.jpg").write_bytes(data + f"copy {i}".encode())


def rows_by_name(up: Up) -> dict[str, dict]:
    found, cursor = {}, None
    while True:
        query = "/api/images?limit=200" + (f"&cursor={cursor}" if cursor else "")
        page = up.get(query)[1]
        found.update({row["filename"]: row for row in page["images"]})
        cursor = page["next_cursor"]
        if not cursor:
            return found


def test_sigterm_during_the_sync_then_the_next_run_finishes_it(db_url, home, tmp_path):
    shutil.rmtree(home / "images")
    (home / "images").mkdir()
    heavy_photos(home / "images", 120)
    env = up_env(home, "http://127.0.0.1:9", SUPABASE_DB_URL=db_url, EMBEDDER="none")
    up = Up(env)
    wait_for(lambda: up.status()["counts"]["images"] > 0, 60, "the first rows")
    assert up.stop() == 0
    first = {name: row["created_at"] for name, row in rows_in(db_url).items()}
    assert 0 < len(first) < 120, "the stop should land during the sync"

    again = Up(env)
    wait_for(lambda: again.status()["counts"]["images"] == 120, 60, "all 120 rows")
    rows = rows_by_name(again)
    assert again.stop() == 0
    assert {name: rows[name]["created_at"] for name in first} == first  # none written twice
    assert "sync: added " in again.output()


def rows_in(db_url: str) -> dict[str, dict]:
    """The rows as they are after a stop, read straight from the database."""
    from shared.store import connect

    with connect(db_url) as conn:
        rows = conn.execute("SELECT filename, created_at FROM image_embeddings").fetchall()
    return {name: {"created_at": created.isoformat()} for name, created in rows}


def test_sigterm_during_the_embedding_saves_what_is_in_hand_and_the_next_run_finishes(
        db_url, home, server):
    server.latency = 0.6  # each prediction takes a while: the stop lands mid-way
    env = up_env(home, "http://127.0.0.1:9", SUPABASE_DB_URL=db_url, EXPECTED_VECTOR_DIM="768",
                 REPLICATE_API_TOKEN=TOKEN, REPLICATE_BASE_URL=server.url,
                 REPLICATE_POLL_INTERVAL="0.02")
    for i in range(35):
        Image.new("RGB", (40, 30), (i * 7, 100, 200 - i * 5)).save(home / "images" / f"x{i}.png")
    up = Up(env)
    wait_for(lambda: up.status()["counts"]["embedded"] >= 1, 60, "some embeddings")
    assert up.stop() == 0
    from shared.store import connect

    with connect(db_url) as conn:
        embedded, held = conn.execute(
            "SELECT count(embedding), count(claimed_by) FROM image_embeddings").fetchone()
    assert embedded < 40 and held == 0, "leases are given back on a clean stop"

    again = Up(env)
    wait_for(lambda: fully_embedded(again), 60, "every photo to be embedded")
    assert again.get("/api/search?q=blue")[0] == 200  # text search through Replicate too
    assert again.stop() == 0
    images = [key for key in server.predicted if key.startswith("sha256:")]
    assert len(images) == 40 and all(server.predicted[key] == 1 for key in images)


def test_sigkill_during_the_embedding_then_the_next_run_takes_over_at_once(db_url, home, server):
    server.latency = 0.3
    env = up_env(home, "http://127.0.0.1:9", SUPABASE_DB_URL=db_url, EXPECTED_VECTOR_DIM="768",
                 REPLICATE_API_TOKEN=TOKEN, REPLICATE_BASE_URL=server.url,
                 REPLICATE_POLL_INTERVAL="0.02")
    for i in range(12):
        Image.new("RGB", (40, 30), (i * 20, 90, 90)).save(home / "images" / f"k{i}.png")
    up = Up(env)
    wait_for(lambda: up.status()["counts"]["embedded"] >= 2, 60, "some embeddings")
    up.stop(signal.SIGKILL)
    wait_for(lambda: not up.group(), 20, "the killed run's decoder processes to end")
    again = Up(env)  # the dead worker held leases for 5 minutes: they are taken back now
    wait_for(lambda: fully_embedded(again), 60, "every photo to be embedded")
    assert again.stop() == 0


def test_loader_watch_keeps_a_library_live_without_pages(db_url, home):
    env = up_env(home, "http://127.0.0.1:9", SUPABASE_DB_URL=db_url, EMBEDDER="none")
    watcher = subprocess.Popen([sys.executable, "-m", "loader", "watch", "--jobs", "1"], env=env,
                               cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        def names() -> set[str]:
            try:
                return set(rows_in(db_url))
            except Exception:  # the table is not there until watch has started
                return set()

        wait_for(lambda: len(names()) == len(COLOURS), 60, "the first sync")
        Image.new("RGB", (50, 50), (1, 2, 3)).save(home / "images" / "later.jpg")
        wait_for(lambda: "later.jpg" in names(), 30, "the new photo's row")
        watcher.send_signal(signal.SIGTERM)
        assert watcher.wait(timeout=60) == 0
    finally:
        watcher.kill()
        _, err = watcher.communicate(timeout=10)
    assert "sync: added 1" in err and "stopped" in err and "Traceback" not in err
