"""The `browse` command as a process: it stops cleanly on SIGTERM as on Ctrl-C, and the embedded
Postgres it started stops with it (issue 13, item 10)."""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def postgres_running(pgdata: Path) -> bool:
    pid_file = pgdata / "postmaster.pid"
    if not pid_file.exists():
        return False
    try:
        os.kill(int(pid_file.read_text().split()[0]), 0)
    except (ProcessLookupError, ValueError):
        return False
    return True


@pytest.fixture
def data():
    folder = Path(tempfile.mkdtemp(prefix="image-browser-browse-"))  # see conftest's pg_url
    (folder / "images").mkdir()
    yield folder
    pgdata = folder / "data" / "postgres"
    if postgres_running(pgdata):
        os.kill(int((pgdata / "postmaster.pid").read_text().split()[0]), signal.SIGINT)
        time.sleep(1)
    shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_browse_and_its_embedded_postgres(data, sig):
    env = {k: v for k, v in os.environ.items() if k not in ("SUPABASE_DB_URL", "R2_BUCKET")}
    env.update(IMAGES_DIR=str(data / "images"), DATA_DIR=str(data / "data"), EMBEDDER="none")
    subprocess.run([sys.executable, "-m", "loader", "ensure-schema"], env=env, cwd=ROOT,
                   check=True, capture_output=True, timeout=120)
    browse = subprocess.Popen([sys.executable, "-m", "browse.cli", "--port", "0"], env=env,
                              cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert select.select([browse.stdout], [], [], 60)[0], "browse printed no URL"
        url = browse.stdout.readline().split()[3]
        with urllib.request.urlopen(url, timeout=20) as page:
            assert page.status == 200
        pgdata = data / "data" / "postgres"
        assert postgres_running(pgdata)
        browse.send_signal(sig)
        assert browse.wait(timeout=60) == 0
    finally:
        browse.kill()
        _, err = browse.communicate(timeout=10)
    assert "Traceback" not in err
    deadline = time.monotonic() + 20
    while postgres_running(pgdata) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not postgres_running(pgdata), "the embedded Postgres was left running"
    assert json.loads((pgdata / ".handle_pids.json").read_text()) == []
