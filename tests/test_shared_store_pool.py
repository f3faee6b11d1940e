"""The web app's connection pool against a real Postgres that is stopped and started again."""

from __future__ import annotations

import threading
import time

import psycopg
import pytest

from shared.store import DatabaseUnavailable, PoolExhausted, open_pool

# Far longer than any test below may take: a borrower that waits this long has failed.
PATIENT_S = 30.0


def test_a_stopped_database_fails_at_once_and_the_first_borrow_after_it_returns_works(stoppable_pg):
    pool = open_pool(stoppable_pg.url, size=2, wait_s=PATIENT_S)
    try:
        with pool.connection() as conn:  # leaves an idle connection that the stop will kill
            conn.execute("SELECT 1")
        stoppable_pg.stop()
        started = time.monotonic()
        with pytest.raises(DatabaseUnavailable, match="could not connect"):
            pool.getconn()
        assert time.monotonic() - started < PATIENT_S / 3  # told, not left waiting
        stoppable_pg.start()
        with pool.connection() as conn:  # not the dead idle one
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        pool.close()


def test_a_connection_broken_during_use_is_not_lent_again(stoppable_pg):
    pool = open_pool(stoppable_pg.url, size=1, wait_s=PATIENT_S)
    try:
        conn = pool.getconn()
        stoppable_pg.stop()
        with pytest.raises(psycopg.OperationalError):
            conn.execute("SELECT 1")
        pool.putconn(conn)
        assert pool.stats() == {"size": 1, "lent": 0, "idle": 0}
        stoppable_pg.start()
        with pool.connection() as again:
            assert again is not conn and again.execute("SELECT 1").fetchone() == (1,)
    finally:
        pool.close()


def test_a_borrower_waits_for_a_returned_connection_then_gives_up(db_url):
    pool = open_pool(db_url, size=1, wait_s=PATIENT_S)
    try:
        first = pool.getconn()
        with pytest.raises(PoolExhausted, match="all 1 database connections"):
            pool.getconn(timeout=0.2)
        got: dict = {}
        waiter = threading.Thread(target=lambda: got.setdefault("conn", pool.getconn()))
        waiter.start()
        time.sleep(0.2)
        assert "conn" not in got  # still waiting: the pool never opens more than its size
        pool.putconn(first)
        waiter.join(timeout=PATIENT_S)
        assert got["conn"] is first
        pool.putconn(got["conn"])
        assert pool.stats() == {"size": 1, "lent": 0, "idle": 1}
    finally:
        pool.close()


def test_an_unreachable_server_is_named_without_its_password():
    url = "postgresql://reader:S3cret-pass@127.0.0.1:1/library"
    pool = open_pool(url, size=1, setting="SUPABASE_DB_URL")
    with pytest.raises(DatabaseUnavailable) as err:
        pool.getconn()
    message = str(err.value)
    assert "SUPABASE_DB_URL" in message and "S3cret" not in message and "****" in message
    assert pool.stats()["lent"] == 0  # the failed attempt gave its place back


def test_connections_lent_when_the_pool_closes_are_closed_on_return(db_url):
    pool = open_pool(db_url, size=2)
    lent = pool.getconn()
    with pool.connection():
        pass
    pool.close()
    pool.putconn(lent)
    assert lent.closed and pool.stats()["idle"] == 0
    with pytest.raises(DatabaseUnavailable, match="closed"):
        pool.getconn()
