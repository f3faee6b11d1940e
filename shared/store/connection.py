"""Connections to Postgres, one at a time (the web app's pool is in `pool.py`).

pgvector's types are registered on a connection only once the extension exists (a fresh
database gets it from `Schema.ensure`, which registers its own connection afterwards).
"""

from __future__ import annotations

import psycopg
from pgvector.psycopg import register_vector

from ..redact import mask_url, scrub, url_secrets

CONNECT_TIMEOUT_S = 10


class DatabaseError(Exception):
    """The database cannot be reached or used; the message says which and why, without secrets."""


def connect(url: str, setting: str = "the database URL") -> psycopg.Connection:
    """Open one autocommit connection; a failure is a DatabaseError naming `setting`."""
    try:
        conn = psycopg.connect(url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S)
    except psycopg.Error as exc:
        raise DatabaseError(connection_problem(url, setting, exc)) from None
    register_types(conn)
    return conn


def register_types(conn: psycopg.Connection) -> bool:
    """Teach the connection pgvector's types when the extension exists; say whether it did."""
    installed = conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'vector'").fetchone()
    if installed:
        register_vector(conn)
    return bool(installed)


def connection_problem(url: str, setting: str, exc: BaseException) -> str:
    """One line saying why the database at `url` could not be used, with no password in it."""
    detail = " ".join(str(exc).split()) or type(exc).__name__
    detail = scrub(detail.replace(url, mask_url(url)), *url_secrets(url))
    return f"could not connect to the database ({setting} = {mask_url(url)}): {detail}"


def connection_lost(exc: BaseException, url: str | None) -> str:
    """One line saying the database went away during a command, with no password in it."""
    detail = " ".join(str(exc).split()) or type(exc).__name__
    if url:
        detail = scrub(detail, *url_secrets(url))
    return (f"the database connection was lost ({detail}); what was written before is kept: "
            "run the command again once the database is back")
