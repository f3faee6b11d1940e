"""`loader ensure-schema` bringing the vector index to EMBEDDING_STORAGE: Ctrl-C mid-build
(a real signal to a real process) exits 0, search keeps the old index, and a rerun finishes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from loader.index import migrate_index
from shared.settings import Settings
from shared.store import BulkImage, Schema, VectorIndex, connect, copy_images
from shared.store.layout import FLOAT32_INDEX, HALF_INDEX

ROOT = Path(__file__).resolve().parents[1]


def float32_library(db_url: str, rows: int) -> None:
    """A library as Image Browser left it before issue 11: a float32 HNSW index."""
    with connect(db_url) as conn:
        schema = Schema(conn)
        schema.ensure(768, "float32")
        schema.drop_vector_index()
        vectors = np.random.default_rng(4).standard_normal((rows, 768)).astype(np.float32)
        now = datetime.now(timezone.utc)
        copy_images(conn, (BulkImage(i + 1, f"{i}.png", 4, 3, 10, f"{i:064x}", "PNG", 1, None, v,
                                     "m", now, now) for i, v in enumerate(vectors)))
        schema.build_vector_index("64MB", storage="float32")


def env_for(db_url: str, tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("R2_", "SUPABASE", "IMAGE"))}
    env.update(SUPABASE_DB_URL=db_url, IMAGES_DIR=str(tmp_path), DATA_DIR=str(tmp_path / "data"),
               **extra)
    return env


def wait_for_the_build(conn, seconds: float = 60) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if VectorIndex(conn).build_progress():
            return True
        time.sleep(0.01)
    return False


def test_ctrl_c_mid_build_exits_0_and_the_next_run_finishes(db_url, tmp_path):
    float32_library(db_url, 3000)
    env, conn = env_for(db_url, tmp_path), connect(db_url)
    command = [sys.executable, "-m", "loader", "ensure-schema"]
    # As from a terminal: a shell's background job (pytest run with `&`) passes SIGINT ignored.
    child = subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True,
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert wait_for_the_build(conn), child.communicate(timeout=60)
    child.send_signal(signal.SIGINT)
    out, err = child.communicate(timeout=60)
    assert child.returncode == 0 and "Traceback" not in err, err
    assert "stopped before the end" in err and "float32 HNSW index" in out
    state = VectorIndex(conn).state()
    assert state.valid == (FLOAT32_INDEX,) and state.invalid == (HALF_INDEX,)

    rerun = subprocess.run(command + ["--json"], env=env, cwd=ROOT, capture_output=True,
                           text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr
    report = json.loads(rerun.stdout)
    assert (report["migration"], report["storage"], report["pending"]) == (
        "done", "halfvec-index", None)
    state = VectorIndex(conn).state()
    assert state.valid == (HALF_INDEX,) and state.invalid == ()


def test_nothing_to_do_is_said_so_and_float32_can_be_chosen_back(db_url, tmp_path):
    settings = Settings(images_dir=tmp_path, data_dir=tmp_path / "data", database_url=db_url)
    float32_library(db_url, 50)
    lines: list[str] = []
    stop = threading.Event()
    assert migrate_index(settings, db_url, stop, show=False, tell=lines.append) == "done"
    assert any(line.startswith("building the half-precision") for line in lines)
    assert migrate_index(settings, db_url, stop, show=False, tell=lines.append) == "nothing"
    back = Settings(images_dir=tmp_path, data_dir=tmp_path / "data", database_url=db_url,
                    embedding_storage="float32")
    assert migrate_index(back, db_url, stop, show=False, tell=lines.append) == "done"
    assert VectorIndex(connect(db_url)).state().valid == (FLOAT32_INDEX,)


def test_a_stop_before_the_build_starts_changes_nothing(db_url, tmp_path):
    settings = Settings(images_dir=tmp_path, data_dir=tmp_path / "data", database_url=db_url)
    float32_library(db_url, 50)
    stop = threading.Event()
    stop.set()
    assert migrate_index(settings, db_url, stop, show=False, tell=lambda _: None) == "stopped"
    assert VectorIndex(connect(db_url)).state().valid == (FLOAT32_INDEX,)
