"""The `loader` command as a user runs it: faults mid-command are one line, and a rerun converges."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def data_dir():
    # Not under pytest's temporary root: see the pg_url fixture in conftest.py.
    folder = Path(tempfile.mkdtemp(prefix="image-browser-cli-test-"))
    yield folder
    pid_file = folder / "postgres" / "postmaster.pid"
    if pid_file.exists():  # a failed test may leave the embedded server up
        try:
            os.kill(int(pid_file.read_text().split()[0]), signal.SIGINT)
            time.sleep(1)
        except (ProcessLookupError, ValueError):
            pass
    shutil.rmtree(folder, ignore_errors=True)


def loader(args: list[str], env: dict[str, str], **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "loader", *args], env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def test_a_database_stopped_during_sync_is_one_line_and_a_rerun_converges(tmp_path, data_dir):
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(4)
    for i in range(80):
        pixels = rng.integers(0, 255, (240, 320, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(images / f"noise {i}.jpg", "JPEG", quality=90)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("R2_", "SUPABASE", "IMAGE"))}
    env.update(IMAGES_DIR=str(images), DATA_DIR=str(data_dir))  # the embedded Postgres

    sync = loader(["sync", "--jobs", "1"], env)
    thumbnails = data_dir / "thumbnails"
    deadline = time.monotonic() + 120
    while sync.poll() is None and time.monotonic() < deadline and not (
            thumbnails.is_dir() and any(thumbnails.rglob("*.jpg"))):
        time.sleep(0.02)
    assert sync.poll() is None, "sync should still be working"
    postmaster = int((data_dir / "postgres" / "postmaster.pid").read_text().split()[0])
    os.kill(postmaster, signal.SIGINT)  # Postgres's fast shutdown, as `pg_ctl stop` does
    out, err = sync.communicate(timeout=120)
    assert sync.returncode == 1 and "Traceback" not in err, err
    errors = [line for line in err.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "the database connection was lost" in errors[0], err

    again = loader(["sync", "--jobs", "2", "--json"], env)
    out, err = again.communicate(timeout=300)
    assert again.returncode == 0, err
    summary = json.loads(out)
    assert summary["new"] + summary["unchanged"] == 80 and not summary["failed"]


def test_status_shows_the_vector_index_its_disk_use_and_what_is_left_to_build(db_url, tmp_path):
    from datetime import datetime, timezone

    from click.testing import CliRunner

    from loader.cli import main as loader_main
    from shared.store import BulkImage, Schema, connect, copy_images

    env = {k: v for k, v in os.environ.items() if not k.startswith(("R2_", "SUPABASE", "IMAGE"))}
    env.update(SUPABASE_DB_URL=db_url, IMAGES_DIR=str(tmp_path), DATA_DIR=str(tmp_path / "d"),
               EMBEDDING_STORAGE="float32")
    runner = CliRunner()
    assert runner.invoke(loader_main, ["ensure-schema"], env=env).exit_code == 0
    now = datetime.now(timezone.utc)
    with connect(db_url) as conn:
        copy_images(conn, (BulkImage(i + 1, f"{i}.png", 4, 3, 10, f"{i:064x}", "PNG", 1, None,
                                     np.ones(768, np.float32), "m", now, now) for i in range(20)))
        conn.execute("ANALYZE image_embeddings")
    found = json.loads(runner.invoke(loader_main, ["status", "--json"], env=env).stdout)
    assert (found["embedding_storage"], found["index_pending"], found["images"]) == ("float32", None, 20)
    assert 0 < found["vector_index_bytes"] < found["total_bytes"]

    env.pop("EMBEDDING_STORAGE")  # the default, halfvec-index, is now asked for
    shown = runner.invoke(loader_main, ["status"], env=env).stdout
    assert "vector(768) column, float32 HNSW index" in shown and "vector index" in shown
    assert "note: the vector index is not yet the one EMBEDDING_STORAGE=halfvec-index" in shown
    assert runner.invoke(loader_main, ["ensure-schema"], env=env).exit_code == 0
    shown = runner.invoke(loader_main, ["status"], env=env).stdout
    assert "half-precision HNSW index" in shown and "note:" not in shown
    with connect(db_url) as conn:
        assert Schema(conn).pending("halfvec-index", 768) is None
