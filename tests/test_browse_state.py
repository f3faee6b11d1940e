"""What the web app keeps between requests: upload slots, the time limits, the database pool.

Against a real Postgres that is stopped and started, and the real `browse` process whose
memory is read from /proc while hostile uploads arrive.
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from browse_support import (
    WordEmbedder,
    blank_png,
    browse_env,
    build_library,
    png_bytes,
    running_browse,
)

from browse import create_app
from browse.state import UPLOAD_WAIT_S
from shared.settings import WebSettings

# Far longer than anything below may take: a request that waits this long has failed.
PATIENT_S = 30.0
GB = 1_000_000_000
SLOTS = WebSettings.upload_slots
PASSWORD = "S3cret-pass"


def make_app(settings, embedder, **web):
    settings = dataclasses.replace(settings, web=dataclasses.replace(settings.web, **web))
    return create_app(settings, embedder=embedder)


@pytest.fixture(scope="module")
def library(pg_url, tmp_path_factory):
    """A small seeded library on the session's Postgres."""
    return build_library(pg_url, tmp_path_factory.mktemp("state"), n_fillers=4)


# --- uploads: a few decode at once -------------------------------------------------------


def upload(client, colour=(10, 20, 240)):
    return client.post("/api/search/image", data=png_bytes(colour),
                       content_type="application/octet-stream")


def test_an_upload_beyond_the_slots_is_told_to_come_back_while_the_slot_is_held(library):
    # The embedding outlives its request (time limit 0.5 s, the call takes 3 s): the slot must
    # stay taken until the call ends, or abandoned calls would pile up without bound.
    app = make_app(library, WordEmbedder(delay_s=3.0), upload_slots=1, embed_timeout_s=0.5)
    try:
        client = app.test_client()
        assert upload(client).status_code == 504  # gave up; the call still runs
        started = time.monotonic()
        busy = upload(client)
        waited = time.monotonic() - started
        assert busy.status_code == 503 and busy.get_json()["error"]["code"] == "busy"
        assert busy.headers["Retry-After"] and waited >= UPLOAD_WAIT_S * 0.9
        assert client.get("/api/search?q=cat").status_code == 504  # text search takes no slot
        deadline = time.monotonic() + PATIENT_S
        while (response := upload(client)).status_code == 503 and time.monotonic() < deadline:
            pass  # the first call ends after 3 s and frees the slot
        assert response.status_code == 504  # admitted again (and slow again)
        form = {"image": (io.BytesIO(png_bytes((1, 2, 3))), "a.png")}
        page = client.post("/search/image", data=form)
        assert page.status_code == 503 and b"busy" in page.data
    finally:
        app.extensions["image_browser"].close()


def test_hostile_uploads_keep_the_real_server_under_a_gigabyte_and_pages_answering(library, server):
    # 8 uploads at once of a 49 MP RGBA PNG (200 MB decoded; the largest that is accepted),
    # then 8 of the 13000x13000 PNG from the issue (676 MB decoded, refused from its header).
    # Eight embed workers, so only the upload slots (2) stand between them and 1.6 GB.
    accepted, hostile = blank_png(7000, 7000), blank_png(13000, 13000)
    env = browse_env(library, EMBEDDER="replicate", REPLICATE_API_TOKEN=server.token,
                     REPLICATE_BASE_URL=server.url, BROWSE_EMBED_WORKERS="8",
                     BROWSE_EMBED_TIMEOUT_S="60")
    with running_browse(env) as live:
        assert live.post("/api/search/image", png_bytes((5, 5, 5)))[0] == 200  # warm
        before = live.peak_rss()
        others: list[tuple[int, float]] = []
        stop = threading.Event()

        def browse_meanwhile() -> None:
            while not stop.is_set():
                started = time.monotonic()
                status = live.get("/api/images?limit=3", timeout=PATIENT_S)[0]
                others.append((status, time.monotonic() - started))
                time.sleep(0.05)

        watcher = threading.Thread(target=browse_meanwhile)
        watcher.start()
        try:
            with ThreadPoolExecutor(8) as pool:
                def send(data: bytes) -> tuple[int, dict, bytes]:
                    return live.post("/api/search/image", data, PATIENT_S * 2)

                big = list(pool.map(send, [accepted] * 8))
                bombs = list(pool.map(send, [hostile] * 8))
        finally:
            stop.set()
            watcher.join(timeout=PATIENT_S)
        peak = live.peak_rss()
    statuses = sorted(status for status, _, _ in big)
    assert set(statuses) <= {200, 503} and 200 in statuses, statuses
    for status, headers, body in big:
        if status == 503:
            assert json.loads(body)["error"]["code"] == "busy" and headers["Retry-After"]
    assert [status for status, _, _ in bombs] == [413] * 8
    assert b"too large" in bombs[0][2]
    assert others and all(status == 200 for status, _ in others), others
    assert max(seconds for _, seconds in others) < PATIENT_S / 3
    assert peak < GB, f"peak RSS {peak / 1e6:.0f} MB"
    # No more than the slots' decodes at once (4 bytes a pixel), whatever the workers.
    assert peak - before < (SLOTS + 1) * 7000 * 7000 * 4, f"grew {(peak - before) / 1e6:.0f} MB"


# --- a database outage --------------------------------------------------------------------


@pytest.fixture
def outage_app(stoppable_pg, tmp_path):
    """The app on a library kept in a Postgres that the test may stop.

    Its URL carries a password (the socket's trust login ignores it) that must never show.
    """
    url = stoppable_pg.url.replace("postgres:@", f"postgres:{PASSWORD}@")
    assert PASSWORD in url
    settings = build_library(url, tmp_path, n_fillers=2)
    app = make_app(settings, WordEmbedder())
    yield app
    app.extensions["image_browser"].close()


def test_a_stopped_database_answers_503_at_once_and_the_first_request_after_it_works(
        stoppable_pg, outage_app, caplog):
    client = outage_app.test_client()
    image = client.get("/api/images?limit=1").get_json()["images"][0]
    stoppable_pg.stop()
    caplog.set_level(logging.WARNING, logger="browse.state")
    for url in ("/api/images", "/api/status", f"/api/images/{image['id']}", "/api/search?q=cat",
                f"/api/images/{image['id']}/similar", image["original_url"]):
        started = time.monotonic()
        response = client.get(url)
        assert time.monotonic() - started < PATIENT_S / 3, url  # told, not left waiting
        assert response.status_code == 503 and response.headers["Retry-After"], url
        if url.startswith("/api/"):
            assert response.get_json()["error"]["code"] == "database_unavailable", url
        assert PASSWORD not in response.get_data(as_text=True)
    for url in ("/", "/status", f"/image/{image['id']}", "/?q=cat"):
        page = client.get(url)
        assert page.status_code == 503 and page.mimetype == "text/html", url
        assert "database is not answering" in page.get_data(as_text=True), url
    assert client.get(image["thumbnail_url"]).status_code == 200  # thumbnails need no database
    with ThreadPoolExecutor(16) as pool:  # many at once: none is held up by the others
        statuses = list(pool.map(lambda _: outage_app.test_client().get("/api/images").status_code,
                                 range(32)))
    assert statuses == [503] * 32
    down = [r.getMessage() for r in caplog.records if "database is unavailable" in r.getMessage()]
    assert len(down) == 1  # logged once per outage, not once per request
    assert "could not connect" in down[0] and PASSWORD not in down[0]
    stoppable_pg.start()
    assert client.get("/api/images").status_code == 200  # the first request after it returns
    assert any("answers again" in r.getMessage() for r in caplog.records)
    assert outage_app.extensions["image_browser"].pool.stats()["lent"] == 0


def test_a_connection_cut_in_the_middle_of_a_request_is_a_503_and_is_replaced(
        stoppable_pg, tmp_path):
    from flask import request

    from browse.state import get_browse
    from shared.store import connect

    settings = build_library(stoppable_pg.url, tmp_path, n_fillers=2)
    app = make_app(settings, WordEmbedder())
    admin = connect(stoppable_pg.url)

    @app.before_request
    def cut_the_connection() -> None:
        # The server ends this request's session after it was taken and before the page's query.
        if request.args.get("cut"):
            pid = get_browse().connection().info.backend_pid
            # With a timeout, the call returns only once the session is gone.
            admin.execute("SELECT pg_terminate_backend(%s, 10000)", (pid,))

    try:
        client = app.test_client()
        response = client.get("/api/images?cut=1")
        assert response.status_code == 503
        assert response.get_json()["error"]["code"] == "database_unavailable"
        assert client.get("/?cut=1").status_code == 503
        assert client.get("/api/images").status_code == 200  # a new connection, not the cut one
        assert app.extensions["image_browser"].pool.stats()["lent"] == 0
    finally:
        admin.close()
        app.extensions["image_browser"].close()
