"""The browse JSON API and media routes through Flask's test client, on a real Postgres."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import threading
import time

import pytest
from browse_support import HOSTILE, WordEmbedder, build_library, png_bytes

from browse import create_app
from shared.settings import R2Settings, Settings
from shared.store import Catalogue, ImageRecord, Schema, connect

MAX_UPLOAD = 64 * 1024
FROM_SETTINGS = "build the embedder from the settings"


def make_app(settings: Settings, embedder=None, **web):
    """An app on these settings with small limits; closed by the caller."""
    web = {"page_size": 10, "max_upload_bytes": MAX_UPLOAD, **web}
    settings = dataclasses.replace(settings, web=dataclasses.replace(settings.web, **web))
    if embedder == FROM_SETTINGS:
        return create_app(settings)
    return create_app(settings, embedder=embedder)


@pytest.fixture(scope="module")
def library(pg_url, tmp_path_factory) -> Settings:
    """One seeded library for the read-only tests of this module."""
    return build_library(pg_url, tmp_path_factory.mktemp("library"))


@pytest.fixture(scope="module")
def app(library):
    app = make_app(library, WordEmbedder())
    yield app
    app.extensions["image_browser"].close()


@pytest.fixture
def client(app):
    return app.test_client()


def ids_by_name(client) -> dict[str, int]:
    images = client.get("/api/images?limit=200").get_json()["images"]
    return {image["filename"]: image["id"] for image in images}


# --- list, one image ---------------------------------------------------------------------


def test_list_walks_every_image_once_newest_first_by_keyset(client, library):
    seen, cursor, pages = [], None, 0
    while pages < 50:  # a cursor that never ends fails below instead of looping forever
        response = client.get("/api/images", query_string={"limit": 7, **({"cursor": cursor} if cursor else {})})
        assert response.status_code == 200
        body = response.get_json()
        seen += body["images"]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break
    with connect(library.database_url) as conn:
        expected = [r[0] for r in conn.execute(
            "SELECT id FROM image_embeddings ORDER BY created_at DESC, id DESC").fetchall()]
    assert [image["id"] for image in seen] == expected
    assert len(expected) == 37 and pages == 6  # 37 rows in pages of 7


def test_keyset_cursor_is_stable_when_newer_rows_arrive(client, library):
    first = client.get("/api/images?limit=5").get_json()
    with connect(library.database_url) as conn:
        Catalogue(conn).upsert_images([ImageRecord("arrived-later.jpg", 10, 10, 1, "0" * 64, "JPEG", 1, None)])
    try:
        second = client.get(f"/api/images?limit=5&cursor={first['next_cursor']}").get_json()
        everything = client.get("/api/images?limit=200").get_json()["images"]
        order = [image["id"] for image in everything if image["filename"] != "arrived-later.jpg"]
        assert [i["id"] for i in first["images"] + second["images"]] == order[:10]
    finally:
        with connect(library.database_url) as conn:
            Catalogue(conn).delete_images(["arrived-later.jpg"])


def test_one_image_has_its_details_and_local_urls(client):
    image_id = ids_by_name(client)["blue-sea.jpg"]
    image = client.get(f"/api/images/{image_id}").get_json()["image"]
    assert (image["width"], image["height"], image["format"]) == (600, 900, "JPEG")
    assert image["thumbnail_url"] == f"/media/thumb/{image['sha256'][:2]}/{image['sha256']}.jpg"
    assert image["original_url"] == "/media/original/blue-sea.jpg"
    assert image["embedded"] is True


def test_unknown_image_and_route_are_json_404s(client):
    for url in ("/api/images/999999", "/api/images/999999/similar", "/api/nothing-here"):
        response = client.get(url)
        assert response.status_code == 404 and response.is_json
        assert response.get_json()["error"]["status"] == 404


@pytest.mark.parametrize("query", ["limit=0", "limit=201", "limit=ten", "cursor=abc", "cursor=1.2.3"])
def test_bad_page_parameters_are_json_400s(client, query):
    response = client.get(f"/api/images?{query}")
    assert response.status_code == 400
    assert response.get_json()["error"]["message"]


# --- search ------------------------------------------------------------------------------


def test_text_search_puts_the_described_image_first_with_its_similarity(client):
    body = client.get("/api/search", query_string={"q": "red bicycle in the snow", "k": 5}).get_json()
    names = [r["filename"] for r in body["results"]]
    assert names[0] == "red-bicycle-snow.jpg" and names[1] == "red-car.jpg"
    assert body["results"][0]["similarity"] == pytest.approx(1.0, abs=1e-4)
    sims = [r["similarity"] for r in body["results"]]
    assert sims == sorted(sims, reverse=True) and len(sims) == 5
    assert body["model"] == "test/word-vectors"


@pytest.mark.parametrize("query", ["k=0", "k=201", "k=many", "q=", "q=%20%20"])
def test_search_refuses_out_of_range_k_and_empty_queries(client, query):
    if "q=" not in query:
        query += "&q=cat"
    response = client.get(f"/api/search?{query}")
    assert response.status_code == 400 and response.is_json


def test_similar_images_use_the_stored_embedding_without_a_model_call(app, client):
    ids = ids_by_name(client)
    embedder = app.extensions["image_browser"].search.embedder
    before = embedder.calls
    body = client.get(f"/api/images/{ids['red-bicycle-snow.jpg']}/similar?k=3").get_json()
    assert embedder.calls == before
    names = [r["filename"] for r in body["results"]]
    assert "red-bicycle-snow.jpg" not in names and names[0] == "red-car.jpg" and len(names) == 3
    assert body["results"][0]["similarity"] == pytest.approx(1 / 6**0.5, abs=1e-3)


def test_similar_of_an_image_without_embedding_says_so(client):
    response = client.get(f"/api/images/{ids_by_name(client)['waiting.jpg']}/similar")
    assert response.status_code == 409 and "no embedding" in response.get_json()["error"]["message"]


def test_search_by_uploaded_image_finds_the_same_colour(client):
    for how in ("multipart", "body"):
        if how == "multipart":
            from io import BytesIO

            response = client.post("/api/search/image?k=3",
                                   data={"image": (BytesIO(png_bytes((10, 20, 240))), "any-name.txt")})
        else:
            response = client.post("/api/search/image?k=3", data=png_bytes((10, 20, 240)),
                                   content_type="application/octet-stream")
        assert response.status_code == 200, response.data
        assert response.get_json()["results"][0]["filename"] == "blue-sea.jpg"


def test_uploads_are_limited_in_size_and_checked_by_content(client):
    too_big = client.post("/api/search/image", data=b"\xff" * (MAX_UPLOAD + 1),
                          content_type="image/jpeg")
    assert too_big.status_code == 413 and too_big.is_json
    not_image = client.post("/api/search/image", data=b"<html>not a picture</html>", content_type="image/png")
    assert not_image.status_code == 415 and "not an image" in not_image.get_json()["error"]["message"]
    empty = client.post("/api/search/image", data=b"", content_type="image/png")
    assert empty.status_code == 400
    from io import BytesIO

    no_field = client.post("/api/search/image", data={"other": (BytesIO(b"x"), "x.png")})
    assert no_field.status_code == 400


def test_upload_page_rejects_a_text_file_named_like_an_image(client):
    from io import BytesIO

    response = client.post("/search/image", data={"image": (BytesIO(b"hello"), "photo.jpg")})
    assert response.status_code == 415
    assert b"not an image" in response.data


# --- status and errors of the embedder ----------------------------------------------------


def test_status_counts_images_waiting_for_embeddings(client):
    status = client.get("/api/status").get_json()
    assert status["counts"]["images"] == 37 and status["counts"]["waiting"] == 1
    assert status["search_available"] is True and status["warnings"] == []
    page = client.get("/status")
    assert b'id="count-waiting">1<' in page.data


def test_no_embedder_keeps_browsing_and_says_why_search_is_off(library):
    app = make_app(dataclasses.replace(library, embedder="replicate"), FROM_SETTINGS)
    try:
        client = app.test_client()
        assert client.get("/api/images").status_code == 200
        response = client.get("/api/search?q=cat")
        assert response.status_code == 503 and response.get_json()["error"]["code"] == "search_unavailable"
        home = client.get("/").data.decode()
        assert "Search is off" in home and "REPLICATE_API_TOKEN" in home
    finally:
        app.extensions["image_browser"].close()


def test_dimension_mismatch_is_a_visible_warning_and_search_is_refused(library):
    app = make_app(library, WordEmbedder(dimensions=512))
    try:
        client = app.test_client()
        assert "512-dimensional" in client.get("/").data.decode()
        assert "512-dimensional" in client.get("/status").data.decode()
        assert client.get("/api/status").get_json()["warnings"]
        assert client.get("/api/search?q=cat").status_code == 503
    finally:
        app.extensions["image_browser"].close()


def test_slow_embedder_times_out_without_blocking_other_requests(library):
    app = make_app(library, WordEmbedder(delay_s=3.0), embed_timeout_s=0.5)
    try:
        client = app.test_client()
        other: dict = {}

        def browse_meanwhile() -> None:
            time.sleep(0.1)
            started = time.perf_counter()
            other["status"] = app.test_client().get("/api/images").status_code
            other["seconds"] = time.perf_counter() - started

        thread = threading.Thread(target=browse_meanwhile)
        thread.start()
        started = time.perf_counter()
        response = client.get("/api/search?q=cat")
        elapsed = time.perf_counter() - started
        thread.join(timeout=30)
        assert not thread.is_alive(), "the other request never finished"
        assert response.status_code == 504 and response.get_json()["error"]["code"] == "embedder_timeout"
        assert elapsed < 2.0
        assert other == {"status": 200, "seconds": pytest.approx(0, abs=1.0)}
        page = client.get("/?q=cat")
        assert page.status_code == 504 and b"timed out" in page.data
    finally:
        app.extensions["image_browser"].close()


def test_embedder_failure_is_503_and_never_shows_the_token(library):
    secret = "r8_super_secret_token_value"
    settings = dataclasses.replace(library, replicate_api_token=secret)
    app = make_app(settings, WordEmbedder(error=f"401 Unauthorized for token {secret}"))
    try:
        client = app.test_client()
        response = client.get("/api/search?q=cat")
        assert response.status_code == 503 and response.get_json()["error"]["code"] == "embedder_failed"
        for url in ("/api/search?q=cat", "/?q=cat", "/status", "/api/status", "/"):
            assert secret not in client.get(url).data.decode()
    finally:
        app.extensions["image_browser"].close()


# --- media: caching, traversal ----------------------------------------------------------


def test_thumbnails_are_cacheable_forever_by_content_hash(client):
    image = client.get(f"/api/images/{ids_by_name(client)['cat.jpg']}").get_json()["image"]
    response = client.get(image["thumbnail_url"])
    assert response.status_code == 200 and response.mimetype == "image/jpeg"
    assert response.headers["ETag"] == f'"{image["sha256"]}"'
    cache = response.headers["Cache-Control"]
    assert "immutable" in cache and "max-age=31536000" in cache and "public" in cache
    again = client.get(image["thumbnail_url"], headers={"If-None-Match": response.headers["ETag"]})
    assert again.status_code == 304 and again.data == b""


def test_originals_carry_their_sha256_as_etag(client, library):
    image = client.get(f"/api/images/{ids_by_name(client)['red-car.jpg']}").get_json()["image"]
    response = client.get(image["original_url"])
    data = (library.images_dir / "red-car.jpg").read_bytes()
    assert response.status_code == 200 and response.data == data
    assert response.headers["ETag"] == f'"{hashlib.sha256(data).hexdigest()}"'
    assert "max-age" in response.headers["Cache-Control"]
    assert client.get(image["original_url"], headers={"If-None-Match": f'"{image["sha256"]}"'}).status_code == 304


def test_hostile_file_name_is_served_and_shown_as_text(client):
    home = client.get("/?limit=200").data.decode()
    assert "<img src=x" not in home
    assert "&lt;img src=x onerror=alert(1)&gt;.jpg" in home
    image = client.get(f"/api/images/{ids_by_name(client)[HOSTILE]}").get_json()["image"]
    assert image["filename"] == HOSTILE
    assert client.get(image["original_url"]).status_code == 200  # the quoted URL reaches the file


@pytest.fixture
def hostile_rows(library, tmp_path):
    """Rows a compromised or stale database might hold, naming files outside the library."""
    secret = library.images_dir.parent / "secret.jpg"
    secret.write_bytes(b"TOP-SECRET-BYTES")
    (library.images_dir / "link-out.jpg").symlink_to(secret)
    (library.images_dir / "dir-link").symlink_to(library.images_dir.parent)
    thumb_dir = library.thumbnails_dir / "ab"
    thumb_dir.mkdir(parents=True, exist_ok=True)
    thumb_link = thumb_dir / ("ab" + "0" * 62 + ".jpg")
    thumb_link.symlink_to(secret)
    names = ["link-out.jpg", "../secret.jpg", "dir-link/secret.jpg", str(secret), ".hidden.jpg"]
    with connect(library.database_url) as conn:
        Catalogue(conn).upsert_images(
            [ImageRecord(n, 1, 1, 16, "1" * 64, "JPEG", 1, None) for n in names])
    yield
    with connect(library.database_url) as conn:
        Catalogue(conn).delete_images(names)
    for link in (library.images_dir / "link-out.jpg", library.images_dir / "dir-link", thumb_link):
        link.unlink()
    secret.unlink()


@pytest.mark.parametrize("url", [
    "/media/original/link-out.jpg",
    "/media/original/../secret.jpg",
    "/media/original/%2e%2e/secret.jpg",
    "/media/original/%2E%2E%2Fsecret.jpg",
    "/media/original/..%5csecret.jpg",
    "/media/original/dir-link/secret.jpg",
    "/media/original//etc/passwd",
    "/media/original/%2Fetc%2Fpasswd",
    "/media/original/.hidden.jpg",
    "/media/original/images/../../secret.jpg",
    "/media/thumb/ab/ab" + "0" * 62 + ".jpg",
    "/media/thumb/../secret.jpg",
    "/media/thumb/%2e%2e/%2e%2e/secret.jpg",
    "/media/thumb//etc/passwd",
])
def test_no_request_reads_outside_the_image_folders(client, hostile_rows, url):
    response = client.get(url, follow_redirects=True)  # werkzeug redirects '//' to '/' first
    assert response.status_code == 404
    assert b"TOP-SECRET" not in response.data and b"root:" not in response.data


def test_secret_is_readable_by_path_so_the_traversal_test_can_fail(library, hostile_rows):
    # The guard, not a missing file, is what refuses the requests above.
    assert (library.images_dir / "link-out.jpg").read_bytes() == b"TOP-SECRET-BYTES"
    assert os.path.exists(library.images_dir / ".." / "secret.jpg")


# --- headers, R2 -------------------------------------------------------------------------


def test_every_response_has_a_restrictive_csp(client):
    for url in ("/", "/api/images", "/status", "/api/nothing"):
        csp = client.get(url).headers["Content-Security-Policy"]
        assert "default-src 'self'" in csp and "script-src 'self'" in csp and "unsafe-inline" not in csp
        assert "object-src 'none'" in csp


def test_r2_mode_links_to_image_base_url(settings):
    r2 = R2Settings(account_id="acct", access_key_id="key", secret_access_key="r2-secret-value",
                    bucket="photos", prefix="lib/", endpoint_url="http://127.0.0.1:9")
    settings = dataclasses.replace(settings, r2=r2, image_base_url="https://img.example.com/")
    with connect(settings.database_url) as conn:
        Schema(conn).ensure(768)
        Catalogue(conn).upsert_images([ImageRecord("trip/a b.jpg", 40, 30, 9, "c" * 64, "JPEG", 1, "cc/" + "c" * 64 + ".jpg")])
    app = make_app(settings, None)
    try:
        client = app.test_client()
        image = client.get("/api/images").get_json()["images"][0]
        assert image["original_url"] == "https://img.example.com/lib/trip/a%20b.jpg"
        assert image["thumbnail_url"] == f"https://img.example.com/lib/.thumbnails/cc/{'c' * 64}.jpg"
        home = client.get("/")
        assert f'src="https://img.example.com/lib/.thumbnails/cc/{"c" * 64}.jpg"' in home.data.decode()
        assert "https://img.example.com" in home.headers["Content-Security-Policy"]
        assert "r2-secret-value" not in home.data.decode()
        assert client.get(f"/media/thumb/cc/{'c' * 64}.jpg").status_code == 404
        assert client.get("/media/original/trip/a%20b.jpg").status_code == 404
    finally:
        app.extensions["image_browser"].close()


def test_the_app_checks_the_schema_and_never_creates_it(settings):
    from shared.store import SchemaError

    with pytest.raises(SchemaError, match="loader ensure-schema"):
        create_app(settings, embedder=None)
    with connect(settings.database_url) as conn:
        assert not Schema(conn).table_exists()


def test_each_request_gives_its_connection_back(app):
    client = app.test_client()
    pool = app.extensions["image_browser"].pool
    for url in ("/", "/api/images", "/status", "/api/status", "/?q=cat", "/api/images/999999"):
        client.get(url)
        assert pool.stats()["lent"] == 0, url  # nothing still lent out
