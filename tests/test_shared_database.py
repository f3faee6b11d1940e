"""The embedded Postgres: shared by several processes, not left broken by a killed one."""

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
from pathlib import Path

import pytest

from shared.database import describe
from shared.store import DatabaseError, connect
from shared.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
CLIENT = """
import signal, sys, time
# SIGTERM ends the client cleanly (atexit runs: it leaves the server's handle file), whatever
# dispositions it inherited: a background job starts with SIGINT ignored.
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
from shared.database import start_embedded
from shared.store import connect
url = start_embedded(__import__("pathlib").Path(sys.argv[1]))
with connect(url) as conn:
    conn.execute("CREATE TABLE IF NOT EXISTS visits (who text)")
    conn.execute("INSERT INTO visits VALUES (%s)", (sys.argv[2],))
    rows = [who for (who,) in conn.execute("SELECT who FROM visits ORDER BY who")]
print("ready", ",".join(rows), flush=True)
if sys.argv[2] == "stays":
    time.sleep(600)
"""


@pytest.fixture
def pgdata():
    # Not under pytest's temporary root: see the pg_url fixture in conftest.py.
    folder = Path(tempfile.mkdtemp(prefix="image-browser-db-test-"))
    yield folder / "postgres"
    if server_running(folder / "postgres"):  # a failed test may leave it up: stop it first
        pid = int((folder / "postgres" / "postmaster.pid").read_text().split()[0])
        os.kill(pid, signal.SIGINT)  # Postgres's "fast" shutdown
        time.sleep(1)
    shutil.rmtree(folder, ignore_errors=True)


def run_client(pgdata: Path, who: str) -> subprocess.Popen:
    """A client process, started with SIGINT ignored as in a suite run in the background."""
    return subprocess.Popen([sys.executable, "-c", CLIENT, str(pgdata), who], cwd=ROOT,
                            stdout=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))


def first_line(process: subprocess.Popen, timeout: float = 60) -> str:
    """The process's first line of output, failing (not hanging) if none comes in time."""
    ready, _, _ = select.select([process.stdout], [], [], timeout)
    if not ready:
        process.kill()
        process.wait(timeout=10)
        pytest.fail(f"no output from the client in {timeout} s")
    return process.stdout.readline()


def stop(process: subprocess.Popen, timeout: float = 30) -> int:
    """Stop a client cleanly with SIGTERM; kill it and fail if it does not exit in time."""
    process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)
        pytest.fail(f"the client did not exit within {timeout} s of SIGTERM")


def server_running(pgdata: Path) -> bool:
    pid_file = pgdata / "postmaster.pid"
    if not pid_file.exists():
        return False
    pid = int(pid_file.read_text().split()[0])
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_killed_user_does_not_keep_the_server_forever(pgdata):
    killed = run_client(pgdata, "stays")
    assert first_line(killed).startswith("ready")
    killed.send_signal(signal.SIGKILL)
    killed.wait(timeout=30)
    assert killed.pid in json.loads((pgdata / ".handle_pids.json").read_text())

    later = run_client(pgdata, "later")  # joins the running server, then exits cleanly
    assert first_line(later).startswith("ready")
    assert later.wait(timeout=60) == 0

    deadline = time.monotonic() + 10
    while server_running(pgdata) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not server_running(pgdata), "the last live user should stop the server"

    again = run_client(pgdata, "again")  # and it starts again with every row kept
    assert first_line(again).split() == ["ready", "again,later,stays"]
    assert again.wait(timeout=60) == 0
    assert not server_running(pgdata)


def test_two_processes_share_one_server(pgdata):
    first = run_client(pgdata, "stays")
    assert first_line(first).startswith("ready")
    second = run_client(pgdata, "second")
    assert first_line(second).split() == ["ready", "second,stays"]
    assert second.wait(timeout=60) == 0
    assert server_running(pgdata), "still in use by the first process"
    assert stop(first) == 0  # a clean exit: the last user stops the server
    deadline = time.monotonic() + 10
    while server_running(pgdata) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not server_running(pgdata)


def test_unreachable_database_is_a_clear_error():
    with pytest.raises(DatabaseError, match="could not connect"):
        connect("postgresql://nobody@127.0.0.1:9/none?connect_timeout=2")


def test_describe_never_shows_the_password(tmp_path):
    settings = Settings(images_dir=tmp_path, data_dir=tmp_path,
                        database_url="postgresql://postgres.abc:s3cret@db.example.com:6543/postgres")
    assert "s3cret" not in describe(settings) and "db.example.com:6543" in describe(settings)


def test_an_index_build_may_take_a_quarter_of_this_machine_or_what_it_is_told(tmp_path):
    import os

    from shared.database import index_memory_mb

    embedded = Settings(images_dir=tmp_path, data_dir=tmp_path)
    quarter = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 4 // 2**20
    assert index_memory_mb(embedded) == max(256, quarter)
    remote = Settings(images_dir=tmp_path, data_dir=tmp_path, database_url="postgresql://h/db")
    assert index_memory_mb(remote) == 1024  # its memory is not ours to know
    told = Settings(images_dir=tmp_path, data_dir=tmp_path, index_build_memory_mb=300)
    assert index_memory_mb(told) == 300


SHOW_BUFFERS = """
import sys
from shared.database import start_embedded
from shared.store import connect
with connect(start_embedded(__import__("pathlib").Path(sys.argv[1]))) as conn:
    print(conn.execute("SHOW shared_buffers").fetchone()[0], flush=True)
"""


def test_the_embedded_server_keeps_a_quarter_of_this_machine_for_its_buffers(pgdata):
    from shared.database import machine_memory_mb, server_settings

    def started() -> str:  # a program that starts the server, asks, and stops it as it exits
        done = subprocess.run([sys.executable, "-c", SHOW_BUFFERS, str(pgdata)], cwd=ROOT,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        deadline = time.monotonic() + 30
        while server_running(pgdata) and time.monotonic() < deadline:
            time.sleep(0.1)
        return done.stdout.strip()

    wanted = server_settings(machine_memory_mb())["shared_buffers"]
    assert wanted != "128MB"  # Postgres's default, which holds a tenth of a 1M-photo index
    assert started() == "128MB"  # created by this start: its settings come with the next
    assert started() == _pg_units(wanted)


def _pg_units(megabytes: str) -> str:
    """How SHOW prints a size: "5888MB", or "6GB" when whole gigabytes."""
    mb = int(megabytes.removesuffix("MB"))
    return f"{mb // 1024}GB" if mb % 1024 == 0 else f"{mb}MB"


def test_shared_buffers_follow_the_machine_with_a_floor():
    from shared.database import server_settings

    assert server_settings(16 * 1024) == {"shared_buffers": "4096MB"}
    assert server_settings(256) == {"shared_buffers": "128MB"}
    assert server_settings(None) == {"shared_buffers": "128MB"}
